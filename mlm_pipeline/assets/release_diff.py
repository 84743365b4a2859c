"""Release diff: the entities added, removed and changed since the previous release.

The previous release is the latest earlier registered ``release`` partition: one still being
built is waited for (so a backfill of two releases gives the diffs a sequential build gives),
one never built is skipped and named. Its tables are read from the paths the Parquet IO manager
recorded for them, so the diff compares against exactly what was stored, wherever that was.
"""

from pathlib import Path

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    MetadataValue,
    RetryRequested,
    RunsFilter,
    asset,
)


from mlm_pipeline.diff import Release, diff_counts, diff_releases, previous_release
from mlm_pipeline.release import RELEASE_PARTITIONS_NAME, release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.shards import StoredTable
from mlm_pipeline.storage import StorageResource


def stored_table(instance: DagsterInstance, asset_name: str, key: str) -> StoredTable | None:
    """The table last materialised for ``asset_name`` and release ``key``; None if never."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset_name), asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    materialization = records[0].asset_materialization
    entry = materialization.metadata.get("path") if materialization else None
    if entry is None:
        raise FileNotFoundError(f"{asset_name} for release {key} was materialised without a recorded path")
    path = Path(str(entry.value))
    if not path.exists():
        raise FileNotFoundError(
            f"{asset_name} for release {key} was stored at {path}, which is gone: "
            f"rematerialise {asset_name} for {key} to compare against it"
        )
    return StoredTable(path)


WAIT_S = 30
"""How often a diff waiting for an earlier release's entities looks again."""
WAIT_RETRIES = 120
"""An hour of waiting: an earlier release's extraction takes minutes, not hours."""


IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
PARTITION_TAG = "dagster/partition"


def releases_being_built(instance: DagsterInstance) -> set[str]:
    """Releases with a run queued or in progress (their entities may appear at any moment)."""
    runs = instance.get_runs(RunsFilter(statuses=IN_PROGRESS))
    return {run.tags[PARTITION_TAG] for run in runs if PARTITION_TAG in run.tags}


@asset(
    partitions_def=release_partitions,
    description="Entities added, removed and changed (coordinates, classes, images, summaries) "
    "against the previous release.",
)
def release_diff(
    context: AssetExecutionContext, storage: StorageResource, entities: StoredTable, summaries: StoredTable
) -> pa.Table:
    key = context.partition_key
    instance = context.instance
    previous = previous_release(
        key,
        instance.get_dynamic_partitions(RELEASE_PARTITIONS_NAME),
        instance.get_materialized_partitions(AssetKey("entities")),
        releases_being_built(instance),
    )
    if previous.wait_for is not None:
        context.log.info(f"release {key}: waiting for release {previous.wait_for}'s entities, which are being built")
        raise RetryRequested(max_retries=WAIT_RETRIES, seconds_to_wait=WAIT_S) from RuntimeError(
            f"release {previous.wait_for} is being built and has no entities yet; "
            f"release_diff for {key} compares with it once it has"
        )
    if previous.skipped:
        context.log.warning(
            f"release {key}: earlier registered release(s) {', '.join(previous.skipped)} were never built; "
            "comparing with the one before them"
        )
    before = None
    summaries_compared = True
    if previous.key is not None:
        old_entities = stored_table(instance, "entities", previous.key)
        assert old_entities is not None  # previous_release only returns materialised releases
        old_summaries = stored_table(instance, "summaries", previous.key)
        summaries_compared = old_summaries is not None
        before = Release(old_entities, old_summaries)
        context.log.info(
            f"release {key}: comparing {entities.num_rows} entities with {previous.key}'s {old_entities.num_rows}"
        )
    else:
        context.log.info(f"release {key}: no earlier release with entities; everything is added")
    diff = diff_releases(Release(entities, summaries), before, previous.key, storage.spill())
    context.add_output_metadata(
        {
            **provenance(release=key),
            "previous_release": MetadataValue.text(previous.key or "none (first release)"),
            "releases_skipped": MetadataValue.json(list(previous.skipped)),
            "summaries_compared": summaries_compared,
            **diff_counts(diff, entities.num_rows),
        }
    )
    return diff
