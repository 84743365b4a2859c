"""A split written as Parquet shards of bounded size, row group by row group.

Shards are cut by the rows' own sizes (image bytes and texts), never by how batches arrived,
so the same rows give the same files; a shard grows past the bound only when one row group
alone is larger. Row groups are small (the hub's viewer reads a row group
at a time, and image rows are large), and the writer holds one row group at most.
Files are named as the hub names them: ``<split>-00000-of-00003.parquet``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mlm_pipeline.shards import WRITER_OPTIONS

# Thumbnails are compressed already and rarely repeat: no dictionary, light compression.
SHARD_OPTIONS = {**WRITER_OPTIONS, "use_dictionary": ["qid", "country_code", "continent", "cell_token"]}


class SplitWriter:
    def __init__(self, folder: Path, split: str, schema: pa.Schema, max_shard_bytes: int, rows_per_group: int) -> None:
        if max_shard_bytes < 1 or rows_per_group < 1:
            raise ValueError(f"max_shard_bytes={max_shard_bytes} and rows_per_group={rows_per_group} must be positive")
        self.folder = folder
        self.split = split
        self.schema = schema
        self.max_shard_bytes = max_shard_bytes
        self.rows_per_group = rows_per_group
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.pending_weight = 0
        self.paths: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.shard_weight = 0
        self.rows = 0

    def write(self, rows: pa.Table, weights: list[int]) -> None:
        for start in range(0, rows.num_rows):
            self.pending.append(rows.slice(start, 1))
            self.pending_rows += 1
            self.pending_weight += weights[start]
            if self.pending_rows == self.rows_per_group:
                self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        if self.shard_weight and self.shard_weight + self.pending_weight > self.max_shard_bytes:
            self._close_shard()
        if self.writer is None:
            path = self.folder / f"{self.split}-{len(self.paths):05d}.parquet"
            self.paths.append(path)
            self.writer = pq.ParquetWriter(path, self.schema, **SHARD_OPTIONS)
        group = pa.concat_tables(self.pending).combine_chunks()
        self.writer.write_table(group, row_group_size=self.pending_rows)
        self.rows += self.pending_rows
        self.shard_weight += self.pending_weight
        self.pending, self.pending_rows, self.pending_weight = [], 0, 0

    def _close_shard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.shard_weight = 0

    def close(self) -> list[Path]:
        """Finishes the last shard (an empty split gets one empty shard, so that it exists) and
        gives the shards their ``-of-N`` names."""
        self._flush()
        if not self.paths:
            self.paths.append(self.folder / f"{self.split}-00000.parquet")
            pq.write_table(self.schema.empty_table(), self.paths[0], **SHARD_OPTIONS)
        self._close_shard()
        named = []
        for i, path in enumerate(self.paths):
            final = path.with_name(f"{self.split}-{i:05d}-of-{len(self.paths):05d}.parquet")
            os.replace(path, final)
            named.append(final)
        return named
