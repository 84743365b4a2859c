"""What a place looks like: the meaning its photographs and its summaries share.

The embedded world's pictures and texts are generated, so on their own they would share nothing
but what the generator puts in both. This module decides, once per place, what a photograph of
it shows and its summaries say in words, from the place's real geography where the data allows:

- ``coast``: real. The sea lies within about 5-8 km (GLOBE's 1 km land/sea mask, as packaged by
  ``global-land-mask``, reduced to 0.05-degree cells that hold any sea: ``data/sea_mask_0p05.npz``,
  121 KB; recipe below). Lakes are land in that mask.
- ``climate``: real. The latitude band (tropical, warm, temperate, cold, polar).
- ``mountains``: real, coarse. Inside one of the world's major ranges, each drawn as a few
  latitude/longitude boxes from an atlas (``MOUNTAIN_BOXES``); no elevation data ships offline.
- ``settlement``: real. City skyline from 150,000 inhabitants, town from 10,000, else village.
- ``flag``: real. The country's flag colours and layout (``FLAGS``; a seeded two-colour design for
  countries not listed), shown on a pole in most photographs.
- ``near``: real. The nearest city of 100,000 or more (GeoNames cities15000, numbered city
  districts left out) within 200 km, its
  distance and direction: what Wikipedia intros say ("12 km north-east of Lyon").
- ``water``: a river or lake the name states ("-sur-Marne", "am See", "upon Tyne", "nad Odrą"),
  otherwise drawn with a seeded generator.
- ``cover``: snow in the polar band; desert in arid countries and regions (``ARID_COUNTRIES``,
  ``ARID_BOXES``) of the warm band; otherwise forest or fields, drawn with a probability that
  follows the climate.
- ``landmark``: seeded, from what the setting makes plausible (a lighthouse or harbour on the
  coast, a bridge over a river, a windmill in the Low Countries, a castle or church in Europe).

None of it is a code only this world could carry: no ID, name or coordinate is ever drawn.

The sea mask was made with global-land-mask 1.0.0 (MIT; GLOBE data, public domain)::

    mask = np.load("globe_combined_mask_compressed.npz")["mask"]            # True = sea, 1/120 deg
    cells = mask.reshape(3600, 6, 7200, 6).any(axis=(1, 3))                 # 0.05 deg, any sea
    np.savez_compressed("sea_mask_0p05.npz", sea=np.packbits(cells, axis=1))
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

Color = tuple[int, int, int]

SEA_MASK = Path(__file__).parent / "data" / "sea_mask_0p05.npz"
SEA_CELL_DEG = 0.05
COAST_CELLS = 1  # sea in the place's cell or a neighbour: within about 5-8 km

CLIMATES = ("tropical", "warm", "temperate", "cold", "polar")
COVERS = ("forest", "fields", "desert", "snow")
SETTLEMENTS = ("city", "town", "village")
WATERS = ("river", "lake", "")
LANDMARKS = ("church", "castle", "bridge", "lighthouse", "harbour", "windmill", "tower", "")
CITY_POPULATION = 150_000
TOWN_POPULATION = 10_000
NEAR_CITY_POPULATION = 100_000
NEAR_CITY_MAX_KM = 200.0

# (lat_min, lat_max, lon_min, lon_max): the major ranges, coarse.
MOUNTAIN_BOXES: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "Alps": ((45.0, 47.6, 6.0, 13.8), (46.2, 47.8, 9.5, 16.0), (44.0, 45.0, 6.2, 7.8)),
    "Pyrenees": ((42.3, 43.1, -1.8, 2.8),),
    "Massif Central": ((44.5, 45.8, 2.3, 4.2),),
    "Jura and Vosges": ((46.4, 47.5, 5.8, 7.2), (47.7, 48.6, 6.7, 7.3), (47.7, 48.7, 7.9, 8.6)),
    "Apennines": ((43.6, 44.4, 9.8, 12.2), (41.8, 43.6, 12.4, 14.2), (39.5, 41.2, 15.0, 16.5)),
    "Dinaric Alps": ((42.2, 45.0, 15.5, 19.8),),
    "Carpathians": ((48.8, 49.6, 18.8, 22.6), (47.2, 49.0, 22.6, 26.0), (45.2, 45.8, 22.3, 26.0)),
    "Sudetes and Ore Mountains": ((50.2, 50.9, 12.3, 14.2), (50.3, 50.9, 15.3, 17.2), (48.7, 49.3, 12.9, 14.3)),
    "Balkan and Rila": ((41.5, 43.0, 22.5, 25.8),),
    "Pindus": ((39.0, 41.0, 20.6, 22.0),),
    "Iberian ranges": ((42.8, 43.3, -7.0, -3.5), (40.2, 40.9, -6.0, -3.6), (36.9, 37.3, -3.8, -2.5)),
    "Scottish Highlands": ((56.5, 58.6, -6.0, -3.5),),
    "Scandinavian mountains": ((59.5, 70.0, 5.5, 10.5), (62.0, 69.0, 12.0, 18.5)),
    "Caucasus": ((41.8, 43.6, 40.0, 48.0),),
    "Urals": ((51.0, 67.0, 57.0, 60.5),),
    "Atlas": ((30.5, 35.5, -9.0, 3.0),),
    "Anatolian ranges": ((36.5, 38.0, 29.0, 36.0), (38.5, 40.5, 38.0, 44.0)),
    "Zagros and Alborz": ((29.0, 36.5, 46.0, 54.0),),
    "Himalaya and Hindu Kush": ((27.0, 36.5, 70.0, 92.0),),
    "Japanese Alps": ((35.2, 37.2, 136.8, 139.0),),
    "Rocky Mountains": ((36.0, 49.0, -114.5, -104.8), (49.0, 60.0, -125.0, -114.0)),
    "Sierra Nevada and Cascades": ((36.0, 40.5, -121.0, -118.0), (42.0, 49.0, -122.5, -120.5)),
    "Appalachians": ((35.0, 40.0, -83.5, -77.0), (40.0, 44.5, -80.0, -71.5)),
    "Sierra Madre": ((17.0, 27.0, -107.0, -98.5),),
    "Andes": ((-55.0, 11.0, -79.0, -66.5),),
    "Ethiopian Highlands": ((6.0, 14.0, 36.0, 40.5),),
    "Western Ghats": ((8.0, 20.0, 73.0, 77.0),),
}

ARID_COUNTRIES = frozenset(
    "EG LY DZ TN MA EH MR ML NE TD SD SA YE OM AE QA KW BH IQ JO SY IR AF PK TM UZ KZ MN NA BW DJ SO ER".split()
)
ARID_BOXES = ((31.0, 37.5, -118.0, -103.0), (-32.0, -19.0, 117.0, 146.0), (24.0, 31.0, -115.0, -100.0))

# Flags: (layout, colours). Layouts: v3/h3 tricolours, h2 bicolour, nordic cross, cross (a red
# cross on white), union (the Union Flag), stripes (the US), disc (a disc on a field).
RED, WHITE, BLUE, GREEN, YELLOW, BLACK, ORANGE = (206, 17, 38), (255, 255, 255), (0, 56, 147), (0, 146, 70), (252, 209, 22), (0, 0, 0), (255, 136, 62)
FLAGS: dict[str, tuple[str, tuple[Color, ...]]] = {
    "FR": ("v3", ((0, 85, 164), WHITE, (239, 65, 53))),
    "DE": ("h3", (BLACK, (221, 0, 0), (255, 206, 0))),
    "IT": ("v3", (GREEN, WHITE, RED)),
    "ES": ("h3", ((170, 21, 27), (241, 191, 0), (170, 21, 27))),
    "PL": ("h2", (WHITE, (220, 20, 60))),
    "GB": ("union", ((1, 33, 105), WHITE, (200, 16, 46))),
    "US": ("stripes", ((178, 34, 52), WHITE, (60, 59, 110))),
    "CZ": ("h2", (WHITE, (215, 20, 26))),
    "IN": ("h3", ((255, 153, 51), WHITE, (19, 136, 8))),
    "CH": ("cross", ((218, 41, 28), WHITE)),
    "HU": ("h3", ((206, 41, 57), WHITE, (71, 112, 80))),
    "RU": ("h3", (WHITE, (0, 57, 166), (213, 43, 30))),
    "NL": ("h3", ((174, 28, 40), WHITE, (33, 70, 139))),
    "SI": ("h3", (WHITE, (0, 93, 164), (237, 28, 36))),
    "AT": ("h3", ((237, 41, 57), WHITE, (237, 41, 57))),
    "CA": ("v3", ((216, 6, 33), WHITE, (216, 6, 33))),
    "UA": ("h2", ((0, 87, 183), (255, 215, 0))),
    "JP": ("disc", (WHITE, (188, 0, 45))),
    "BE": ("v3", (BLACK, (253, 218, 36), (239, 51, 64))),
    "IE": ("v3", ((22, 155, 98), WHITE, (255, 136, 62))),
    "RO": ("v3", ((0, 43, 127), (252, 209, 22), (206, 17, 38))),
    "PT": ("v3", ((0, 102, 0), (255, 0, 0), (255, 0, 0))),
    "GR": ("h3", ((13, 94, 175), WHITE, (13, 94, 175))),
    "BG": ("h3", (WHITE, (0, 150, 110), (214, 38, 18))),
    "HR": ("h3", ((255, 0, 0), WHITE, (23, 23, 150))),
    "SK": ("h3", (WHITE, (11, 78, 162), (238, 28, 37))),
    "LT": ("h3", ((253, 185, 19), (0, 106, 68), (193, 39, 45))),
    "LV": ("h3", ((158, 48, 57), WHITE, (158, 48, 57))),
    "EE": ("h3", ((0, 114, 206), BLACK, WHITE)),
    "LU": ("h3", ((237, 41, 57), WHITE, (0, 161, 222))),
    "SE": ("nordic", ((0, 106, 167), (254, 204, 0))),
    "NO": ("nordic", ((186, 12, 47), WHITE, (0, 32, 91))),
    "DK": ("nordic", ((200, 16, 46), WHITE)),
    "FI": ("nordic", (WHITE, (0, 47, 108))),
    "IS": ("nordic", ((2, 82, 156), WHITE, (220, 30, 53))),
    "RS": ("h3", ((198, 54, 60), (12, 64, 118), WHITE)),
    "BY": ("h2", ((200, 49, 62), (0, 122, 61))),
    "MD": ("v3", ((0, 70, 174), (255, 210, 0), (204, 9, 47))),
    "MX": ("v3", ((0, 104, 71), WHITE, (206, 17, 38))),
    "BR": ("disc", ((0, 156, 59), (255, 223, 0))),
    "AR": ("h3", ((116, 172, 223), WHITE, (116, 172, 223))),
    "CN": ("disc", ((238, 28, 37), (255, 255, 0))),
    "NG": ("v3", ((0, 135, 81), WHITE, (0, 135, 81))),
    "ZA": ("h3", ((222, 56, 49), GREEN, (0, 35, 149))),
    "AU": ("union", ((1, 33, 105), WHITE, (228, 0, 43))),
    "NZ": ("union", ((1, 33, 105), WHITE, (200, 16, 46))),
    "TR": ("disc", ((227, 10, 23), WHITE)),
    "KR": ("disc", (WHITE, (205, 46, 58))),
}
FLAG_PALETTE: tuple[Color, ...] = (RED, WHITE, BLUE, GREEN, YELLOW, BLACK, ORANGE)

_RIVER_NAME = re.compile(
    r"(-sur-(?!mer\b)|\bsur-|\bam (?!see\b)|\ban der\b|\ban den\b|\bupon\b|-on-|\bon-|\bnad\b|\bsul\b|"
    r"\bsull'|\bsobre\b|\bam main\b|\bam rhein\b|\(oder\)|\bbridge\b|\bbrück|\bfurt\b|\bford\b)",
    re.IGNORECASE,
)
_LAKE_NAME = re.compile(r"(see\b|\blac\b|\blake\b|\blaghi?\b|-les-lacs|\bjezior|\bjärvi|\bjärv\b)", re.IGNORECASE)
_LOW_COUNTRIES = frozenset({"NL", "BE", "DK"})


@dataclass(frozen=True)
class Flag:
    layout: str
    colors: tuple[Color, ...]


@dataclass(frozen=True)
class Near:
    city: str
    km: int
    bearing: str  # north, north-east, ... (from the city to the place)


@dataclass(frozen=True)
class Scenery:
    climate: str
    coast: bool
    mountains: bool
    water: str  # river | lake | ""
    cover: str  # forest | fields | desert | snow
    settlement: str  # city | town | village
    landmark: str  # one of LANDMARKS ("" for none)
    flag: Flag
    near: Near | None

    def visual(self) -> dict[str, str]:
        """The attributes a photograph shows (what a linear probe on image features should read)."""
        return {
            "climate": self.climate,
            "coast": "coast" if self.coast else "inland",
            "mountains": "mountains" if self.mountains else "lowland",
            "water": self.water or "none",
            "cover": self.cover,
            "settlement": self.settlement,
            "landmark": self.landmark or "none",
        }


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


@lru_cache(maxsize=1)
def _sea_cells() -> np.ndarray:
    with np.load(SEA_MASK) as packed:
        return np.unpackbits(packed["sea"], axis=1).astype(bool)


def near_sea(lat: float, lon: float) -> bool:
    """Sea in the place's 0.05-degree cell or one of its neighbours."""
    cells = _sea_cells()
    rows, cols = cells.shape
    i = min(rows - 1, max(0, int((90.0 - lat) / SEA_CELL_DEG)))
    j = int((lon + 180.0) / SEA_CELL_DEG) % cols
    block = cells[max(0, i - COAST_CELLS) : i + COAST_CELLS + 1, [(j + d) % cols for d in range(-COAST_CELLS, COAST_CELLS + 1)]]
    return bool(block.any())


