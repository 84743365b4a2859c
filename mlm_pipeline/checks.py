"""Asset checks: what must hold of each table before anything downstream may use it.

Each rule is a plain function from tables to a ``Finding`` and is tested directly with bad
tables. The Dagster checks at the end only hand the stored tables to a rule and turn its
finding into an ``AssetCheckResult`` whose metadata names the offending rows, because "the
check failed" is useless at 3 a.m. and "Q9000000123 has latitude 91.2" is not.

Checks are blocking where a bad table would poison what is built from it (a duplicated QID
doubles an entity in every split; an undecodable image crashes feature extraction hours later);
the benchmark's own results block nothing, since nothing is built from them.
"""

import hashlib
import io
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetChecksDefinition,
    AssetIn,
    Config,
    MetadataValue,
    PreviewWarning,
    asset_check,
)

from mlm_pipeline.assets.geocells import GeoCellsConfig
from mlm_pipeline.assets.package import PACKAGES
from mlm_pipeline.assets.summaries import SummariesConfig
from mlm_pipeline.assets.training import BENCHMARK_VERSIONS, model_name
from mlm_pipeline.assets.versions import VersionsConfig
from mlm_pipeline.model.tasks import TASKS
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import recorded_config
from mlm_pipeline.release_package.verify import problems as package_problems
from mlm_pipeline.schemas import IMAGE_FEATURE_DIM, SORT_KEYS
from mlm_pipeline.shards import StoredTable
from mlm_pipeline.storage import StorageResource

MAX_NAMED = 20
"""How many offending rows a failed check names in its metadata (all are counted)."""

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


def _keys(table: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> list[str]:
    return [_key(row) for row in zip(*(table.column(c).to_pylist() for c in columns))]


def _require(table: pa.Table | pa.RecordBatch, columns: Iterable[str], rule: str) -> None:
    missing = [c for c in columns if c not in table.schema.names]
    if missing:
        raise ValueError(f"{rule}: table has no column {missing} (columns: {table.schema.names})")


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


def images_decodable(images: pa.Table | Iterable[pa.RecordBatch], read: Callable[[str], bytes]) -> Finding:
    """What feature extraction will do to each image, done now: no SVG, bytes (``read`` by their
    sha256) that decode as the declared raster format and size, and a sha256 that matches them.
    Each image's bytes are read and decoded on their own, so memory does not grow with the table."""
    from PIL import Image

    rule = "no SVG or undecodable image"
    columns = ["qid", "file_name", "format", "sha256", "width", "height"]
    found = _Offenders()
    rows = 0
    for batch in _batches(images, columns, rule):
        rows += batch.num_rows
        for qid, name, fmt, sha, width, height in zip(*(batch.column(c).to_pylist() for c in columns)):
            key = f"{qid}/{name}"
            if fmt is None or fmt.upper() == "SVG":
                found.add(key, f"format {fmt}")
                continue
            try:
                content = read(sha)
            except (FileNotFoundError, ValueError):
                found.add(key, "bytes not stored")
                continue
            if hashlib.sha256(content).hexdigest() != sha:
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
    return found.finding(rule, images=rows)


def _batches(table: pa.Table | Iterable[pa.RecordBatch], columns: Sequence[str], rule: str) -> Iterator[pa.RecordBatch]:
    """A table's batches (a stored table comes as batches already), each checked for the
    columns the rule reads."""
    if isinstance(table, pa.Table):
        _require(table, columns, rule)
        table = table.to_batches()
    for batch in table:
        _require(batch, columns, rule)
        yield batch


def vectors_sound(
    table: pa.Table | Iterable[pa.RecordBatch], key: Sequence[str], dim: int, column: str = "vector"
) -> Finding:
    """Every vector present, ``dim`` wide and finite: one NaN spreads through a batch's loss
    and silently ruins a whole training run. Read a batch at a time."""
    rule = f"{dim}-d finite vectors"
    found = _Offenders()
    rows = 0
    for batch in _batches(table, [*key, column], rule):
        keys = _keys(batch, key)
        chunk = batch.column(column)
        nulls = chunk.is_null().to_numpy(zero_copy_only=False)
        lengths = pc.list_value_length(chunk).fill_null(0).to_numpy(zero_copy_only=False)
        values = pc.list_flatten(chunk).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.concatenate([[0], np.cumsum(~np.isfinite(values))])
        ends = np.cumsum(lengths)
        non_finite = bad[ends] - bad[ends - lengths]
        for i in np.flatnonzero(nulls | (lengths != dim) | (non_finite > 0)):
            if nulls[i]:
                found.add(keys[i], "missing vector")
            elif lengths[i] != dim:
                found.add(keys[i], f"{lengths[i]}-d vector")
            else:
                found.add(keys[i], "NaN or infinite value")
        rows += batch.num_rows
    return found.finding(rule, rows=rows, dim=dim)


def index_complete(index: pa.Table, image_features: pa.Table, text_features: pa.Table) -> Finding:
    """Every image and summary with features is in the search index, nothing else is, and each
    vector has unit length: a search's scores are cosines only if it does."""
    rule = "search index complete, unit vectors"
    _require(index, ["kind", "qid", "item", "vector"], rule)
    found = _Offenders()
    features = {f"image/{k}" for k in _keys(image_features, ("qid", "file_name"))}
    features |= {f"text/{k}" for k in _keys(text_features, ("qid", "lang"))}
    indexed = _keys(index, ("kind", "qid", "item"))
    for key in sorted(features - set(indexed)):
        found.add(key, "has features but is not indexed")
    for key in sorted(set(indexed) - features):
        found.add(key, "indexed without features")
    vectors = index.column("vector").combine_chunks()
    dim = vectors.type.list_size
    matrix = vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), dim).astype(np.float64)
    norms = np.linalg.norm(matrix, axis=1) if len(vectors) else np.zeros(0)
    for i in np.flatnonzero(~(np.abs(norms - 1.0) <= 1e-3)):
        found.add(indexed[i], "vector not of unit length")
    return found.finding(rule, rows=index.num_rows, features=len(features))


