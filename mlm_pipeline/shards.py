"""Tables stored as folders of Parquet shards: written in bounded batches, committed whole.

At MLM's size a release's big tables (image metadata, summaries, feature vectors) do not fit
comfortably in one process's memory, so a table is written batch by batch and read back the
same way. Layout and guarantees:

- A table is a folder of ``part-00000.parquet``, ``part-00001.parquet``, ... (``stored_table``
  finds a release's folder: ``<data dir>/<asset>/release=<key>/``). Every shard holds whole
  row groups of a fixed number of rows chosen from the schema (about 16 MiB of values), so a
  reader holds one row group of one column set at a time.
- Shards are written into a scratch folder under ``<data dir>/.incoming`` and the finished
  folder is moved into place by renames, so a reader (or a resumed run) sees the previous
  table or the new one, never a half-written shard. A folder whose name is not
  ``release=<key>`` is never read as a table.
- The same rows give the same bytes: row groups are cut by row count, never by how the
  batches happened to arrive, and the writer options are fixed (no timestamps).
- A write that fails for lack of space or permission raises ``StorageError`` naming the path
  and the cause; what was stored before is left as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

WRITER_OPTIONS = dict(
    compression="zstd",
    compression_level=3,
    version="2.6",
    data_page_version="1.0",
    use_dictionary=True,
    write_statistics=True,
)
ROW_GROUP_BYTES = 16 << 20
"""Aimed-for size of one row group's values: what a streaming reader holds at a time."""
MAX_ROW_GROUP_ROWS = 16_384
ROW_GROUPS_PER_SHARD = 16
PART = "part-{:05d}.parquet"
INCOMING = ".incoming"
"""Scratch folders (under the data dir) for tables being written; never read as tables."""
RELEASE_FOLDER = "release={}"
VARIABLE_WIDTH_GUESS = 64  # bytes per string/binary value, for sizing row groups only


class StorageError(RuntimeError):
    """The data directory cannot take what must be written: full, read-only, not permitted."""


_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file size limit is reached",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


@contextmanager
def storage_guard(path: Path, doing: str) -> Iterator[None]:
    """Turns an operating system's refusal to store into an error that names the path."""
    try:
        yield
    except OSError as error:
        cause = _CAUSES.get(error.errno or 0)
        if cause is None:
            raise
        raise StorageError(
            f"cannot {doing} {path}: {cause} ({error.strerror}); nothing stored before was changed; "
            f"free space or fix permissions there (or point MLM_DATA_DIR elsewhere) and run again"
        ) from error


def scratch_tag() -> str:
    """Ends a scratch name: the writing process and a random part (``p<pid>-<hex>``)."""
    return f"p{os.getpid()}-{uuid.uuid4().hex[:12]}"


