"""What changed between two releases, entity by entity.

Users of a dataset that is rebuilt every week need to know whether a changed benchmark number
comes from the model or from the data; this names the entities that came, went or changed in
a way the dataset can see (coordinates, classes, images, summaries). Labels and titles are left
out on purpose: they change daily on Wikidata and reach the dataset only through summaries.
The comparison is one DuckDB join over both releases' stored tables, so it stays within a fixed
memory budget however many entities the releases hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mlm_pipeline import schemas, sql
from mlm_pipeline.schemas import RELEASE_DIFF

FIELDS = ("coordinates", "classes", "images", "summaries")
COORDINATE_TOLERANCE = 1e-7
"""Degrees (about 1 cm): below this a coordinate edit is float noise, not a move."""


@dataclass(frozen=True)
class Release:
    """What the diff compares of a release: its entities and, when known, its summaries."""

    entities: sql.Source
    summaries: sql.Source | None


@dataclass(frozen=True)
class Previous:
    """The release to compare with, or the one that must be built first."""

    key: str | None  # None: no earlier release to compare with
    wait_for: str | None = None  # an earlier release still being built: compare once it is
    skipped: tuple[str, ...] = ()  # later registered releases that were never built


def previous_release(
    current: str, registered: Iterable[str], materialized: Collection[str], building: Collection[str] = ()
) -> Previous:
    """The release before ``current`` to compare with; keys are ISO dates, so string order is
    time order. That is the latest earlier registered release, so two releases built at once (a
    backfill) compare as they would one after the other: one still being built is waited for.
    Registered releases that nobody builds are skipped (and named) rather than waited for."""
    earlier = sorted((key for key in registered if key < current), reverse=True)
    skipped = []
    for key in earlier:
        if key in materialized:
            return Previous(key, skipped=tuple(skipped))
        if key in building:
            return Previous(None, wait_for=key)
        skipped.append(key)
    return Previous(None, skipped=tuple(skipped))


def _moved(axis: str) -> str:
    """SQL: the coordinate moved along ``axis`` beyond ``math.isclose(abs_tol=COORDINATE_TOLERANCE)``."""
    a, b = f"c.{axis}", f"p.{axis}"
    return f"NOT (abs({a} - {b}) <= greatest(1e-9 * greatest(abs({a}), abs({b})), {COORDINATE_TOLERANCE}))"


def _side(con: duckdb.DuckDBPyConnection, name: str, release: Release | None) -> bool:
    """Views ``<name>`` (qid, lat, lon, sorted distinct classes and images, summary digests) of
    one side; returns whether its summaries are known."""
    empty_entities, empty_summaries = schemas.ENTITIES.empty_table(), schemas.SUMMARIES.empty_table()
    known = release is not None and release.summaries is not None
    sql.register(con, **{
        f"{name}_entities": release.entities if release is not None else empty_entities,
        f"{name}_summaries": release.summaries if known else empty_summaries,  # type: ignore[union-attr]
    })
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        SELECT e.qid, e.lat, e.lon,
               list_sort(list_distinct(coalesce(e.classes, []))) AS classes,
               list_sort(list_distinct(coalesce(e.images, []))) AS images,
               coalesce(s.texts, []) AS texts
        FROM {name}_entities e LEFT JOIN (
            SELECT qid, list(lang || ':' || coalesce(sha256(text), 'null') ORDER BY lang) AS texts
            FROM {name}_summaries GROUP BY qid
        ) s USING (qid)""")
    return known


def diff_releases(
    current: Release, previous: Release | None, previous_key: str | None, spill_dir: Path | None = None
) -> pa.Table:
    """One row per entity added, removed or changed; the first release has everything added.
    Summaries are compared only when both sides know theirs (by each text's sha256)."""
    with sql.connect(spill_dir) as con:
        current_texts = _side(con, "cur", current)
        previous_texts = _side(con, "prev", previous)
        checks = {
            "coordinates": f"""CASE WHEN c.lat IS NULL OR c.lon IS NULL OR p.lat IS NULL OR p.lon IS NULL
                               THEN c.lat IS DISTINCT FROM p.lat OR c.lon IS DISTINCT FROM p.lon
                               ELSE {_moved("lat")} OR {_moved("lon")} END""",
            "classes": "c.classes <> p.classes",
            "images": "c.images <> p.images",
            "summaries": "c.texts <> p.texts" if current_texts and previous_texts else "false",
        }
        fields = "list_filter([" + ", ".join(f"CASE WHEN {test} THEN '{name}' END" for name, test in checks.items()) \
            + "], lambda f: f IS NOT NULL)"
        key = "NULL" if previous_key is None else sql.quoted(previous_key)
        return sql.table(con, f"""
            SELECT qid, change, fields, {key} AS previous_release FROM (
                SELECT coalesce(c.qid, p.qid) AS qid,
                       CASE WHEN p.qid IS NULL THEN 'added' WHEN c.qid IS NULL THEN 'removed' ELSE 'changed' END AS change,
                       CASE WHEN p.qid IS NULL OR c.qid IS NULL THEN []::VARCHAR[] ELSE {fields} END AS fields
                FROM cur c FULL OUTER JOIN prev p ON c.qid = p.qid
            ) WHERE change <> 'changed' OR len(fields) > 0
            ORDER BY qid""", RELEASE_DIFF)


def diff_counts(diff: pa.Table, n_current: int) -> dict[str, int]:
    """Counts for the metadata: per kind of change, per changed field, and the unchanged rest."""
    changes = {row["values"]: row["counts"] for row in pc.value_counts(diff.column("change")).to_pylist()}
    counts = {f"n_{kind}": changes.get(kind, 0) for kind in ("added", "removed", "changed")}
    changed = {row["values"]: row["counts"] for row in pc.value_counts(pc.list_flatten(diff.column("fields"))).to_pylist()}
    for name in FIELDS:
        counts[f"n_changed_{name}"] = changed.get(name, 0)
    counts["n_unchanged"] = n_current - counts["n_added"] - counts["n_changed"]
    return counts
