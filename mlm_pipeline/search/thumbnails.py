"""Image bytes for result thumbnails: read from the release's blob store on demand, a few at a time.

A result names an image by (qid, file name); its bytes are in the release's blob store under the
sha256 that ``images_filtered`` records for it, and finding that hash means reading the table's
key columns (Parquet has no random access by row). So the images of an answer are remembered as a
group when the answer is made (``expect``, no reading), and the first request for one of them
looks up the whole group in one pass and reads its files into a cache bounded in bytes; the
page's other thumbnail requests wait for that read instead of starting their own. A client of
the JSON API that never asks for a thumbnail costs no reading at all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable

import pyarrow.parquet as pq

from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.shards import StoredTable

Key = tuple[str, str]  # (qid, file name)
Reader = Callable[[list[Key]], dict[Key, bytes]]


def blob_reader(images: StoredTable, blobs: BlobStore) -> Reader:
    """Reads the wanted images' bytes: their sha256 from ``images`` (qid, file_name, sha256), the
    bytes from ``blobs``."""

    def read(keys: list[Key]) -> dict[Key, bytes]:
        wanted = set(keys)
        table = pq.read_table(images.paths, columns=["qid", "file_name", "sha256"],
                              filters=[("qid", "in", sorted({q for q, _ in keys}))])
        rows = zip(table.column("qid").to_pylist(), table.column("file_name").to_pylist(),
                   table.column("sha256").to_pylist())
        return {(q, f): blobs.get(sha256) for q, f, sha256 in rows if (q, f) in wanted}

    return read


class ThumbnailCache:
    """Least recently used images up to ``max_bytes``, read by one background reader."""

    def __init__(self, read: Reader, max_bytes: int = 64 << 20, max_expected: int = 10_000) -> None:
        self.read = read
        self.max_bytes = max_bytes
        self.max_expected = max_expected
        self.cached: OrderedDict[Key, bytes] = OrderedDict()
        self.size = 0
        self.groups: OrderedDict[Key, tuple[Key, ...]] = OrderedDict()  # image -> its answer's images
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

    def expect(self, keys: Iterable[Key]) -> None:
        """These images will likely be asked for together (one answer's results)."""
        group = tuple(dict.fromkeys(keys))
        with self.lock:
            for key in group:
                self.groups[key] = group
                self.groups.move_to_end(key)
            while len(self.groups) > self.max_expected:
                self.groups.popitem(last=False)

    def get(self, key: Key) -> bytes | None:
        """The image's bytes (None when the table has no such image)."""
        with self.lock:
            if key in self.cached:
                self.cached.move_to_end(key)
                return self.cached[key]
            future = self.pending.get(key)
            if future is None:
                group = self.groups.get(key, (key,))
                keys = [k for k in group if k == key or (k not in self.cached and k not in self.pending)]
                future = self.reader.submit(self._read, keys)
                for k in keys:
                    self.pending[k] = future
        return future.result().get(key)

    def close(self) -> None:
        self.reader.shutdown(wait=True, cancel_futures=True)
