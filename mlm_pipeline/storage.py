"""Where the pipeline keeps its files: Parquet assets, image bytes, download staging, checkpoints.

One base folder for everything, so a release can be copied, inspected or deleted as a unit:

- ``<asset>/release=<key>/part-*.parquet``: each asset of each release (``shards.py``);
- ``blobs/<key>/``: the release's thumbnails, once each, named by sha256 (``blobs.py``);
- ``staging/<key>/``: finished download batches, so a killed download resumes;
- ``checkpoints/``, ``figures/``: models and plots;
- ``packages/<key>/``: the release as a publishable package (``release_package``);
- ``mlm.duckdb``: views over every asset of every release (``catalog.py``);
- ``.incoming/``: tables being written and DuckDB's spill files; never read as data.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.shards import INCOMING, StorageError, default_data_dir, storage_guard


def check_writable(root: Path, min_free_bytes: int) -> None:
    """Refuses a data directory that cannot take a table now, before anything is written."""
    with storage_guard(root, "create the data directory"):
        root.mkdir(parents=True, exist_ok=True)
    probe = root / INCOMING / f"probe-{os.getpid()}"
    with storage_guard(root, "write in the data directory"):
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
    free = shutil.disk_usage(root).free
    if free < min_free_bytes:
        raise StorageError(
            f"cannot write in {root}: {free / 2**20:.0f} MiB free, below the {min_free_bytes / 2**20:.0f} MiB "
            "the pipeline keeps in reserve; nothing stored before was changed; free space there "
            "(or point MLM_DATA_DIR elsewhere) and run again"
        )


class StorageResource(ConfigurableResource):
    """Folders for what assets write besides their tables (image bytes, staging, checkpoints)."""

    base_dir: str = Field("", description="the data directory; empty: $MLM_DATA_DIR, else $DAGSTER_HOME/mlm_data")
    min_free_mb: int = Field(256, ge=0, description="free space a stage needs before it starts writing")

    def root(self) -> Path:
        return Path(self.base_dir) if self.base_dir else default_data_dir()

    def folder(self, *parts: str) -> Path:
        """A folder under the base dir, created on first use; parts come from our own code.
        The data directory is checked first, so a full or read-only disk stops a stage before
        it does any work."""
        check_writable(self.root(), self.min_free_mb << 20)
        path = self.root().joinpath(*parts)
        with storage_guard(path, "create"):
            path.mkdir(parents=True, exist_ok=True)
        return path

    def blobs(self, release: str) -> BlobStore:
        """The release's image bytes (see ``blobs.py``)."""
        return BlobStore.of_release(self.root(), release)

    def spill(self) -> Path:
        """Where DuckDB may spill joins and sorts that exceed its memory limit."""
        return self.folder(INCOMING)
