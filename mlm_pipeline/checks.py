"""Asset checks: what must hold of each table before anything downstream may use it.

Each rule is a plain function from tables to a ``Finding`` and is tested directly with bad
tables. The Dagster checks at the end only hand the stored tables to a rule and turn its
finding into an ``AssetCheckResult`` whose metadata names the offending rows, because "the
check failed" is useless at 3 a.m. and "Q9000000123 has latitude 91.2" is not.

Checks are blocking where a bad table would poison what is built from it (a duplicated QID
doubles an entity in every split; an undecodable image crashes feature extraction hours later);
the benchmark's own results block nothing, since nothing is built from them.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import pyarrow as pa

MAX_NAMED = 20
"""How many offending rows a failed check names in its metadata (all are counted)."""

LANGUAGES = ("en", "de", "fr")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Finding:
    """What one rule found: the keys of every offending row, and why they offend."""

    rule: str
    offending: tuple[str, ...] = ()
    reasons: Mapping[str, int] = field(default_factory=dict)  # reason -> rows with it
    counts: Mapping[str, int | float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.offending

    @property
    def detail(self) -> str:
        if self.passed:
            return f"{self.rule}: ok"
        why = ", ".join(f"{reason} x{n}" for reason, n in sorted(self.reasons.items()))
        named = ", ".join(self.offending[:MAX_NAMED])
        more = f" and {len(self.offending) - MAX_NAMED} more" if len(self.offending) > MAX_NAMED else ""
        return f"{self.rule}: {len(self.offending)} offending rows ({why}): {named}{more}"


class _Offenders:
    """Collects offending keys with a reason each, in first-seen order, each key once."""

    def __init__(self) -> None:
        self.keys: dict[str, None] = {}
        self.reasons: Counter[str] = Counter()

    def add(self, key: str, reason: str) -> None:
        self.reasons[reason] += 1
        self.keys.setdefault(key, None)

    def finding(self, rule: str, **counts: int | float) -> Finding:
        return Finding(rule, tuple(sorted(self.keys)), dict(self.reasons), counts)


def _key(row: Sequence[object]) -> str:
    """A row key as people write it: ``Q1`` or ``Q1/en``; a missing part shows as ``<null>``."""
    return "/".join("<null>" if v is None else str(v) for v in row)


def _keys(table: pa.Table, columns: Sequence[str]) -> list[str]:
    return [_key(row) for row in zip(*(table.column(c).to_pylist() for c in columns))]


def _require(table: pa.Table, columns: Iterable[str], rule: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{rule}: table has no column {missing} (columns: {table.column_names})")


def unique_keys(table: pa.Table, columns: Sequence[str]) -> Finding:
    """No key twice and no key part null: every later join assumes one row per key."""
    rule = f"unique {'+'.join(columns)}"
    _require(table, columns, rule)
    found = _Offenders()
    seen = Counter(zip(*(table.column(c).to_pylist() for c in columns)))
    for row, n in seen.items():
        if any(v is None for v in row):
            found.add(_key(row), "null key")
        if n > 1:
            found.add(_key(row), "duplicate")
    return found.finding(rule, rows=table.num_rows, distinct=len(seen))


def coordinates_in_range(table: pa.Table, key: Sequence[str] = ("qid",)) -> Finding:
    """Latitude in [-90, 90] and longitude in [-180, 180], finite and present: cells, reverse
    geocoding and distance errors are all undefined outside that box."""
    rule = "coordinates in range"
    _require(table, [*key, "lat", "lon"], rule)
    found = _Offenders()
    for row_key, lat, lon in zip(_keys(table, key), table.column("lat").to_pylist(), table.column("lon").to_pylist()):
        if lat is None or lon is None:
            found.add(row_key, "missing coordinate")
        elif not (math.isfinite(lat) and math.isfinite(lon)):
            found.add(row_key, "non-finite coordinate")
        elif not -90.0 <= lat <= 90.0:
            found.add(row_key, "latitude out of range")
        elif not -180.0 <= lon <= 180.0:
            found.add(row_key, "longitude out of range")
    return found.finding(rule, rows=table.num_rows)


def languages_within(
    table: pa.Table, column: str, allowed: Sequence[str], key: Sequence[str] = ("qid",)
) -> Finding:
    """Only the configured languages: a stray language would give text features from an
    encoder nobody evaluated. ``column`` holds one language or a list of them (empty or null
    lists offend too, since every kept entity must have a summary)."""
    rule = f"languages within {sorted(allowed)}"
    _require(table, [*key, column], rule)
    allowed_set = set(allowed)
    found = _Offenders()
    is_list = pa.types.is_list(table.schema.field(column).type) or pa.types.is_large_list(
        table.schema.field(column).type
    )
    for row_key, value in zip(_keys(table, key), table.column(column).to_pylist()):
        values = value if is_list else [value]
        if not values:
            found.add(row_key, "no language")
        for lang in values or ():
            if lang not in allowed_set:
                found.add(row_key, f"language {lang!r}")
    return found.finding(rule, rows=table.num_rows)


def exactly_one_split(splits: pa.Table, versions: Mapping[str, pa.Table]) -> Finding:
    """Every entity of every dataset version in exactly one of train/val/test and nothing else:
    an entity in two splits leaks test data into training, a missing one shrinks the test set."""
    rule = "every entity in exactly one split"
    _require(splits, ["version", "qid", "split"], rule)
    found = _Offenders()
    assigned: dict[str, Counter[str]] = {name: Counter() for name in versions}
    for version, qid, split in zip(*(splits.column(c).to_pylist() for c in ("version", "qid", "split"))):
        key = f"{version}/{qid}"
        if version not in assigned:
            found.add(key, "unknown version")
            continue
        assigned[version][qid] += 1
        if split not in SPLIT_NAMES:
            found.add(key, f"split {split!r}")
    for name, table in versions.items():
        _require(table, ["qid"], rule)
        members = set(table.column("qid").to_pylist())
        for qid, n in assigned[name].items():
            if n > 1:
                found.add(f"{name}/{qid}", "in several splits")
            if qid not in members:
                found.add(f"{name}/{qid}", "not in the version")
        for qid in members - set(assigned[name]):
            found.add(f"{name}/{qid}", "in no split")
    counts = {f"{name}_{split}": 0 for name in versions for split in SPLIT_NAMES}
    for version, split in zip(splits.column("version").to_pylist(), splits.column("split").to_pylist()):
        if f"{version}_{split}" in counts:
            counts[f"{version}_{split}"] += 1
    return found.finding(rule, **counts)


def cell_counts_within(geo_cells: pa.Table, min_count: int, max_count: int, max_level: int) -> Finding:
    """The partitioning's own promises: no cell below the minimum (it was to be dropped), none
    above the maximum unless it is at the deepest level (where splitting stops), and class
    labels 0..n-1 in token order, since the location heads index outputs by them."""
    rule = f"cell counts within [{min_count}, {max_count}] (max level {max_level})"
    _require(geo_cells, ["cell", "token", "level", "count"], rule)
    found = _Offenders()
    rows = sorted(
        zip(*(geo_cells.column(c).to_pylist() for c in ("token", "cell", "level", "count"))),
        key=lambda row: (row[0] is None, row[0] or ""),
    )
    for position, (token, cell, level, count) in enumerate(rows):
        if cell != position:
            found.add(str(token), f"label {cell} at token position {position}")
        if count is None or count < min_count:
            found.add(str(token), "below the minimum count")
        elif count > max_count and (level is None or level < max_level):
            found.add(str(token), "above the maximum count below the deepest level")
    counts = [c for c in geo_cells.column("count").to_pylist() if c is not None]
    return found.finding(
        rule,
        cells=geo_cells.num_rows,
        min_cell_count=min(counts, default=0),
        max_cell_count=max(counts, default=0),
    )


def cells_match_entities(geo_cells: pa.Table, entity_cells: pa.Table) -> Finding:
    """Each entity's cell exists with the same token, and each cell's count is the number of
    entities assigned to it, so the label space of training equals the one evaluated."""
    rule = "entity cells match geo_cells"
    _require(geo_cells, ["cell", "token", "count"], rule)
    _require(entity_cells, ["qid", "cell", "token"], rule)
    tokens = dict(zip(geo_cells.column("cell").to_pylist(), geo_cells.column("token").to_pylist()))
    found = _Offenders()
    members: Counter[int] = Counter()
    for qid, cell, token in zip(*(entity_cells.column(c).to_pylist() for c in ("qid", "cell", "token"))):
        if cell not in tokens:
            found.add(str(qid), f"unknown cell {cell}")
        elif tokens[cell] != token:
            found.add(str(qid), "token differs from the cell's")
        members[cell] += 1
    for cell, token, count in zip(*(geo_cells.column(c).to_pylist() for c in ("cell", "token", "count"))):
        if members[cell] != count:
            found.add(str(token), f"count {count} but {members[cell]} entities")
    return found.finding(rule, entities=entity_cells.num_rows, cells=geo_cells.num_rows)


def images_decodable(images: pa.Table) -> Finding:
    """What feature extraction will do to each image, done now: no SVG, bytes that decode as
    the declared raster format and size, and a sha256 that matches them."""
    from PIL import Image

    rule = "no SVG or undecodable image"
    columns = ["qid", "file_name", "format", "sha256", "width", "height", "content"]
    _require(images, columns, rule)
    found = _Offenders()
    for qid, name, fmt, sha, width, height, content in zip(*(images.column(c).to_pylist() for c in columns)):
        key = f"{qid}/{name}"
        if fmt is None or fmt.upper() == "SVG":
            found.add(key, f"format {fmt}")
            continue
        if content is None or hashlib.sha256(content).hexdigest() != sha:
            found.add(key, "sha256 does not match the bytes")
            continue
        try:
            with Image.open(io.BytesIO(content)) as image:
                image.load()
                decoded = (image.format or "", image.width, image.height)
        except Exception as error:  # Pillow raises many types for bad bytes; all mean the same
            found.add(key, f"undecodable ({type(error).__name__})")
            continue
        if decoded[0].upper() != fmt.upper():
            found.add(key, f"declared {fmt} but decodes as {decoded[0]}")
        elif decoded[1:] != (width, height):
            found.add(key, "declared size differs from the decoded one")
    return found.finding(rule, images=images.num_rows)
