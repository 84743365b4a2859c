"""The release: one build of MLM, named by the data version of the knowledge graph it came from.

A release key is the date part of the source's ``<http://www.wikidata.org> schema:dateModified``
(e.g. ``2026-01-05``), so a release can be rebuilt, and compared with the next one, by name.
Every dataset asset is partitioned by it. This module is the one place that asks a source which
release it serves and that registers a key on an instance; the CLI, the sensor and the schedule
all go through it, so a release registered one way behaves like one registered another.
"""

from __future__ import annotations

from dagster import DagsterInstance, DynamicPartitionsDefinition

from mlm_pipeline import pools
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.sparql.queries import fetch_dataset_version

RELEASE_PARTITIONS_NAME = "release"

release_partitions = DynamicPartitionsDefinition(name=RELEASE_PARTITIONS_NAME)


def served_version(source: WikimediaResource) -> str:
    """The data version the source serves now; for the embedded world this starts (and stops)
    its servers."""
    with source.open() as endpoints:
        return fetch_dataset_version(endpoints)


def served_key(source: WikimediaResource) -> str:
    """The release the source serves now, by its cadence (a live source's week, say)."""
    return source.release_of(served_version(source))


def buildable_keys(source: WikimediaResource) -> list[str]:
    """The keys the source can build: every release a generated world has published (it rebuilds
    each exactly), else the one the source serves now."""
    if source.source == "embedded" and (published := source.world_spec().published()):
        return sorted(published)
    return [served_key(source)]


def prepare(instance: DagsterInstance) -> list[str]:
    """Make the instance ready to build a release; returns the ids of dead runs whose pool slots
    were taken back.

    The pools' slots are created before any run claims one (two runs creating them at once on
    SQLite can both get in), and a killed run's slots are freed, or the new run would wait for
    them forever.
    """
    pools.ensure_pools(instance)
    return pools.reclaim_dead_runs(instance)


def register(instance: DagsterInstance, key: str) -> list[str]:
    """Make ``key`` a release partition (a sensor instead returns the request to add it, which
    the daemon applies with its run request) and ``prepare`` the instance."""
    if not instance.has_dynamic_partition(RELEASE_PARTITIONS_NAME, key):
        instance.add_dynamic_partitions(RELEASE_PARTITIONS_NAME, [key])
    return prepare(instance)
