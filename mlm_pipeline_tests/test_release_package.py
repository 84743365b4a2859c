"""The release package: what a user downloads, loads and must credit.

The tiny world's release is built through its dataset stages in a real Dagster instance and
packaged; the package is then loaded with Hugging Face ``datasets`` and with DuckDB, compared
with the release's own tables, its Croissant file validated with ``mlcroissant``, its manifest
and attribution table checked, and the whole release packaged again in a fresh instance to the
same bytes.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
from dagster import AssetSelection, instance_for_test, load_assets_from_modules, materialize

from mlm_pipeline import checks
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.assets import classes, entities, filtering, geocells, images, package, summaries, versions
from mlm_pipeline.geo.versions import SPLIT_NAMES, VERSIONS
from mlm_pipeline.release_package.attribution import ATTRIBUTION
from mlm_pipeline.release_package.build import MANIFEST, build_package, read_manifest, sha256_of
from mlm_pipeline.release_package.verify import problems
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.run_profiles import run_config_for
from mlm_pipeline.shards import StoredTable, stored_table
from mlm_pipeline.world import build_world
from mlm_pipeline.world.commons_server import NO_AUTHOR, NO_LICENCE, metadata_gap

from mlm_pipeline_tests.conftest import TINY, stage_resources

STAGES = [classes, entities, summaries, images, filtering, geocells, versions, package]
ASSETS = load_assets_from_modules(STAGES)
SOURCE = WikimediaResource(source="embedded", world_size="tiny", world_seed=TINY.seed, world_version=TINY.version)
# The embedded world's profile without its training settings (no model is built here).
RUN_CONFIG = {"ops": {op: c for op, c in run_config_for(SOURCE)["ops"].items() if op in ("geo_cells", "dataset_versions")}}


def build(base: Path, release: str) -> Path:
    """Materialise the dataset stages and the package for ``release`` in a fresh instance."""
    data = base / "data"
    (base / "home").mkdir(parents=True)
    with instance_for_test(temp_dir=str(base / "home")) as instance:
        instance.add_dynamic_partitions("release", [release])
        result = materialize(
            [*ASSETS, checks.release_package_sound],
            partition_key=release,
            instance=instance,
            selection=AssetSelection.assets("release_package").upstream().required_multi_asset_neighbors(),
            resources=stage_resources(data, SOURCE),
            run_config=RUN_CONFIG,
        )
        assert result.success
        evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert [(e.check_name, e.passed) for e in evaluations] == [("checksums_and_attribution", True)]
    return data


@pytest.fixture(scope="module")
def release() -> str:
    return build_world(TINY).release


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, release: str) -> Path:
    return build(tmp_path_factory.mktemp("one"), release)


@pytest.fixture(scope="module")
def folder(data: Path, release: str) -> Path:
    return data / package.PACKAGES / release


def stored(data: Path, name: str, release: str) -> pa.Table:
    return stored_table(name, release, data).read()


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``datasets`` offline, with its caches in the test's folder; the cache_dir to load with."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return str(tmp_path / "cache")


def test_package_loads_with_hugging_face_datasets_with_the_assets_rows_and_images(
    folder: Path, data: Path, release: str, hf_cache: str
) -> None:
    from datasets import Image, List, load_dataset
    from PIL import Image as PILImage

    splits = stored(data, "splits", release).to_pylist()
    filtered = stored(data, "images_filtered", release)
    blobs = BlobStore.of_release(data, release)
    content = {(q, name): blobs.get(sha) for q, name, sha in zip(*(filtered[c].to_pylist() for c in ("qid", "file_name", "sha256")))}
    for version in VERSIONS:
        table = stored(data, version, release)
        loaded = load_dataset(str(folder), version, cache_dir=hf_cache)
        assert sorted(loaded) == sorted(SPLIT_NAMES)
        assert loaded["train"].features["images"] == List(Image())
        for split in SPLIT_NAMES:
            expected = sorted(s["qid"] for s in splits if s["version"] == version and s["split"] == split)
            assert loaded[split]["qid"] == expected  # sorted by entity within the split
        rows = {r["qid"]: r for r in table.to_pylist()}
        for split in SPLIT_NAMES:
            for row in loaded[split].select(range(min(5, loaded[split].num_rows))):
                truth = rows[row["qid"]]
                assert (row["lat"], row["lon"], row["cell"], row["country_code"]) == (
                    truth["lat"], truth["lon"], truth["cell"], truth["country_code"])
                assert len(row["images"]) == truth["n_images"] and len(row["summaries"]) == truth["n_summaries"]
                assert [s["lang"] for s in row["summaries"]] == truth["languages"]
                for image, info in zip(row["images"], row["image_files"]):
                    assert isinstance(image, PILImage.Image) and image.size[0] > 0
                    if version != "mlm":  # MLM also holds SVG renderings, which the filter drops
                        assert image.size == PILImage.open(io.BytesIO(content[(row["qid"], info["file_name"])])).size


def test_package_reads_with_duckdb_and_counts_equal_table_2(folder: Path, data: Path, release: str) -> None:
    stats = {r["measure"]: r for r in stored(data, "dataset_stats", release).to_pylist()}
    with duckdb.connect() as con:
        for version in VERSIONS:
            shards = str(folder / "data" / version / "*.parquet")
            entities, images, summaries = con.execute(
                f"SELECT count(*), sum(len(images)), sum(len(summaries)) FROM read_parquet('{shards}')").fetchone()
            assert (entities, images, summaries) == tuple(stats[m][version] for m in ("entities", "images", "summaries"))
            per_split = dict(con.execute(
                f"SELECT regexp_extract(filename, '/(train|val|test)-', 1), count(*) "
                f"FROM read_parquet('{shards}', filename = true) GROUP BY 1").fetchall())
            assert per_split == {s: stats[s][version] for s in SPLIT_NAMES if stats[s][version]}
    # Each summary names the article revision it was taken from, as the summaries table does.
    summaries = stored(data, "summaries", release)
    revisions = {(q, lang): r for q, lang, r in zip(*(summaries[c].to_pylist() for c in ("qid", "lang", "revision")))}
    with duckdb.connect() as con:
        packaged = con.execute(
            f"SELECT qid, s.lang, s.revision FROM (SELECT qid, unnest(summaries) AS s "
            f"FROM read_parquet('{folder / 'data' / 'mlm' / '*.parquet'}'))").fetchall()
    assert packaged and all(revisions[(q, lang)] == r is not None for q, lang, r in packaged)


def test_croissant_validates_and_describes_every_file_with_its_sha256(folder: Path) -> None:
    import mlcroissant as mlc

    dataset = mlc.Dataset(jsonld=str(folder / "croissant.json"))
    assert dataset.metadata.version and [r.name for r in dataset.metadata.record_sets] == ["splits", *VERSIONS]
    document = json.loads((folder / "croissant.json").read_text())
    assert document["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    objects = {d["contentUrl"]: d["sha256"] for d in document["distribution"] if d["@type"] == "cr:FileObject"}
    listed = read_manifest(folder)
    assert objects == {path: sha for path, sha in listed.items() if path != "croissant.json"}
    records = list(dataset.records("mlm_irle_gr"))
    assert len(records) == pq.ParquetDataset(folder / "data" / "mlm_irle_gr").read(columns=["qid"]).num_rows


def test_every_image_has_licence_and_attribution_or_a_reason(folder: Path) -> None:
    table = pv.read_csv(folder / "attribution.csv",
                        convert_options=pv.ConvertOptions(column_types=ATTRIBUTION, strings_can_be_null=True))
    rows = table.to_pylist()
    statuses = {r["file_name"]: r["status"] for r in rows}
    # The embedded Commons leaves some pages without a licence or an author: they are listed so.
    assert {statuses[n] for n in statuses if metadata_gap(n) == NO_LICENCE} == {"no_licence"}
    assert {statuses[n] for n in statuses if metadata_gap(n) == NO_AUTHOR} <= {"no_author", "ok"}
    assert "no_author" in statuses.values()
    for row in rows:
        if row["status"] == "ok":
            assert row["license"] and (row["attribution"] or row["attribution_required"] is False)
        else:
            assert row["reason"]
        assert len(row["commons_sha1"]) == 40 and row["description_url"].endswith(row["file_name"].replace(" ", "_")) \
            or "%" in row["description_url"]
    assert problems(folder) == []
    card = (folder / "README.md").read_text()
    assert "no single licence" in card and "CC0 1.0" in card and "CC BY-SA 4.0" in card


def test_manifest_matches_the_files_and_a_changed_file_is_named(folder: Path, tmp_path: Path) -> None:
    listed = read_manifest(folder)
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(listed) == files and all(sha256_of(folder / p) == sha for p, sha in listed.items())
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "LICENSE.md").write_text("All rights reserved.\n")
    (copy / "extra.txt").write_text("x")
    assert problems(copy) == [("LICENSE.md", "sha256_differs"), ("extra.txt", "unlisted")]


def test_card_header_has_one_config_per_version_with_its_splits(folder: Path) -> None:
    import yaml

    text = (folder / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "other" and header["language"] == ["en", "de", "fr"]
    assert [c["config_name"] for c in header["configs"]] == list(VERSIONS)
    for config in header["configs"]:
        assert [d["split"] for d in config["data_files"]] == list(SPLIT_NAMES)
    assert "## Table 2" in text and "figure2_entities_by_continent.png" in text


def test_packaging_twice_gives_the_same_bytes(folder: Path, release: str, tmp_path: Path) -> None:
    again = build(tmp_path, release) / package.PACKAGES / release
    assert read_manifest(again) == read_manifest(folder)
    assert (again / MANIFEST).read_bytes() == (folder / MANIFEST).read_bytes()


def test_svg_documents_in_mlm_are_named_in_the_card_with_how_to_read_them(
    folder: Path, data: Path, release: str, tmp_path: Path, hf_cache: str
) -> None:
    """A person's own SVG files reach ``mlm`` as SVG bytes (Commons would serve PNG renderings)."""
    from datasets import Image, List, load_dataset

    assert "SVG document" not in (folder / "README.md").read_text(encoding="utf-8")  # Commons: renderings only
    tables = dict(package.stored_tables(data, release))
    images = tables["images"].read()
    mlm_qids = set(stored(data, "mlm", release).column("qid").to_pylist())
    names = images.column("file_name").to_pylist()
    row = next(i for i, (q, n) in enumerate(zip(images.column("qid").to_pylist(), names))
               if n.lower().endswith(".svg") and q in mlm_qids)  # a rendering the filter dropped
    formats = images.column("format").to_pylist()
    formats[row] = "SVG"
    own = tmp_path / "images.parquet"
    pq.write_table(images.set_column(images.schema.get_field_index("format"), "format", pa.array(formats)), own)
    tables["images"] = StoredTable(own)
    drawing = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="6"/>'
    blobs = BlobStore.of_release(data, release)
    target = tmp_path / "own" / release
    build_package(tables, lambda image: drawing if image["file_name"] == names[row] else blobs.get(image["sha256"]),
                  release, "own files", ["en"], {}, target)

    card_text = (target / "README.md").read_text(encoding="utf-8")
    assert "**1 image file is an SVG document**" in card_text
    advice = 'cast_column("images", List(Image(decode=False)))'
    assert advice in card_text
    loaded = load_dataset(str(target), "mlm", cache_dir=hf_cache)
    raw = [image["bytes"] for split in SPLIT_NAMES
           for images_of in loaded[split].cast_column("images", List(Image(decode=False)))["images"]
           for image in images_of]
    assert raw.count(drawing) == 1


def test_a_missing_table_is_named_and_an_earlier_package_is_kept(
    folder: Path, data: Path, release: str, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"release_package: entities has no stored table at .*materialise it"):
        package.stored_tables(tmp_path, release)
    target = tmp_path / "packages" / release
    shutil.copytree(folder, target)
    tables = package.stored_tables(data, release)
    with pytest.raises(FileNotFoundError, match="is not stored"):  # the image bytes are gone
        build_package(tables, lambda image: BlobStore(tmp_path / "no blobs").get(image["sha256"]), release, "test",
                      ["en"], {}, target)
    assert read_manifest(target) == read_manifest(folder) and problems(target) == []
    assert sorted(p.name for p in target.parent.iterdir()) == [release]  # no scratch left behind
