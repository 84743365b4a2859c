"""A world made from a person's own files, served exactly like the generated one.

Anyone can run the whole pipeline offline on their own sample: describe the entities in a
JSON Lines file, put the pictures in a folder, and point the world at them
(``WorldSpec(files=...)``, or the resource's ``world_files``). The same SPARQL, Wikipedia and
Commons stand-ins then serve them; the pipeline cannot tell the difference.

Layout
    ``files`` is either a folder holding ``entities.jsonl`` and ``images/``, or the path of a
    ``.jsonl`` file whose pictures lie in the ``images/`` folder beside it.

``entities.jsonl``: one JSON object per line (UTF-8; blank lines are skipped)::

    {"id": "Q90", "labels": {"en": "Paris", "fr": "Paris"}, "lat": 48.8567, "lon": 2.3508,
     "classes": [{"id": "Q515", "label": "city"}],
     "sitelinks": {"en": "Paris", "fr": "Paris"},
     "summaries": {"en": "Paris is the capital of France.", "fr": "Paris est la capitale de la France."},
     "images": ["Paris from the tower.jpg", {"file": "Paris arms.svg", "property": "P94",
                "license": "CC BY-SA 4.0", "author": "Jane Doe"}]}

``id`` (required)
    A Wikidata-style item ID (``Q`` and digits), unique in the file.
``labels``
    ``{language: label}``. The entity's name is its English label, else the first one, else its ID.
``lat``, ``lon``
    Degrees (WGS84; -90..90 and -180..180), both or neither. Without them (and without
    ``coordinates``) the entity has no coordinates, and the pipeline drops it, as it drops such
    Wikidata items.
``coordinates``
    Instead of ``lat``/``lon``, for an entity with several coordinate statements (``P625``), as
    Wikidata has them: ``[{"lat": 48.85, "lon": 2.35}, {"lat": 48.86, "lon": 2.34, "rank":
    "preferred"}]``. ``rank`` is ``normal`` (the default), ``preferred`` or ``deprecated``;
    ``globe`` is the globe's item ID (default ``Q2``, the Earth).
``classes``
    ``[{"id": "Q..", "label": "..."}]``: what the entity is an instance of (``wdt:P31``). The
    world knows Wikidata's settlement classes below Q486972 "human settlement" (city Q515, town
    Q3957, village Q532, ...). Any other class must give its ``"parents": ["Q.."]``
    (``wdt:P279``) once in the file, e.g. ``["Q486972"]``; a class the world does not know and
    the file does not place is an error, never silently a settlement. ``label`` is the class's
    English label. A record none of whose classes lies within the pipeline's subclass closure
    is not extracted; the ``entities`` stage records it in ``entity_dropouts``
    (``class_outside_closure``, ``class_beyond_hops`` or ``no_class``).
``sitelinks``
    ``{language: article title}`` for en, de, fr (others are kept in the graph and never fetched).
``summaries``
    ``{language: text}``: the article intro the Wikipedia stand-in returns. A language with a
    summary but no sitelink gets the label as its title; a sitelink without a summary is an
    article that does not exist (the pipeline records it as missing).
``images``
    File names in ``images/`` (subfolders allowed), each a string (a ``P18`` image) or an object with ``file`` and
    optionally ``property`` (``P18``, ``P94``, ``P41``, ``P242``, ...), ``license`` (e.g.
    ``CC BY-SA 4.0``) and ``author``, which the Commons stand-in reports as ``extmetadata``.
    JPEG, PNG, GIF, WebP, TIFF and SVG files are served; formats and sizes come from the files'
    content (headers only: nothing is decoded at load), and a picture of more than
    ``MAX_PIXELS`` pixels is refused. A file Pillow cannot decode when a thumbnail is asked for
    (a truncated JPEG, say) is answered with 400 "Error generating thumbnail", which the
    pipeline records in ``image_failures`` without retrying. Only the files the entities name
    are ever opened, and none outside ``images/`` (symbolic links included). The graph names
    each file as Commons would (``my_photo.jpg`` becomes ``My photo.jpg``).

The first line may instead be a header ``{"dataset_version": "2026-01-05T00:00:00Z"}``: the
version the SPARQL endpoint reports (the release is its date). Without it: 2026-01-05.

Errors name the file, the line and the field (all problems at once, up to ``MAX_ERRORS``)
before anything is served; a line that is not UTF-8 is named too.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from mlm_pipeline.world.right_answer import class_hops, expected
from mlm_pipeline.world.model import BASE_CLASS, CLASS_TABLE, EARTH, ClassInfo, FileInfo, Place, World, WorldSpec
from mlm_pipeline.world.commons_server import normalize_file_name
from mlm_pipeline.world.wiki_server import normalize_title

ENTITIES_FILE = "entities.jsonl"
IMAGES_DIR = "images"
DEFAULT_VERSION = "2026-01-05T00:00:00Z"
MAX_ERRORS = 20
QID = re.compile(r"^Q[1-9][0-9]*$")
PROPERTY = re.compile(r"^P[1-9][0-9]*$")
KNOWN_FIELDS = {"id", "labels", "lat", "lon", "coordinates", "classes", "sitelinks", "summaries", "images"}
PIL_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "TIFF": "tiff"}
RANKS = ("normal", "preferred", "deprecated")
MAX_PIXELS = 50_000_000
"""Largest picture served (width x height): the Commons stand-in decodes a picture whole to
scale it, so a small file that declares 144 or 900 megapixels would take gigabytes per request."""


class OwnFilesError(ValueError):
    """The person's files cannot make a world; the message lists every problem found."""