def sweep_scratch(scratch_root: Path) -> None:
    """Removes what killed writers left in the scratch folder (their process is gone), so a
    table abandoned half-way costs no disk once the next table is written."""
    for entry in scratch_root.glob("*-p*-*"):
        pid = entry.name.rsplit("-", 2)[-2].removeprefix("p")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet(table: pa.Table, path: Path) -> None:
    """One small table as one file, deterministically and atomically (temporary file, rename)."""
    with storage_guard(path, "write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table.replace_schema_metadata(None), tmp, **WRITER_OPTIONS)
        _fsync(tmp)
        os.replace(tmp, path)


def _value_bytes(kind: pa.DataType) -> int:
    if pa.types.is_fixed_size_list(kind):
        return kind.list_size * _value_bytes(kind.value_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return 4 * _value_bytes(kind.value_type)
    try:
        return max(kind.bit_width // 8, 1)
    except ValueError:  # strings, binaries: no fixed width
        return VARIABLE_WIDTH_GUESS


def rows_per_group(schema: pa.Schema) -> int:
    """Rows per row group from the schema alone (so the same rows always get the same cuts)."""
    row = sum(_value_bytes(field.type) for field in schema) or 1
    rows = min(MAX_ROW_GROUP_ROWS, max(ROW_GROUP_BYTES // row, 256))
    return 1 << (rows.bit_length() - 1)  # a power of two


@dataclass
class TableStream:
    """A table as batches, for tables too big to hold; ``summary`` is called once every batch
    is stored and returns metadata about them (counts gathered on the way)."""

    schema: pa.Schema
    batches: Iterable[pa.RecordBatch]
    summary: Callable[[], dict[str, Any]] | None = None

    @classmethod
    def of(cls, table: pa.Table) -> "TableStream":
        return cls(table.schema, table.to_batches())

    def read_all(self) -> pa.Table:
        """Every batch in one table: for tests and small tables only."""
        return pa.Table.from_batches([b.cast(self.schema) for b in self.batches], schema=self.schema)


@dataclass(frozen=True)
class Written:
    folder: Path
    rows: int
    bytes: int
    shards: int


class ShardWriter:
    """Writes one table into a scratch folder; ``commit`` moves it to its place."""

    def __init__(self, folder: Path, schema: pa.Schema, scratch_root: Path) -> None:
        self.folder = folder
        self.schema = schema.remove_metadata()
        self.group_rows = rows_per_group(self.schema)
        sweep_scratch(scratch_root)
        self.scratch = scratch_root / f"{folder.parent.name}-{folder.name}-{scratch_tag()}"
        with storage_guard(self.scratch, "create"):
            self.scratch.mkdir(parents=True)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._file: Any = None
        self._groups_in_shard = 0
        self.shards = 0
        self.rows = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.abort()

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        for part in batches:
            self._pending.append(part.cast(self.schema) if part.schema != self.schema else part)
            self._pending_rows += part.num_rows
        while self._pending_rows >= self.group_rows:
            self._flush_group(self.group_rows)

    def _flush_group(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        group, rest = table.slice(0, rows), table.slice(rows)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows
        self._write_group(group.combine_chunks())

    def _write_group(self, group: pa.Table) -> None:
        path = self.scratch / PART.format(self.shards)
        with storage_guard(path, "write"):
            if self._writer is None:
                self._file = open(path, "wb")
                self._writer = pq.ParquetWriter(self._file, self.schema, **WRITER_OPTIONS)
            self._writer.write_table(group, row_group_size=self.group_rows)
            self.rows += group.num_rows
            self._groups_in_shard += 1
            if self._groups_in_shard == ROW_GROUPS_PER_SHARD:
                self._close_shard()

    def _close_shard(self) -> None:
        assert self._writer is not None
        path = self.scratch / PART.format(self.shards)
        with storage_guard(path, "write"):
            self._writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        self._writer = self._file = None
        self._groups_in_shard = 0
        self.shards += 1

    def commit(self) -> Written:
        """Store what is left, then put the folder in place of any earlier one."""
        if self._pending_rows:
            self._flush_group(self._pending_rows)
        if self._writer is not None:
            self._close_shard()
        if self.shards == 0:  # an empty table still stores its schema
            self._write_group(self.schema.empty_table())
            self._close_shard()
        size = sum(p.stat().st_size for p in self.scratch.iterdir())
        with storage_guard(self.folder, "replace"):
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            old = self.scratch.with_name(self.scratch.name + ".old")
            if self.folder.exists():
                os.rename(self.folder, old)
            os.rename(self.scratch, self.folder)
            _fsync(self.folder.parent)
        shutil.rmtree(old, ignore_errors=True)
        return Written(self.folder, self.rows, size, self.shards)

    def abort(self) -> None:
        """Drops the scratch folder; what was stored before stays as it was."""
        if self._file is not None:
            with suppress(OSError):  # the disk that refused the shard may refuse its last bytes too
                self._file.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def write_table(folder: Path, data: pa.Table | TableStream, scratch_root: Path) -> Written:
    """Store ``data`` as the folder of shards ``folder``, replacing what was there only once
    every shard is written."""
    stream = TableStream.of(data) if isinstance(data, pa.Table) else data
    with ShardWriter(folder, stream.schema, scratch_root) as writer:
        for batch in stream.batches:
            writer.write(batch)
        return writer.commit()


class StoredTable:
    """A stored table, read in batches or whole; what a stage gets for a big input.

    ``path`` is a folder of shards (or, for releases stored before shards, one Parquet file).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.paths = sorted(self.path.glob("part-*.parquet"))
        else:
            self.paths = [self.path] if self.path.exists() else []
        if not self.paths:
            raise FileNotFoundError(f"no stored table at {self.path}")

    def __repr__(self) -> str:
        return f"StoredTable({str(self.path)!r})"

    @property
    def schema(self) -> pa.Schema:
        return pq.read_schema(self.paths[0]).remove_metadata()

    @property
    def num_rows(self) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.paths)

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths)

    def batches(self, columns: Sequence[str] | None = None, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        """Every row in stored order, ``batch_size`` rows at a time, one row group in memory."""
        for path in self.paths:
            with pq.ParquetFile(path) as shard:
                yield from shard.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole table (or some columns of it) in memory: for tables known to be small."""
        wanted = list(columns) if columns else None
        return pa.concat_tables([pq.read_table(p, columns=wanted) for p in self.paths]).replace_schema_metadata(None)


DATA_DIR_ENV = "MLM_DATA_DIR"


def default_data_dir() -> Path:
    """``$MLM_DATA_DIR``, else ``$DAGSTER_HOME/mlm_data``, else ``./.mlm_data``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"]) / "mlm_data"
    return Path(".mlm_data")


def release_folder(root: Path, asset: str, release: str) -> Path:
    return root / asset / RELEASE_FOLDER.format(release)


def store_table(root: Path, asset: str, release: str, data: pa.Table | TableStream) -> Written:
    """Stores an asset's table for a release where the pipeline reads it (as the IO manager does)."""
    return write_table(release_folder(root, asset, release), data, root / INCOMING)


def stored_table(asset: str, release: str, data_dir: Path | str | None = None) -> StoredTable:
    """An asset of a release as stored by the pipeline, e.g. ``stored_table("images", "2026-01-05")``.

    ``data_dir`` defaults to the pipeline's (``$MLM_DATA_DIR``, else ``$DAGSTER_HOME/mlm_data``)."""
    return StoredTable(release_folder(Path(data_dir) if data_dir else default_data_dir(), asset, release))
