"""Tables as folders of shards: what is read back, what a kill or a refusing disk leaves behind."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from mlm_pipeline.catalog import refresh_catalog
from mlm_pipeline.shards import (
    INCOMING,
    MAX_ROW_GROUP_ROWS,
    ROW_GROUPS_PER_SHARD,
    StorageError,
    TableStream,
    release_folder,
    rows_per_group,
    store_table,
    stored_table,
)
from mlm_pipeline.storage import check_writable

PROJECT = Path(__file__).resolve().parent.parent


def table(rows: int, seed: int = 0) -> pa.Table:
    return pa.table({
        "qid": [f"Q{seed}{i:07d}" for i in range(rows)],
        "n": pa.array(range(rows), pa.int64()),
        "names": [[f"file {i}.jpg"] * (i % 3) for i in range(rows)],
    })


def shard_digests(folder: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())]


def test_shards_reassemble_to_the_same_rows_whatever_the_batches(tmp_path: Path) -> None:
    rows = 2 * ROW_GROUPS_PER_SHARD * MAX_ROW_GROUP_ROWS + 5  # three shards, the last one short
    data = table(rows)
    whole = store_table(tmp_path / "a", "t", "2026-01-05", data)
    pieces = store_table(tmp_path / "b", "t", "2026-01-05",
                         TableStream(data.schema, iter(data.to_batches(max_chunksize=777))))
    assert whole.rows == pieces.rows == rows and whole.shards == 3
    assert shard_digests(whole.folder) == shard_digests(pieces.folder)  # cut by rows, not by arrival
    stored = stored_table("t", "2026-01-05", tmp_path / "a")
    assert stored.read().equals(data) and stored.num_rows == rows
    assert pa.Table.from_batches(list(stored.batches(["qid"], batch_size=1000))).column("qid").equals(data.column("qid"))
    assert rows_per_group(data.schema) == MAX_ROW_GROUP_ROWS
    # An empty table still stores its schema.
    empty = store_table(tmp_path / "a", "empty", "2026-01-05", data.schema.empty_table())
    assert stored_table("empty", "2026-01-05", tmp_path / "a").read().schema.equals(data.schema)
    assert empty.rows == 0 and empty.shards == 1


KILLED_WRITER = """
import os, signal, sys
import pyarrow as pa
from pathlib import Path
from mlm_pipeline.shards import TableStream, store_table

root = Path(sys.argv[1])
schema = pa.schema([("qid", pa.string()), ("n", pa.int64())])

def batches():
    for i in range(100):
        yield pa.record_batch({"qid": [f"N{i:03d}-{j:05d}" for j in range(20000)], "n": [i] * 20000}, schema=schema)
        if i == 40:  # a shard and more are written: the process dies here, as under a kill -9
            os.kill(os.getpid(), signal.SIGKILL)

store_table(root, "t", "2026-01-05", TableStream(schema, batches()))
"""


def test_a_killed_writer_leaves_the_stored_table_as_it_was(tmp_path: Path) -> None:
    before = table(1000)
    store_table(tmp_path, "t", "2026-01-05", before)
    folder = release_folder(tmp_path, "t", "2026-01-05")
    digests = shard_digests(folder)
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=PROJECT)
    assert killed.returncode == -signal.SIGKILL
    (left,) = [p for p in (tmp_path / INCOMING).iterdir() if p.is_dir()]
    assert any(left.glob("part-*.parquet"))  # half a table, in the scratch folder only
    assert shard_digests(folder) == digests and stored_table("t", "2026-01-05", tmp_path).read().equals(before)
    with duckdb.connect(str(refresh_catalog(tmp_path)), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(1000,)]
    # The next table written sweeps the dead writer's scratch away.
    store_table(tmp_path, "other", "2026-01-05", table(10))
    assert not left.exists()


def test_a_full_disk_stops_the_write_naming_the_path_and_keeps_the_table(tmp_path: Path) -> None:
    before = table(1000)
    store_table(tmp_path, "t", "2026-01-05", before)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, limits[1]))  # the disk takes 64 KiB per file
    try:
        with pytest.raises(StorageError) as refused:
            store_table(tmp_path, "t", "2026-01-05", table(200_000, seed=1))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert str(tmp_path / INCOMING) in str(refused.value) and "file size limit" in str(refused.value)
    assert stored_table("t", "2026-01-05", tmp_path).read().equals(before)
    assert not [p for p in (tmp_path / INCOMING).iterdir() if p.is_dir()]  # no half table left either
    with pytest.raises(StorageError, match=f"cannot write in {tmp_path}: .* MiB free, below the"):
        check_writable(tmp_path, shutil.disk_usage(tmp_path).free + (1 << 40))


def read_only_runner(path: Path) -> list[str]:
    """A command prefix under which ``path`` is read-only, as on a read-only disk. A non-root user
    only needs the permission bits; root ignores those, so root gets a private read-only mount."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        return []
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root where unshare cannot give a read-only mount")
    return ["unshare", "-rm", "sh", "-c", script, str(path)]


def test_a_read_only_data_directory_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = table(100)
    store_table(data, "t", "2026-01-05", before)
    code = textwrap.dedent(f"""
        from pathlib import Path
        from mlm_pipeline.storage import check_writable
        from mlm_pipeline.shards import StorageError, store_table
        import pyarrow as pa
        try:
            check_writable(Path({str(data)!r}), 0)
        except StorageError as error:
            print(error)
    """)
    try:
        ran = subprocess.run([*read_only_runner(data), sys.executable, "-c", code], cwd=PROJECT,
                             capture_output=True, text=True, timeout=120)
    finally:
        data.chmod(0o755)
    assert ran.returncode == 0, ran.stderr
    assert f"cannot write in the data directory {data}: the file system is read-only" in ran.stdout \
        or f"cannot write in the data directory {data}: permission denied" in ran.stdout
    assert stored_table("t", "2026-01-05", data).read().equals(before)
