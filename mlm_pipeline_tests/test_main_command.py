"""The README's main command, as a user runs it: ``mlm-pipeline main`` on a fresh instance.

It registers the served release and shells out to ``dg launch --job mlm_release`` (Dagster's
``dagster asset materialize`` for the whole graph), so this test covers the CLI path CI and users take, not an in-process shortcut: every asset of
the code location must end up stored as Parquet for the release, with its checks passing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from mlm_pipeline.cli import PROJECT_ROOT
from mlm_pipeline.definitions import defs
from mlm_pipeline.run_profiles import training_config
from mlm_pipeline.world import World
from mlm_pipeline.shards import release_folder, stored_table

TINY_TRAINING = {"epochs": 2, "emb_dim": 16, "lr": 0.003, "threads": 1}


def test_main_command_builds_every_asset_of_the_tiny_release(tmp_path: Path, tiny_world: World) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    config = tmp_path / "tiny.json"  # JSON is YAML
    config.write_text(json.dumps(training_config(TINY_TRAINING)))
    env = {**os.environ, "DAGSTER_HOME": str(home), "MLM_DATA_DIR": str(data), "MLM_WORLD_SIZE": "tiny"}

    released = subprocess.run(
        [sys.executable, "-m", "mlm_pipeline.cli", "release"], env=env, capture_output=True, text=True, timeout=300
    )
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == tiny_world.release

    run = subprocess.run(
        [sys.executable, "-m", "mlm_pipeline.cli", "main", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    output = (run.stdout + run.stderr).splitlines()
    assert f"release {tiny_world.release}: run " in run.stdout and "ended SUCCESS" in run.stdout
    # Progress and results, not one DEBUG line per step event (nine in ten lines before).
    debug = [line for line in output if " - DEBUG - " in line]
    assert len(debug) < len(output) / 2, f"{len(debug)} of {len(output)} lines are DEBUG"
    assert not [line for line in output if "Warning" in line], "the README's command printed a warning"

    keys = sorted(defs.resolve_asset_graph().get_all_asset_keys(), key=lambda k: k.to_user_string())
    missing = [k.to_user_string() for k in keys if not release_folder(data, k.to_user_string(), tiny_world.release).is_dir()]
    assert not missing, f"assets without a stored table: {missing}"
    entities = stored_table("entities", tiny_world.release, data).read()
    assert sorted(entities.column("qid").to_pylist()) == sorted(tiny_world.truth.entities)

    with DagsterInstance.from_config(str(home)) as instance:
        runs = len(instance.get_runs())
    again = subprocess.run(
        [sys.executable, "-m", "mlm_pipeline.cli", "main", "--release", tiny_world.release],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0 and f"all {len(keys)} selected assets are already materialised" in again.stdout

    with DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_runs()) == runs  # the second main started nothing
        assert instance.get_dynamic_partitions("release") == [tiny_world.release]
        for key in keys:
            event = instance.get_latest_materialization_event(AssetKey(key.path))
            assert event is not None, key
            assert event.asset_materialization.partition == tiny_world.release


def test_version_and_help_are_plain_text() -> None:
    from mlm_pipeline import __version__

    shown = subprocess.run([sys.executable, "-m", "mlm_pipeline.cli", "--version"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.strip() == f"mlm-pipeline {__version__}"
    helped = subprocess.run([sys.executable, "-m", "mlm_pipeline.cli", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "main" in helped.stdout and "``" not in helped.stdout