def _within(value: float | None, low: float, high: float) -> bool:
    return value is not None and low <= value <= high  # False for NaN too


def _ordered_shares(values: Sequence[float | None]) -> bool:
    """Shares in [0, 1] that never decrease (R@1 <= R@5 <= R@10; within 1 km <= 25 km ...)."""
    return all(_within(v, 0.0, 1.0) for v in values) and all(a <= b for a, b in zip(values, values[1:]))  # type: ignore[operator]


def retrieval_metrics_within(results: pa.Table) -> Finding:
    """Ranks between 1 and the subset size, recalls ordered shares: anything else is a bug in
    the evaluation, not a bad model."""
    rule = "retrieval metrics within range"
    columns = ["version", "system", "direction", "medr", "medr_std", "r1", "r5", "r10", "subset_size", "n_subsets", "n_test"]
    _require(results, columns, rule)
    found = _Offenders()
    for row in results.select(columns).to_pylist():
        key = f"{row['version']}/{row['system']}/{row['direction']}"
        size = row["subset_size"] or 0
        if not (1 <= size <= (row["n_test"] or 0)) or (row["n_subsets"] or 0) < 1:
            found.add(key, "subset size outside 1..n_test")
        if not _within(row["medr"], 1.0, float(size)):
            found.add(key, "medR outside 1..subset size")
        if not _within(row["medr_std"], 0.0, float(size)):
            found.add(key, "medR deviation outside 0..subset size")
        if not _ordered_shares([row["r1"], row["r5"], row["r10"]]):
            found.add(key, "recalls not ordered shares")
    return found.finding(rule, rows=results.num_rows)


DISTANCES = ("within_1km", "within_25km", "within_200km", "within_750km", "within_2500km")


def location_metrics_within(results: pa.Table) -> Finding:
    """Precision, recall and F1 in [0, 1], shares within growing distances never shrinking."""
    rule = "location metrics within range"
    columns = ["version", "system", "input", "precision", "recall", "f1", *DISTANCES, "n_test"]
    _require(results, columns, rule)
    found = _Offenders()
    for row in results.select(columns).to_pylist():
        key = f"{row['version']}/{row['system']}/{row['input']}"
        if not all(_within(row[m], 0.0, 1.0) for m in ("precision", "recall", "f1")):
            found.add(key, "precision/recall/F1 outside [0, 1]")
        if not _ordered_shares([row[d] for d in DISTANCES]):
            found.add(key, "distance shares not ordered")
        if (row["n_test"] or 0) < 1:
            found.add(key, "no test items")
    return found.finding(rule, rows=results.num_rows)


