"""Wikimedia's limits hold across runs: the instance config gives each pool one slot, every
stage that talks to Wikimedia claims its pool, and two runs in two processes really do wait."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from dagster import AssetsDefinition, DagsterInstance, DagsterRunStatus, build_sensor_context, instance_for_test

from mlm_pipeline import automation, pools
from mlm_pipeline.definitions import defs
from mlm_pipeline.shards import stored_table
from mlm_pipeline.world import World

ROOT = Path(__file__).resolve().parent.parent

EXPECTED_POOLS = {
    "settlement_classes": pools.WIKIDATA_QUERY,
    "entities": pools.WIKIDATA_QUERY,
    "summaries": pools.WIKIPEDIA_API,
    "images": pools.WIKIMEDIA_MEDIA,
}


def project_instance_config() -> dict:
    return yaml.safe_load((ROOT / "dagster.yaml").read_text())


def test_project_instance_gives_every_pool_one_slot(tmp_path) -> None:
    with instance_for_test(overrides=project_instance_config(), temp_dir=str(tmp_path)) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "op"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        # The daemon fails runs that never start and frees finished runs' slots; dead STARTED
        # runs are pools.reclaim_dead_runs' business (the default launcher has no health check).
        assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 60
    assert project_instance_config()["telemetry"] == {"enabled": False}


def test_every_stage_that_talks_to_wikimedia_claims_its_pool() -> None:
    claimed = {}
    for assets_def in defs.assets:
        if isinstance(assets_def, AssetsDefinition) and "wikimedia" in assets_def.required_resource_keys:
            for key in assets_def.keys:
                claimed[key.to_user_string()] = assets_def.node_def.pool
    assert {name: pool for name, pool in claimed.items() if name in EXPECTED_POOLS} == EXPECTED_POOLS
    assert all(pool in pools.ALL for pool in claimed.values()), claimed


def test_ensure_pools_creates_missing_pools_once_and_keeps_set_limits(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    with instance_for_test(overrides=project_instance_config(), temp_dir=str(tmp_path / "a")) as instance:
        instance.event_log_storage.set_concurrency_slots(pools.WIKIMEDIA_MEDIA, 3)
        assert sorted(pools.ensure_pools(instance)) == sorted({*pools.ALL} - {pools.WIKIMEDIA_MEDIA})
        assert pools.ensure_pools(instance) == []
        slots = {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in pools.ALL}
        assert slots == {pool: 3 if pool == pools.WIKIMEDIA_MEDIA else 1 for pool in pools.ALL}
    (tmp_path / "b").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "b")) as instance:  # no default limit configured
        assert instance.global_op_concurrency_default_limit is None
        pools.ensure_pools(instance)
        assert {instance.event_log_storage.get_concurrency_info(p).slot_count for p in pools.ALL} == {1}


PROBE = textwrap.dedent(
    """
    import json, os, sys, time
    from dagster import DagsterInstance, asset, materialize

    @asset(pool=sys.argv[1])
    def probe(context) -> None:
        instance = context.instance
        # Hold the slot until the other run exists, so that without the pool both would be inside.
        deadline = time.monotonic() + 60
        while len(instance.get_run_records()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        entered = time.time()
        time.sleep(0.3)
        with open(os.environ["PROBE_LOG"], "a") as log:
            log.write(json.dumps([entered, time.time()]) + "\\n")

    with DagsterInstance.get() as instance:
        sys.exit(0 if materialize([probe], instance=instance).success else 1)
    """
)


def test_two_runs_never_hold_a_pool_at_once(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    (tmp_path / "probe.py").write_text(PROBE)
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "DAGSTER_HOME": str(home), "PROBE_LOG": str(log)}
    with DagsterInstance.from_config(str(home)) as instance:
        pools.ensure_pools(instance)  # as the sensor does before it requests a run
    runs = [
        subprocess.Popen([sys.executable, str(tmp_path / "probe.py"), pools.WIKIDATA_QUERY], env=env)
        for _ in range(2)
    ]
    try:
        assert [run.wait(timeout=300) for run in runs] == [0, 0]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
    (first, second) = sorted(json.loads(line) for line in log.read_text().splitlines())
    assert first[1] <= second[0], "both runs held the wikidata_query pool at the same time"


DOWNLOAD = "settlement_classes,entities,entity_dropouts,images,image_failures"
MAIN = [sys.executable, "-m", "mlm_pipeline.cli", "main", "--select", DOWNLOAD]


def staged_image_keys(data: Path) -> Counter[str]:
    """Every key in the images' staged results shards, counted once per shard it is in."""
    keys: Counter[str] = Counter()
    for shard in data.glob("staging/*/*/images/*/*.results.parquet"):
        keys.update(pq.read_table(shard, columns=["key"])["key"].to_pylist())
    return keys


def test_a_run_killed_mid_download_leaves_no_slot_behind(tmp_path: Path, tiny_world: World) -> None:
    """kill -9 of a run's whole process group while it downloads images: the killed run keeps
    its wikimedia_media slot, and the next `mlm-pipeline main` must take it back by itself,
    then resume the download without fetching anything staged again."""
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "MLM_DATA_DIR": str(data), "MLM_WORLD_SIZE": "tiny",
           "MLM_WORLD_FAULTS": "latency=0.05"}  # slow enough that the kill lands mid-download
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(MAIN, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # its own process group, as a terminal would
        try:
            deadline = time.monotonic() + 600
            while not staged_image_keys(data) and time.monotonic() < deadline and first.poll() is None:
                time.sleep(0.2)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    staged = staged_image_keys(data)
    assert staged, (tmp_path / "first.log").read_text()[-3000:]
    with DagsterInstance.from_config(str(home)) as instance:
        (killed,) = instance.get_runs()
        assert killed.status == DagsterRunStatus.STARTED  # nobody told Dagster
        assert instance.event_log_storage.get_concurrency_info(pools.WIKIMEDIA_MEDIA).claimed_slots

    second = subprocess.run(MAIN, env=env, capture_output=True, text=True, timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-4000:]
    assert f"run {killed.run_id} died" in output and "ended SUCCESS" in output
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info(pools.WIKIMEDIA_MEDIA).claimed_slots
    after = staged_image_keys(data)
    assert set(staged) < set(after) and max(after.values()) == 1  # nothing staged was fetched again
    images = stored_table("images", tiny_world.release, data).read()
    failures = stored_table("image_failures", tiny_world.release, data).read()
    wanted = {(qid, name) for qid, row in tiny_world.truth.entities.items() for name in row["images"]}
    assert set(zip(images["qid"].to_pylist(), images["file_name"].to_pylist())) | \
        set(zip(failures["qid"].to_pylist(), failures["item"].to_pylist())) == wanted


HOLDER = textwrap.dedent(
    """
    import sys, time
    from dagster import DagsterInstance, asset, materialize

    @asset(pool=sys.argv[1])
    def holder() -> None:
        time.sleep(600)  # holds the pool's slot until killed

    with DagsterInstance.get() as instance:
        materialize([holder], instance=instance)
    """
)


def test_only_runs_whose_processes_are_gone_lose_their_slots(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    (tmp_path / "holder.py").write_text(HOLDER)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    holder = subprocess.Popen([sys.executable, str(tmp_path / "holder.py"), pools.COMPUTE], env=env,
                              start_new_session=True)
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            storage = instance.event_log_storage
            deadline = time.monotonic() + 120
            while not (storage.supports_global_concurrency_limits and pools.COMPUTE in storage.get_concurrency_keys()
                       and storage.get_concurrency_info(pools.COMPUTE).claimed_slots):
                assert time.monotonic() < deadline and holder.poll() is None, "the holder never took its slot"
                time.sleep(0.2)
            assert pools.reclaim_dead_runs(instance) == []  # alive: its slot stays its own
            (run,) = instance.get_runs()
            assert run.status == DagsterRunStatus.STARTED and storage.get_concurrency_info(pools.COMPUTE).claimed_slots
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
            # What the daemon does every minute for runs launched from the UI.
            tick = automation.dead_run_sensor(build_sensor_context(instance=instance))
            assert tick.skip_message == "reclaimed the slots of 1 dead run(s)"
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
            assert not storage.get_concurrency_info(pools.COMPUTE).claimed_slots
            assert pools.reclaim_dead_runs(instance) == []
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
