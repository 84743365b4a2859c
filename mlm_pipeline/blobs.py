"""Image bytes, stored once per release under their sha256; tables refer to them by hash.

The image tables (``images``, ``images_filtered``) hold each thumbnail's metadata and its
``sha256``, not its bytes: the bytes are written once, when downloaded, to
``<data dir>/blobs/<release>/<first two hex digits>/<sha256>``, and every stage and reader gets
them from there. So the downloaded set and the filtered set cost one copy of the thumbnails
between them, a file shared by several entities is stored once, and a resumed or repeated
download writes nothing twice (the name is the content's hash, so a second write of the same
bytes is the same file). Paths are built from validated hashes only, never from file names
out of the graph.

Reading an image, from any code::

    from mlm_pipeline.blobs import image_bytes
    data = image_bytes("2026-01-05", row["sha256"])
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

from mlm_pipeline.shards import default_data_dir, storage_guard

BLOBS = "blobs"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobStore:
    """The content-addressed files of one release."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def of_release(cls, data_dir: Path, release: str) -> "BlobStore":
        return cls(Path(data_dir) / BLOBS / release)

    def path(self, sha256: str) -> Path:
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a sha256 in lower-case hex: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Stores ``data`` unless it is stored already; returns its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path(sha256)
        try:
            if path.stat().st_size == len(data):
                return sha256
        except FileNotFoundError:
            pass
        with storage_guard(path, "write"):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{sha256}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha256

    def get(self, sha256: str) -> bytes:
        path = self.path(sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"image {sha256} is not stored at {path}: rematerialise `images` for this release"
            ) from None

    def __contains__(self, sha256: str) -> bool:
        return self.path(sha256).exists()


def image_bytes(release: str, sha256: str, data_dir: Path | str | None = None) -> bytes:
    """The bytes of a thumbnail of ``release`` named by the ``sha256`` column of an image table.

    ``data_dir`` defaults to the pipeline's (``$MLM_DATA_DIR``, else ``$DAGSTER_HOME/mlm_data``)."""
    return BlobStore.of_release(Path(data_dir) if data_dir else default_data_dir(), release).get(sha256)
