"""Parquet storage for every table asset: a folder of shards per asset and release.

Assets return either a ``pyarrow.Table`` (small tables) or a ``TableStream`` (big ones, as
batches, already sorted by their key); this manager writes them with ``shards.write_table``
(fixed writer options, fixed row groups, committed in one rename, so a killed run never leaves
a half-written table where a finished one is expected) and refreshes the DuckDB catalog.

A stage that streams an input annotates it as ``StoredTable`` and reads it in batches or
through DuckDB; any other annotation gets the whole table in memory, or only the columns named
in ``AssetIn(metadata={"columns": [...]})``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)
from pydantic import Field

from mlm_pipeline.catalog import refresh_catalog
from mlm_pipeline.shards import (
    INCOMING,
    RELEASE_FOLDER,
    StoredTable,
    TableStream,
    default_data_dir,
    write_table,
)
from mlm_pipeline.storage import check_writable


def table_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(columns=[TableColumn(f.name, str(f.type)) for f in schema])


class ParquetIOManager(ConfigurableIOManager):
    """Stores each asset partition at ``<base_dir>/<asset key>/release=<partition>/part-*.parquet``."""

    base_dir: str = Field("", description="the data directory; empty: $MLM_DATA_DIR, else $DAGSTER_HOME/mlm_data")
    min_free_mb: int = Field(256, ge=0, description="free space needed before a table is written")

    def _root(self) -> Path:
        return Path(self.base_dir) if self.base_dir else default_data_dir()

    def _folder(self, context: InputContext | OutputContext) -> Path:
        path = self._root().joinpath(*context.asset_key.path)
        key = context.asset_partition_key if context.has_asset_partitions else "all"
        return path / RELEASE_FOLDER.format(key)

    def handle_output(self, context: OutputContext, obj: pa.Table | TableStream) -> None:
        if not isinstance(obj, (pa.Table, TableStream)):
            raise TypeError(
                f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "the Parquet IO manager stores pyarrow.Table and TableStream values only"
            )
        root = self._root()
        check_writable(root, self.min_free_mb << 20)
        written = write_table(self._folder(context), obj, root / INCOMING)
        summary = obj.summary() if isinstance(obj, TableStream) and obj.summary else {}
        context.add_output_metadata(
            {
                **summary,
                "dagster/row_count": written.rows,
                "dagster/column_schema": table_schema(obj.schema),
                "path": MetadataValue.path(str(written.folder)),
                "bytes": written.bytes,
                "shards": written.shards,
            }
        )
        refresh_catalog(root)

    def load_input(self, context: InputContext) -> pa.Table | StoredTable:
        folder = self._folder(context)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has no stored table at {folder}: "
                "materialise it for this release first"
            )
        stored = StoredTable(folder)
        if context.dagster_type.typing_type is StoredTable:
            return stored
        columns = (context.definition_metadata or {}).get("columns")
        return stored.read(columns)