@dataclass(frozen=True)
class OwnFileInfo(FileInfo):
    """A file of the person's folder: the Commons stand-in serves its bytes from ``path``."""

    path: str = ""


@dataclass
class OwnPlace(Place):
    """A person's entity: ``summaries`` replace the generated article intros."""

    summaries: dict[str, str] = field(default_factory=dict)


def locate(files: str) -> tuple[Path, Path]:
    """The JSON Lines file and the images folder that ``files`` names."""
    path = Path(files).expanduser()
    jsonl = path / ENTITIES_FILE if path.is_dir() else path
    if not jsonl.is_file():
        raise OwnFilesError(f"world files {files!r}: no {ENTITIES_FILE} there (give a folder holding it, or the .jsonl file)")
    return jsonl, jsonl.parent / IMAGES_DIR


class _Problems:
    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, line: int, field_name: str, message: str) -> None:
        self.items.append(f"{self.source.name} line {line}: field {field_name!r}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            shown = self.items[:MAX_ERRORS]
            more = len(self.items) - len(shown)
            tail = f"\n  ... and {more} more" if more > 0 else ""
            raise OwnFilesError(
                f"{self.source}: {len(self.items)} problem(s) in the world files:\n  " + "\n  ".join(shown) + tail
            )


def _text_map(value: Any, line: int, name: str, problems: _Problems) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        problems.add(line, name, f"must be an object of language -> text, got {json.dumps(value, ensure_ascii=False)[:80]}")
        return {}
    out = {}
    for lang, text in value.items():
        if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)*", lang):
            problems.add(line, f"{name}.{lang}", "is not a language code (like en, de, fr)")
        elif not text.strip():
            problems.add(line, f"{name}.{lang}", "is empty")
        else:
            out[lang] = text
    return out


def _coordinate(values: dict, line: int, where: str, problems: _Problems) -> tuple[float, float] | None:
    lat, lon = values.get("lat"), values.get("lon")
    ok = True
    for name, value, limit in (("lat", lat, 90), ("lon", lon, 180)):
        if value is None:
            problems.add(line, where + name, "is missing (give both lat and lon, or neither)")
            ok = False
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > limit:
            problems.add(line, where + name, f"must be a number between -{limit} and {limit}, got {json.dumps(value)}")
            ok = False
    return (float(lat), float(lon)) if ok else None  # type: ignore[arg-type]


def _coordinates(record: dict, line: int, problems: _Problems) -> tuple[list[tuple[float, float, str]], list[str]]:
    """The P625 statements (lat, lon, globe) and their ranks, from ``lat``/``lon`` or ``coordinates``."""
    statements = record.get("coordinates")
    if statements is None:
        if record.get("lat") is None and record.get("lon") is None:
            return [], []
        point = _coordinate(record, line, "", problems)
        return ([(*point, EARTH)], ["normal"]) if point else ([], [])
    if "lat" in record or "lon" in record:
        problems.add(line, "coordinates", "give either lat and lon or coordinates, not both")
        return [], []
    if not isinstance(statements, list) or not all(isinstance(item, dict) for item in statements):
        problems.add(line, "coordinates", 'must be a list of {"lat": .., "lon": .., "rank": .., "globe": ..}')
        return [], []
    coords, ranks = [], []
    for i, item in enumerate(statements):
        where = f"coordinates[{i}]."
        unknown = set(item) - {"lat", "lon", "rank", "globe"}
        if unknown:
            problems.add(line, where.rstrip("."), f"unknown key(s) {sorted(unknown)}; known: lat, lon, rank, globe")
        rank, globe = item.get("rank", "normal"), item.get("globe", EARTH)
        if rank not in RANKS:
            problems.add(line, where + "rank", f"must be one of {', '.join(RANKS)}, got {json.dumps(rank)}")
        if not isinstance(globe, str) or not QID.match(globe):
            problems.add(line, where + "globe", f"must be an item ID like Q2 (the Earth), got {json.dumps(globe)}")
        point = _coordinate(item, line, where, problems)
        if point and rank in RANKS and isinstance(globe, str) and QID.match(globe):
            coords.append((*point, globe))
            ranks.append(rank)
    return coords, ranks


