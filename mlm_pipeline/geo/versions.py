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

The relational work (counting each entity's usable images and summary languages, joining
entities with their cells, picking each country's quota, assigning splits) is SQL run by DuckDB
over the stored tables, out of core; only per-entity numbers that need Python (coordinates for
the reverse geocoder and the cell builder, keyed hashes) leave it, as compact arrays.

Seeded choices (which entities a country's quota takes, which split an entity lands in) use a
keyed hash of the entity id instead of shuffling: the outcome of one entity does not depend on
which other entities exist, so a rematerialisation gives the same bytes and the next release
keeps its entities where they were (no test entity of one release in the next one's training
set). Sampling and splitting use different keys, so the sample is not biased towards a split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from mlm_pipeline import schemas, sql
from mlm_pipeline.geo.cells import CellParams, build_cells
from mlm_pipeline.geo.countries import EU28, Geocoder, continents_of, countries, largest_remainder_quotas

VERSIONS = ("mlm", "mlm_irle", "mlm_irle_gr")
SPLIT_NAMES = ("train", "val", "test")

SVG = "(format = 'SVG' OR suffix(lower(file_name), '.svg') OR suffix(lower(file_name), '.svgz'))"
"""An SVG by content or by name (``download.validate.svg_by_name``), as SQL over an image table."""
NON_EMPTY = r"regexp_matches(text, '[^\s\pZ\x{85}\x{1c}-\x{1f}\x{0b}]')"
"""A text with something besides whitespace (Python's ``str.strip`` notion of it)."""
VERSION_COLUMNS = ", ".join(schemas.VERSION.names)


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


def require_columns(table: sql.Source, schema: pa.Schema, source: str) -> None:
    """Name the input and the columns it lacks before anything is computed from it."""
    missing = [f"{f.name} ({f.type})" for f in schema if f.name not in table.schema.names]
    if missing:
        raise ValueError(f"{source}: missing columns {', '.join(missing)}; is it a table of schema {source}?")


def _columns(*names: str, schema: pa.Schema) -> pa.Schema:
    return pa.schema([schema.field(name) for name in names])


def hash_keys(qids: Sequence[str], seed: int, purpose: str) -> np.ndarray:
    """A uint64 per entity from (purpose, seed, qid): the same on every machine and run."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{purpose}\x00{seed}\x00{q}".encode(), digest_size=8).digest(), "big")
            for q in qids
        ],
        dtype=np.uint64,
    )


def refuse_strays(con: duckdb.DuckDBPyConnection, table: str, known: str = "entities") -> None:
    """Rows of entities outside ``known`` mean tables of two releases were mixed up."""
    strays = con.execute(f"SELECT DISTINCT qid FROM {table} EXCEPT SELECT qid FROM {known} ORDER BY 1").fetchall()
    if strays:
        raise ValueError(
            f"{table}: {len(strays)} entities are not in {known}, e.g. {[q for (q,) in strays[:5]]}; "
            "were they materialised for the same release?"
        )


def _dropouts(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    """(qid, stage, reason, detail) rows of ``query`` as a DROPOUTS table; the item is the entity itself."""
    return sql.table(con, f"SELECT qid, '' AS item, stage, reason, detail FROM ({query}) ORDER BY qid, reason",
                     schemas.DROPOUTS)


def _usable_images_and_languages(con: duckdb.DuckDBPyConnection) -> None:
    """Per entity: usable images (rasters kept by the filter, SVGs by content or name) and the
    languages with a non-empty intro; as tables ``usable`` and ``langs``."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE usable AS
        SELECT qid, count(*) AS n FROM (
            SELECT qid FROM images_filtered UNION ALL SELECT qid FROM images WHERE {SVG}
        ) GROUP BY qid""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE langs AS
        SELECT qid, list_sort(list_distinct(list(lang))) AS languages
        FROM summaries WHERE {NON_EMPTY} GROUP BY qid""")


def build_mlm(
    entities: sql.Source, summaries: sql.Source, images: sql.Source, images_filtered: sql.Source, geocoder: Geocoder,
    spill_dir: Path | None = None,
) -> VersionResult:
    """MLM: entities with a usable image (raster or SVG) and a summary, located by their coordinates."""
    require_columns(entities, schemas.ENTITIES, "entities")
    require_columns(summaries, schemas.SUMMARIES, "summaries")
    require_columns(images, _columns("qid", "file_name", "format", schema=schemas.IMAGES), "images")
    require_columns(images_filtered, _columns("qid", schema=schemas.IMAGES), "images_filtered")
    with sql.connect(spill_dir) as con:
        sql.register(con, entities=entities, summaries=summaries, images=images, images_filtered=images_filtered)
        if sql.scalar(con, "SELECT count(*) - count(DISTINCT qid) FROM entities"):
            raise ValueError("entities: entity ids are not unique")
        for name in ("summaries", "images", "images_filtered"):
            refuse_strays(con, name)
        _usable_images_and_languages(con)
        dropouts = _dropouts(con, """
            SELECT e.qid, 'mlm' AS stage, 'no_image' AS reason,
                   'none of its ' || len(coalesce(e.images, [])) || ' images was downloaded as a usable file' AS detail
            FROM entities e ANTI JOIN usable u USING (qid)
            UNION ALL
            SELECT e.qid, 'mlm', 'no_summary', 'no non-empty intro in en, de or fr'
            FROM entities e ANTI JOIN langs l USING (qid)""")
        kept = "entities e JOIN usable u USING (qid) JOIN langs l USING (qid)"
        where = sql.table(con, f"SELECT e.qid, e.lat, e.lon FROM {kept} ORDER BY e.qid",
                          _columns("qid", "lat", "lon", schema=schemas.ENTITIES))
        codes = geocoder.country_codes(
            np.asarray(where.column("lat").to_numpy(zero_copy_only=False), dtype=np.float64),
            np.asarray(where.column("lon").to_numpy(zero_copy_only=False), dtype=np.float64),
        )
        sql.register(con, located=pa.table({
            "qid": where.column("qid"),
            "country_code": pa.array(codes.tolist(), pa.string()),
            "continent": pa.array(continents_of(codes), pa.string()),
        }))
        table = sql.table(con, f"""
            SELECT e.qid, e.lat, e.lon, g.country_code, g.continent, NULL AS cell, e.classes,
                   u.n AS n_images, len(l.languages) AS n_summaries, l.languages
            FROM {kept} JOIN located g USING (qid) ORDER BY e.qid""", schemas.VERSION)
    return VersionResult(table, dropouts)


def cell_inputs(entities: sql.Source, summaries: sql.Source, images_filtered: sql.Source, spill_dir: Path | None = None) -> pa.Table:
    """The entities that geo-cells are made for: a kept image and a summary (qid, lat, lon)."""
    require_columns(entities, schemas.ENTITIES, "entities")
    require_columns(summaries, schemas.SUMMARIES, "summaries")
    require_columns(images_filtered, _columns("qid", schema=schemas.IMAGES), "images_filtered")
    with sql.connect(spill_dir) as con:
        sql.register(con, entities=entities, summaries=summaries, images_filtered=images_filtered)
        for name in ("summaries", "images_filtered"):
            refuse_strays(con, name)
        return sql.table(con, f"""
            SELECT qid, lat, lon FROM entities
            SEMI JOIN images_filtered USING (qid)
            SEMI JOIN (SELECT qid FROM summaries WHERE {NON_EMPTY}) USING (qid)
            ORDER BY qid""", _columns("qid", "lat", "lon", schema=schemas.ENTITIES))


def build_mlm_irle(
    mlm: sql.Source, images_filtered: sql.Source, entity_cells: sql.Source, geo_cell_dropouts: sql.Source,
    spill_dir: Path | None = None,
) -> VersionResult:
    """MLM-irle: MLM entities with a raster image left and a kept geo-cell."""
    require_columns(mlm, schemas.VERSION, "mlm")
    require_columns(entity_cells, schemas.ENTITY_CELLS, "entity_cells")
    require_columns(geo_cell_dropouts, schemas.DROPOUTS, "geo_cell_dropouts")
    with sql.connect(spill_dir) as con:
        sql.register(con, mlm=mlm, images_filtered=images_filtered, entity_cells=entity_cells,
                     geo_cell_dropouts=geo_cell_dropouts)
        con.execute("""
            CREATE TEMP TABLE fates AS
            SELECT m.*, coalesce(r.n, 0) AS n_raster, c.cell AS kept_cell, s.detail AS sparse
            FROM mlm m
            LEFT JOIN (SELECT qid, count(*) AS n FROM images_filtered GROUP BY qid) r USING (qid)
            LEFT JOIN entity_cells c USING (qid)
            LEFT JOIN (SELECT qid, min(detail) AS detail FROM geo_cell_dropouts GROUP BY qid) s USING (qid)""")
        stale = con.execute("""
            SELECT qid FROM fates WHERE n_raster > 0 AND kept_cell IS NULL AND sparse IS NULL ORDER BY qid""").fetchall()
        if stale:
            raise ValueError(
                f"entity_cells: {len(stale)} MLM entities with a raster image have no cell and no cell dropout, "
                f"e.g. {[q for (q,) in stale[:5]]}; rematerialise geo_cells for this release"
            )
        dropouts = _dropouts(con, """
            SELECT qid, 'mlm_irle' AS stage, 'no_raster_image' AS reason,
                   'its ' || n_images || ' usable images are all SVG' AS detail
            FROM fates WHERE n_raster = 0
            UNION ALL
            SELECT qid, 'mlm_irle', 'sparse_cell', sparse FROM fates WHERE n_raster > 0 AND kept_cell IS NULL""")
        table = sql.table(con, """
            SELECT qid, lat, lon, country_code, continent, kept_cell AS cell, classes, n_raster AS n_images,
                   n_summaries, languages
            FROM fates WHERE n_raster > 0 AND kept_cell IS NOT NULL ORDER BY qid""", schemas.VERSION)
    return VersionResult(table, dropouts)


EU28_SQL = "(" + ", ".join(f"'{code}'" for code in sorted(EU28)) + ")"


def build_mlm_irle_gr(mlm_irle: sql.Source, total: int, seed: int, params: CellParams, spill_dir: Path | None = None) -> GrResult:
    """MLM-irle-gr: the EU-28 population-weighted sample of MLM-irle with its own geo-cells."""
    require_columns(mlm_irle, schemas.VERSION, "mlm_irle")
    with sql.connect(spill_dir) as con:
        sql.register(con, irle=mlm_irle)
        members = sql.table(con, f"SELECT qid, country_code FROM irle WHERE country_code IN {EU28_SQL} ORDER BY qid",
                            _columns("qid", "country_code", schema=schemas.VERSION))
        keys = hash_keys(members.column("qid").to_pylist(), seed, "mlm_irle_gr")
        sql.register(con, keyed=members.append_column("key", pa.array(keys, pa.uint64())))
        available = dict(con.execute("SELECT country_code, count(*) FROM keyed GROUP BY 1").fetchall())
        population = {code: countries()[code].population for code in EU28}
        wanted = largest_remainder_quotas(population, total)
        order = sorted(EU28, key=lambda c: (-population[c], c))
        quotas = [Quota(c, population[c], wanted[c], available.get(c, 0), min(wanted[c], available.get(c, 0)))
                  for c in order]
        sql.register(con, quotas=pa.table({"country_code": [q.country for q in quotas],
                                           "wanted": [q.wanted for q in quotas],
                                           "available": [q.available for q in quotas]}))
        con.execute("""
            CREATE TEMP TABLE ranked AS
            SELECT k.qid, k.country_code, q.wanted, q.available,
                   row_number() OVER (PARTITION BY k.country_code ORDER BY k.key, k.qid) AS rank
            FROM keyed k JOIN quotas q USING (country_code)""")
        sample = sql.table(con, f"""
            SELECT {VERSION_COLUMNS} FROM irle SEMI JOIN (SELECT qid FROM ranked WHERE rank <= wanted) USING (qid)
            ORDER BY qid""", schemas.VERSION)
        cells = build_cells(
            sample.column("qid").to_pylist(),
            sample.column("lat").to_numpy(zero_copy_only=False),
            sample.column("lon").to_numpy(zero_copy_only=False),
            params,
            stage="mlm_irle_gr",
            source="mlm_irle_gr sample",
        )
        sql.register(con, sample=sample, sample_cells=cells.entity_cells)
        table = sql.table(con, """
            SELECT s.qid, s.lat, s.lon, s.country_code, s.continent, c.cell, s.classes, s.n_images, s.n_summaries,
                   s.languages
            FROM sample s JOIN sample_cells c ON c.qid = s.qid ORDER BY s.qid""", schemas.VERSION)
        chosen = _dropouts(con, f"""
            SELECT qid, 'mlm_irle_gr' AS stage, 'outside_eu28' AS reason,
                   'located in ' || coalesce(country_code, 'None') AS detail
            FROM irle WHERE country_code IS NULL OR country_code NOT IN {EU28_SQL}
            UNION ALL
            SELECT qid, 'mlm_irle_gr', 'over_quota', country_code || ': quota ' || wanted || ' of ' || available || ' available'
            FROM ranked WHERE rank > wanted""")
    return GrResult(table, cells.cells, pa.concat_tables([chosen, cells.dropouts]), quotas, cells.sparse_counts)


def check_ratios(train: float, val: float, test: float) -> None:
    if min(train, val, test) < 0 or abs(train + val + test - 1.0) > 1e-9:
        raise ValueError(
            f"split shares must be non-negative and sum to 1; got train={train}, val={val}, test={test} "
            f"(sum {train + val + test:g})"
        )


def split_names(qids: Sequence[str], seed: int, train: float, val: float) -> list[str]:
    """Each entity's split: a keyed hash of (seed, qid) against the cumulative ratios."""
    bounds = np.array([train, train + val], dtype=np.float64) * 2.0**64
    unit = hash_keys(qids, seed, "split").astype(np.float64)
    return [SPLIT_NAMES[k] for k in np.searchsorted(bounds, unit, side="right")]


def assign_splits(
    versions: Mapping[str, sql.Source], seed: int, train: float, val: float, test: float, spill_dir: Path | None = None
) -> pa.Table:
    """Train/val/test by entity, for every entity of every version.

    The split of an entity depends on nothing but its id and the seed, so it is the same in
    every version that holds it (training on MLM-irle never sees an MLM-irle-gr test entity),
    and in the next release. The price is that the shares are ratios in expectation, not
    exactly: at 5,000 entities a 10% split varies by about 20 entities.
    """
    check_ratios(train, val, test)
    with sql.connect(spill_dir) as con:
        sql.register(con, **{f"version_{i}": table for i, table in enumerate(versions.values())})
        members = " UNION ALL ".join(
            f"SELECT {sql.quoted(name)} AS version, qid FROM version_{i}" for i, name in enumerate(versions))
        qids = [q for (q,) in con.execute(f"SELECT DISTINCT qid FROM ({members}) ORDER BY 1").fetchall()]
        sql.register(con, split_of=pa.table({"qid": pa.array(qids, pa.string()),
                                             "split": pa.array(split_names(qids, seed, train, val), pa.string())}))
        return sql.table(con, f"SELECT m.version, m.qid, s.split FROM ({members}) m JOIN split_of s USING (qid) "
                              "ORDER BY m.version, m.qid", schemas.SPLITS)
