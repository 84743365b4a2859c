"""Stage 11: the release as a publishable package (paper section 4: FAIR, with licences).

``release_package`` writes ``<data dir>/packages/<release>/`` (``release_package.build``
describes the folder) and stores its manifest, one row per file with size and sha256, as the
asset's table. It reads the release's tables where they are stored, a batch at a time, instead
of taking them as inputs, so its memory does not grow with the release.
"""


from pathlib import Path
from typing import Any

import pyarrow as pa
from dagster import AssetExecutionContext, AssetKey, Config, MetadataValue, Output, asset
from pydantic import Field

from mlm_pipeline.assets.summaries import SummariesConfig
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import package_versions, provenance, recorded_config, recorded_metadata
from mlm_pipeline.release_package.build import INPUTS, PackagePlan, build_package
from mlm_pipeline.release_package.rows import ReadImage
from mlm_pipeline.shards import StoredTable, stored_table
from mlm_pipeline.storage import StorageResource

PACKAGES = "packages"
RECORDED = ("settlement_classes", *INPUTS)
"""Assets whose recorded provenance the package carries."""


class PackageConfig(Config):
    max_shard_mb: int = Field(500, ge=1, description="largest Parquet shard, about (images and texts)")
    rows_per_group: int = Field(100, ge=1, description="entities per Parquet row group (the hub's viewer reads one)")
    batch_rows: int = Field(256, ge=1, description="entities joined and held at a time")

    def plan(self) -> PackagePlan:
        return PackagePlan(max_shard_bytes=self.max_shard_mb << 20, rows_per_group=self.rows_per_group,
                           batch_rows=self.batch_rows)


def stored_tables(root: Path, release: str) -> dict[str, StoredTable]:
    """The release's tables the package is made from, as stored (read in place, in batches)."""
    tables = {}
    for name in INPUTS:
        try:
            tables[name] = stored_table(name, release, root)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"release_package: {name} has {error}: materialise it first") from None
    return tables


def image_reader(storage: StorageResource, release: str) -> ReadImage:
    """A packaged image's bytes from the release's blob store, by the sha256 its row names."""
    blobs = storage.blobs(release)
    return lambda image: blobs.get(image["sha256"])


EMBEDDED = "embedded world"


def _recorded(context: AssetExecutionContext, release: str) -> dict[str, dict[str, Any]]:
    """What each input's materialisation recorded about where it came from. The embedded
    world's endpoint is left out: a loopback port that changes every run says nothing (its
    ``source`` names the world), and would make the same release package to other bytes."""
    assets = {}
    for name in RECORDED:
        metadata = recorded_metadata(context.instance, name, release) or {}
        assets[name] = {k.removeprefix("provenance/"): v.value for k, v in sorted(metadata.items())
                        if k.startswith("provenance/") and k not in ("provenance/packages", "provenance/python")
                        or k == "query_labels"}
    if str(assets["entities"].get("source", "")).startswith(EMBEDDED):
        for recorded in assets.values():
            recorded.pop("endpoint", None)
    return assets


@asset(
    deps=[AssetKey(name) for name in INPUTS],
    partitions_def=release_partitions,
    description="The release as a dataset package: Parquet shards per version and split (Hugging Face Image "
    "layout), dataset card, Croissant 1.1, attribution per image, licence per part, provenance, SHA256SUMS. "
    "The table lists the package's files with their sha256.",
)
def release_package(context: AssetExecutionContext, config: PackageConfig, storage: StorageResource) -> Output[pa.Table]:
    release = context.partition_key
    root = storage.root()
    summaries = recorded_config(context.instance, "summaries", release, SummariesConfig) or SummariesConfig()
    recorded = _recorded(context, release)
    # The source the release was extracted from, as its entities recorded it (not the one
    # configured now, which may have moved on).
    source = str(recorded["entities"].get("source", "unknown source"))
    facts = {
        "release": release,
        "source": source,
        "pipeline": package_versions(),
        "assets": recorded,
        "columns": {
            "image_files.sha256": "sha256 of the packaged thumbnail",
            "attribution.csv:commons_sha1": "sha1 of the original file on Commons (imageinfo)",
        },
    }
    packaged = build_package(
        stored_tables(root, release), image_reader(storage, release), release, source,
        list(summaries.languages), facts, storage.folder(PACKAGES) / release, config.plan(),
    )
    context.log.info(f"release_package: {packaged.manifest.num_rows} files in {packaged.folder}")
    return Output(
        packaged.manifest,
        metadata={
            **provenance(release=release, config=config),
            "folder": MetadataValue.path(str(packaged.folder)),
            "files": packaged.manifest.num_rows,
            "bytes": sum(packaged.manifest.column("bytes").to_pylist()),
            "entities": MetadataValue.json(packaged.split_rows),
            "images": MetadataValue.json(packaged.images),
            "attribution": MetadataValue.json(packaged.attribution),
        },
    )
