"""Whose photograph each packaged image is, and under which terms: the attribution table.

Commons requires attribution for most of its licences, and the terms are the file's own, not
the dataset's. Every file the package holds gets one row with what its description page gives
(licence, licence URL, credit line, artist, credit, whether attribution is required, the
original's sha1) and a ``status``: ``ok``, or why the file cannot be credited as its licence
asks, so that nobody takes a missing entry for a free one.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pv

from mlm_pipeline.release_package.rows import kept_images

STATUS = {
    "ok": "licence and credit line as the Commons page gives them",
    "no_licence": "the Commons page names no licence: do not reuse before checking the page",
    "no_author": "attribution is required (or not stated) but the page names no author or credit",
}
ATTRIBUTION = pa.schema(
    [
        ("file_name", pa.string()),
        ("description_url", pa.string()),
        ("license", pa.string()),
        ("license_url", pa.string()),
        ("attribution", pa.string()),
        ("artist", pa.string()),
        ("credit", pa.string()),
        ("attribution_required", pa.bool_()),
        ("commons_sha1", pa.string()),
        ("sha256", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)

_STATUS_SQL = """CASE WHEN license IS NULL THEN 'no_licence'
                     WHEN attribution IS NULL AND attribution_required IS DISTINCT FROM false THEN 'no_author'
                     ELSE 'ok' END"""


def attribution_query() -> str:
    """One row per file of the package (MLM holds every file any version holds), by name."""
    reasons = " ".join(f"WHEN '{status}' THEN '{text}'" for status, text in STATUS.items() if status != "ok")
    columns = ", ".join(f"any_value({c}) AS {c}" for c in ATTRIBUTION.names[1:-2])
    return f"""
        WITH files AS (
            SELECT file_name, {columns}
            FROM (SELECT k.* FROM {kept_images('mlm')} k SEMI JOIN mlm USING (qid))
            GROUP BY file_name
        ), judged AS (SELECT *, {_STATUS_SQL} AS status FROM files)
        SELECT *, CASE status {reasons} ELSE NULL END AS reason FROM judged ORDER BY file_name"""


def write_attribution(con: duckdb.DuckDBPyConnection, path: Path, batch_rows: int) -> dict[str, int]:
    """Writes the table as CSV, a batch at a time; returns the files per status."""
    counts = dict.fromkeys(STATUS, 0)
    reader = con.sql(attribution_query()).to_arrow_reader(batch_rows)
    with pv.CSVWriter(path, ATTRIBUTION) as writer:
        for batch in reader:
            table = pa.Table.from_batches([batch]).select(ATTRIBUTION.names).cast(ATTRIBUTION)
            writer.write_table(table)
            for status in table.column("status").to_pylist():
                counts[status] += 1
    return counts
