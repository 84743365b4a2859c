"""MLM's three dataset versions and their splits, as plain functions over Arrow tables.

The versions are nested, as in the paper (Table 2):

- **MLM**, the raw dataset: every extracted entity that still has at least one usable
  downloaded image and at least one non-empty summary after the downloads. Usable: a raster
  that decodes (a row of ``images_filtered``) or an SVG, by content or by name, since Commons
  serves an SVG's thumbnail as a PNG rendering. SVGs count here because the paper's 412k MLM
  images against 315k in MLM-irle are the SVG maps and emblems; a corrupt file counts nowhere.
- **MLM-irle**: MLM entities with at least one image left after the SVG/undecodable filter
  and a kept geo-cell (section 3.3.5); images are counted after the filter.
- **MLM-irle-gr**: an EU-28 sample of MLM-irle, each country's quota its share of the EU-28
  population times the configured total (24,000 in the paper), a short country taking all it
  has. The sample gets its own geo-cells with the same algorithm: the paper reports 99 cells
  for MLM-irle-gr against 990 for MLM-irle, which a subset of the MLM-irle cells cannot give,
  and its 22,501 entities (below the 23,821 the quotas allow) fit sparse cells of the sample
  being dropped.

An entity is recorded once, in the version it first leaves (stage = that version's name).

Seeded choices (which entities a country's quota takes, which split an entity lands in) use a
keyed hash of the entity id instead of shuffling: the outcome of one entity does not depend on
which other entities exist, so a rematerialisation gives the same bytes and the next release
keeps its entities where they were (no test entity of one release in the next one's training
set). Sampling and splitting use different keys, so the sample is not biased towards a split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlm_pipeline import schemas
from mlm_pipeline.download.validate import svg_by_name
from mlm_pipeline.geo.cells import CellParams, build_cells
from mlm_pipeline.geo.countries import EU28, Geocoder, continents_of, countries, largest_remainder_quotas

VERSIONS = ("mlm", "mlm_irle", "mlm_irle_gr")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class VersionResult:
    table: pa.Table  # schemas.VERSION
    dropouts: pa.Table  # schemas.DROPOUTS: the entities of the previous version that left


@dataclass(frozen=True)
class Quota:
    country: str
    population: int
    wanted: int
    available: int
    taken: int


@dataclass(frozen=True)
class GrResult:
    table: pa.Table  # schemas.VERSION
    cells: pa.Table  # schemas.GEO_CELLS of the sample
    dropouts: pa.Table
    quotas: list[Quota]  # one per EU-28 country, largest population first
    sparse_counts: tuple[int, ...] = ()  # entities in each of the sample's sparse cells, most first


def require_columns(table: pa.Table, schema: pa.Schema, source: str) -> None:
    """Name the input and the columns it lacks before anything is computed from it."""
    missing = [f"{f.name} ({f.type})" for f in schema if f.name not in table.schema.names]
    if missing:
        raise ValueError(f"{source}: missing columns {', '.join(missing)}; is it a table of schema {source}?")


def hash_keys(qids: Sequence[str], seed: int, purpose: str) -> np.ndarray:
    """A uint64 per entity from (purpose, seed, qid): the same on every machine and run."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{purpose}\x00{seed}\x00{q}".encode(), digest_size=8).digest(), "big")
            for q in qids
        ],
        dtype=np.uint64,
    )


def _rows_per_qid(table: pa.Table, known: set[str] | None, source: str) -> dict[str, int]:
    """Rows per entity; with ``known``, rows of entities outside it are refused as a mix-up."""
    counts: dict[str, int] = defaultdict(int)
    for qid in table.column("qid").to_pylist():
        counts[qid] += 1
    unknown = sorted(set(counts) - known) if known is not None else []
    if unknown:
        raise ValueError(
            f"{source}: {len(unknown)} entities are not in entities, e.g. {unknown[:5]}; "
            "were they materialised for the same release?"
        )
    return counts


def summary_languages(summaries: pa.Table, known: set[str]) -> dict[str, list[str]]:
    """Languages with a non-empty intro per entity: an empty extract is no summary."""
    langs: dict[str, list[str]] = defaultdict(list)
    for qid, lang, text in zip(*(summaries.column(c).to_pylist() for c in ("qid", "lang", "text"))):
        if text and text.strip():
            langs[qid].append(lang)
    unknown = sorted(set(summaries.column("qid").to_pylist()) - known)
    if unknown:
        raise ValueError(
            f"summaries: {len(unknown)} entities are not in entities, e.g. {unknown[:5]}; "
            "were they materialised for the same release?"
        )
    return {qid: sorted(set(values)) for qid, values in langs.items()}


def _dropouts(rows: list[tuple[str, str, str, str]]) -> pa.Table:
    """(qid, stage, reason, detail) rows as a DROPOUTS table; the item is the entity itself."""
    columns = list(zip(*rows)) if rows else [(), (), (), ()]
    return pa.table(
        {
            "qid": pa.array(columns[0], pa.string()),
            "item": pa.array([""] * len(rows), pa.string()),
            "stage": pa.array(columns[1], pa.string()),
            "reason": pa.array(columns[2], pa.string()),
            "detail": pa.array(columns[3], pa.string()),
        },
        schema=schemas.DROPOUTS,
    )