def learning_curve_sound(curve: pa.Table) -> Finding:
    """Epochs 1..n in order, finite losses, and exactly one best epoch, the one with the lowest
    validation loss: evaluation loads that epoch's checkpoint."""
    rule = "learning curve sound"
    _require(curve, ["model", "epoch", "train_loss", "val_loss", "best"], rule)
    found = _Offenders()
    rows = curve.select(["model", "epoch", "train_loss", "val_loss", "best"]).to_pylist()
    for position, row in enumerate(rows, start=1):
        key = f"{row['model']}/{row['epoch']}"
        if row["epoch"] != position:
            found.add(key, f"epoch {row['epoch']} at position {position}")
        if not all(v is not None and math.isfinite(v) for v in (row["train_loss"], row["val_loss"])):
            found.add(key, "loss not finite")
    best = [row for row in rows if row["best"]]
    losses = [row["val_loss"] for row in rows if row["val_loss"] is not None and math.isfinite(row["val_loss"])]
    if len(best) != 1:
        found.add(f"{rows[0]['model'] if rows else '<empty>'}/best", f"{len(best)} best epochs")
    elif losses and best[0]["val_loss"] != min(losses):
        found.add(f"{best[0]['model']}/{best[0]['epoch']}", "best epoch without the lowest validation loss")
    return found.finding(rule, epochs=len(rows))


REASON_TOKEN = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
"""A dropout reason is a short machine-readable token (``no_image``, ``http_404``, ``sparse_cell``):
what a person groups by; the free text belongs in ``detail``."""


def dropouts_sound(dropouts: pa.Table, upstream: set[str], *, dropped_from_upstream: bool) -> Finding:
    """Every dropout row names a stage of the pipeline, a reason token and a QID known upstream:
    one of the entities for stages after extraction (``upstream``), and for extraction one that
    is *not* among the entities it kept (``dropped_from_upstream=False``)."""
    rule = "dropouts sound"
    _require(dropouts, ("qid", "item", "stage", "reason"), rule)
    found = _Offenders()
    columns = [dropouts.column(c).to_pylist() for c in ("qid", "item", "stage", "reason")]
    for qid, item, stage, reason in zip(*columns):
        key = _key((qid, item, stage))
        if stage not in SORT_KEYS:
            found.add(key, "stage is no asset")
        if reason is None or not REASON_TOKEN.fullmatch(reason):
            found.add(key, "reason is no token")
        if (qid in upstream) != dropped_from_upstream:
            found.add(key, "qid unknown upstream" if dropped_from_upstream else "qid also kept")
    return found.finding(rule, rows=dropouts.num_rows)


CHANGES = {"added", "removed", "changed"}
CHANGED_FIELDS = {"coordinates", "classes", "images", "summaries"}


def diff_sound(diff: pa.Table, entities: set[str]) -> Finding:
    """A release's diff: added and changed QIDs are among its entities, removed ones are not;
    only a change names fields, from the ones compared."""
    rule = "release diff sound"
    _require(diff, ("qid", "change", "fields"), rule)
    found = _Offenders()
    for qid, change, fields in zip(*(diff.column(c).to_pylist() for c in ("qid", "change", "fields"))):
        if change not in CHANGES:
            found.add(qid, "unknown change")
        elif (qid in entities) != (change != "removed"):
            found.add(qid, f"{change} but {'not ' if change != 'removed' else ''}among the entities")
        if (change == "changed") != bool(fields) or not set(fields or ()) <= CHANGED_FIELDS:
            found.add(qid, "fields do not fit the change")
    return found.finding(rule, rows=diff.num_rows)


