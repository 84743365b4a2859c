"""What changed between two releases, entity by entity.

Users of a dataset that is rebuilt every week need to know whether a changed benchmark number
comes from the model or from the data; this names the entities that came, went or changed in
a way the dataset can see (coordinates, classes, images, summaries). Labels and titles are left
out on purpose: they change daily on Wikidata and reach the dataset only through summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Iterable, Mapping

import pyarrow as pa

from mlm_pipeline.schemas import RELEASE_DIFF, sort_table

FIELDS = ("coordinates", "classes", "images", "summaries")
COORDINATE_TOLERANCE = 1e-7
"""Degrees (about 1 cm): below this a coordinate edit is float noise, not a move."""


@dataclass(frozen=True)
class EntityView:
    """The parts of an entity the diff compares, in a form where equal means unchanged."""

    lat: float | None
    lon: float | None
    classes: frozenset[str]
    images: frozenset[str]
    summaries: Mapping[str, str] | None  # lang -> text; None when not known


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


def entity_views(entities: pa.Table, summaries: pa.Table | None) -> dict[str, EntityView]:
    texts: dict[str, dict[str, str]] = {}
    if summaries is not None:
        for qid, lang, text in zip(*(summaries.column(c).to_pylist() for c in ("qid", "lang", "text"))):
            texts.setdefault(qid, {})[lang] = text
    columns = [entities.column(c).to_pylist() for c in ("qid", "lat", "lon", "classes", "images")]
    return {
        qid: EntityView(
            lat,
            lon,
            frozenset(classes or ()),
            frozenset(images or ()),
            None if summaries is None else texts.get(qid, {}),
        )
        for qid, lat, lon, classes, images in zip(*columns)
    }


def _moved(a: EntityView, b: EntityView) -> bool:
    if None in (a.lat, a.lon, b.lat, b.lon):
        return (a.lat, a.lon) != (b.lat, b.lon)
    return not (
        math.isclose(a.lat, b.lat, abs_tol=COORDINATE_TOLERANCE)
        and math.isclose(a.lon, b.lon, abs_tol=COORDINATE_TOLERANCE)
    )


def changed_fields(old: EntityView, new: EntityView) -> list[str]:
    """Which fields differ; summaries only when both sides know theirs."""
    fields = []
    if _moved(old, new):
        fields.append("coordinates")
    if old.classes != new.classes:
        fields.append("classes")
    if old.images != new.images:
        fields.append("images")
    if old.summaries is not None and new.summaries is not None and old.summaries != new.summaries:
        fields.append("summaries")
    return fields


def diff_releases(
    current: Mapping[str, EntityView], previous: Mapping[str, EntityView] | None, previous_key: str | None
) -> pa.Table:
    """One row per entity added, removed or changed; the first release has everything added."""
    rows = []
    before = previous or {}
    for qid in sorted(set(current) | set(before)):
        if qid not in before:
            rows.append((qid, "added", []))
        elif qid not in current:
            rows.append((qid, "removed", []))
        else:
            fields = changed_fields(before[qid], current[qid])
            if fields:
                rows.append((qid, "changed", fields))
    table = pa.Table.from_pylist(
        [{"qid": q, "change": c, "fields": f, "previous_release": previous_key} for q, c, f in rows],
        schema=RELEASE_DIFF,
    )
    return sort_table(table, "release_diff")


def diff_counts(diff: pa.Table, n_current: int) -> dict[str, int]:
    """Counts for the metadata: per kind of change, per changed field, and the unchanged rest."""
    changes = diff.column("change").to_pylist()
    counts = {f"n_{kind}": changes.count(kind) for kind in ("added", "removed", "changed")}
    field_lists = diff.column("fields").to_pylist()
    for name in FIELDS:
        counts[f"n_changed_{name}"] = sum(name in fields for fields in field_lists)
    counts["n_unchanged"] = n_current - counts["n_added"] - counts["n_changed"]
    return counts
