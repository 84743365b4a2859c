"""Image bytes for result thumbnails: read from the release's images on demand, a few at a time.

The images asset keeps a release's thumbnails in one Parquet table, which has no random access
by row: reading one image decompresses the whole column around it. So the images of an answer
are read together, in one pass, as soon as the answer is known (``prefetch``), into a cache
bounded in bytes from which the page's thumbnail requests are served; a request for an image
that is being read waits for that read instead of starting another.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import pyarrow.parquet as pq

Key = tuple[str, str]  # (qid, file name)
Reader = Callable[[list[Key]], dict[Key, bytes]]


def parquet_reader(path: Path) -> Reader:
    """Reads the wanted images' bytes from a table with qid, file_name and content columns."""

    def read(keys: list[Key]) -> dict[Key, bytes]:
        wanted = set(keys)
        table = pq.read_table(
            path, columns=["qid", "file_name", "content"], filters=[("qid", "in", sorted({q for q, _ in keys}))]
        )
        rows = zip(table.column("qid").to_pylist(), table.column("file_name").to_pylist(), range(table.num_rows))
        content = table.column("content")
        return {(q, f): content[i].as_py() for q, f, i in rows if (q, f) in wanted}

    return read


class ThumbnailCache:
    """Least recently used images up to ``max_bytes``, filled by one background reader."""

    def __init__(self, read: Reader, max_bytes: int = 64 << 20) -> None:
        self.read = read
        self.max_bytes = max_bytes
        self.cached: OrderedDict[Key, bytes] = OrderedDict()
        self.size = 0
        self.pending: dict[Key, Future[dict[Key, bytes]]] = {}
        self.lock = threading.Lock()
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thumbnails")

    def _store(self, images: dict[Key, bytes]) -> None:
        with self.lock:
            for key, content in images.items():
                if key in self.cached:
                    continue
                self.cached[key] = content
                self.size += len(content)
            while self.size > self.max_bytes and len(self.cached) > 1:
                _, dropped = self.cached.popitem(last=False)
                self.size -= len(dropped)

    def _read(self, keys: list[Key]) -> dict[Key, bytes]:
        try:
            images = self.read(keys)
            self._store(images)
            return images
        finally:
            with self.lock:
                for key in keys:
                    self.pending.pop(key, None)

    def _submit(self, keys: list[Key]) -> Future[dict[Key, bytes]]:
        """Called with the lock held."""
        future = self.reader.submit(self._read, keys)
        for key in keys:
            self.pending[key] = future
        return future

    def prefetch(self, keys: Iterable[Key]) -> None:
        """Start reading whichever of ``keys`` are neither cached nor being read."""
        with self.lock:
            missing = [k for k in dict.fromkeys(keys) if k not in self.cached and k not in self.pending]
            if missing:
                self._submit(missing)

    def get(self, key: Key) -> bytes | None:
        """The image's bytes (None when the table has no such image)."""
        with self.lock:
            if key in self.cached:
                self.cached.move_to_end(key)
                return self.cached[key]
            future = self.pending.get(key) or self._submit([key])
        return future.result().get(key)

    def close(self) -> None:
        self.reader.shutdown(wait=True, cancel_futures=True)