def stats_consistent(stats: pa.Table, versions: Sequence[str] = ("mlm", "mlm_irle", "mlm_irle_gr")) -> Finding:
    """Table 2 agrees with itself: each version a subset of the one before, split sizes and
    continents adding up to the entities (a split or continent lost or counted twice shows)."""
    rule = "Table 2 consistent"
    _require(stats, ["measure", *versions], rule)
    rows = {row["measure"]: row for row in stats.to_pylist()}
    found = _Offenders()
    if "entities" not in rows:
        found.add("entities", "no entities row")
        return found.finding(rule)
    entities = rows["entities"]
    for bigger, smaller in zip(versions, versions[1:]):
        if (entities[smaller] or 0) > (entities[bigger] or 0):
            found.add(f"entities/{smaller}", f"more entities than {bigger}")
    continents = [m for m in rows if m.startswith("entities_")]
    for version in versions:
        if continents and sum(rows[m][version] or 0 for m in continents) != entities[version]:
            found.add(f"entities_<continent>/{version}", "continents do not add up to the entities")
        split_sizes = [rows[s][version] for s in SPLIT_NAMES if s in rows]
        if any(split_sizes) and sum(v or 0 for v in split_sizes) != entities[version]:
            found.add(f"train+val+test/{version}", "splits do not add up to the entities")
    return found.finding(rule, **{f"entities_{v}": entities[v] or 0 for v in versions})



# ------------------------------------------------------------------ the Dagster checks

C = TypeVar("C", bound=Config)


def release_check(**kwargs: object) -> Callable[[Callable[..., AssetCheckResult]], AssetChecksDefinition]:
    """``asset_check`` partitioned like the assets it checks: a check runs for one release and
    reads that release's tables, whatever other releases the instance holds."""
    decorate = asset_check(partitions_def=release_partitions, **kwargs)  # type: ignore[arg-type]

    def apply(fn: Callable[..., AssetCheckResult]) -> AssetChecksDefinition:
        with warnings.catch_warnings():  # partitioned checks are Dagster's way, marked preview in 1.13
            warnings.simplefilter("ignore", PreviewWarning)
            return decorate(fn)

    return apply



def check_result(finding: Finding) -> AssetCheckResult:
    """A finding as Dagster shows it: the first offending rows by name, all of them counted."""
    return AssetCheckResult(
        passed=finding.passed,
        severity=AssetCheckSeverity.ERROR,
        description=finding.detail,
        metadata={
            "offending_rows": len(finding.offending),
            "offending": MetadataValue.json(list(finding.offending[:MAX_NAMED])),
            "reasons": MetadataValue.json(dict(sorted(finding.reasons.items()))),
            **finding.counts,
        },
    )


def declared_config(context: AssetCheckExecutionContext, asset_name: str, config_class: type[C]) -> C:
    """The configuration the asset recorded for this release, else the defaults: a check must
    hold a table to the thresholds it was built with, not to others."""
    recorded = recorded_config(context.instance, asset_name, context.partition_key, config_class)
    return recorded if recorded is not None else config_class()


def table_check(
    asset: str,
    name: str,
    rule: Callable[[pa.Table], Finding],
    description: str,
    blocking: bool = True,
    columns: Sequence[str] | None = None,
) -> AssetChecksDefinition:
    """A check that needs nothing but the asset's own table (only ``columns`` of it, when given:
    a check of keys need not read a table's text or vectors)."""

    @release_check(asset=asset, name=name, blocking=blocking, description=description)
    def _check(table: StoredTable) -> AssetCheckResult:
        return check_result(rule(table.read(columns)))

    return _check


def unique(asset: str, columns: Sequence[str]) -> AssetChecksDefinition:
    return table_check(
        asset,
        f"unique_{'_'.join(columns)}",
        lambda table: unique_keys(table, columns),
        f"No {'+'.join(columns)} twice or null: every join downstream assumes one row per key.",
        columns=columns,
    )


def in_range(asset: str) -> AssetChecksDefinition:
    return table_check(
        asset,
        "coordinates_in_range",
        coordinates_in_range,
        "Latitude in [-90, 90], longitude in [-180, 180].",
        columns=("qid", "lat", "lon"),
    )


@release_check(asset="summaries", name="languages_within_configured", blocking=True, description="Summaries only in the configured languages.")
def summaries_languages(context: AssetCheckExecutionContext, summaries: StoredTable) -> AssetCheckResult:
    allowed = declared_config(context, "summaries", SummariesConfig).languages
    return check_result(languages_within(summaries.read(["qid", "lang"]), "lang", allowed, key=("qid", "lang")))


def version_languages(version: str) -> AssetChecksDefinition:
    @release_check(
        asset=version,
        name="languages_within_configured",
        blocking=True,
        description="Every entity has summaries, all in the configured languages.",
    )
    def _check(context: AssetCheckExecutionContext, table: StoredTable) -> AssetCheckResult:
        allowed = declared_config(context, "summaries", SummariesConfig).languages
        return check_result(languages_within(table.read(["qid", "languages"]), "languages", allowed))

    return _check


