"""``mlm-pipeline``: the few commands a person needs besides the Dagster UI.

``release`` prints the release key the configured source serves; ``register`` adds it to the
Dagster instance (a fresh instance rejects unknown dynamic partition keys); ``main`` does both
and materialises every asset for that release with ``dagster asset materialize``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _use_project_home() -> None:
    """Runs from a checkout keep their instance next to the project's ``dagster.yaml``."""
    if "DAGSTER_HOME" not in os.environ and (PROJECT_ROOT / "dagster.yaml").exists():
        os.environ["DAGSTER_HOME"] = str(PROJECT_ROOT)


def served_release() -> str:
    from mlm_pipeline.resources import wikimedia_from_env
    from mlm_pipeline.sparql import fetch_dataset_version, release_key

    with wikimedia_from_env().open() as endpoints:
        return release_key(fetch_dataset_version(endpoints))


def default_run_config() -> dict:
    from mlm_pipeline.resources import wikimedia_from_env
    from mlm_pipeline.run_profiles import run_config_for

    return run_config_for(wikimedia_from_env())


def register(key: str) -> None:
    from dagster import DagsterInstance

    from mlm_pipeline.ops import ensure_pools
    from mlm_pipeline.partitions import RELEASE_PARTITIONS_NAME

    with DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(RELEASE_PARTITIONS_NAME, key):
            instance.add_dynamic_partitions(RELEASE_PARTITIONS_NAME, [key])
        ensure_pools(instance)  # before any run claims a slot, so two runs cannot both get in


def materialize(key: str, select: str, config_files: list[str]) -> int:
    config = ["-c", *config_files] if config_files else ["--config-json", json.dumps(default_run_config())]
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "asset",
        "materialize",
        "--select",
        select,
        "--partition",
        key,
        "-m",
        "mlm_pipeline.definitions",
        *config,
    ]
    print("+", " ".join(command), flush=True)
    return subprocess.call(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlm-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("release", help="print the release key of the configured source")
    reg = commands.add_parser("register", help="add a release key to the Dagster instance")
    reg.add_argument("--release", help="key to add (default: the one the source serves)")
    run = commands.add_parser("main", help="register the served release and materialise it")
    run.add_argument("--select", default="*", help="Dagster asset selection (default: everything)")
    run.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        help="run config YAML file(s); default: the source's profile (mlm_pipeline/run_profiles.py)",
    )
    args = parser.parse_args(argv)

    _use_project_home()
    if args.command == "release":
        print(served_release())
        return 0
    key = getattr(args, "release", None) or served_release()
    register(key)
    print(f"release {key} registered in {os.environ.get('DAGSTER_HOME', 'the default instance')}")
    if args.command == "register":
        return 0
    return materialize(key, args.select, args.config)


if __name__ == "__main__":
    sys.exit(main())
