"""Fixtures every test area shares: the tiny embedded world, built once and served once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from mlm_pipeline.parquet_io import ParquetIOManager
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.storage import StorageResource
from mlm_pipeline.world import Served, World, WorldSpec, build_world, running_world

TINY = WorldSpec(size="tiny", seed=1234, version=1)


def stage_resources(data: Path, source: WikimediaResource) -> dict[str, Any]:
    """The resources definitions.py gives the stages, with the data under ``data``."""
    return {
        "io_manager": ParquetIOManager(base_dir=str(data)),
        "storage": StorageResource(base_dir=str(data)),
        "wikimedia": source,
    }


@pytest.fixture(scope="session")
def tiny_world() -> World:
    """The tiny world (about 300 settlements, every edge case); treat it as read-only."""
    return build_world(TINY)


@pytest.fixture(scope="session")
def tiny_served(tiny_world: World) -> Iterator[Served]:
    """The tiny world served without faults (SPARQL, Wikipedia and Commons on 127.0.0.1)."""
    with running_world(tiny_world) as served:
        yield served


@pytest.fixture
def dagster_instance(tmp_path_factory: pytest.TempPathFactory):
    """A real Dagster instance in a temporary DAGSTER_HOME, removed afterwards."""
    from dagster import instance_for_test

    home = tmp_path_factory.mktemp("dagster_home")
    with instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small models on a shared two-core machine: a second intra-op thread only adds contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
