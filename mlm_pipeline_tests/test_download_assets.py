"""The download stages as Dagster assets on the tiny embedded world: tables, accounting, metadata."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from dagster import AssetSpec, materialize

from mlm_pipeline import schemas
from mlm_pipeline.assets import filtering, images, summaries
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.parquet_io import ParquetIOManager
from mlm_pipeline.release import release_partitions
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.shards import release_folder, store_table, stored_table
from mlm_pipeline.storage import StorageResource
from mlm_pipeline.world import World

ENTITIES = AssetSpec("entities", partitions_def=release_partitions)  # stored by the entities stage
FAST = {"backoff_s": 0.01, "backoff_max_s": 0.1, "timeout_s": 2.0, "timeout_hold_s": 2.0, "progress_every_s": 0.5}


def stored_entities(world: World, base: Path) -> pa.Table:
    """What the entities stage stores for this world (its truth), where the IO manager reads it."""
    table = pa.Table.from_pylist(list(world.truth.entities.values()), schema=schemas.ENTITIES)
    store_table(base, "entities", world.release, schemas.sort_table(table, "entities"))
    return table


def run_stages(world: World, base: Path, instance: object, selection: list[str], config: dict | None = None,
               faults: str = "") -> object:
    instance.add_dynamic_partitions(release_partitions.name, [world.release])  # type: ignore[attr-defined]
    return materialize(
        [ENTITIES, summaries.summaries, images.images, filtering.images_filtered],
        selection=selection,
        partition_key=world.release,
        instance=instance,
        resources={
            "io_manager": ParquetIOManager(base_dir=str(base)),
            "wikimedia": WikimediaResource(source="embedded", world_size="tiny", world_faults=faults),
            "storage": StorageResource(base_dir=str(base)),
        },
        run_config={"ops": config or {}},
    )


def read(base: Path, name: str, release: str) -> pa.Table:
    return stored_table(name, release, base).read()


def test_summaries_asset_accounts_for_every_sitelink(tiny_world: World, tmp_path: Path, dagster_instance: object) -> None:
    entities = stored_entities(tiny_world, tmp_path)
    result = run_stages(tiny_world, tmp_path, dagster_instance, ["summaries", "summary_dropouts"],
                        {"summaries": {"config": FAST}})
    assert result.success
    table = read(tmp_path, "summaries", tiny_world.release)
    dropouts = read(tmp_path, "summary_dropouts", tiny_world.release)
    assert table.schema == schemas.SUMMARIES and dropouts.schema == schemas.DROPOUTS
    wanted = sum(1 for row in entities.to_pylist() for lang in ("en", "de", "fr") if row[f"title_{lang}"])
    assert table.num_rows + dropouts.num_rows == wanted
    assert table.equals(schemas.sort_table(table, "summaries"))
    meta = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("summaries")}
    assert meta["summaries"]["summaries"].value == table.num_rows
    assert meta["summary_dropouts"]["dropouts_by_reason"].value == {"missing_page": dropouts.num_rows}
    assert meta["summaries"]["requests_per_item"].value < 0.1  # 20 titles a request, not one
    # Progress is in the run's log: counts and rates, from start to end.
    lines = [e.user_message for e in dagster_instance.all_logs(result.run_id) if "summaries: " in e.user_message]
    assert len(lines) >= 2 and "(100.0%)" in lines[-1] and "/s, ETA" in lines[-1]
    # Staged under the storage folder for this release and source, named by hashes only.
    (source,) = (tmp_path / "staging" / tiny_world.release).iterdir()
    (limits,) = (source / "summaries").iterdir()  # one folder per size limit (it decides too_large)
    staged = list(limits.iterdir())
    assert staged and all(p.name.split("-", 1)[0].isdigit() for p in staged)


def test_images_and_filter_assets_account_for_every_file(tiny_world: World, tmp_path: Path,
                                                         dagster_instance: object) -> None:
    entities = stored_entities(tiny_world, tmp_path)
    result = run_stages(tiny_world, tmp_path, dagster_instance,
                        ["images", "image_failures", "images_filtered", "image_dropouts"],
                        {"images": {"config": FAST}})
    assert result.success
    release = tiny_world.release
    table, failures = read(tmp_path, "images", release), read(tmp_path, "image_failures", release)
    kept, dropouts = read(tmp_path, "images_filtered", release), read(tmp_path, "image_dropouts", release)
    assert table.schema == kept.schema == schemas.IMAGES and dropouts.schema == failures.schema == schemas.DROPOUTS
    wanted = {(row["qid"], name) for row in entities.to_pylist() for name in row["images"]}
    downloaded = set(zip(table["qid"].to_pylist(), table["file_name"].to_pylist()))
    assert downloaded | set(zip(failures["qid"].to_pylist(), failures["item"].to_pylist())) == wanted
    # Stage 4 splits stage 3 without loss: SVG files (Commons serves them as PNG renderings) go.
    left = set(zip(kept["qid"].to_pylist(), kept["file_name"].to_pylist()))
    removed = dict(zip(zip(dropouts["qid"].to_pylist(), dropouts["item"].to_pylist()), dropouts["reason"].to_pylist()))
    assert left | set(removed) == downloaded and not left & set(removed)
    svg = {pair for pair in downloaded if tiny_world.files[pair[1]].format == "svg"}
    assert svg and {pair for pair, reason in removed.items() if reason == "svg"} == svg
    meta = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("images_filtered")}
    assert meta["images_filtered"]["svg"].value == len(svg)
    assert meta["images_filtered"]["kept"].value == kept.num_rows
    assert meta["images_filtered"]["entities_left_without_image"].value == len(tiny_world.truth.svg_only)
    assert all(url.startswith(images.EMBEDDED_COMMONS + "/w/") for url in table["url"].to_pylist())
    # Each thumbnail's bytes are stored once for the release: both tables refer to the same files.
    blobs = BlobStore.of_release(tmp_path, release)
    stored = {p.name: p.stat().st_size for p in blobs.root.glob("*/*")}
    assert set(stored) == set(table["sha256"].to_pylist()) >= set(kept["sha256"].to_pylist())
    assert all(blobs.get(sha) for sha in kept["sha256"].to_pylist())
    tables = sum(p.stat().st_size for name in ("images", "images_filtered")
                 for p in release_folder(tmp_path, name, release).iterdir())
    assert tables < 0.2 * sum(stored.values())  # the tables hold references, not bytes


def test_rematerialising_from_scratch_gives_the_same_bytes(tiny_world: World, tmp_path_factory: pytest.TempPathFactory,
                                                           dagster_instance: object) -> None:
    entities = pa.Table.from_pylist(list(tiny_world.truth.entities.values()), schema=schemas.ENTITIES).slice(0, 60)
    stored = []
    for attempt in ("first", "second"):  # new servers (new ports), new staging, same release
        base = tmp_path_factory.mktemp(attempt)
        store_table(base, "entities", tiny_world.release, schemas.sort_table(entities, "entities"))
        assert run_stages(tiny_world, base, dagster_instance,
                          ["summaries", "summary_dropouts", "images", "image_failures"],
                          {"summaries": {"config": FAST}, "images": {"config": FAST}}).success
        stored.append({path.relative_to(base).as_posix(): path.read_bytes()
                       for name in ("summaries", "summary_dropouts", "images", "image_failures", "blobs")
                       for path in sorted((base / name).rglob("*")) if path.is_file()})
    assert stored[0] == stored[1]
