"""A Wikidata-shaped world of real GeoNames settlements, built deterministically from a spec.

Why a world at all: the pipeline must be testable offline, against a real SPARQL engine, with a
graph that has every awkward case the real one has, and with the right answer known. The world
is a pure function of ``WorldSpec(size, seed, version)``: each place's attributes are drawn from
a generator seeded by (seed, GeoNames ID), so growing a world or moving to a later version does
not reshuffle the places already in it.

Places and their country mix
    Settlements are real GeoNames places (name, coordinates, country, population, admin1). They
    are drawn with MLM v1's country mix (reference.md: FR 38,793, US 34,463, DE 31,654, ...;
    the other countries of Europe and of the rest of the world share the remainders in
    proportion to the square root of how many places GeoNames has for them, each below the
    smallest listed country, as MLM's list implies). A country with fewer places than its
    quota takes all it has and the shortfall goes to the countries that still have places,
    first within its own half (Europe / rest of the world), then anywhere. Within a country,
    places are drawn without replacement with weight sqrt(population + 100), because MLM's
    entities are the settlements that have articles and photos. "tiny" draws from
    cities15000 (fast), every other size from cities500 (234,908 places). At MLM's scale
    GeoNames runs short (cities500 has FR 15,362 and DE 11,870 places against MLM's 38,793
    and 31,654), so "mlm" takes every GeoNames place: its mix is GeoNames' rather than MLM's.

Identifiers
    Settlements are ``Q9000000001`` upwards and countries ``Q9990000001`` upwards: far beyond
    real Wikidata items, so no one mistakes them for the real ones; all have ten digits, so
    string order is numeric order. Classes are Wikidata's real settlement classes.

The class graph (base Q486972 human settlement)
    1 hop: municipality, city, town, village, hamlet, Ortsteil; 2 hops: the national
    municipality classes, big city, village of Poland, town of the US, "city or town";
    3 hops: metropolis, city with millions of inhabitants; 4 hops (beyond the default closure):
    global city, megacity. "city of the United States" and "urban municipality of Germany" are
    reachable by two paths of different lengths (their shortest is recorded); town and
    "city or town" are subclasses of each other (a cycle); "Ortsteil" has no English label;
    neighbourhood, castle and country lie outside the closure, as does a cycle above the base.

Edge cases (``Place.edge_cases``; every size has each at least once, see ``SPECIALS``)
    several classes; an instance of the base class itself; classes in a cycle, reachable two
    ways, without English label, only beyond 3 hops, beyond and within, outside the closure;
    no coordinates; only coordinates on the Moon / Mars; Earth plus another globe; two Earth
    coordinates of equal rank; a preferred and a normal one; a deprecated wrong one; no image;
    images only under other properties than P18; only SVG images; SVG plus a photo; the same
    file under two properties; articles in each combination of en/de/fr and in none (and only
    in another language); no country; no English label; a label with quotes and a backslash;
    a sitelink title that the wiki normalises, one that is a redirect, one whose article is
    missing; file names with '/', '..', quotes, '&', '%', '?' and accents.

The right answer (``Truth``, from :func:`expected`)
    Closure: every class within ``max_hops`` wdt:P279 steps below the base, with its shortest
    hop count and the smallest-QID parent on a shortest path. Candidates: places with a wdt:P31
    class in the closure. The coordinate of an entity: among its statements of the best
    non-deprecated rank (preferred over normal) on Earth (wd:Q2), the smallest (lat, lon).
    Images: for each configured property in the configured order, its file names in string
    order, first occurrence kept. Classes: every wdt:P31 class (in or out of the closure) in
    string order, with English labels ("" when none). Titles: the sitelink titles as stored
    in the graph (before any normalisation or redirect).

Dropout reasons (entity stage; each dropped candidate fails exactly one constraint, so the
reason is unambiguous whatever order a pipeline checks them in):
    ``no_coordinates``  no P625 statement (of non-deprecated rank) at all
    ``not_on_earth``    coordinates only on another globe
    ``no_image``        no value for any configured image property
    ``no_article``      no sitelink to a configured language's Wikipedia
Places that are never candidates (``Truth.non_candidates``): ``class_beyond_hops`` (every
class lies further than ``max_hops`` from the base), ``class_outside_closure`` (no class
reaches the base at all). ``Truth.svg_only`` lists entities that pass extraction but whose
images are all SVG (the later SVG filter removes them).

Versions
    Version v > 1 replays edit rounds 2..v on top of version 1: each round removes about 1% of
    the ordinary places, adds about 1% new ones (from GeoNames places not yet drawn, new QIDs),
    and edits about 2% (coordinates moved, classes changed, an image replaced, the English label
    changed, or all P18 images removed). Edge-case places are never touched. Each version's
    dataset date is 7 days after the previous one. ``World.changes`` lists what each round did.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from mlm_pipeline.world import geonames
from mlm_pipeline.world.geonames import GeoPlace
from mlm_pipeline.world.scenery import Scenery, scenery_for

BASE_CLASS = "Q486972"
EARTH = "Q2"
MOON = "Q405"
MARS = "Q111"
LANGUAGES = ("en", "de", "fr")
IMAGE_PROPS = ("P18", "P41", "P94", "P242", "P1943", "P948")
BASE_DATE = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
ENTITY_QID_BASE = 9_000_000_000
COUNTRY_QID_BASE = 9_990_000_000
SIZES = {"tiny": 300, "default": 8000, "mlm": 236_496}
MIN_SIZE = 80  # room for every edge case plus ordinary places

# MLM v1 entities per country (reference.md) and the totals of the two halves.
MLM_COUNTRIES = {
    "FR": 38_793, "US": 34_463, "DE": 31_654, "PL": 19_433, "GB": 13_042, "IT": 9_355,
    "ES": 8_408, "CZ": 7_742, "IN": 3_555, "CH": 3_543, "HU": 3_048, "RU": 2_992,
    "NL": 2_954, "SI": 2_813, "AT": 2_639, "CA": 2_551, "UA": 2_242, "JP": 2_226,
}  # fmt: skip
MLM_EUROPE = 171_341
MLM_REST = 65_155


@dataclass(frozen=True)
class ClassInfo:
    qid: str
    label_en: str | None
    parents: list[str]
    labels: dict[str, str] = field(default_factory=dict)


# (qid, en, de, fr, parents). en None: the class has no English label.
CLASS_TABLE: tuple[tuple[str, str | None, str, str, tuple[str, ...]], ...] = (
    ("Q486972", "human settlement", "menschliche Siedlung", "établissement humain", ("Q2221906",)),
    ("Q2221906", "geographic location", "geographischer Ort", "localisation géographique", ("Q17334923",)),
    ("Q17334923", "location", "Ort", "lieu", ("Q2221906",)),  # a cycle above the base
    ("Q15284", "municipality", "Gemeinde", "municipalité", ("Q486972",)),
    ("Q515", "city", "Stadt", "ville", ("Q486972",)),
    ("Q3957", "town", "Kleinstadt", "petite ville", ("Q486972", "Q7930989")),
    ("Q7930989", "city or town", "Stadt oder Kleinstadt", "ville ou bourg", ("Q3957",)),  # cycle with town
    ("Q532", "village", "Dorf", "village", ("Q486972",)),
    ("Q5084", "hamlet", "Weiler", "hameau", ("Q486972",)),
    ("Q253019", None, "Ortsteil", "quartier (Allemagne)", ("Q486972",)),  # no English label
    ("Q484170", "commune of France", "Gemeinde in Frankreich", "commune française", ("Q15284",)),
    ("Q262166", "municipality of Germany", "Gemeinde in Deutschland", "commune d'Allemagne", ("Q15284",)),
    ("Q42744322", "urban municipality of Germany", "Stadt in Deutschland", "ville d'Allemagne", ("Q262166", "Q515")),
    ("Q747074", "comune of Italy", "italienische Gemeinde", "commune d'Italie", ("Q15284",)),
    ("Q2074737", "municipality of Spain", "Municipio in Spanien", "municipalité d'Espagne", ("Q15284",)),
    ("Q70208", "municipality of Switzerland", "politische Gemeinde der Schweiz", "commune de Suisse", ("Q15284",)),
    ("Q667509", "municipality of Austria", "Gemeinde in Österreich", "commune d'Autriche", ("Q15284",)),
    ("Q2039348", "municipality of the Netherlands", "Gemeinde in den Niederlanden", "commune des Pays-Bas", ("Q15284",)),
    ("Q5153359", "municipality of the Czech Republic", "Gemeinde in Tschechien", "commune de Tchéquie", ("Q15284",)),
    ("Q3558970", "village of Poland", "Dorf in Polen", "village de Pologne", ("Q532",)),
    ("Q15127012", "town of the United States", "Town in den Vereinigten Staaten", "town des États-Unis", ("Q3957",)),
    ("Q1549591", "big city", "Großstadt", "grande ville", ("Q515",)),
    ("Q1093829", "city of the United States", "City in den Vereinigten Staaten", "ville des États-Unis", ("Q1549591", "Q515")),
    ("Q200250", "metropolis", "Metropole", "métropole", ("Q1549591",)),
    ("Q1637706", "city with millions of inhabitants", "Millionenstadt", "ville millionnaire", ("Q1549591",)),
    ("Q208511", "global city", "Weltstadt", "ville mondiale", ("Q200250",)),  # 4 hops
    ("Q174844", "megacity", "Megastadt", "mégapole", ("Q1637706",)),  # 4 hops
    ("Q123705", "neighborhood", "Stadtviertel", "quartier", ("Q2221906",)),  # outside the closure
    ("Q23413", "castle", "Burg", "château fort", ()),  # outside the closure
    ("Q6256", "country", "Staat", "pays", ()),  # what country items are
)

COUNTRY_CLASS = {
    "FR": "Q484170", "DE": "Q262166", "IT": "Q747074", "ES": "Q2074737", "CH": "Q70208",
    "AT": "Q667509", "NL": "Q2039348", "CZ": "Q5153359",
}  # fmt: skip
HOME_LANGUAGE = {"FR": "fr", "BE": "fr", "LU": "fr", "MC": "fr", "DE": "de", "AT": "de", "CH": "de", "LI": "de",
                 "GB": "en", "US": "en", "IE": "en", "AU": "en", "NZ": "en", "CA": "en", "IN": "en"}  # fmt: skip
COUNTRY_LABELS = {  # (de, fr) for the countries that matter most; others keep the English name
    "FR": ("Frankreich", "France"), "US": ("Vereinigte Staaten", "États-Unis"), "DE": ("Deutschland", "Allemagne"),
    "PL": ("Polen", "Pologne"), "GB": ("Vereinigtes Königreich", "Royaume-Uni"), "IT": ("Italien", "Italie"),
    "ES": ("Spanien", "Espagne"), "CZ": ("Tschechien", "Tchéquie"), "IN": ("Indien", "Inde"),
    "CH": ("Schweiz", "Suisse"), "HU": ("Ungarn", "Hongrie"), "RU": ("Russland", "Russie"),
    "NL": ("Niederlande", "Pays-Bas"), "SI": ("Slowenien", "Slovénie"), "AT": ("Österreich", "Autriche"),
    "CA": ("Kanada", "Canada"), "UA": ("Ukraine", "Ukraine"), "JP": ("Japan", "Japon"),
    "BE": ("Belgien", "Belgique"), "RO": ("Rumänien", "Roumanie"), "SE": ("Schweden", "Suède"),
    "PT": ("Portugal", "Portugal"), "GR": ("Griechenland", "Grèce"), "BR": ("Brasilien", "Brésil"),
    "CN": ("China", "Chine"), "MX": ("Mexiko", "Mexique"),
}  # fmt: skip

# Every size contains each of these once per listing (a place per entry).
SPECIALS: tuple[str, ...] = (
    "several_classes", "several_classes", "base_class", "cycle_class", "two_path_class",
    "unlabelled_class", "beyond_hops", "beyond_hops", "beyond_and_within", "outside_closure",
    "outside_closure", "no_coordinates", "no_coordinates", "moon", "mars", "earth_and_moon",
    "two_coordinates", "preferred_coordinate", "deprecated_coordinate", "no_image", "no_image",
    "other_image_props_only", "svg_only", "svg_only", "svg_and_photo", "file_in_two_props",
    "articles_en", "articles_de", "articles_fr", "articles_en_de", "articles_de_fr",
    "articles_en_fr", "articles_en_de_fr", "no_article", "other_language_article_only",
    "no_country", "no_label_en", "label_quotes", "title_normalise", "title_redirect",
    "article_missing", "tricky_file_names", "tricky_file_names_2", "many_images",
)  # fmt: skip
PROTECTED_EDGES = frozenset(SPECIALS)

LICENSES = ("CC BY-SA 4.0", "CC BY-SA 4.0", "CC BY-SA 3.0", "CC BY 4.0", "CC BY 2.0", "CC0", "Public domain")
FIRST = ("Anna", "Jean", "Marie", "Lukas", "Zofia", "Tom", "Elena", "Pierre", "Jana", "Giulia", "Sven", "Akira", "Priya")
LAST = ("Müller", "Dupont", "Nowak", "Smith", "Rossi", "García", "Novák", "Schneider", "Lefèvre", "Kovač", "Tanaka")


@dataclass(frozen=True)
class Country:
    qid: str
    code: str  # ISO 3166-1 alpha-2 (wdt:P297)
    name_en: str
    labels: dict[str, str]
    continent: str
    population: int


@dataclass(frozen=True)
class FileInfo:
    file_name: str  # Commons name without "File:", spaces not underscores
    place_qid: str
    kind: str  # photo | map | flag | emblem | banner
    format: str  # jpeg | png | svg
    license: str
    author: str
    width: int
    height: int


@dataclass
class Place:
    qid: str
    name: str
    labels: dict[str, str]
    coords: list[tuple[float, float, str]]  # (lat, lon, globe QID), statement order
    classes: list[str]  # wdt:P31
    images: dict[str, list[str]]  # property -> file names
    sitelinks: dict[str, str]  # language -> title as stored in Wikidata
    country_qid: str | None
    country_code: str | None
    population: int
    geonames_id: int
    continent: str
    admin1: str
    coord_ranks: list[str] = field(default_factory=list)  # per coordinate: normal | preferred | deprecated
    edge_cases: set[str] = field(default_factory=set)
    redirects: dict[str, str] = field(default_factory=dict)  # language -> page the sitelink redirects to
    missing_articles: set[str] = field(default_factory=set)  # languages whose sitelinked page does not exist
    pages: dict[str, str] = field(default_factory=dict)  # language -> title of the page holding the article
    scenery: Scenery | None = None  # what its photographs show and its summaries say (scenery.py)

    def rank(self, i: int) -> str:
        return self.coord_ranks[i] if i < len(self.coord_ranks) else "normal"


@dataclass(frozen=True)
class Change:
    version: int
    qid: str
    kind: str  # added | removed | moved | reclassed | reimaged | relabelled | images_removed


@dataclass
class Truth:
    base: str
    max_hops: int
    image_props: tuple[str, ...]
    languages: tuple[str, ...]
    closure: dict[str, int]  # class -> shortest hops
    closure_parent: dict[str, str | None]  # class -> smallest-QID parent on a shortest path
    entities: dict[str, dict]  # qid -> row as in schemas.ENTITIES
    dropouts: dict[str, str]  # qid -> reason
    non_candidates: dict[str, str]  # qid -> class_beyond_hops | class_outside_closure
    svg_only: set[str]  # entities whose images are all SVG


@dataclass(frozen=True)
class WorldSpec:
    size: str | int = "default"
    seed: int = 1234
    version: int = 1
    files: str = ""

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, str) and size.strip().isdigit():
            object.__setattr__(self, "size", int(size))
            size = int(size)
        if isinstance(size, str) and size not in SIZES:
            raise ValueError(f"world size {size!r}: use one of {tuple(SIZES)} or a number >= {MIN_SIZE}")
        if isinstance(size, int) and size < MIN_SIZE:
            raise ValueError(f"world size {size}: at least {MIN_SIZE} places are needed for every edge case")
        if not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"world version {self.version!r}: versions count from 1")
        if not isinstance(self.seed, int):
            raise ValueError(f"world seed {self.seed!r} must be an integer")

    @classmethod
    def from_config(cls, size: str | int = "default", seed: int = 1234, version: int = 1, files: str = "") -> "WorldSpec":
        return cls(size=size, seed=int(seed), version=int(version), files=files or "")

    @property
    def n_places(self) -> int:
        return SIZES[self.size] if isinstance(self.size, str) else self.size

    @property
    def source(self) -> str:
        return "cities15000" if self.n_places <= 1000 else "cities500"

    def label(self) -> str:
        return f"size={self.size},seed={self.seed},version={self.version}"

    def published(self) -> dict[str, "WorldSpec"]:
        """Every release this world has published up to its version, by release key: a
        generated world rebuilds any earlier version exactly, so each stays buildable."""
        if self.files:
            return {}  # one's own files have one release, known once they are read
        return {
            version_stamp(v).strftime("%Y-%m-%d"): dataclasses.replace(self, version=v) for v in range(1, self.version + 1)
        }


def version_stamp(version: int) -> dt.datetime:
    """The data version a generated world publishes at ``version``: weekly, like Wikidata's dumps."""
    return BASE_DATE + dt.timedelta(days=7 * (version - 1))


