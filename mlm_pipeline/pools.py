"""Concurrency pools: limits that hold across every run on the instance, not just within one.

A pool slot is a step (``dagster.yaml`` gives each pool one slot by default), so two runs
together never query the query service at once (its rule: one query at a time per client),
never download media in two steps at once (each images step keeps to the media limit of two
connections by itself), and never run two encoders at once on a small machine.
Training is left out: a model step's torch threads are set by its config (the quick profile
uses one), so two models can share two cores. A run that dies holding slots gives them back
through ``reclaim_dead_runs`` (called by ``mlm-pipeline main`` and the release sensors).
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.runs import SqliteRunStorage  # no public name: the one-machine storage

WIKIDATA_QUERY = "wikidata_query"
"""Steps that send queries to the SPARQL endpoint (classes, entities)."""
WIKIPEDIA_API = "wikipedia_api"
"""Steps that call the Wikipedia APIs (summaries)."""
WIKIMEDIA_MEDIA = "wikimedia_media"
"""Steps that download from Commons (images)."""
COMPUTE = "compute"
"""Steps that run the image and text encoders (torch uses every core it is given)."""

ALL = (WIKIDATA_QUERY, WIKIPEDIA_API, WIKIMEDIA_MEDIA, COMPUTE)


POOL_LIMIT_WITHOUT_DEFAULT = 1
"""Slots for a pool when the instance's dagster.yaml sets no ``concurrency.pools.default_limit``."""


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
    created = [pool for pool in ALL if pool not in storage.get_concurrency_keys()]
    for pool in created:
        if instance.global_op_concurrency_default_limit is None:
            storage.set_concurrency_slots(pool, POOL_LIMIT_WITHOUT_DEFAULT)
        else:
            storage.initialize_concurrency_limit_to_default(pool)
    return created


# --- slots of runs that died ------------------------------------------------------------------

HOLDING = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING, DagsterRunStatus.SUSPENDED]
"""Statuses of runs whose steps may hold pool slots; any other run's slots are free to take back."""


def reclaim_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark runs whose processes are all gone as failed and free every slot such runs hold;
    returns the ids of the runs marked.

    A run killed without a chance to clean up (``kill -9``, the OOM killer, a closed laptop) stays
    STARTED and keeps the pool slots its steps claimed, so every later run waits for them forever
    ("Step blocked by limit for pool ..."). Dagster's run monitoring cannot see that for runs of
    the default launcher or of ``dagster asset materialize`` (they have no worker health check),
    so the run's own events say which processes ran it (the run worker, each step's process):
    when none of them is alive, the run is dead. Processes are looked up on this machine, so
    only an instance kept on this machine (SQLite under ``DAGSTER_HOME``) is judged.
    """
    if not isinstance(instance.run_storage, SqliteRunStorage):
        return []
    dead = []
    for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING])):
        run = record.dagster_run
        seen = _processes(instance, run.run_id)
        if seen and not any(_alive(pid, at) for pid, at in seen.items()):
            instance.report_run_failed(
                run, f"run {run.run_id}: every process that ran it is gone (pids {sorted(seen)}; killed?); "
                "marked failed so that its pool slots go to the next run")
            dead.append(run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        # Holders first, runs still in progress second: a run that starts in between is then
        # among the latter, never freed while it works.
        holders = storage.get_concurrency_run_ids()
        in_progress = {r.dagster_run.run_id for r in instance.get_run_records(RunsFilter(statuses=HOLDING))}
        for run_id in holders - in_progress:
            storage.free_concurrency_slots_for_run(run_id)
    return dead


def _processes(instance: DagsterInstance, run_id: str) -> dict[int, float]:
    """pid -> when it last spoke, for the run worker and each step process of ``run_id``."""
    seen: dict[int, float] = {}
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.RUN_START, DagsterEventType.STEP_START}):
        pid = entry.dagster_event.pid if entry.dagster_event is not None else None
        if pid is not None:
            seen[pid] = max(seen.get(pid, 0.0), entry.timestamp)
    return seen


def _alive(pid: int, spoke_at: float) -> bool:
    """Whether the process that spoke at ``spoke_at`` still runs: the pid exists, is not a zombie,
    and its process started before then (not a later one that reused the number)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds the pid: assume it is the run's
    started = _started_at(pid)
    return started is None or started <= spoke_at + CLOCK_SLACK_S


CLOCK_SLACK_S = 2.0  # /proc gives boot time in whole seconds and start times in clock ticks


def _started_at(pid: int) -> float | None:
    """Start time (epoch seconds) of a live process from /proc; +inf for a zombie; None where
    /proc cannot tell (another OS), which leaves the pid's existence as the only witness."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    if fields[0] in ("Z", "X"):  # field 3: state; a dead process not yet reaped
        return float("inf")
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in ticks after boot
