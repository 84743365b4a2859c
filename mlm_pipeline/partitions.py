"""The one partitioning scheme of every dataset asset: one key per MLM release.

A release key is the data version of the knowledge graph it was built from (the date part of
``<http://www.wikidata.org> schema:dateModified``, e.g. ``2026-01-05``), so a release can be
rebuilt, and compared with the next one, by name.
"""

from dagster import DynamicPartitionsDefinition

RELEASE_PARTITIONS_NAME = "release"

release_partitions = DynamicPartitionsDefinition(name=RELEASE_PARTITIONS_NAME)
