"""Wikimedia's limits hold across runs: the instance config gives each pool one slot, every
stage that talks to Wikimedia claims its pool, and two runs in two processes really do wait."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from dagster import AssetsDefinition, DagsterInstance, instance_for_test

from mlm_pipeline import ops, pools
from mlm_pipeline.definitions import defs

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
        assert sorted(ops.ensure_pools(instance)) == sorted({*pools.ALL} - {pools.WIKIMEDIA_MEDIA})
        assert ops.ensure_pools(instance) == []
        slots = {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in pools.ALL}
        assert slots == {pool: 3 if pool == pools.WIKIMEDIA_MEDIA else 1 for pool in pools.ALL}
    (tmp_path / "b").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "b")) as instance:  # no default limit configured
        assert instance.global_op_concurrency_default_limit is None
        ops.ensure_pools(instance)
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
        ops.ensure_pools(instance)  # as the sensor does before it requests a run
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
