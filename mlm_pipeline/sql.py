"""DuckDB, the engine of the relational stages: SQL over the stored Parquet shards, out of core.

Joins, group-bys and sorts over a release's tables (entities with their images and summaries,
version membership, quotas, splits, Table 2, the release diff) run in DuckDB with a memory
limit and a spill folder, so they stay within a fixed budget whatever the release's size;
results come back as Arrow batches that go straight to the shard writer. Inputs are named
views: stored tables (read where they lie) or Arrow tables (tests, small computed tables).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb
import pyarrow as pa

from mlm_pipeline.shards import StoredTable, TableStream, scratch_tag

MEMORY_LIMIT = "512MB"
"""DuckDB's budget per connection; beyond it joins and sorts spill to the temp folder."""
BATCH_ROWS = 8192

Source = pa.Table | StoredTable


def connect(spill_dir: Path | None = None, memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that spills into a folder of its own under ``spill_dir`` (default:
    the system's temp folder); DuckDB creates that folder when it first spills and removes it
    when the connection closes."""
    spill = (Path(spill_dir) if spill_dir else Path(tempfile.gettempdir())) / f"duckdb-{scratch_tag()}"
    return duckdb.connect(
        config={"memory_limit": memory_limit, "temp_directory": str(spill), "preserve_insertion_order": True}
    )


def quoted(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def register(con: duckdb.DuckDBPyConnection, **tables: Source) -> None:
    """Each table as a view of that name: stored shards are read in place, never copied."""
    for name, table in tables.items():
        if isinstance(table, StoredTable):
            con.read_parquet([str(p) for p in table.paths]).create_view(name, replace=True)
        else:
            con.register(name, table)


def stream(con: duckdb.DuckDBPyConnection, query: str, schema: pa.Schema, params: Sequence[Any] | None = None) -> TableStream:
    """The query's rows as batches of ``schema``. The query runs when the batches are read, on
    a connection that must still be open then; read one stream of a connection at a time."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in con.sql(query, params=params).to_arrow_reader(BATCH_ROWS):
            yield batch.cast(schema)

    return TableStream(schema, batches())


def table(con: duckdb.DuckDBPyConnection, query: str, schema: pa.Schema, params: Sequence[Any] | None = None) -> pa.Table:
    """A small query result as one table of ``schema``."""
    return stream(con, query, schema, params).read_all()


def counts(con: duckdb.DuckDBPyConnection, query: str, column: str) -> dict[str, int]:
    """Rows per value of ``column`` of the query's result, by value (e.g. dropouts per reason)."""
    rows = con.execute(f'SELECT "{column}", count(*) FROM ({query}) GROUP BY 1 ORDER BY 1').fetchall()
    return {str(value): n for value, n in rows}


def row(con: duckdb.DuckDBPyConnection, query: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
    """The first row of a query that gives at most one (the result is read to its end, so the
    connection is free for the next query)."""
    rows = con.execute(query, params or []).fetchall()
    return rows[0] if rows else None


def scalar(con: duckdb.DuckDBPyConnection, query: str, params: Sequence[Any] | None = None) -> Any:
    first = row(con, query, params)
    return None if first is None else first[0]
