"""A backfill of two releases at once, as an operator starts one: the project's dagster.yaml, the
daemon dequeuing the runs (two at a time, sharing the concurrency pools), `dagster job backfill`
from the command line, and one embedded world that serves each release the version that
published it. Both runs build every asset and pass every check, and the later release's diff
compares with the earlier one although the two were built side by side."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)

from mlm_pipeline.cli import PROJECT_ROOT
from mlm_pipeline.definitions import defs
from mlm_pipeline.world import WorldSpec, build_world
from mlm_pipeline.shards import stored_table

HANG_GUARD_S = 1500
"""Only a hang ends the wait: two tiny releases take four minutes on two idle cores, and many
more on a busy machine."""
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def bin_(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.mark.timeout(HANG_GUARD_S + 300)
def test_backfill_of_two_releases_at_once_builds_both_and_diffs_the_later_one(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MLM_DATA_DIR": str(data),
        "MLM_WORLD_SIZE": "tiny",
        "MLM_WORLD_VERSION": "2",
    }
    first, second = (build_world(WorldSpec(size="tiny", version=v)) for v in (1, 2))
    releases = [first.release, second.release]
    for key in releases:
        registered = subprocess.run(
            [sys.executable, "-m", "mlm_pipeline.cli", "register", "--release", key],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert registered.returncode == 0, registered.stderr

    daemon = subprocess.Popen(
        [bin_("dagster-daemon"), "run", "-m", "mlm_pipeline.definitions"],
        env=env, cwd=tmp_path, stdout=open(tmp_path / "daemon.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        backfill = subprocess.run(
            [bin_("dagster"), "job", "backfill", "-m", "mlm_pipeline.definitions", "-j", "mlm_release",
             "--partitions", ",".join(releases), "--noprompt"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        assert backfill.returncode == 0, backfill.stdout + backfill.stderr
        with DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + HANG_GUARD_S
            while True:
                runs = instance.get_runs(RunsFilter(job_name="mlm_release"))
                if len(runs) == 2 and all(run.status in FINISHED for run in runs):
                    break
                assert time.monotonic() < deadline, f"runs still going after {HANG_GUARD_S} s: {runs}"
                time.sleep(2)
            assert {run.tags["dagster/partition"] for run in runs} == set(releases)
            assert len({run.tags["dagster/backfill"] for run in runs}) == 1
            log = (tmp_path / "daemon.log").read_text(errors="replace")[-3000:]
            assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 2, log

            graph = defs.resolve_asset_graph()
            for key in releases:
                for asset_key in graph.get_all_asset_keys():
                    assert instance.fetch_materializations(
                        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]), limit=1
                    ).records, (asset_key, key)
            evaluations = [
                record.dagster_event.event_specific_data
                for run in runs
                for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
            ]
            for key in releases:
                mine = [e for e in evaluations if e.partition == key]
                assert {e.asset_check_key for e in mine} == set(graph.asset_check_keys), key
                assert [e.asset_check_key.to_user_string() for e in mine if not e.passed] == [], key

            (diff_record,) = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey("release_diff"), asset_partitions=[second.release]), limit=1
            ).records
            assert diff_record.asset_materialization.metadata["previous_release"].value == first.release
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)

    diff = stored_table("release_diff", second.release, data).read().to_pylist()
    before, after = set(first.truth.entities), set(second.truth.entities)
    assert {r["qid"] for r in diff if r["change"] == "added"} == after - before != set()
    assert {r["qid"] for r in diff if r["change"] == "removed"} == before - after != set()
    first_entities = stored_table("entities", first.release, data).read().column("qid").to_pylist()
    assert sorted(first_entities) == sorted(first.truth.entities)  # each release got its own world version
