"""Where the pipeline keeps its files: Parquet assets, download staging, checkpoints.

One base folder for everything, so a release can be copied, inspected or deleted as a unit.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource

DATA_DIR_ENV = "MLM_DATA_DIR"


def default_data_dir() -> Path:
    """``$MLM_DATA_DIR``, else ``$DAGSTER_HOME/mlm_data``, else ``./.mlm_data``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"]) / "mlm_data"
    return Path(".mlm_data")


class StorageResource(ConfigurableResource):
    """Folders for what assets write besides their Parquet output (staging, checkpoints)."""

    base_dir: str = ""

    def root(self) -> Path:
        return Path(self.base_dir) if self.base_dir else default_data_dir()

    def folder(self, *parts: str) -> Path:
        """A folder under the base dir, created on first use; parts come from our own code."""
        path = self.root().joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path
