"""Day-to-day operation: notice a new data version at the source and build a release for it.

A release is named by the source's data version (``<http://www.wikidata.org>
schema:dateModified``): its date, or for live Wikidata, whose data version changes daily, the
period it falls in (``release_cadence``: the week's Monday by default, or its ISO week), so
"is there a new release?" is one small SPARQL query and a live source gets one release a week. The
sensor asks it often and stays quiet while the answer is unchanged; the schedule asks it once a
week as a safety net when the sensor is switched off. Both register the release as a ``release``
partition (through ``mlm_pipeline.release``, as the CLI does) and request one run of the whole
graph for it, keyed by the release, so asking twice never builds a release twice.
``dead_run_sensor`` takes back the pool slots of runs that died every minute as well, so a
killed run never blocks the runs launched after it from the UI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Collection

from dagster import (
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

from mlm_pipeline.pools import reclaim_dead_runs
from mlm_pipeline.release import RELEASE_PARTITIONS_NAME, prepare, register, release_partitions, served_version
from mlm_pipeline.endpoints import ConfigError
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.run_profiles import run_config_for
from mlm_pipeline.sparql.queries import Cadence, release_key

RELEASE_JOB = "mlm_release"
"""The job in definitions.py that builds every asset of one release."""

CRON_ENV = "MLM_RELEASE_CRON"
DEFAULT_CRON = "0 3 * * 1"
"""Mondays 03:00 UTC: once a week, like Wikidata's dumps, at a quiet hour for the services."""
SENSOR_INTERVAL_ENV = "MLM_RELEASE_SENSOR_INTERVAL_S"
DEFAULT_SENSOR_INTERVAL_S = 3600
"""An hour: a new release takes far longer than that to build, and each look costs a query."""

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


def _run_request(refresh: Refresh, trigger: str, wikimedia: WikimediaResource) -> RunRequest:
    return RunRequest(
        run_key=refresh.key,
        partition_key=refresh.key,
        job_name=RELEASE_JOB,
        run_config=run_config_for(wikimedia),
        tags={TRIGGER_TAG: trigger, VERSION_TAG: refresh.dataset_version},
    )


def _announce(context: SensorEvaluationContext | ScheduleEvaluationContext, refresh: Refresh, dead: list[str]) -> None:
    for run_id in dead:
        context.log.warning(f"run {run_id} died (its processes are gone): marked failed, its pool slots freed")
    context.log.info(f"new dataset version {refresh.dataset_version}: release {refresh.key}")


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
    _announce(context, refresh, prepare(context.instance))
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
        _announce(context, refresh, register(context.instance, refresh.key))
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