def climate_band(lat: float) -> str:
    band = abs(lat)
    if band < 23.5:
        return "tropical"
    if band < 40.0:
        return "warm"
    if band < 55.0:
        return "temperate"
    if band < 66.5:
        return "cold"
    return "polar"


def _in_boxes(lat: float, lon: float, boxes: tuple[tuple[float, float, float, float], ...]) -> bool:
    return any(a <= lat <= b and c <= lon <= d for a, b, c, d in boxes)


def in_mountains(lat: float, lon: float) -> bool:
    return any(_in_boxes(lat, lon, boxes) for boxes in MOUNTAIN_BOXES.values())


def _flag(country: str) -> Flag:
    if country in FLAGS:
        layout, colors = FLAGS[country]
        return Flag(layout, colors)
    rng = _rng("flag", country)
    return Flag(rng.choice(("v3", "h3", "h2")), tuple(rng.sample(FLAG_PALETTE, 3)))


@lru_cache(maxsize=1)
def _big_cities() -> tuple[tuple[tuple[str, float, float], ...], object]:
    """GeoNames cities of 100,000 or more, and a KD-tree over their unit vectors."""
    from scipy.spatial import cKDTree

    from mlm_pipeline.world import geonames

    cities = tuple(
        (p.name, p.lat, p.lon)
        for p in geonames.load_places("cities15000")
        if p.population >= NEAR_CITY_POPULATION and not any(ch.isdigit() for ch in p.name)  # not "Paris 19"
    )
    return cities, cKDTree(np.array([_unit(lat, lon) for _, lat, lon in cities]))


