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

Versions
    Version v > 1 replays edit rounds 2..v on top of version 1: each round removes about 1% of
    the ordinary places, adds about 1% new ones (from GeoNames places not yet drawn, new QIDs),
    and edits about 2% (coordinates moved, classes changed, an image replaced, the English label
    changed, or all P18 images removed). Edge-case places are never touched. Each version's
    dataset date is 7 days after the previous one. ``World.changes`` lists what each round did.

The data model is ``world.model``, the edge cases ``world.edge_cases`` and the right answer
``world.right_answer``.
"""
from __future__ import annotations

import math
import random
from typing import Iterable, Sequence

from mlm_pipeline.world import geonames
from mlm_pipeline.world.edge_cases import PROTECTED_EDGES, SPECIALS, apply_special, finish_special_titles
from mlm_pipeline.world.right_answer import expected
from mlm_pipeline.world.geonames import GeoPlace
from mlm_pipeline.world.model import (
    BASE_CLASS,
    CLASS_TABLE,
    COUNTRY_CLASS,
    COUNTRY_LABELS,
    COUNTRY_QID_BASE,
    EARTH,
    HOME_LANGUAGE,
    LANGUAGES,
    MLM_COUNTRIES,
    MLM_EUROPE,
    MLM_REST,
    MOON,
    Change,
    ClassInfo,
    Country,
    FileInfo,
    Place,
    World,
    WorldSpec,
    entity_qid,
    size_class,
    version_stamp,
)
from mlm_pipeline.world.own_files import load_own_world
from mlm_pipeline.world.scenery import scenery_for

LICENSES = ("CC BY-SA 4.0", "CC BY-SA 4.0", "CC BY-SA 3.0", "CC BY 4.0", "CC BY 2.0", "CC0", "Public domain")
FIRST = ("Anna", "Jean", "Marie", "Lukas", "Zofia", "Tom", "Elena", "Pierre", "Jana", "Giulia", "Sven", "Akira", "Priya")
LAST = ("Müller", "Dupont", "Nowak", "Smith", "Rossi", "García", "Novák", "Schneider", "Lefèvre", "Kovač", "Tanaka")


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


class CommonsFiles:
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


def _images_for(place: Place, lang: str, rng: random.Random, files: CommonsFiles, with_p18: bool) -> dict[str, list[str]]:
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
    geo: GeoPlace, n: int, seed: int, countries: dict[str, Country], continents: dict[str, str], files: CommonsFiles
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
        return load_own_world(spec.files)
    all_countries = _countries()
    continents = {code: c.continent for code, c in all_countries.items()}
    geo_places, unused = draw_places(spec)
    files = CommonsFiles()
    made = [_make_place(g, i + 1, spec.seed, all_countries, continents, files) for i, g in enumerate(geo_places)]
    specials = SPECIALS
    if len(made) < len(specials) + 10:
        raise ValueError(f"world {spec.label()}: only {len(made)} places, too few for the edge cases")
    # Specials sit at a spread of positions (every k-th QID) so that no page of results holds them all.
    step = max(1, len(made) // len(specials))
    for j, edge in enumerate(specials):
        place, langs = made[j * step]
        made[j * step] = (place, apply_special(place, edge, langs, files, spec.seed))
    taken: dict[str, set[str]] = {}
    _assign_titles(made, taken)
    places = [p for p, _ in made]
    for place in places:
        finish_special_titles(place, taken)
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
    files: CommonsFiles,
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
