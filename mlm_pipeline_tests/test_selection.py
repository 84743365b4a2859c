"""Any asset or range of assets can be materialised on its own, multi-asset members included."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, AssetsDefinition, AssetSelection, materialize

from mlm_pipeline import checks
from mlm_pipeline.definitions import assets as ASSETS, defs
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.run_profiles import run_config_for
from mlm_pipeline.shards import release_folder
from mlm_pipeline.world import World
from mlm_pipeline_tests.conftest import stage_resources

DATASET_STAGES = "*dataset_stats,*version_dropouts"  # as the README selects the dataset, in the CLI's syntax


def test_the_dataset_stages_build_without_the_rest_of_their_multi_assets(
    tmp_path: Path, tiny_world: World, dagster_instance
) -> None:
    graph = defs.resolve_asset_graph()
    wanted = AssetSelection.from_coercible(DATASET_STAGES.split(",")).resolve(graph)  # as `dagster asset materialize`
    # The selection takes some outputs of multi-assets and leaves others (dropout tables, ...).
    assert {AssetKey("mlm"), AssetKey("images_filtered")} <= wanted
    assert AssetKey("version_dropouts") in wanted
    assert not wanted & {AssetKey("image_dropouts"), AssetKey("image_failures"), AssetKey("summary_dropouts")}

    dagster_instance.add_dynamic_partitions("release", [tiny_world.release])
    source = WikimediaResource(source="embedded", world_size="tiny")
    data = tmp_path / "data"
    assets = ASSETS
    steps = {a.node_def.name for a in assets if isinstance(a, AssetsDefinition) and set(a.keys) & wanted}
    profile = run_config_for(source)["ops"]  # the source's profile, for the steps that run
    result = materialize(
        [*assets, *checks.asset_checks],
        selection=list(wanted),
        partition_key=tiny_world.release,
        instance=dagster_instance,
        resources=stage_resources(data, source),
        run_config={"ops": {step: config for step, config in profile.items() if step in steps}},
    )
    assert result.success
    built = {event.asset_key for event in result.get_asset_materialization_events()}
    assert built == wanted
    stored = {path.parent.name for path in data.glob("*/release=*")}
    assert stored == {key.to_user_string() for key in wanted}
    assert release_folder(data, "dataset_stats", tiny_world.release).is_dir()