def build_mlm(
    entities: pa.Table, summaries: pa.Table, images: pa.Table, images_filtered: pa.Table, geocoder: Geocoder
) -> VersionResult:
    """MLM: entities with a usable image (raster or SVG) and a summary, located by their coordinates."""
    require_columns(entities, schemas.ENTITIES, "entities")
    require_columns(summaries, schemas.SUMMARIES, "summaries")
    require_columns(images, pa.schema([schemas.IMAGES.field(c) for c in ("qid", "file_name", "format")]), "images")
    require_columns(images_filtered, pa.schema([schemas.IMAGES.field("qid")]), "images_filtered")
    qids = entities.column("qid").to_pylist()
    known = set(qids)
    if len(known) != len(qids):
        raise ValueError("entities: entity ids are not unique")
    svg_names = [svg_by_name(name) for name in images.column("file_name").to_pylist()]
    svgs = images.filter(pc.or_(pc.equal(images.column("format"), "SVG").fill_null(False), pa.array(svg_names)))
    n_images = _rows_per_qid(images_filtered, known, "images_filtered")
    for qid, count in _rows_per_qid(svgs, known, "images").items():
        n_images[qid] += count
    langs = summary_languages(summaries, known)

    keep, dropped = [], []
    listed = entities.column("images").to_pylist()
    for index, qid in enumerate(qids):
        has_image, has_summary = n_images.get(qid, 0) > 0, qid in langs
        if has_image and has_summary:
            keep.append(index)
            continue
        if not has_image:
            detail = f"none of its {len(listed[index] or [])} images was downloaded as a usable file"
            dropped.append((qid, "mlm", "no_image", detail))
        if not has_summary:
            dropped.append((qid, "mlm", "no_summary", "no non-empty intro in en, de or fr"))

    kept = entities.take(pa.array(keep, pa.int64()))
    lat = np.asarray(kept.column("lat").to_numpy(zero_copy_only=False), dtype=np.float64)
    lon = np.asarray(kept.column("lon").to_numpy(zero_copy_only=False), dtype=np.float64)
    codes = geocoder.country_codes(lat, lon)
    kept_qids = kept.column("qid").to_pylist()
    table = pa.table(
        {
            "qid": kept.column("qid"),
            "lat": kept.column("lat"),
            "lon": kept.column("lon"),
            "country_code": pa.array(codes.tolist(), pa.string()),
            "continent": pa.array(continents_of(codes), pa.string()),
            "cell": pa.nulls(len(keep), pa.int32()),
            "classes": kept.column("classes"),
            "n_images": pa.array([n_images[q] for q in kept_qids], pa.int32()),
            "n_summaries": pa.array([len(langs[q]) for q in kept_qids], pa.int32()),
            "languages": pa.array([langs[q] for q in kept_qids], schemas.STRS),
        },
        schema=schemas.VERSION,
    )
    return VersionResult(schemas.sort_table(table, "mlm"), _dropouts(dropped))


def cell_inputs(entities: pa.Table, summaries: pa.Table, images_filtered: pa.Table) -> pa.Table:
    """The entities that geo-cells are made for: a kept image and a summary (qid, lat, lon)."""
    require_columns(entities, schemas.ENTITIES, "entities")
    require_columns(summaries, schemas.SUMMARIES, "summaries")
    require_columns(images_filtered, pa.schema([schemas.IMAGES.field("qid")]), "images_filtered")
    known = set(entities.column("qid").to_pylist())
    with_image = set(_rows_per_qid(images_filtered, known, "images_filtered"))
    with_summary = set(summary_languages(summaries, known))
    mask = [q in with_image and q in with_summary for q in entities.column("qid").to_pylist()]
    return entities.select(["qid", "lat", "lon"]).filter(pa.array(mask, pa.bool_()))


def build_mlm_irle(
    mlm: pa.Table, images_filtered: pa.Table, entity_cells: pa.Table, geo_cell_dropouts: pa.Table
) -> VersionResult:
    """MLM-irle: MLM entities with a raster image left and a kept geo-cell."""
    require_columns(mlm, schemas.VERSION, "mlm")
    require_columns(entity_cells, schemas.ENTITY_CELLS, "entity_cells")
    require_columns(geo_cell_dropouts, schemas.DROPOUTS, "geo_cell_dropouts")
    qids = mlm.column("qid").to_pylist()
    n_raster = _rows_per_qid(images_filtered, None, "images_filtered")
    cell_of = dict(zip(entity_cells.column("qid").to_pylist(), entity_cells.column("cell").to_pylist()))
    sparse = dict(zip(geo_cell_dropouts.column("qid").to_pylist(), geo_cell_dropouts.column("detail").to_pylist()))
    n_images = mlm.column("n_images").to_pylist()

    keep, dropped, stale = [], [], []
    for index, qid in enumerate(qids):
        if n_raster.get(qid, 0) == 0:
            dropped.append(
                (qid, "mlm_irle", "no_raster_image", f"its {n_images[index]} usable images are all SVG")
            )
        elif qid in cell_of:
            keep.append(index)
        elif qid in sparse:
            dropped.append((qid, "mlm_irle", "sparse_cell", sparse[qid]))
        else:
            stale.append(qid)
    if stale:
        raise ValueError(
            f"entity_cells: {len(stale)} MLM entities with a raster image have no cell and no cell dropout, "
            f"e.g. {stale[:5]}; rematerialise geo_cells for this release"
        )
    kept = mlm.take(pa.array(keep, pa.int64()))
    kept_qids = kept.column("qid").to_pylist()
    table = kept.set_column(
        kept.schema.get_field_index("cell"), "cell", pa.array([cell_of[q] for q in kept_qids], pa.int32())
    ).set_column(
        kept.schema.get_field_index("n_images"), "n_images", pa.array([n_raster[q] for q in kept_qids], pa.int32())
    )
    return VersionResult(schemas.sort_table(table, "mlm_irle"), _dropouts(dropped))


