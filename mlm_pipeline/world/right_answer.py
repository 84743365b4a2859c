"""What a correct pipeline must find in a world, computed from the world itself.

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
"""
from __future__ import annotations

from typing import Sequence

from mlm_pipeline.world.model import BASE_CLASS, EARTH, LANGUAGES, ClassInfo, Place, Truth, World

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