def cell_counts_check(
    asset: str, config_asset: str, config_class: type[C], thresholds: Callable[[C], tuple[int, int, int]], description: str
) -> AssetChecksDefinition:
    """Cells within the (t_min, t_max, max_level) the stage that made them recorded."""

    @release_check(asset=asset, name="cell_counts_within_thresholds", blocking=True, description=description)
    def _check(context: AssetCheckExecutionContext, cells: pa.Table) -> AssetCheckResult:
        return check_result(cell_counts_within(cells, *thresholds(declared_config(context, config_asset, config_class))))

    return _check


geo_cells_counts = cell_counts_check(
    "geo_cells", "geo_cells", GeoCellsConfig, lambda c: (c.t_min, c.t_max, c.max_level),
    "No cell below t_min, none above t_max unless at max_level; labels 0..n-1 in token order.",
)
gr_cells_counts = cell_counts_check(
    "mlm_irle_gr_cells", "mlm_irle_gr", VersionsConfig, lambda c: (c.gr_t_min, c.gr_t_max, c.gr_max_level),
    "MLM-irle-gr's own cells within its thresholds; labels 0..n-1 in token order.",
)


@release_check(
    asset="entity_cells",
    name="cells_match",
    blocking=True,
    additional_ins={"geo_cells": AssetIn("geo_cells")},
    description="Every entity's cell exists with its token; cell counts equal their members.",
)
def entity_cells_match(entity_cells: pa.Table, geo_cells: pa.Table) -> AssetCheckResult:
    return check_result(cells_match_entities(geo_cells, entity_cells))


QIDS_ONLY = {"columns": ["qid"]}


@release_check(
    asset="splits",
    name="exactly_one_split",
    blocking=True,
    additional_ins={v: AssetIn(v, metadata=QIDS_ONLY) for v in ("mlm", "mlm_irle", "mlm_irle_gr")},
    description="Every entity of every version in exactly one of train/val/test.",
)
def splits_exactly_one(splits: pa.Table, mlm: pa.Table, mlm_irle: pa.Table, mlm_irle_gr: pa.Table) -> AssetCheckResult:
    return check_result(exactly_one_split(splits, {"mlm": mlm, "mlm_irle": mlm_irle, "mlm_irle_gr": mlm_irle_gr}))


@release_check(
    asset="text_features",
    name="finite_vectors",
    blocking=True,
    additional_ins={"class_features": AssetIn("class_features", metadata={"columns": ["vector"]})},
    description="Text vectors finite and as wide as the class vectors (one encoder for both).",
)
def text_features_sound(text_features: StoredTable, class_features: pa.Table) -> AssetCheckResult:
    dim = class_features.schema.field("vector").type.list_size
    return check_result(vectors_sound(text_features.batches(), ("qid", "lang"), dim))


@release_check(
    asset="images_filtered",
    name="decodable_rasters",
    blocking=True,
    description="No SVG; every image decodes as its declared format and size, and matches its sha256.",
)
def images_filtered_decodable(
    context: AssetCheckExecutionContext, storage: StorageResource, images_filtered: StoredTable
) -> AssetCheckResult:
    read = storage.blobs(context.partition_key).get
    return check_result(images_decodable(images_filtered.batches(), read))


@release_check(
    asset="image_features",
    name="finite_vectors",
    blocking=True,
    description=f"{IMAGE_FEATURE_DIM}-d image vectors, present and finite.",
)
def image_features_sound(image_features: StoredTable) -> AssetCheckResult:
    return check_result(vectors_sound(image_features.batches(batch_size=1024), ("qid", "file_name"), IMAGE_FEATURE_DIM))


def class_features_check() -> AssetChecksDefinition:
    def rule(table: pa.Table) -> Finding:
        return vectors_sound(table, ("qid",), table.schema.field("vector").type.list_size)

    return table_check("class_features", "finite_vectors", rule, "Class vectors present and finite.")


def model_checks() -> list[AssetChecksDefinition]:
    return [
        table_check(
            model_name(task, version),
            "learning_curve_sound",
            learning_curve_sound,
            "Epochs in order, finite losses, one best epoch with the lowest validation loss.",
        )
        for version in BENCHMARK_VERSIONS
        for task in TASKS
    ]


