"""A release rebuilt from the same inputs and config is the same release, byte for byte.

The tiny world's release is materialised end to end (every stage, with every asset check), all
outputs are wiped, and it is materialised again in a fresh instance; every stored table must
have the same sha256. Each materialisation must also say what it came from.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import AssetsDefinition, instance_for_test, materialize

from mlm_pipeline import checks
from mlm_pipeline.definitions import assets as ASSETS
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.run_profiles import run_config_for
from mlm_pipeline.shards import release_folder
from mlm_pipeline.world import WorldSpec, build_world
from mlm_pipeline.world.rdf import code_version
from mlm_pipeline_tests.conftest import stage_resources

TALKS_TO_SOURCE = ("settlement_classes", "entities", "summaries", "images")
QUERIES_SPARQL = ("settlement_classes", "entities")


def asset_names() -> list[str]:
    return sorted(key.to_user_string() for a in ASSETS if isinstance(a, AssetsDefinition) for key in a.keys)


@dataclass
class Build:
    hashes: dict[str, str]  # asset -> sha256 of its stored shards (and "blobs": of the image bytes)
    metadata: dict[str, dict]  # asset -> materialisation metadata
    failed_checks: list[str]
    checks_run: int


def build_release(base: Path, release: str) -> Build:
    """Materialise everything for ``release`` into ``base`` with a fresh instance."""
    data = base / "data"
    (base / "home").mkdir(parents=True)
    with instance_for_test(temp_dir=str(base / "home")) as instance:
        instance.add_dynamic_partitions("release", [release])
        source = WikimediaResource(source="embedded", world_size="tiny", world_seed=1234, world_version=1)
        result = materialize(
            [*ASSETS, *checks.asset_checks],
            partition_key=release,
            instance=instance,
            resources=stage_resources(data, source),
            run_config=run_config_for(source),
        )
        assert result.success
        evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        metadata = {
            m.asset_key.to_user_string(): m.metadata for m in result.get_asset_materialization_events() for m in [m.materialization]
        }
    hashes = {}
    for name in asset_names():
        digest = hashlib.sha256()
        for path in sorted(release_folder(data, name, release).iterdir()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        hashes[name] = digest.hexdigest()
    blobs = sorted(BlobStore.of_release(data, release).root.glob("*/*"))
    hashes["blobs"] = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in blobs)).hexdigest()
    return Build(
        hashes,
        metadata,
        [f"{e.asset_key.to_user_string()}:{e.check_name}: {e.description}" for e in evaluations if not e.passed],
        len(evaluations),
    )


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Build, Build]:
    release = build_world(WorldSpec(size="tiny")).release
    base = tmp_path_factory.mktemp("release")
    first = build_release(base, release)
    shutil.rmtree(base)  # outputs, staging, checkpoints and the instance: nothing carries over
    second = build_release(base, release)
    return first, second


def test_rematerialising_a_release_gives_byte_identical_parquet(builds: tuple[Build, Build]) -> None:
    first, second = builds
    assert sorted(first.hashes) == sorted([*asset_names(), "blobs"])
    differing = sorted(name for name in first.hashes if first.hashes[name] != second.hashes[name])
    assert differing == []


def test_every_check_passes_on_the_tiny_world(builds: tuple[Build, Build]) -> None:
    for build in builds:
        assert build.checks_run == sum(len(c.check_keys) for c in checks.asset_checks)
        assert build.failed_checks == []


def test_every_materialisation_records_what_it_came_from(builds: tuple[Build, Build]) -> None:
    metadata = builds[0].metadata
    assert sorted(metadata) == asset_names()
    missing = {
        name: [key for key in ("provenance/packages", "provenance/release") if key not in entries]
        for name, entries in metadata.items()
    }
    assert {name: keys for name, keys in missing.items() if keys} == {}
    for name in TALKS_TO_SOURCE:
        entries = metadata[name]
        assert entries["provenance/source"].value == f"embedded world size=tiny seed=1234 version=1 code={code_version()}", name
        assert "provenance/config" in entries, name
    for name in QUERIES_SPARQL:
        entries = metadata[name]
        assert entries["provenance/dataset_version"].value.startswith(entries["provenance/release"].value), name
        assert "provenance/query_sha256" in entries or "query_labels" in entries, name


def test_every_asset_declares_a_code_version() -> None:
    """Dagster can only tell a stale release from a current one if code changes show."""
    missing = sorted(
        key.to_user_string()
        for a in ASSETS
        if isinstance(a, AssetsDefinition)
        for key, version in a.code_versions_by_key.items()
        if not version
    )
    assert missing == []