@dataclass
class World:
    spec: WorldSpec
    dataset_version: str
    release: str
    places: list[Place]
    classes: dict[str, ClassInfo]
    countries: dict[str, Country]
    files: dict[str, FileInfo]
    truth: Truth
    changes: list[Change] = field(default_factory=list)

    def place(self, qid: str) -> Place:
        return self._index()[qid]

    def _index(self) -> dict[str, Place]:
        index = self.__dict__.get("_by_qid")
        if index is None or len(index) != len(self.places):
            index = {p.qid: p for p in self.places}
            self.__dict__["_by_qid"] = index
        return index

    def with_edge(self, edge: str) -> list[Place]:
        return [p for p in self.places if edge in p.edge_cases]


def entity_qid(n: int) -> str:
    return f"Q{ENTITY_QID_BASE + n}"


# ---------------------------------------------------------------------------------------------
# Drawing places with MLM's country mix


def _largest_remainder(weights: dict[str, float], total: int) -> dict[str, int]:
    """Integers proportional to ``weights`` that add up to ``total`` (ties broken by key)."""
    mass = sum(weights.values())
    if total <= 0 or mass <= 0:
        return {k: 0 for k in weights}
    exact = {k: total * w / mass for k, w in weights.items()}
    out = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:left]:
        out[k] += 1
    return out


