"""Packages one release into a folder ready for a dataset hub or a repository such as Zenodo.

Layout (every file's sha256 in ``SHA256SUMS``)::

    README.md                     dataset card, with the hub's YAML header (card.py)
    LICENSE.md                    the licence per part
    croissant.json                Croissant 1.1 metadata (croissant.py)
    provenance.json               what the release was built from
    attribution.csv               one row per image file: licence, credit line, status (attribution.py)
    figure2_entities_by_continent.png
    data/<version>/<split>-00000-of-0000N.parquet   one row per entity (rows.py, writer.py)

The folder is written beside its final place and moved there whole, so a killed run leaves the
previous package or none, never half of one. Nothing in it depends on when or how fast it was
built: the same release gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mlm_pipeline import sql
from mlm_pipeline.geo.stats import CONTINENTS, figure2_png, table2_markdown
from mlm_pipeline.geo.versions import SPLIT_NAMES, VERSIONS
from mlm_pipeline.release_package.attribution import write_attribution
from mlm_pipeline.release_package.card import FIGURE, CardFacts, card, licence_file
from mlm_pipeline.release_package.croissant import croissant
from mlm_pipeline.release_package.rows import ReadImage, hf_schema, version_batches
from mlm_pipeline.schemas import PACKAGE_MANIFEST
from mlm_pipeline.release_package.writer import SplitWriter
from mlm_pipeline.shards import StoredTable

MANIFEST = "SHA256SUMS"
INPUTS = ("entities", "summaries", "images", "images_filtered", "splits", "geo_cells", "mlm_irle_gr_cells",
          "dataset_stats", *VERSIONS)
"""The release's tables a package is made from (asset names)."""


@dataclass(frozen=True)
class PackagePlan:
    max_shard_bytes: int = 500 << 20
    rows_per_group: int = 100
    batch_rows: int = 256  # entities joined and read at a time
    duckdb_memory_mb: int = 512  # DuckDB spills beyond this


@dataclass(frozen=True)
class Packaged:
    folder: Path
    manifest: pa.Table  # PACKAGE_MANIFEST, by path
    split_rows: dict[str, dict[str, int]]
    images: dict[str, int]  # per version
    attribution: dict[str, int]


def connect(tables: Mapping[str, StoredTable], scratch: Path, plan: PackagePlan) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per input table, read where it is stored. Stored tables
    only: the rows are streamed on cursors of their own, which do not see in-memory tables that
    were registered on this connection."""
    missing = sorted(set(INPUTS) - set(tables))
    if missing:
        raise ValueError(f"release_package: no stored table given for {missing}")
    con = sql.connect(scratch, memory_limit=f"{plan.duckdb_memory_mb}MB")
    con.execute("SET threads = 2")
    sql.register(con, **{name: tables[name] for name in INPUTS})
    return con


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_version(con: duckdb.DuckDBPyConnection, version: str, read_image: ReadImage, folder: Path,
                   plan: PackagePlan) -> tuple[dict[str, int], int, int]:
    """Rows per split, images and shards of one version."""
    folder.mkdir(parents=True)
    schema = hf_schema()
    writers = {s: SplitWriter(folder, s, schema, plan.max_shard_bytes, plan.rows_per_group) for s in SPLIT_NAMES}
    images = 0
    for batch in version_batches(con, version, read_image, plan.batch_rows):
        writers[batch.split].write(batch.rows, batch.weights)
        images += pc.sum(pc.list_value_length(batch.rows.column("images"))).as_py() or 0
    shards = sum(len(w.close()) for w in writers.values())
    return {s: w.rows for s, w in writers.items()}, images, shards


def _figure_counts(stats: pa.Table) -> Counter[str]:
    rows = dict(zip(stats.column("measure").to_pylist(), stats.column("mlm").to_pylist()))
    return Counter({c: rows.get(f"entities_{c}") or 0 for c in CONTINENTS})


def build_package(
    tables: Mapping[str, StoredTable],
    read_image: ReadImage,
    release: str,
    source: str,
    languages: list[str],
    provenance: Mapping[str, Any],
    target: Path,
    plan: PackagePlan = PackagePlan(),
) -> Packaged:
    """Writes the package of ``release`` to ``target`` (replacing what is there) and returns
    its manifest. ``tables``: each table of ``INPUTS`` (stored shards are read in place);
    ``read_image`` gives an image's bytes from its row of ``images``."""
    scratch = target.with_name(f".{target.name}.{os.getpid()}.incoming")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        with connect(tables, scratch, plan) as con:
            split_rows, images, shards = {}, {}, {}
            for version in VERSIONS:
                split_rows[version], images[version], shards[version] = _write_version(
                    con, version, read_image, scratch / "data" / version, plan)
            attribution = write_attribution(con, scratch / "attribution.csv", plan.batch_rows)
            stats = con.sql("SELECT * FROM dataset_stats ORDER BY row").to_arrow_table()
            countries = con.execute(
                "SELECT country_code, count(*) FROM mlm GROUP BY 1 ORDER BY 2 DESC, 1 NULLS LAST").fetchall()
            (svg_documents,) = con.execute(
                "SELECT count(*) FROM images WHERE format = 'SVG' AND qid IN (SELECT qid FROM mlm)").fetchone()
        for spill in scratch.glob("duckdb-*"):  # DuckDB's spill folder, if it had to spill
            shutil.rmtree(spill, ignore_errors=True)
        figure2_png(_figure_counts(stats), scratch / FIGURE)
        facts = CardFacts(release, source, languages, split_rows, table2_markdown(stats), countries, attribution,
                          shards, svg_documents=svg_documents)
        (scratch / "README.md").write_text(card(facts), encoding="utf-8")
        (scratch / "LICENSE.md").write_text(licence_file(), encoding="utf-8")
        (scratch / "provenance.json").write_text(_json(provenance), encoding="utf-8")
        described = _manifest(scratch)
        metadata = croissant(release, f"MLM release {release}: {sum(split_rows['mlm'].values()):,} entities "
                             f"with images, Wikipedia summaries in {', '.join(languages)}, coordinates and classes.",
                             described.to_pylist(), languages)
        (scratch / "croissant.json").write_text(_json(metadata), encoding="utf-8")
        manifest = _manifest(scratch)
        lines = [f"{sha}  {path}\n" for path, sha in zip(manifest["path"].to_pylist(), manifest["sha256"].to_pylist())]
        (scratch / MANIFEST).write_text("".join(lines), encoding="utf-8")
        _replace(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Packaged(target, manifest, split_rows, images, attribution)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def _manifest(folder: Path) -> pa.Table:
    """Every file of the package but the manifest itself, by path."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return pa.table({
        "path": [p.relative_to(folder).as_posix() for p in paths],
        "bytes": [p.stat().st_size for p in paths],
        "sha256": [sha256_of(p) for p in paths],
    }, schema=PACKAGE_MANIFEST)


def _replace(scratch: Path, target: Path) -> None:
    """Moves the finished package into place; the previous one goes only once it is there."""
    old = target.with_name(f".{target.name}.{os.getpid()}.previous")
    if target.exists():
        os.replace(target, old)
    os.replace(scratch, target)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(folder: Path) -> dict[str, str]:
    """path -> sha256 as ``SHA256SUMS`` lists them."""
    entries = {}
    for line in (folder / MANIFEST).read_text(encoding="utf-8").splitlines():
        sha, _, path = line.partition("  ")
        entries[path] = sha
    return entries
