"""The few commands a person needs besides the Dagster UI (the text is ``mlm-pipeline --help``).

A bad source setting, run config value or release key is refused before anything is asked of
the source, with one line per problem on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

SERVE_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Set (unless already set) before the server loads torch: requests, the ranking thread and
torch's OpenMP threads share few cores, and OpenMP's default busy-waiting would burn the time
the others wait for (benchmarks/serve.py measures the server with it)."""


def _use_project_home() -> None:
    """Runs from a checkout keep their instance next to the project's ``dagster.yaml``."""
    if "DAGSTER_HOME" not in os.environ and (PROJECT_ROOT / "dagster.yaml").exists():
        os.environ["DAGSTER_HOME"] = str(PROJECT_ROOT)


class Refused(Exception):
    """A request the CLI will not carry out; the message is for the person, without a traceback."""


def run_config(config_files: list[str]) -> dict:
    """The run config ``materialize`` passes: the files merged as Dagster merges them, else the
    source's profile; refused (``Refused``) when any value breaks its ``Config``'s rules."""
    import yaml
    from dagster_shared.check import CheckError
    from dagster_shared.yaml_utils import load_yaml_from_glob_list

    from mlm_pipeline.definitions import defs
    from mlm_pipeline.resources import wikimedia_from_env
    from mlm_pipeline.run_checks import config_classes, run_config_problems
    from mlm_pipeline.run_profiles import run_config_for

    if missing := [name for name in config_files if not glob.glob(name)]:
        raise Refused(f"-c {missing[0]}: no such file")  # Dagster would read it as an empty config
    try:
        config = load_yaml_from_glob_list(config_files) if config_files else run_config_for(wikimedia_from_env())
    except (yaml.YAMLError, CheckError) as error:  # not YAML, or not a mapping
        raise Refused(f"-c: {' '.join(str(error).split())}") from None
    classes = config_classes(defs.resolve_implicit_global_asset_job_def())
    if problems := run_config_problems(config, classes):
        raise Refused("\n".join(problems))
    return config


def check_served(key: str) -> None:
    from mlm_pipeline.release import buildable_keys
    from mlm_pipeline.resources import wikimedia_from_env

    if key not in (served := buildable_keys(wikimedia_from_env())):
        raise Refused(
            f"--release {key}: the source does not serve it (it serves {', '.join(served)}); "
            "pass --force to register it anyway"
        )


def register(key: str) -> None:
    from dagster import DagsterInstance

    from mlm_pipeline.release import register as register_release

    with DagsterInstance.get() as instance:
        for run_id in register_release(instance, key):
            print(f"run {run_id} died (its processes are gone): marked failed, its pool slots freed", flush=True)


DESCRIPTION = """\
Build MLM releases with Dagster. 'release' prints the release key the configured source
serves; 'register' adds a key to the Dagster instance; 'main' registers a release and
materialises its assets with 'dg launch'; 'serve' runs the search page and
API over a built release; 'catalog' writes the DuckDB catalog of every stored asset again
(after the data directory moved). The source is chosen by the MLM_* environment variables
(README).
"""

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
"""Dagster prints one DEBUG line per step event (about 9 in 10 lines of a run); the terminal
shows progress and results, and the UI keeps every event."""


def materialised(key: str, select: str) -> tuple[list[str], list[str]]:
    """The selected assets, split into those with a materialisation of release ``key`` on the
    instance and those without."""
    from dagster import AssetSelection, BetaWarning, DagsterInstance

    from mlm_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    with warnings.catch_warnings():  # Dagster's parser passes its own beta parameter: not the user's concern
        warnings.simplefilter("ignore", BetaWarning)
        selection = AssetSelection.from_coercible(select.split(","))  # as `dagster asset materialize` reads it
        selected = sorted(selection.resolve(graph), key=lambda k: k.to_user_string())
    done, missing = [], []
    with DagsterInstance.get() as instance:
        for asset_key in selected:
            built = key in instance.get_materialized_partitions(asset_key)
            (done if built else missing).append(asset_key.to_user_string())
    return done, missing


def materialize(key: str, select: str, config: dict) -> int:
    """``dg launch`` (the form ``dagster asset materialize`` now points to) of the release job or
    of a selection; the command is echoed with the run config shortened to its size."""
    from mlm_pipeline.automation import RELEASE_JOB

    # Everything is the release job (the same run the sensor requests); Dagster's parser for "*"
    # would also print a beta warning.
    target = ["--job", RELEASE_JOB] if select.strip() == "*" else ["--assets", select]
    command = [
        str(Path(sys.executable).with_name("dg")),
        "launch",
        *target,
        "--partition",
        key,
        "-m",
        "mlm_pipeline.definitions",
        "--config-json",
    ]
    print("+", " ".join(command), f"'<run config: {len(config.get('ops', {}))} ops>'", flush=True)
    status = subprocess.call([*command, json.dumps(config)])
    print(f"release {key}: {last_run(key)}", flush=True)
    return status