def _unit(lat: float, lon: float) -> tuple[float, float, float]:
    phi, lam = math.radians(lat), math.radians(lon)
    return (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi))


BEARINGS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


def nearest_city(name: str, lat: float, lon: float) -> Near | None:
    """The closest other city of 100,000+ within 200 km, with the direction from it to the place."""
    cities, tree = _big_cities()
    distances, indices = tree.query(_unit(lat, lon), k=3)  # type: ignore[attr-defined]
    for chord, index in zip(np.atleast_1d(distances), np.atleast_1d(indices)):
        city, clat, clon = cities[int(index)]
        km = 2 * 6371.0 * math.asin(min(1.0, float(chord) / 2))
        if city == name or km < 2.0:
            continue
        if km > NEAR_CITY_MAX_KM:
            return None
        dlon = math.radians(lon - clon)
        y = math.sin(dlon) * math.cos(math.radians(lat))
        x = math.cos(math.radians(clat)) * math.sin(math.radians(lat)) - math.sin(math.radians(clat)) * math.cos(math.radians(lat)) * math.cos(dlon)
        bearing = BEARINGS[int(((math.degrees(math.atan2(y, x)) + 360 + 22.5) % 360) // 45)]
        return Near(city, max(1, round(km)), bearing)
    return None


def _water(name: str, settlement: str, rng: random.Random) -> str:
    if _LAKE_NAME.search(name):
        return "lake"
    if _RIVER_NAME.search(name):
        return "river"
    u = rng.random()
    if u < (0.45 if settlement == "city" else 0.28):
        return "river"
    return "lake" if u > 0.93 else ""


def _cover(climate: str, country: str, lat: float, lon: float, rng: random.Random) -> str:
    if climate == "polar":
        return "snow"
    if climate in ("warm", "tropical") and (country in ARID_COUNTRIES or _in_boxes(lat, lon, ARID_BOXES)):
        return "desert"
    forest = {"tropical": 0.55, "warm": 0.25, "temperate": 0.4, "cold": 0.65}[climate]
    return "forest" if rng.random() < forest else "fields"


def _landmark(coast: bool, water: str, country: str, continent: str, settlement: str, rng: random.Random) -> str:
    options: dict[str, float] = {"church": 3.0 if continent == "EU" else 1.0, "": 2.0}
    if continent == "EU":
        options["castle"] = 1.5
    if coast:
        options |= {"lighthouse": 2.0, "harbour": 2.0}
    if water == "river":
        options["bridge"] = 2.5
    if country in _LOW_COUNTRIES:
        options["windmill"] = 3.0
    if settlement == "city":
        options["tower"] = 2.5
    names = sorted(options)
    return rng.choices(names, weights=[options[n] for n in names])[0]


def scenery_for(
    key: object, name: str, lat: float, lon: float, population: int, country: str, continent: str
) -> Scenery:
    """The place's scenery: a pure function of its facts (``key`` seeds the drawn parts)."""
    rng = _rng("scenery", key)
    climate = climate_band(lat)
    coast = near_sea(lat, lon)
    settlement = "city" if population >= CITY_POPULATION else "town" if population >= TOWN_POPULATION else "village"
    water = _water(name, settlement, rng)
    cover = _cover(climate, country, lat, lon, rng)
    return Scenery(
        climate=climate,
        coast=coast,
        mountains=in_mountains(lat, lon),
        water=water,
        cover=cover,
        settlement=settlement,
        landmark=_landmark(coast, water, country, continent, settlement, rng),
        flag=_flag(country),
        near=nearest_city(name, lat, lon),
    )