class _TooManyPixels(Exception):
    """A picture whose header declares more than ``MAX_PIXELS``."""


def _sniff(path: Path) -> tuple[str, int, int] | None:
    """Format and size from the file's header (not its name, nothing decoded); None when it is
    no picture; raises ``_TooManyPixels`` above ``MAX_PIXELS``."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<?xml") or text.startswith(b"<svg") or b"<svg" in text[:4096]:
        width = re.search(rb'<svg[^>]*\swidth="([0-9.]+)', head)
        height = re.search(rb'<svg[^>]*\sheight="([0-9.]+)', head)
        return "svg", int(float(width.group(1))) if width else 512, int(float(height.group(1))) if height else 512
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            with Image.open(path) as img:
                fmt, width, height = PIL_FORMATS.get(img.format or ""), img.width, img.height
    except Image.DecompressionBombError:
        raise _TooManyPixels(f"declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels") from None
    except (UnidentifiedImageError, OSError):
        return None
    if width * height > MAX_PIXELS:
        raise _TooManyPixels(f"declares {width} x {height} = {width * height:,} pixels")
    return (fmt, width, height) if fmt else None


def _image_entries(record: dict, line: int, problems: _Problems) -> list[dict[str, str]]:
    value = record.get("images")
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(line, "images", "must be a list of file names or objects with 'file'")
        return []
    out = []
    for i, item in enumerate(value):
        where = f"images[{i}]"
        if isinstance(item, str):
            item = {"file": item}
        if not isinstance(item, dict) or not isinstance(item.get("file"), str) or not item["file"].strip():
            problems.add(line, where, "must be a file name or an object with a non-empty 'file'")
            continue
        unknown = set(item) - {"file", "property", "license", "author"}
        if unknown:
            problems.add(line, where, f"unknown key(s) {sorted(unknown)}; known: file, property, license, author")
        prop = item.get("property", "P18")
        if not isinstance(prop, str) or not PROPERTY.match(prop):
            problems.add(line, f"{where}.property", f"must be a property ID like P18, got {json.dumps(prop)}")
            continue
        for key in ("license", "author"):
            if key in item and not isinstance(item[key], str):
                problems.add(line, f"{where}.{key}", "must be text")
        out.append({"file": item["file"], "property": prop, "license": str(item.get("license", "")), "author": str(item.get("author", ""))})
    return out


def _classes(
    record: dict, line: int, problems: _Problems, classes: dict[str, ClassInfo], unplaced: dict[str, tuple[int, str]]
) -> list[str]:
    """The record's class IDs; a class new to the world joins it with its ``parents``, and one
    without goes to ``unplaced`` (qid -> line and field of its first use) until a line places it."""
    value = record.get("classes")
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(line, "classes", 'must be a list of {"id": "Q..", "label": "..."}')
        return []
    out = []
    for i, item in enumerate(value):
        where = f"classes[{i}]"
        if isinstance(item, str):
            item = {"id": item}
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not QID.match(item["id"]):
            problems.add(line, f"{where}.id", f"must be an item ID like Q515, got {json.dumps(item, ensure_ascii=False)[:60]}")
            continue
        label = item.get("label")
        if label is not None and not isinstance(label, str):
            problems.add(line, f"{where}.label", "must be text")
            label = None
        parents = item.get("parents")
        if parents is not None and (not isinstance(parents, list) or not all(isinstance(p, str) and QID.match(p) for p in parents)):
            problems.add(line, f"{where}.parents", "must be a list of item IDs")
            continue
        qid = item["id"]
        known = classes.get(qid)
        if known is None and parents is not None:  # [] declares a class with no parent
            classes[qid] = ClassInfo(qid, label, list(parents), {"en": label} if label else {})
        elif known is None:
            unplaced.setdefault(qid, (line, f"{where}.id"))
        elif parents and sorted(parents) != sorted(known.parents):
            problems.add(line, f"{where}.parents", f"{qid} already has parents {known.parents}")
        if qid not in out:
            out.append(qid)
    return out


def _builtin_classes() -> dict[str, ClassInfo]:
    out = {}
    for qid, en, de, fr, parents in CLASS_TABLE:
        out[qid] = ClassInfo(qid, en, list(parents), {"de": de, "fr": fr} | ({"en": en} if en else {}))
    return out


def _dataset_version(record: dict, line: int, problems: _Problems) -> str:
    value = record.get("dataset_version")
    try:
        stamp = dt.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        problems.add(line, "dataset_version", f"must look like 2026-01-05T00:00:00Z, got {json.dumps(value)}")
        return DEFAULT_VERSION
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def load_own_world(files: str) -> World:
    """The world described by ``files`` (see the module docstring); raises :class:`OwnFilesError`."""
    jsonl, images_dir = locate(files)
    problems = _Problems(jsonl)
    classes = _builtin_classes()
    version = DEFAULT_VERSION
    places: list[OwnPlace] = []
    file_infos: dict[str, OwnFileInfo] = {}
    seen_ids: dict[str, int] = {}
    titles: dict[tuple[str, str], int] = {}
    sniffed: dict[str, tuple[str, int, int] | None] = {}
    unplaced: dict[str, tuple[int, str]] = {}
    images_root = images_dir.resolve()
    first_record = True
    for line, data in enumerate(jsonl.read_bytes().split(b"\n"), start=1):
        try:
            raw = data.decode("utf-8").removeprefix("\ufeff" if line == 1 else "")
        except UnicodeDecodeError as error:
            problems.add(line, "(line)", f"not UTF-8 text: byte 0x{data[error.start]:02x} at column {error.start + 1}")
            continue
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            problems.add(line, "(line)", f"not valid JSON: {error.msg} at column {error.colno}")
            continue
        if not isinstance(record, dict):
            problems.add(line, "(line)", "must be a JSON object")
            continue
        if first_record and "id" not in record and "dataset_version" in record:
            version = _dataset_version(record, line, problems)
            first_record = False
            continue
        first_record = False
        qid = record.get("id")
        if not isinstance(qid, str) or not QID.match(qid):
            problems.add(line, "id", f"must be an item ID like Q42, got {json.dumps(qid)}")
            continue
        if qid in seen_ids:
            problems.add(line, "id", f"{qid} is already used on line {seen_ids[qid]}")
            continue
        seen_ids[qid] = line
        unknown = set(record) - KNOWN_FIELDS
        if unknown:
            problems.add(line, ",".join(sorted(unknown)), f"unknown field(s); known: {', '.join(sorted(KNOWN_FIELDS))}")
        labels = _text_map(record.get("labels"), line, "labels", problems)
        coords, ranks = _coordinates(record, line, problems)
        place_classes = _classes(record, line, problems, classes, unplaced)
        sitelinks = _text_map(record.get("sitelinks"), line, "sitelinks", problems)
        summaries = _text_map(record.get("summaries"), line, "summaries", problems)
        name = labels.get("en") or next(iter(labels.values()), qid)
        for lang in summaries:
            if lang not in sitelinks:
                sitelinks[lang] = labels.get(lang, name)
        pages: dict[str, str] = {}
        missing: set[str] = set()
        for lang, title in sitelinks.items():
            normal = normalize_title(title)
            if normal is None:
                problems.add(line, f"sitelinks.{lang}", f"{title!r} is not a valid page title")
                continue
            if (lang, normal) in titles:
                problems.add(line, f"sitelinks.{lang}", f"{title!r} is already the {lang} title of line {titles[(lang, normal)]}")
                continue
            titles[(lang, normal)] = line
            if lang in summaries:
                pages[lang] = normal
            else:
                missing.add(lang)
        images: dict[str, list[str]] = {}
        for i, entry in enumerate(_image_entries(record, line, problems)):
            file_name = entry["file"]
            target = (images_dir / file_name).resolve()
            if images_root not in target.parents:
                problems.add(line, f"images[{i}]", f"{file_name!r} lies outside {images_dir}")
                continue
            if file_name not in sniffed:
                try:
                    sniffed[file_name] = _sniff(target) if target.is_file() else None
                except _TooManyPixels as error:
                    sniffed[file_name] = None
                    problems.add(line, f"images[{i}]", f"{file_name!r} {error}; at most {MAX_PIXELS:,} are served (scale it down)")
                    continue
                if not target.is_file():
                    problems.add(line, f"images[{i}]", f"{file_name!r} is not in {images_dir}")
                    continue
                if sniffed[file_name] is None:
                    problems.add(line, f"images[{i}]", f"{file_name!r} is not a JPEG, PNG, GIF, WebP, TIFF or SVG file")
                    continue
            kind = sniffed[file_name]
            if kind is None:
                continue
            fmt, width, height = kind
            # Commons' form of the name (spaces, first letter upper case) is what the graph and
            # the servers use, as Wikidata stores it; the bytes still come from the person's file.
            commons_name = normalize_file_name(file_name)
            if commons_name is None:
                problems.add(line, f"images[{i}]", f"{file_name!r} is no valid Commons file name (no <>[]{{}}|#)")
                continue
            known = file_infos.get(commons_name)
            if known is not None and known.path != str(target):
                problems.add(line, f"images[{i}]", f"{file_name!r} and {Path(known.path).name!r} have the same Commons name {commons_name!r}")
                continue
            if known is None:  # a picture several entities share belongs to the first
                file_infos[commons_name] = OwnFileInfo(
                    file_name=commons_name,
                    place_qid=qid,
                    kind="drawing" if fmt == "svg" else "photo",
                    format=fmt,
                    license=entry["license"],
                    author=entry["author"],
                    width=width,
                    height=height,
                    path=str(target),
                )
            names = images.setdefault(entry["property"], [])
            if commons_name not in names:
                names.append(commons_name)
        places.append(
            OwnPlace(
                qid=qid,
                name=name,
                labels=labels,
                coords=coords,
                classes=place_classes,
                images=images,
                sitelinks=sitelinks,
                country_qid=None,
                country_code=None,
                population=0,
                geonames_id=0,
                continent="",
                admin1="",
                coord_ranks=ranks,
                pages=pages,
                missing_articles=missing,
                summaries=summaries,
            )
        )
    for qid, (line, where) in unplaced.items():
        if qid not in classes:
            problems.add(
                line, where, f"{qid} is no class the world knows (Wikidata's settlement classes below {BASE_CLASS}); "
                f'place it with "parents" on one of its lines, e.g. {{"id": "{qid}", "parents": ["{BASE_CLASS}"]}}'
            )
    for info in classes.values():
        for parent in info.parents:
            if parent not in classes:
                problems.items.append(f"{jsonl.name}: class {info.qid}: parent {parent} is no class of the file or the world")
    if not places and not problems.items:
        problems.items.append(f"{jsonl.name}: no entities (every line is blank or a header)")
    problems.raise_if_any()
    places.sort(key=lambda p: p.qid)
    world = World(
        spec=WorldSpec(files=str(files)),
        dataset_version=version,
        release=version[:10],
        places=list(places),
        classes=classes,
        countries={},
        files=dict(sorted(file_infos.items())),
        truth=None,  # type: ignore[arg-type]
    )
    world.truth = expected(world)
    return world


def unlisted_records(world: World, listed: set[str], closure: dict[str, int]) -> list[tuple[str, str, str]]:
    """(qid, reason, detail) for every record of a person's world the extraction never listed.

    On Wikidata an item outside the settlement classes is simply not a record of the dataset;
    in one's own files every line was meant as one, so each that ``closure`` (class -> hops, as
    ``settlement_classes`` holds it) leaves out is accounted for instead of vanishing.
    """
    base = min(closure, key=lambda qid: closure[qid])
    below, _ = class_hops(world.classes, base)
    out = []
    for place in world.places:
        if place.qid in listed:
            continue
        if not place.classes:
            out.append((place.qid, "no_class", "the record gives no classes"))
        elif deeper := sorted(c for c in place.classes if c in below):
            hops = ", ".join(f"{c} is {below[c]} hops below {base}" for c in deeper)
            out.append((place.qid, "class_beyond_hops", f"{hops}; the closure reaches {max(closure.values())} (max_hops)"))
        else:
            out.append((place.qid, "class_outside_closure", f"no class of {', '.join(place.classes)} is a subclass of {base}"))
    return out
