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
    Degrees (WGS84; -90..90 and -180..180), both or neither. Without them the entity has no
    coordinates (and the pipeline drops it, as it drops such Wikidata items).
``classes``
    ``[{"id": "Q..", "label": "..."}]``: what the entity is an instance of (``wdt:P31``). The
    world knows Wikidata's settlement classes below Q486972 "human settlement" (city Q515, town
    Q3957, village Q532, ...); any other class is made a direct subclass of Q486972 unless it
    gives ``"parents": ["Q.."]`` (``wdt:P279``). ``label`` is the class's English label.
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
    content. The graph names each file as Commons would (``my_photo.jpg`` becomes ``My photo.jpg``).

The first line may instead be a header ``{"dataset_version": "2026-01-05T00:00:00Z"}``: the
version the SPARQL endpoint reports (the release is its date). Without it: 2026-01-05.

Errors name the file, the line and the field (all problems at once, up to ``MAX_ERRORS``)
before anything is served.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from mlm_pipeline.world import builder
from mlm_pipeline.world.builder import BASE_CLASS, CLASS_TABLE, EARTH, ClassInfo, FileInfo, Place, World, WorldSpec
from mlm_pipeline.world.commons_server import normalize_file_name
from mlm_pipeline.world.wiki_server import normalize_title

ENTITIES_FILE = "entities.jsonl"
IMAGES_DIR = "images"
DEFAULT_VERSION = "2026-01-05T00:00:00Z"
MAX_ERRORS = 20
QID = re.compile(r"^Q[1-9][0-9]*$")
PROPERTY = re.compile(r"^P[1-9][0-9]*$")
KNOWN_FIELDS = {"id", "labels", "lat", "lon", "classes", "sitelinks", "summaries", "images"}
PIL_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "TIFF": "tiff"}


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


def fingerprint(files: str) -> str:
    """A digest of the entities file and every picture it names: a cache key that changes with them."""
    jsonl, images = locate(files)
    digest = hashlib.sha256(jsonl.read_bytes())
    if images.is_dir():
        for item in sorted(p for p in images.rglob("*") if p.is_file()):
            digest.update(str(item.relative_to(images)).encode("utf-8"))
            with open(item, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


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


def _coordinate(record: dict, line: int, problems: _Problems) -> list[tuple[float, float, str]]:
    lat, lon = record.get("lat"), record.get("lon")
    if lat is None and lon is None:
        return []
    ok = True
    for name, value, limit in (("lat", lat, 90), ("lon", lon, 180)):
        if value is None:
            problems.add(line, name, "is missing (give both lat and lon, or neither)")
            ok = False
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > limit:
            problems.add(line, name, f"must be a number between -{limit} and {limit}, got {json.dumps(value)}")
            ok = False
    return [(float(lat), float(lon), EARTH)] if ok else []


def _sniff(path: Path) -> tuple[str, int, int] | None:
    """Format and size from the file's content (not its name); None when it is no picture."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<?xml") or text.startswith(b"<svg") or b"<svg" in text[:4096]:
        width = re.search(rb'<svg[^>]*\swidth="([0-9.]+)', head)
        height = re.search(rb'<svg[^>]*\sheight="([0-9.]+)', head)
        return "svg", int(float(width.group(1))) if width else 512, int(float(height.group(1))) if height else 512
    try:
        with Image.open(path) as img:
            fmt = PIL_FORMATS.get(img.format or "")
            return (fmt, img.width, img.height) if fmt else None
    except (UnidentifiedImageError, OSError):
        return None


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


def _classes(record: dict, line: int, problems: _Problems, classes: dict[str, ClassInfo]) -> list[str]:
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
            parents = None
        qid = item["id"]
        known = classes.get(qid)
        if known is None:
            classes[qid] = ClassInfo(qid, label, list(parents) if parents else [BASE_CLASS], {"en": label} if label else {})
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
    images_root = images_dir.resolve()
    with open(jsonl, encoding="utf-8", errors="strict") as handle:
        try:
            lines = list(enumerate(handle, start=1))
        except UnicodeDecodeError as error:
            raise OwnFilesError(f"{jsonl}: not UTF-8 text ({error})") from None
    first_record = True
    for line, raw in lines:
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
        coords = _coordinate(record, line, problems)
        place_classes = _classes(record, line, problems, classes)
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
                sniffed[file_name] = _sniff(target) if target.is_file() else None
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
                coord_ranks=["normal"] * len(coords),
                pages=pages,
                missing_articles=missing,
                summaries=summaries,
            )
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
    world.truth = builder.expected(world)
    return world