def last_run(key: str) -> str:
    """How the newest run of release ``key`` ended, in words: at INFO Dagster prints no line for it."""
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"dagster/partition": key}), limit=1)
        if not runs:
            return "no run was started"
        run = runs[0]
        return f"run {run.run_id} ended {run.status.value} (dagster dev shows its every event)"


def main(argv: list[str] | None = None) -> int:
    from mlm_pipeline import __version__

    parser = argparse.ArgumentParser(prog="mlm-pipeline", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"mlm-pipeline {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("release", help="print the release key of the configured source")
    commands.add_parser("catalog", help="write mlm.duckdb, the DuckDB views of every stored asset, again")
    reg = commands.add_parser("register", help="add a release key to the Dagster instance")
    reg.add_argument("--release", help="key to add (default: the one the source serves)")
    reg.add_argument("--force", action="store_true", help="register --release even if the source does not serve it")
    run = commands.add_parser("main", help="register the served release (or --release) and materialise it")
    run.add_argument("--release", help="release to build (default: the one the source serves)")
    run.add_argument("--force", action="store_true", help="build --release even if the source does not serve it")
    run.add_argument("--select", default="*", help="Dagster asset selection (default: everything)")
    run.add_argument(
        "--rebuild",
        action="store_true",
        help="materialise the selection even if every asset of it is already built for the release",
    )
    run.add_argument("--verbose", action="store_true", help="print Dagster's DEBUG lines (one per step event)")
    run.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        help="run config YAML file(s); default: the source's profile (mlm_pipeline/run_profiles.py)",
    )
    web = commands.add_parser("serve", help="search a built release by text or image in the browser and by API")
    web.add_argument("--release", help="release to serve (default: the newest one with a search_index)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    web.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    if args.command == "serve":  # before anything loads torch
        for name, value in SERVE_ENVIRONMENT.items():
            os.environ.setdefault(name, value)

    _use_project_home()
    from pydantic import ValidationError

    from mlm_pipeline.endpoints import ConfigError
    from mlm_pipeline.run_checks import problem_lines
    from mlm_pipeline.world.own_files import OwnFilesError

    try:
        return _run(args)
    except ValidationError as error:  # a source setting (an MLM_* variable) the resource refuses
        lines = list(problem_lines("resources.wikimedia.config", error))
    except (Refused, ConfigError, OwnFilesError) as error:
        lines = str(error).splitlines()
    for line in lines:
        print(f"mlm-pipeline: error: {line}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "catalog":
        from mlm_pipeline.catalog import refresh_catalog
        from mlm_pipeline.shards import default_data_dir

        print(refresh_catalog(default_data_dir()))
        return 0
    from mlm_pipeline.release import served_key
    from mlm_pipeline.resources import wikimedia_from_env

    if args.command == "release":
        print(served_key(wikimedia_from_env()))
        return 0
    if args.command == "serve":
        from mlm_pipeline.serve import serve

        serve(args.release, args.host, args.port)
        return 0
    config = run_config(args.config) if args.command == "main" else {}
    key = getattr(args, "release", None)
    if key is None:
        key = served_key(wikimedia_from_env())
    elif not args.force:
        check_served(key)
    register(key)
    print(f"release {key} registered in {os.environ.get('DAGSTER_HOME', 'the default instance')}")
    if args.command == "register":
        return 0
    done, missing = materialised(key, args.select)
    if not missing and not args.rebuild and not args.config:
        print(
            f"release {key}: all {len(done)} selected assets are already materialised; nothing to do "
            "(--rebuild builds them again, e.g. after a code change)"
        )
        return 0
    if done:
        print(f"release {key}: {len(missing)} of {len(done) + len(missing)} selected assets not built yet; "
              f"the {len(done)} already materialised are built again with them")
    return materialize(key, args.select, config if args.verbose else {**config, **QUIET_LOGS})


if __name__ == "__main__":
    # Run as the imported module, not as __main__: ``Refused`` raised by other modules (they import
    # mlm_pipeline.cli) must be the class main() catches.
    from mlm_pipeline.cli import main as imported_main

    sys.exit(imported_main())