def _half(code: str, continents: dict[str, str]) -> str:
    """MLM's split: Europe or the rest; a listed country's half is known even without GeoNames data."""
    if code in continents:
        return "EU" if continents[code] == "EU" else "REST"
    return "REST" if code in ("US", "IN", "CA", "JP") or code not in MLM_COUNTRIES else "EU"


def country_quotas(n: int, available: dict[str, int], continents: dict[str, str]) -> dict[str, int]:
    """How many places each country gets: MLM's mix, capped by what GeoNames has."""
    europe_listed = sum(v for k, v in MLM_COUNTRIES.items() if _half(k, continents) == "EU")
    rest_listed = sum(v for k, v in MLM_COUNTRIES.items() if _half(k, continents) == "REST")
    weights: dict[str, float] = {k: float(v) for k, v in MLM_COUNTRIES.items() if available.get(k)}
    others = [c for c in available if c not in MLM_COUNTRIES and available[c] > 0]
    # MLM lists its top 18 countries, so every other one had fewer entities than the smallest
    # of them (JP, 2,226): the remainders go by sqrt(places in GeoNames), capped below that.
    cap = min(MLM_COUNTRIES.values()) - 1
    for half, remainder in (("EU", MLM_EUROPE - europe_listed), ("REST", MLM_REST - rest_listed)):
        members = [c for c in others if _half(c, continents) == half]
        fixed: dict[str, float] = {}
        while True:
            free = [c for c in members if c not in fixed]
            mass = sum(math.sqrt(available[c]) for c in free)
            share = {c: (remainder - sum(fixed.values())) * math.sqrt(available[c]) / mass for c in free}
            over = {c for c, v in share.items() if v > cap}
            if not over:
                break
            fixed.update({c: float(cap) for c in over})
        weights.update(fixed)
        weights.update(share)
    n = min(n, sum(available.values()))
    quotas = _largest_remainder(weights, n)
    # Countries over capacity take all they have; the excess goes to the others, own half first.
    for _ in range(64):
        excess = {c: q - available[c] for c, q in quotas.items() if q > available[c]}
        if not excess:
            break
        for c in excess:
            quotas[c] = available[c]
        for half in ("EU", "REST"):
            short = sum(v for c, v in excess.items() if _half(c, continents) == half)
            room = {c: weights[c] for c in quotas if quotas[c] < available[c] and _half(c, continents) == half}
            if short and room:
                for c, extra in _largest_remainder(room, short).items():
                    quotas[c] += extra
            elif short:
                room = {c: weights[c] for c in quotas if quotas[c] < available[c]}
                for c, extra in _largest_remainder(room, short).items():
                    quotas[c] += extra
    return quotas


