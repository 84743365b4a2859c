"""The awkward cases the real graph has, given to places of every world size.

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
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from mlm_pipeline.world.model import BASE_CLASS, EARTH, LANGUAGES, MARS, MOON, Place, size_class

if TYPE_CHECKING:
    from mlm_pipeline.world.builder import CommonsFiles

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



def apply_special(place: Place, edge: str, langs: list[str], files: CommonsFiles, seed: int) -> list[str]:
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


def finish_special_titles(place: Place, taken: dict[str, set[str]]) -> None:
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
