"""``mlm.duckdb``: every asset of every release as a DuckDB view, for one's own queries.

The pipeline refreshes the catalog whenever it stores a table, so a release is queryable as
soon as it materialises::

    duckdb mlm_data/mlm.duckdb -c "SELECT release, count(*) FROM mlm_irle GROUP BY release"

Each view reads the asset's shards of all releases in place (nothing is copied) and adds a
``release`` column from the folder name; ``image_path(release, sha256)`` gives the file that
holds an image's bytes. The views name absolute paths: after moving the data directory, run
``mlm-pipeline catalog`` to write them again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import duckdb

from mlm_pipeline.blobs import BLOBS
from mlm_pipeline.sql import quoted
from mlm_pipeline.shards import INCOMING, RELEASE_FOLDER, scratch_tag, storage_guard

CATALOG = "mlm.duckdb"


def stored_assets(root: Path) -> list[str]:
    """Assets with at least one release stored as shards."""
    release_glob = RELEASE_FOLDER.format("*")
    return sorted(
        child.name
        for child in root.iterdir()
        if child.is_dir() and not child.name.startswith(".") and any(child.glob(f"{release_glob}/part-*.parquet"))
    ) if root.is_dir() else []


def refresh_catalog(root: Path) -> Path:
    """Writes the catalog anew beside the tables and puts it in place in one rename (a reader
    with the old one open keeps it); one writer at a time."""
    root = Path(root).resolve()
    target = root / CATALOG
    scratch = root / INCOMING
    with storage_guard(target, "write"):
        scratch.mkdir(parents=True, exist_ok=True)
        with open(scratch / "catalog.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tmp = scratch / f"catalog-{scratch_tag()}.duckdb"
            try:
                with duckdb.connect(str(tmp)) as con:
                    for asset in stored_assets(root):
                        files = f"{root / asset}/{RELEASE_FOLDER.format('*')}/part-*.parquet"
                        con.execute(
                            f'CREATE VIEW "{asset}" AS SELECT * FROM read_parquet({quoted(files)}, '
                            "hive_partitioning = true, hive_types_autocast = false, union_by_name = true)"
                        )
                    blobs = quoted(f"{root / BLOBS}/")
                    con.execute(
                        f"CREATE MACRO image_path(release, sha256) AS "
                        f"{blobs} || release || '/' || substr(sha256, 1, 2) || '/' || sha256"
                    )
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
                tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
    return target