def build_mlm_irle_gr(mlm_irle: pa.Table, total: int, seed: int, params: CellParams) -> GrResult:
    """MLM-irle-gr: the EU-28 population-weighted sample of MLM-irle with its own geo-cells."""
    require_columns(mlm_irle, schemas.VERSION, "mlm_irle")
    qids = mlm_irle.column("qid").to_pylist()
    codes = mlm_irle.column("country_code").to_pylist()
    order = hash_keys(qids, seed, "mlm_irle_gr")
    by_country: dict[str, list[int]] = defaultdict(list)
    dropped = []
    for index, (qid, code) in enumerate(zip(qids, codes)):
        if code in EU28:
            by_country[code].append(index)
        else:
            dropped.append((qid, "mlm_irle_gr", "outside_eu28", f"located in {code}"))

    population = {code: countries()[code].population for code in EU28}
    wanted = largest_remainder_quotas(population, total)
    quotas, chosen = [], []
    for code in sorted(EU28, key=lambda c: (-population[c], c)):
        members = sorted(by_country[code], key=lambda i: (int(order[i]), qids[i]))
        taken = min(wanted[code], len(members))
        quotas.append(Quota(code, population[code], wanted[code], len(members), taken))
        chosen.extend(members[:taken])
        for index in members[taken:]:
            dropped.append(
                (qids[index], "mlm_irle_gr", "over_quota", f"{code}: quota {wanted[code]} of {len(members)} available")
            )

    sample = mlm_irle.take(pa.array(sorted(chosen), pa.int64()))
    sample_qids = sample.column("qid").to_pylist()
    cells = build_cells(
        sample_qids,
        sample.column("lat").to_numpy(zero_copy_only=False),
        sample.column("lon").to_numpy(zero_copy_only=False),
        params,
        stage="mlm_irle_gr",
        source="mlm_irle_gr sample",
    )
    cell_of = dict(zip(cells.entity_cells.column("qid").to_pylist(), cells.entity_cells.column("cell").to_pylist()))
    mask = pa.array([q in cell_of for q in sample_qids], pa.bool_())
    kept = sample.filter(mask)
    table = kept.set_column(
        kept.schema.get_field_index("cell"),
        "cell",
        pa.array([cell_of[q] for q in kept.column("qid").to_pylist()], pa.int32()),
    )
    all_dropouts = pa.concat_tables([_dropouts(dropped), cells.dropouts])
    return GrResult(schemas.sort_table(table, "mlm_irle_gr"), cells.cells, all_dropouts, quotas, cells.sparse_counts)


def check_ratios(train: float, val: float, test: float) -> None:
    if min(train, val, test) < 0 or abs(train + val + test - 1.0) > 1e-9:
        raise ValueError(
            f"split shares must be non-negative and sum to 1; got train={train}, val={val}, test={test} "
            f"(sum {train + val + test:g})"
        )


def assign_splits(versions: dict[str, Sequence[str]], seed: int, train: float, val: float, test: float) -> pa.Table:
    """Train/val/test by entity: a keyed hash of (seed, qid) against the cumulative ratios.

    The split of an entity depends on nothing but its id and the seed, so it is the same in
    every version that holds it (training on MLM-irle never sees an MLM-irle-gr test entity),
    and in the next release. The price is that the shares are ratios in expectation, not
    exactly: at 5,000 entities a 10% split varies by about 20 entities.
    """
    check_ratios(train, val, test)
    bounds = np.array([train, train + val], dtype=np.float64) * 2.0**64
    rows_version, rows_qid, rows_split = [], [], []
    for version, qids in versions.items():
        unit = hash_keys(qids, seed, "split").astype(np.float64)
        which = np.searchsorted(bounds, unit, side="right")
        rows_version.extend([version] * len(qids))
        rows_qid.extend(qids)
        rows_split.extend(SPLIT_NAMES[k] for k in which)
    table = pa.table(
        {
            "version": pa.array(rows_version, pa.string()),
            "qid": pa.array(rows_qid, pa.string()),
            "split": pa.array(rows_split, pa.string()),
        },
        schema=schemas.SPLITS,
    )
    return schemas.sort_table(table, "splits")