@release_check(
    asset="search_index",
    name="complete_unit_vectors",
    blocking=False,
    additional_ins={
        "image_features": AssetIn("image_features", metadata={"columns": ["qid", "file_name"]}),
        "text_features": AssetIn("text_features", metadata={"columns": ["qid", "lang"]}),
    },
    description="Every image and summary with features indexed once, nothing else, vectors of unit length.",
)
def search_index_complete(search_index: pa.Table, image_features: pa.Table, text_features: pa.Table) -> AssetCheckResult:
    return check_result(index_complete(search_index, image_features, text_features))


@release_check(
    asset="release_package",
    name="checksums_and_attribution",
    blocking=False,
    description="SHA256SUMS matches every file of the package; every packaged image has a licence and a credit "
    "line in attribution.csv, or is listed there with the reason it has none.",
)
def release_package_sound(
    context: AssetCheckExecutionContext, storage: StorageResource, release_package: pa.Table
) -> AssetCheckResult:
    found = _Offenders()
    for key, reason in package_problems(storage.root() / PACKAGES / context.partition_key):
        found.add(key, reason)
    return check_result(found.finding("package sound", files=release_package.num_rows))


VERSIONS = ("mlm", "mlm_irle", "mlm_irle_gr")

DROPOUT_TABLES = ("summary_dropouts", "image_failures", "image_dropouts", "geo_cell_dropouts", "version_dropouts",
                  "image_feature_dropouts")
"""Dropout tables of the stages after extraction: each names entities that extraction kept."""


def dropouts_check(asset: str) -> AssetChecksDefinition:
    extraction = asset == "entity_dropouts"

    @release_check(
        asset=asset,
        name="dropouts_sound",
        blocking=True,
        additional_ins={"entities": AssetIn("entities", metadata=QIDS_ONLY)},
        description="Each dropout names a stage, a reason token and an entity known upstream"
        + (" (not one extraction kept)." if extraction else "."),
    )
    def _check(table: StoredTable, entities: StoredTable) -> AssetCheckResult:
        kept = set(entities.read(["qid"]).column("qid").to_pylist())
        dropouts = table.read(["qid", "item", "stage", "reason"])
        return check_result(dropouts_sound(dropouts, kept, dropped_from_upstream=not extraction))

    return _check


@release_check(
    asset="release_diff",
    name="diff_sound",
    blocking=False,
    additional_ins={"entities": AssetIn("entities", metadata=QIDS_ONLY)},
    description="Added and changed entities are in the release, removed ones are not; fields fit the change.",
)
def release_diff_sound(release_diff: StoredTable, entities: StoredTable) -> AssetCheckResult:
    kept = set(entities.read(["qid"]).column("qid").to_pylist())
    return check_result(diff_sound(release_diff.read(["qid", "change", "fields"]), kept))


asset_checks: list[AssetChecksDefinition] = [
    unique("settlement_classes", ["qid"]),
    unique("entities", ["qid"]),
    *[dropouts_check(table) for table in ("entity_dropouts", *DROPOUT_TABLES)],
    release_diff_sound,
    in_range("entities"),
    unique("summaries", ["qid", "lang"]),
    summaries_languages,
    unique("images", ["qid", "file_name"]),
    unique("images_filtered", ["qid", "file_name"]),
    images_filtered_decodable,
    geo_cells_counts,
    entity_cells_match,
    *[check for v in VERSIONS for check in (unique(v, ["qid"]), in_range(v), version_languages(v))],
    gr_cells_counts,
    splits_exactly_one,
    table_check("dataset_stats", "consistent", stats_consistent, "Table 2 adds up.", blocking=False),
    unique("image_features", ["qid", "file_name"]),
    image_features_sound,
    text_features_sound,
    class_features_check(),
    *model_checks(),
    unique("search_index", ["kind", "qid", "item"]),
    in_range("search_index"),
    search_index_complete,
    release_package_sound,
    table_check(
        "retrieval_results", "within_range", retrieval_metrics_within, "medR and R@K within range.", blocking=False
    ),
    table_check(
        "location_results", "within_range", location_metrics_within, "Location metrics within range.", blocking=False
    ),
]
"""Every check, for definitions.py: ``Definitions(asset_checks=[..., *checks.asset_checks])``."""
