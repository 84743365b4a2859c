"""What the UI shows of each asset: stage groups in pipeline order, kinds, owners, column docs
and code versions that follow the code."""

from __future__ import annotations

from dagster import load_assets_from_modules

from mlm_pipeline import asset_attributes, schemas
from mlm_pipeline.asset_attributes import PACKAGE_ROOT, STAGE_ATTRIBUTES, column_schema, imported_sources
from mlm_pipeline.definitions import STAGES, defs


def test_every_asset_has_its_stage_group_kinds_owner_and_code_version() -> None:
    graph = defs.resolve_asset_graph()
    for stage in STAGES:
        group, kinds = STAGE_ATTRIBUTES[stage.__name__.rsplit(".", 1)[-1]]
        for asset in load_assets_from_modules([stage]):
            for key in asset.keys:
                node = graph.get(key)
                assert (node.group_name, set(node.kinds), node.owners) == (group, kinds, asset_attributes.OWNERS), key
                assert node.code_version == asset_attributes.code_version(stage.__name__), key
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert "default" not in groups and groups == {group for group, _ in STAGE_ATTRIBUTES.values()}


def test_every_table_asset_documents_its_columns_from_schemas_py() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        columns = graph.get(key).metadata["dagster/column_schema"].columns
        assert columns, key
    entities = {c.name: c for c in column_schema("entities").columns}
    assert entities["classes"].description == "every wdt:P31 class (the triple classes), sorted by QID"
    assert entities["lat"].type == "double"
    dropouts = {c.name: c.description for c in column_schema("entity_dropouts").columns}
    assert dropouts["reason"].startswith("short machine-readable reason")
    assert [c.name for c in column_schema("text_features").columns] == schemas.text_features_schema(1).names
    assert {c.type for c in column_schema("search_index").columns} >= {"list<float>[dim]"}


def test_a_stage_code_version_covers_the_logic_it_uses_and_not_the_world() -> None:
    sources = {p.relative_to(PACKAGE_ROOT).as_posix() for p in imported_sources("mlm_pipeline.assets.classes")}
    assert {"assets/classes.py", "sparql/closure.py", "sparql/client.py", "schemas.py"} <= sources
    assert not any(s.startswith("world/") for s in sources)  # a source, named by the release's identity
    training = {p.relative_to(PACKAGE_ROOT).as_posix() for p in imported_sources("mlm_pipeline.assets.training")}
    assert "model/train.py" in training and "assets/classes.py" not in training  # no other stage's module