def _weighted_sample(rng: random.Random, items: Sequence[GeoPlace], k: int) -> list[GeoPlace]:
    """k items without replacement, weight sqrt(population + 100) (Efraimidis-Spirakis keys)."""
    if k >= len(items):
        return list(items)
    keyed = [(rng.random() ** (1.0 / math.sqrt(p.population + 100)), p.geonameid, p) for p in items]
    keyed.sort(key=lambda t: (-t[0], t[1]))
    return [t[2] for t in keyed[:k]]


def draw_places(spec: WorldSpec) -> tuple[list[GeoPlace], list[GeoPlace]]:
    """The GeoNames places of version 1 (in QID order) and the unused rest (for later versions)."""
    pool = geonames.load_places(spec.source)
    countries = geonames.load_countries()
    by_country: dict[str, list[GeoPlace]] = {}
    for p in pool:
        if p.country in countries:
            by_country.setdefault(p.country, []).append(p)
    continents = {c: countries[c].continent for c in by_country}
    available = {c: len(v) for c, v in by_country.items()}
    # Every country keeps 2% of its places back for the additions of later versions (the same
    # for every version, so that version 1 is the same draw whatever version is asked for).
    quotas = country_quotas(spec.n_places, {c: a - a // 50 for c, a in available.items()}, continents)
    chosen: list[GeoPlace] = []
    rest: list[GeoPlace] = []
    for code in sorted(by_country):
        rng = random.Random(f"{spec.seed}:draw:{code}")
        picked = _weighted_sample(rng, by_country[code], quotas.get(code, 0))
        ids = {p.geonameid for p in picked}
        chosen.extend(picked)
        rest.extend(p for p in by_country[code] if p.geonameid not in ids)
    chosen.sort(key=lambda p: p.geonameid)
    random.Random(f"{spec.seed}:order").shuffle(chosen)
    return chosen, rest


# ---------------------------------------------------------------------------------------------
# One place's attributes


def size_class(population: int) -> str:
    if population >= 1_000_000:
        return "Q1637706"
    if population >= 100_000:
        return "Q1549591"
    if population >= 10_000:
        return "Q515"
    if population >= 2_000:
        return "Q3957"
    if population >= 500:
        return "Q532"
    return "Q5084"


def _classes_for(geo: GeoPlace, rng: random.Random) -> list[str]:
    own = COUNTRY_CLASS.get(geo.country)
    if geo.country == "US":
        own = "Q1093829" if geo.population >= 10_000 else "Q15127012"
    elif geo.country == "PL" and geo.population < 5_000:
        own = "Q3558970"
    elif geo.country == "DE" and geo.population >= 20_000:
        own = "Q42744322"
    sized = size_class(geo.population)
    classes = [own] if own else [sized]
    if own and rng.random() < 0.25:
        classes.append(sized)
    if geo.population >= 10_000_000:
        classes.append("Q174844")
    if rng.random() < 0.03:
        classes.append(BASE_CLASS)
    if rng.random() < 0.02:
        classes.append("Q7930989")
    if geo.country == "DE" and geo.population < 2_000 and rng.random() < 0.05:
        classes.append("Q253019")
    return sorted(set(classes))


def _author(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


PHOTO_NAMES = {
    "fr": ("{n}.jpg", "{n} - vue générale.jpg", "Mairie de {n}.jpg", "Église de {n}.JPG", "{n}, centre-ville ({y}).jpg",
           "Vue aérienne de {n} {y}.jpeg", "{n} - place du marché.jpg"),
    "de": ("{n}.jpg", "{n} Ortsansicht.jpg", "Rathaus {n}.jpg", "{n} Kirche.JPG", "{n}, Luftbild {y}.jpg",
           "{n} - Marktplatz ({y}).jpeg", "Blick auf {n}.jpg"),
    "en": ("{n}.jpg", "{n} town centre.jpg", "{n} town hall.jpg", "{n} skyline {y}.JPG", "{n}, main street ({y}).jpg",
           "Aerial view of {n}.jpeg", "{n} church.jpg"),
}  # fmt: skip
PNG_NAMES = ("Panorama {n}.png", "{n} view {y}.png", "{n} old postcard.png")
EMBLEM_NAMES = {"fr": "Blason de {n}.svg", "de": "Wappen {n}.svg", "en": "Coat of arms of {n}.svg"}


class _Files:
    """Hands out unique, realistic file names and records their metadata."""

    def __init__(self) -> None:
        self.files: dict[str, FileInfo] = {}

    def add(self, wanted: str, qid: str, kind: str, fmt: str, rng: random.Random) -> str:
        name = wanted
        stem, dot, ext = wanted.rpartition(".")
        k = 2
        while name in self.files:
            name = f"{stem} ({k}).{ext}" if dot else f"{wanted} ({k})"
            k += 1
        if fmt == "svg":
            width, height = rng.choice(((512, 512), (600, 400), (1000, 1200), (800, 600)))
        elif kind == "banner":
            width, height = 2100, 300
        else:
            width, height = rng.choice(((4000, 3000), (3264, 2448), (1024, 768), (6000, 4000), (2448, 3264), (800, 600)))
        self.files[name] = FileInfo(name, qid, kind, fmt, rng.choice(LICENSES), _author(rng), width, height)
        return name

    def photo(self, name: str, qid: str, lang: str, rng: random.Random, fmt: str = "") -> str:
        fmt = fmt or ("png" if rng.random() < 0.10 else "jpeg")
        year = rng.randrange(2005, 2025)
        template = rng.choice(PNG_NAMES if fmt == "png" else PHOTO_NAMES[lang])
        return self.add(template.format(n=name, y=year), qid, "photo", fmt, rng)


def _images_for(place: Place, lang: str, rng: random.Random, files: _Files, with_p18: bool) -> dict[str, list[str]]:
    images: dict[str, list[str]] = {}
    name, qid = place.name, place.qid
    if with_p18:
        u = rng.random()
        n = 1 if u < 0.80 else 2 if u < 0.95 else 3
        images["P18"] = [files.photo(name, qid, lang, rng) for _ in range(n)]
    if rng.random() < 0.08:
        images["P41"] = [files.add(f"Flag of {name}.svg", qid, "flag", "svg", rng)]
    if rng.random() < 0.15:
        if rng.random() < 0.8:
            images["P94"] = [files.add(EMBLEM_NAMES[lang].format(n=name), qid, "emblem", "svg", rng)]
        else:
            images["P94"] = [files.add(f"{name} coat of arms.png", qid, "emblem", "png", rng)]
    if rng.random() < 0.12:
        images["P242"] = [files.add(f"{name} locator map.svg", qid, "map", "svg", rng)]
    if rng.random() < 0.04:
        fmt = "png" if rng.random() < 0.5 else "svg"
        images["P1943"] = [files.add(f"{name} location map.{ 'png' if fmt == 'png' else 'svg'}", qid, "map", fmt, rng)]
    if rng.random() < 0.02:
        images["P948"] = [files.add(f"{name} Wikivoyage banner.jpg", qid, "banner", "jpeg", rng)]
    return images


def _languages_for(geo: GeoPlace, rng: random.Random, failing: bool) -> list[str]:
    if failing:
        return [rng.choice(("it", "es", "pl", "nl"))] if rng.random() < 0.5 else []
    home = HOME_LANGUAGE.get(geo.country)
    langs = [
        lang
        for lang, p in (("en", 0.75), ("de", 0.35), ("fr", 0.35))
        if (lang == home and rng.random() < 0.97) or (lang != home and rng.random() < p)
    ]
    if not langs:
        langs = [home if home in LANGUAGES else "en"]
    if rng.random() < 0.10:
        langs.append(rng.choice(("it", "es", "pl", "nl")))
    return langs


def _make_place(
    geo: GeoPlace, n: int, seed: int, countries: dict[str, Country], continents: dict[str, str], files: _Files
) -> tuple[Place, list[str]]:
    """A place with ordinary attributes, and the languages it has articles in (titles come later)."""
    rng = random.Random(f"{seed}:place:{geo.geonameid}")
    qid = entity_qid(n)
    country = countries[geo.country]
    home = HOME_LANGUAGE.get(geo.country, "en")
    labels = {"en": geo.name}
    for lang in ("de", "fr"):
        if home == lang or rng.random() < 0.9:
            labels[lang] = geo.name
    u = rng.random()
    failure = (
        "no_coordinates" if u < 0.012 else "not_on_earth" if u < 0.013 else "no_image" if u < 0.093 else "no_article" if u < 0.123 else ""
    )
    coords: list[tuple[float, float, str]] = []
    if failure == "not_on_earth":
        coords = [(round(rng.uniform(-80, 80), 5), round(rng.uniform(-180, 180), 5), MOON)]
    elif failure != "no_coordinates":
        coords = [(geo.lat, geo.lon, EARTH)]
    place = Place(
        qid=qid,
        name=geo.name,
        labels=labels,
        coords=coords,
        classes=_classes_for(geo, rng),
        images={},
        sitelinks={},
        country_qid=country.qid,
        country_code=country.code,
        population=geo.population,
        geonames_id=geo.geonameid,
        continent=continents.get(geo.country, ""),
        admin1=geo.admin1,
        coord_ranks=["normal"] * len(coords),
        scenery=scenery_for(
            f"{seed}:{geo.geonameid}", geo.name, geo.lat, geo.lon, geo.population, geo.country, continents.get(geo.country, "")
        ),
    )
    place.images = _images_for(place, home if home in PHOTO_NAMES else "en", rng, files, with_p18=failure != "no_image")
    return place, _languages_for(geo, rng, failing=failure == "no_article")


# ---------------------------------------------------------------------------------------------
# Edge cases


def _apply_special(place: Place, edge: str, langs: list[str], files: _Files, seed: int) -> list[str]:
    """Make ``place`` an ordinary passing entity, then give it exactly one edge case."""
    rng = random.Random(f"{seed}:special:{place.qid}:{edge}")
    lang = "fr" if place.country_code == "FR" else "de" if place.country_code in ("DE", "AT", "CH") else "en"
    earth = [c for c in place.coords if c[2] == EARTH]
    if not earth:
        geo_lat, geo_lon = round(rng.uniform(40, 55), 5), round(rng.uniform(-5, 20), 5)
        earth = [(geo_lat, geo_lon, EARTH)]
    lat, lon, _ = earth[0]
    place.coords, place.coord_ranks = [(lat, lon, EARTH)], ["normal"]
    if not place.images.get("P18") or any(files.files[f].format == "svg" for f in place.images["P18"]):
        place.images["P18"] = [files.photo(place.name, place.qid, lang, rng, fmt="jpeg")]
    langs = [x for x in langs if x in LANGUAGES] or ["en"]
    place.edge_cases.add(edge)
    # Listed second and smaller in (lat, lon): "take the first statement" gets it wrong.
    other = (round(lat - rng.uniform(0.01, 0.2), 5), round(lon + rng.uniform(0.01, 0.2), 5), EARTH)
    if edge == "several_classes":
        place.classes = sorted({place.classes[0], size_class(place.population), "Q7930989" if rng.random() < 0.5 else BASE_CLASS})
        if len(place.classes) < 2:
            place.classes = sorted({*place.classes, "Q532"})
    elif edge == "base_class":
        place.classes = [BASE_CLASS]
    elif edge == "cycle_class":
        place.classes = ["Q7930989"]
    elif edge == "two_path_class":
        place.classes = ["Q1093829"]
    elif edge == "unlabelled_class":
        place.classes = ["Q253019"]
    elif edge == "beyond_hops":
        place.classes = [rng.choice(("Q208511", "Q174844"))]
    elif edge == "beyond_and_within":
        place.classes = ["Q208511", "Q515"]
    elif edge == "outside_closure":
        place.classes = [rng.choice(("Q123705", "Q23413"))]
    elif edge == "no_coordinates":
        place.coords, place.coord_ranks = [], []
    elif edge == "moon":
        place.coords = [(round(rng.uniform(-80, 80), 5), round(rng.uniform(-180, 180), 5), MOON)]
    elif edge == "mars":
        place.coords = [(round(rng.uniform(-80, 80), 5), round(rng.uniform(-180, 180), 5), MARS)]
    elif edge == "earth_and_moon":
        place.coords, place.coord_ranks = [(12.5, 33.25, MOON), (lat, lon, EARTH)], ["normal", "normal"]
    elif edge == "two_coordinates":
        place.coords, place.coord_ranks = [(lat, lon, EARTH), other], ["normal", "normal"]
    elif edge == "preferred_coordinate":
        # The preferred statement is the smaller of the two by (lat, lon)'s opposite, so that
        # "smallest (lat, lon)" without ranks would pick the wrong one.
        low = (round(lat - 0.5, 5), lon, EARTH)
        place.coords, place.coord_ranks = [low, (lat, lon, EARTH)], ["normal", "preferred"]
    elif edge == "deprecated_coordinate":
        wrong = (round(-lat, 5), round(-lon, 5), EARTH)
        place.coords, place.coord_ranks = [wrong, (lat, lon, EARTH)], ["deprecated", "normal"]
    elif edge == "no_image":
        place.images = {}
    elif edge == "other_image_props_only":
        place.images = {
            "P94": [files.add(f"{place.name} coat of arms.png", place.qid, "emblem", "png", rng)],
            "P41": [files.add(f"Flag of {place.name}.svg", place.qid, "flag", "svg", rng)],
        }
    elif edge == "svg_only":
        place.images = {"P18": [files.add(f"{place.name} map.svg", place.qid, "map", "svg", rng)]}
    elif edge == "svg_and_photo":
        place.images["P18"] = [files.add(f"{place.name} schematic.svg", place.qid, "map", "svg", rng), *place.images["P18"]]
    elif edge == "file_in_two_props":
        place.images["P242"] = [place.images["P18"][0]]
    elif edge.startswith("articles_"):
        langs = edge.removeprefix("articles_").split("_")
    elif edge == "no_article":
        langs = []
    elif edge == "other_language_article_only":
        langs = ["it"]
    elif edge == "no_country":
        place.country_qid = place.country_code = None
    elif edge == "no_label_en":
        place.labels.pop("en", None)
    elif edge == "label_quotes":
        place.labels["en"] = f'{place.name} "Old Town" \\ Süd'
    elif edge in ("title_normalise", "title_redirect", "article_missing"):
        langs = sorted({*langs, "en", "de", "fr"})
    elif edge == "tricky_file_names":
        place.images["P18"] = [
            files.add(f"../../{place.name} escape.jpg", place.qid, "photo", "jpeg", rng),
            files.add(f"Rue de la Gare/Bahnhofstraße in {place.name}.jpg", place.qid, "photo", "jpeg", rng),
        ]
    elif edge == "tricky_file_names_2":
        place.images["P18"] = [
            files.add(f"{place.name} \"Old\" 'town' & 100% view?.jpg", place.qid, "photo", "jpeg", rng),
            files.add(f"{place.name} .. panorama, été.JPG", place.qid, "photo", "jpeg", rng),
            files.add("..jpg", place.qid, "photo", "jpeg", rng) if "..jpg" not in files.files else files.photo(place.name, place.qid, lang, rng),
        ]
    elif edge == "many_images":
        place.images["P18"] = [files.photo(place.name, place.qid, lang, rng) for _ in range(5)]
    else:
        raise ValueError(f"unknown edge case {edge!r}")
    return langs


def _finish_special_titles(place: Place, taken: dict[str, set[str]]) -> None:
    """Sitelink quirks that need the titles (set after disambiguation)."""
    if "title_normalise" in place.edge_cases and "en" in place.sitelinks:
        title = place.sitelinks["en"]
        place.pages["en"] = title
        place.sitelinks["en"] = title[:1].lower() + title[1:].replace(" ", "_") if title[:1].isupper() else title.replace(" ", "_")
        if place.sitelinks["en"] == title:  # a name without an upper-case letter or space: force a change
            place.sitelinks["en"] = title + "_"
    if "title_redirect" in place.edge_cases and "de" in place.sitelinks:
        title = place.sitelinks["de"]
        target = f"{title} ({place.admin1 or 'Ort'})"
        while target in taken.setdefault("de", set()):
            target += " (Ort)"
        taken["de"].add(target)
        place.redirects["de"] = target
        place.pages["de"] = target
    if "article_missing" in place.edge_cases and "fr" in place.sitelinks:
        place.missing_articles.add("fr")
        place.pages.pop("fr", None)


# ---------------------------------------------------------------------------------------------
# Titles


def _assign_titles(places: Iterable[tuple[Place, list[str]]], taken: dict[str, set[str]]) -> None:
    """Give each place a sitelink title per language, unique per wiki, Wikipedia-style."""
    countries = geonames.load_countries()
    states = geonames.load_us_states()
    ordered = sorted(places, key=lambda pl: (-pl[0].population, pl[0].geonames_id))
    for place, langs in ordered:
        for lang in langs:
            used = taken.setdefault(lang, set())
            code = place.country_code or ""
            country = countries[code].name if code in countries else "Welt"
            region = states.get(place.admin1, place.admin1) if code == "US" else place.admin1
            options = [place.name]
            if code == "US" and region:
                options.append(f"{place.name}, {region}")
            options += [f"{place.name} ({country})", f"{place.name} ({country}, {region or '-'})", f"{place.name} ({place.geonames_id})"]
            title = next((t for t in options if t not in used), None)
            k = 2
            while title is None:
                candidate = f"{place.name} ({place.geonames_id}, {k})"
                title = candidate if candidate not in used else None
                k += 1
            used.add(title)
            place.sitelinks[lang] = title
            if lang in LANGUAGES:
                place.pages[lang] = title


# ---------------------------------------------------------------------------------------------
# The right answer


def class_hops(classes: dict[str, ClassInfo], base: str) -> tuple[dict[str, int], dict[str, str | None]]:
    """Shortest wdt:P279 distance of every class below ``base`` (no limit), with a parent on it."""
    children: dict[str, list[str]] = {}
    for info in classes.values():
        for parent in info.parents:
            children.setdefault(parent, []).append(info.qid)
    hops: dict[str, int] = {base: 0}
    parent_of: dict[str, str | None] = {base: None}
    frontier = [base]
    while frontier:
        level: dict[str, str] = {}
        for cls in frontier:
            for child in children.get(cls, []):
                if child in hops:
                    continue
                if child not in level or cls < level[child]:
                    level[child] = cls
        for child, parent in level.items():
            hops[child] = hops[parent] + 1
            parent_of[child] = parent
        frontier = sorted(level)
    return hops, parent_of


def best_coordinate(place: Place) -> tuple[float, float] | None:
    """The entity's coordinate under the world's rule (see the module docstring)."""
    usable = [(c, place.rank(i)) for i, c in enumerate(place.coords) if place.rank(i) != "deprecated"]
    if any(rank == "preferred" for _, rank in usable):
        usable = [(c, rank) for c, rank in usable if rank == "preferred"]
    earth = sorted((c[0], c[1]) for c, _ in usable if c[2] == EARTH)
    return earth[0] if earth else None


def expected(
    world: World,
    base: str = BASE_CLASS,
    max_hops: int = 3,
    image_props: Sequence[str] = ("P18",),
    languages: Sequence[str] = LANGUAGES,
) -> Truth:
    """What a correct extraction returns from this world for the given configuration."""
    all_hops, all_parents = class_hops(world.classes, base)
    closure = {c: h for c, h in all_hops.items() if h <= max_hops}
    entities: dict[str, dict] = {}
    dropouts: dict[str, str] = {}
    non_candidates: dict[str, str] = {}
    svg_only: set[str] = set()
    for place in world.places:
        if not any(c in closure for c in place.classes):
            beyond = any(c in all_hops for c in place.classes)
            non_candidates[place.qid] = "class_beyond_hops" if beyond else "class_outside_closure"
            continue
        usable = [c for i, c in enumerate(place.coords) if place.rank(i) != "deprecated"]
        coord = best_coordinate(place)
        images: list[str] = []
        for prop in image_props:
            for name in sorted(place.images.get(prop, [])):
                if name not in images:
                    images.append(name)
        titles = {lang: place.sitelinks.get(lang) for lang in languages}
        if not usable:
            dropouts[place.qid] = "no_coordinates"
        elif coord is None:
            dropouts[place.qid] = "not_on_earth"
        elif not images:
            dropouts[place.qid] = "no_image"
        elif not any(titles.values()):
            dropouts[place.qid] = "no_article"
        else:
            classes = sorted(set(place.classes))
            entities[place.qid] = {
                "qid": place.qid,
                "label_en": place.labels.get("en"),
                "label_de": place.labels.get("de"),
                "label_fr": place.labels.get("fr"),
                "lat": coord[0],
                "lon": coord[1],
                "classes": classes,
                "class_labels": [world.classes[c].label_en or "" if c in world.classes else "" for c in classes],
                "images": images,
                "title_en": place.sitelinks.get("en"),
                "title_de": place.sitelinks.get("de"),
                "title_fr": place.sitelinks.get("fr"),
                "country_qid": place.country_qid,
                "country_code": place.country_code,
            }
            if all(world.files[name].format == "svg" for name in images):
                svg_only.add(place.qid)
    return Truth(
        base=base,
        max_hops=max_hops,
        image_props=tuple(image_props),
        languages=tuple(languages),
        closure=closure,
        closure_parent={c: all_parents[c] for c in closure},
        entities=entities,
        dropouts=dropouts,
        non_candidates=non_candidates,
        svg_only=svg_only,
    )


# ---------------------------------------------------------------------------------------------
# Building


def _classes() -> dict[str, ClassInfo]:
    out = {}
    for qid, en, de, fr, parents in CLASS_TABLE:
        labels = {"de": de, "fr": fr} | ({"en": en} if en else {})
        out[qid] = ClassInfo(qid=qid, label_en=en, parents=list(parents), labels=labels)
    return out


def _countries() -> dict[str, Country]:
    """Every GeoNames country as an item, keyed by ISO code (QIDs fixed by code order)."""
    out = {}
    for i, (code, row) in enumerate(sorted(geonames.load_countries().items()), start=1):
        de, fr = COUNTRY_LABELS.get(code, (row.name, row.name))
        out[code] = Country(
            qid=f"Q{COUNTRY_QID_BASE + i}",
            code=code,
            name_en=row.name,
            labels={"en": row.name, "de": de, "fr": fr},
            continent=row.continent,
            population=row.population,
        )
    return out


def build_world(spec: WorldSpec) -> World:
    """The world for ``spec``: version 1 drawn from GeoNames, then the edit rounds up to ``spec.version``.

    With ``spec.files`` the world is the person's own entities and pictures instead (own_files.py).
    """
    if spec.files:
        from mlm_pipeline.world.own_files import load_own_world

        return load_own_world(spec.files)
    all_countries = _countries()
    continents = {code: c.continent for code, c in all_countries.items()}
    geo_places, unused = draw_places(spec)
    files = _Files()
    made = [_make_place(g, i + 1, spec.seed, all_countries, continents, files) for i, g in enumerate(geo_places)]
    specials = SPECIALS
    if len(made) < len(specials) + 10:
        raise ValueError(f"world {spec.label()}: only {len(made)} places, too few for the edge cases")
    # Specials sit at a spread of positions (every k-th QID) so that no page of results holds them all.
    step = max(1, len(made) // len(specials))
    for j, edge in enumerate(specials):
        place, langs = made[j * step]
        made[j * step] = (place, _apply_special(place, edge, langs, files, spec.seed))
    taken: dict[str, set[str]] = {}
    _assign_titles(made, taken)
    places = [p for p, _ in made]
    for place in places:
        _finish_special_titles(place, taken)
    used_files = {f for p in places for names in p.images.values() for f in names}
    world = World(
        spec=spec,
        dataset_version="",
        release="",
        places=places,
        classes=_classes(),
        countries={c.qid: c for c in all_countries.values()},
        files={k: v for k, v in files.files.items() if k in used_files},
        truth=None,  # type: ignore[arg-type]
    )
    next_n = len(places) + 1
    for version in range(2, spec.version + 1):
        next_n = _edit_round(world, version, unused, next_n, files, taken, all_countries, continents)
    used_files = {f for p in world.places for names in p.images.values() for f in names}
    world.files = {k: files.files[k] for k in sorted(used_files)}
    world.places.sort(key=lambda p: p.qid)
    present = {p.country_qid for p in world.places}
    world.countries = {q: c for q, c in sorted(world.countries.items()) if q in present}
    stamp = version_stamp(spec.version)
    world.dataset_version = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    world.release = stamp.strftime("%Y-%m-%d")
    world.truth = expected(world)
    return world


def _edit_round(
    world: World,
    version: int,
    unused: list[GeoPlace],
    next_n: int,
    files: _Files,
    taken: dict[str, set[str]],
    countries: dict[str, Country],
    continents: dict[str, str],
) -> int:
    """One release's worth of changes: removals, additions and edits of ordinary places."""
    spec = world.spec
    rng = random.Random(f"{spec.seed}:{spec.size}:edit:{version}")
    ordinary = [p for p in world.places if not (p.edge_cases & PROTECTED_EDGES)]
    k = max(2, len(world.places) // 100)
    removed = set(p.qid for p in rng.sample(ordinary, min(k, len(ordinary) // 4)))
    for qid in sorted(removed):
        world.changes.append(Change(version, qid, "removed"))
    world.places = [p for p in world.places if p.qid not in removed]
    # Additions come from GeoNames places not drawn yet, in the countries of removed places' mix.
    unused.sort(key=lambda g: g.geonameid)
    additions = rng.sample(unused, min(k, len(unused)))
    picked = {g.geonameid for g in additions}
    unused[:] = [g for g in unused if g.geonameid not in picked]
    new = []
    for geo in additions:
        place, langs = _make_place(geo, next_n, spec.seed, countries, continents, files)
        next_n += 1
        new.append((place, langs))
        world.changes.append(Change(version, place.qid, "added"))
    _assign_titles(new, taken)
    world.places.extend(p for p, _ in new)
    # Edits of ordinary places that stay.
    new_qids = {q.qid for q, _ in new}
    ordinary = [p for p in world.places if not (p.edge_cases & PROTECTED_EDGES) and p.qid not in new_qids]
    for place in rng.sample(ordinary, min(2 * k, len(ordinary) // 4)):
        kind = rng.choice(("moved", "reclassed", "reimaged", "relabelled", "images_removed"))
        if kind == "moved" and place.coords:
            lat, lon, globe = place.coords[0]
            place.coords[0] = (round(lat + rng.uniform(-0.02, 0.02), 5), round(lon + rng.uniform(-0.02, 0.02), 5), globe)
        elif kind == "reclassed":
            extra = rng.choice(("Q532", "Q3957", "Q515", "Q5084"))
            place.classes = sorted(set(place.classes) ^ {extra}) or [extra]
        elif kind == "reimaged" and place.images.get("P18"):
            stem = place.images["P18"][0].rpartition(".")[0]
            place.images["P18"][0] = files.add(f"{stem} (v{version}).jpg", place.qid, "photo", "jpeg", rng)
        elif kind == "relabelled":
            place.labels["en"] = f"{place.name} ({place.admin1 or place.country_code})"
        elif kind == "images_removed":
            place.images.pop("P18", None)
        else:
            continue
        world.changes.append(Change(version, place.qid, kind))
    return next_n
