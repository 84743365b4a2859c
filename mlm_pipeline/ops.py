"""Day-to-day operation: notice a new data version at the source and build a release for it.

A release is named by the source's data version (``<http://www.wikidata.org>
schema:dateModified``): its date, or for live Wikidata, whose data version changes daily, the
period it falls in (``release_cadence``: the week's Monday by default, or its ISO week), so
"is there a new release?" is one small SPARQL query and a live source gets one release a week. The
sensor asks it often and stays quiet while the answer is unchanged; the schedule asks it once a
week as a safety net when the sensor is switched off. Both register the release as a ``release``
partition and request one run of the whole graph for it, keyed by the release, so asking twice
never builds a release twice. Before requesting a run they create the concurrency pools'
slots (``mlm_pipeline.pools``), which is what makes two runs share Wikimedia's limits, and
take back the slots of runs that died; ``dead_run_sensor`` does that every minute as well, so a
killed run never blocks the runs launched after it from the UI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Collection

from dagster import (
    DagsterInstance,
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from mlm_pipeline import pools
from mlm_pipeline.partitions import RELEASE_PARTITIONS_NAME, release_partitions
from mlm_pipeline.resources import Cadence, ConfigError, WikimediaResource
from mlm_pipeline.pools import reclaim_dead_runs
from mlm_pipeline.run_profiles import run_config_for
from mlm_pipeline.sparql.queries import fetch_dataset_version, release_key

RELEASE_JOB = "mlm_release"
"""The job in definitions.py that builds every asset of one release."""

CRON_ENV = "MLM_RELEASE_CRON"
DEFAULT_CRON = "0 3 * * 1"
"""Mondays 03:00 UTC: once a week, like Wikidata's dumps, at a quiet hour for the services."""
SENSOR_INTERVAL_ENV = "MLM_RELEASE_SENSOR_INTERVAL_S"
DEFAULT_SENSOR_INTERVAL_S = 3600
"""An hour: a new release takes far longer than that to build, and each look costs a query."""

POOL_LIMIT_WITHOUT_DEFAULT = 1
"""Slots for a pool when the instance's dagster.yaml sets no ``concurrency.pools.default_limit``."""

TRIGGER_TAG = "mlm/trigger"
VERSION_TAG = "mlm/dataset_version"


@dataclass(frozen=True)
class Refresh:
    """What the source serves now and whether that asks for a new release."""

    dataset_version: str
    key: str
    skip_reason: str | None  # None: register the release and build it

    @property
    def is_new(self) -> bool:
        return self.skip_reason is None


def plan_refresh(
    dataset_version: str, registered: Collection[str], last_seen: str | None = None, cadence: Cadence = "daily"
) -> Refresh:
    """Decide from the served version, the releases already registered and the last version
    seen (the sensor's cursor): a version seen before, or a release registered already (by the
    CLI, the schedule or an earlier tick, or, at a weekly cadence, for an earlier day of the
    same week), needs nothing."""
    key = release_key(dataset_version, cadence)
    if dataset_version == last_seen:
        return Refresh(dataset_version, key, f"dataset version {dataset_version} unchanged")
    if key in registered:
        return Refresh(dataset_version, key, f"release {key} (dataset version {dataset_version}) already registered")
    return Refresh(dataset_version, key, None)


def served_version(wikimedia: WikimediaResource) -> str:
    """Ask the configured source; for the embedded world this starts (and stops) its servers."""
    with wikimedia.open() as endpoints:
        return fetch_dataset_version(endpoints)


