"""Parquet storage for every table asset, written so that the same table gives the same bytes.

Assets return ``pyarrow.Table`` values that they have already sorted by their key; this manager
only fixes the writer options (no timestamps, fixed compression and format version) and writes
atomically, so a killed run never leaves a half-written file behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)

from mlm_pipeline.storage import default_data_dir

WRITER_OPTIONS = dict(
    compression="zstd",
    compression_level=3,
    version="2.6",
    data_page_version="1.0",
    use_dictionary=True,
    write_statistics=True,
)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write deterministically and atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table.replace_schema_metadata(None), tmp, **WRITER_OPTIONS)
    os.replace(tmp, path)


def table_schema(table: pa.Table) -> TableSchema:
    return TableSchema(columns=[TableColumn(f.name, str(f.type)) for f in table.schema])


class ParquetIOManager(ConfigurableIOManager):
    """Stores each asset partition at ``<base_dir>/<asset key>/<partition>.parquet``."""

    base_dir: str = ""

    def table_path(self, asset: str, partition: str | None) -> Path:
        """Where an asset's table (for one partition) is stored, for readers outside a run."""
        root = Path(self.base_dir) if self.base_dir else default_data_dir()
        return root / asset / f"{partition}.parquet" if partition is not None else (root / asset).with_suffix(".parquet")

    def _path(self, context: InputContext | OutputContext) -> Path:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return self.table_path("/".join(context.asset_key.path), partition)

    def handle_output(self, context: OutputContext, obj: pa.Table) -> None:
        if not isinstance(obj, pa.Table):
            raise TypeError(
                f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "the Parquet IO manager stores pyarrow.Table values only"
            )
        path = self._path(context)
        write_parquet(obj, path)
        context.add_output_metadata(
            {
                "dagster/row_count": obj.num_rows,
                "dagster/column_schema": table_schema(obj),
                "path": MetadataValue.path(str(path)),
                "bytes": path.stat().st_size,
            }
        )

    def load_input(self, context: InputContext) -> pa.Table:
        """Reads the whole table, or only ``AssetIn(metadata={"columns": [...]})`` when a
        consumer needs a few columns of a wide table (image bytes, feature vectors)."""
        path = self._path(context)
        if not path.exists():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has no stored table at {path}: "
                "materialise it for this release first"
            )
        columns = (context.definition_metadata or {}).get("columns")
        return pq.read_table(path, columns=list(columns) if columns else None)
