"""Stage 4: keep the raster images the encoders can use; say why each other one goes.

The paper excludes SVG files (maps, flags, coats of arms: drawings, not views of the place).
Commons serves an SVG's thumbnail as a PNG rendering, so the name is one witness; the bytes are
the other (an SVG document whatever the name says). Bytes that Pillow cannot decode (still
damaged after every download attempt) go too. Each file's bytes are judged once, however many
entities share it, read from the blob store a batch at a time; the kept rows refer to the same
stored bytes as the downloaded ones (nothing is copied).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

import duckdb
import pyarrow as pa

from mlm_pipeline import sql
from mlm_pipeline.download.validate import TooManyPixels, inspect_image, is_svg, svg_by_name

STAGE = "images_filtered"
FILES_PER_BATCH = 256


def verdict(file_name: str, content: bytes, max_pixels: int) -> tuple[str, str] | None:
    """(reason, detail) for a file to drop, None to keep it."""
    if is_svg(content):
        return "svg", "the bytes are an SVG document"
    if svg_by_name(file_name):
        return "svg", "a rendering of an SVG original (by its file name)"
    try:
        facts = inspect_image(content, max_pixels)
    except TooManyPixels as exc:
        return "too_many_pixels", str(exc)[:200]
    if facts.problem:
        return "undecodable", facts.problem
    return None


VERDICTS = pa.schema([("file_name", pa.string()), ("sha256", pa.string()), ("reason", pa.string()),
                      ("detail", pa.string())])
"""The files to drop, each (name, bytes) judged once however many entities show it."""


def judge(files: Iterable[pa.RecordBatch], read: Callable[[str], bytes], max_pixels: int, workers: int = 2) -> pa.Table:
    """VERDICTS for the (file_name, sha256) rows of ``files`` that go; a batch at a time, its
    files decoded by ``workers`` threads (Pillow decodes without holding the GIL)."""
    dropped: dict[str, list[str]] = {name: [] for name in VERDICTS.names}

    def one(name: str, sha256: str) -> tuple[str, str] | None:
        return verdict(name, read(sha256), max_pixels)

    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="image-filter") as pool:
        for batch in files:
            names, hashes = batch.column("file_name").to_pylist(), batch.column("sha256").to_pylist()
            for name, sha256, found in zip(names, hashes, pool.map(one, names, hashes)):
                if found is not None:
                    for column, value in zip(VERDICTS.names, (name, sha256, *found)):
                        dropped[column].append(value)
    return pa.table(dropped, schema=VERDICTS)


@dataclass(frozen=True)
class Filtered:
    kept: str  # query: the IMAGES rows kept
    dropouts: str  # query: a DROPOUTS row per (entity, file) removed
    counts: Counter[str]  # rows per reason, plus "kept"
    orphans: int  # entities that had images and have none left (e.g. only SVG maps)


def filter_images(con: duckdb.DuckDBPyConnection, read: Callable[[str], bytes], max_pixels: int) -> Filtered:
    """Judges the files of the ``images`` view (bytes from ``read(sha256)``) and gives the
    queries that split it into the kept rows and the dropouts, sorted, run out of core."""
    files = con.sql("SELECT DISTINCT file_name, sha256 FROM images ORDER BY 1, 2").to_arrow_reader(FILES_PER_BATCH)
    sql.register(con, verdicts=judge(files, read, max_pixels))
    kept = """
        SELECT i.* FROM images i ANTI JOIN verdicts v ON v.file_name = i.file_name AND v.sha256 = i.sha256
        ORDER BY i.qid, i.file_name"""
    dropouts = f"""
        SELECT i.qid, i.file_name AS item, '{STAGE}' AS stage, v.reason, v.detail
        FROM images i JOIN verdicts v ON v.file_name = i.file_name AND v.sha256 = i.sha256
        ORDER BY qid, item, stage, reason"""
    counts: Counter[str] = Counter(sql.counts(con, dropouts, "reason"))
    if kept_rows := sql.scalar(con, f"SELECT count(*) FROM ({kept})"):
        counts["kept"] = kept_rows
    orphans = sql.scalar(con, f"SELECT count(*) FROM (SELECT qid FROM images EXCEPT SELECT qid FROM ({kept}))")
    return Filtered(kept, dropouts, counts, orphans)