def ensure_pools(instance: DagsterInstance) -> list[str]:
    """Create the pools' slots before any run needs them; returns the pools created.

    Dagster creates a pool's slots lazily when a step first claims it, and two runs doing that
    at the same moment on SQLite storage can both get in. Creating them here, in the one
    process that requests runs, closes that window. Limits already set (by dagster.yaml's
    default or ``dagster instance concurrency set``) are left alone.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    created = [pool for pool in pools.ALL if pool not in storage.get_concurrency_keys()]
    for pool in created:
        if instance.global_op_concurrency_default_limit is None:
            storage.set_concurrency_slots(pool, POOL_LIMIT_WITHOUT_DEFAULT)
        else:
            storage.initialize_concurrency_limit_to_default(pool)
    return created


def _run_request(refresh: Refresh, trigger: str, wikimedia: WikimediaResource) -> RunRequest:
    return RunRequest(
        run_key=refresh.key,
        partition_key=refresh.key,
        job_name=RELEASE_JOB,
        run_config=run_config_for(wikimedia),
        tags={TRIGGER_TAG: trigger, VERSION_TAG: refresh.dataset_version},
    )


def sensor_interval() -> int:
    raw = os.environ.get(SENSOR_INTERVAL_ENV, str(DEFAULT_SENSOR_INTERVAL_S))
    if not raw.isdigit() or int(raw) < 30:
        raise ConfigError(f"{SENSOR_INTERVAL_ENV}={raw!r} must be a whole number of seconds >= 30")
    return int(raw)


@sensor(
    name="new_release_sensor",
    job_name=RELEASE_JOB,
    minimum_interval_seconds=sensor_interval(),
    default_status=DefaultSensorStatus.RUNNING,
    description="Asks the source for its data version; a new one becomes a release partition and a run.",
)
def new_release_sensor(context: SensorEvaluationContext, wikimedia: WikimediaResource) -> SensorResult:
    refresh = plan_refresh(
        served_version(wikimedia),
        context.instance.get_dynamic_partitions(RELEASE_PARTITIONS_NAME),
        context.cursor,
        wikimedia.cadence(),
    )
    if not refresh.is_new:
        return SensorResult(skip_reason=SkipReason(refresh.skip_reason), cursor=refresh.dataset_version)
    ensure_pools(context.instance)
    reclaim_dead_runs(context.instance)
    context.log.info(f"new dataset version {refresh.dataset_version}: release {refresh.key}")
    return SensorResult(
        run_requests=[_run_request(refresh, "sensor", wikimedia)],
        dynamic_partitions_requests=[release_partitions.build_add_request([refresh.key])],
        cursor=refresh.dataset_version,
    )


def release_schedule(cron: str) -> ScheduleDefinition:
    """The weekly refresh; schedules cannot return partition requests, so it registers the
    release itself before asking for the run."""

    def refresh_release(
        context: ScheduleEvaluationContext, wikimedia: WikimediaResource
    ) -> RunRequest | SkipReason:
        refresh = plan_refresh(
            served_version(wikimedia), context.instance.get_dynamic_partitions(RELEASE_PARTITIONS_NAME),
            cadence=wikimedia.cadence(),
        )
        if not refresh.is_new:
            return SkipReason(refresh.skip_reason)
        ensure_pools(context.instance)
        reclaim_dead_runs(context.instance)
        context.instance.add_dynamic_partitions(RELEASE_PARTITIONS_NAME, [refresh.key])
        context.log.info(f"new dataset version {refresh.dataset_version}: release {refresh.key}")
        return _run_request(refresh, "schedule", wikimedia)

    try:
        return schedule(
            cron_schedule=cron,
            name="weekly_release_refresh",
            job_name=RELEASE_JOB,
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.RUNNING,
            description="Once a week, the same refresh as new_release_sensor.",
        )(refresh_release)
    except DagsterInvalidDefinitionError as error:
        raise ConfigError(f"{CRON_ENV}={cron!r} is not a valid cron schedule: {error}") from error


@sensor(
    name="dead_run_sensor",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks runs whose processes died (kill -9, out of memory) as failed and frees their pool slots.",
)
def dead_run_sensor(context: SensorEvaluationContext) -> SkipReason:
    dead = reclaim_dead_runs(context.instance)
    for run_id in dead:
        context.log.warning(f"run {run_id} died (its processes are gone): marked failed, its pool slots freed")
    return SkipReason(f"reclaimed the slots of {len(dead)} dead run(s)" if dead else "no dead runs")


sensors = [new_release_sensor, dead_run_sensor]
schedules = [release_schedule(os.environ.get(CRON_ENV, DEFAULT_CRON))]
