"""The embedded world's data model: its places, classes, files, spec and right answer.

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
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

from mlm_pipeline.world.scenery import Scenery

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
