"""The embedded world's Wikimedia Commons: file redirects, thumbnails, originals and licences.

``start_commons_server(world, faults)`` serves, on one loopback port:

``/wiki/Special:FilePath/<name>[?width=W]``
    302 to the thumbnail ``/w/thumb/<a>/<ab>/<name>/<W>px-<name>`` when ``W`` is below the
    original's width (or the file is an SVG), else to the original ``/w/images/<a>/<ab>/<name>``,
    as MediaWiki does (``a``/``ab``: the first one/two hex digits of the MD5 of the name with
    underscores). Unknown files: 404. Names are matched after title normalisation.
``/w/thumb/...``
    The thumbnail. Only the standard widths (``STANDARD_WIDTHS``) are served; any other width is
    refused with 429, as upload.wikimedia.org does since 2025. Raster files are not scaled up
    (a width above the original's: 400). Thumbnails of SVG files are PNG renderings with
    ``.png`` appended to the thumbnail name (as on Commons): so the SVG filter of a client that
    fetches thumbnails must look at the file name or ``imageinfo``'s ``mime``, not only at the
    bytes. A person's own files (:mod:`mlm_pipeline.world.own_files`) are scaled with Pillow
    (JPEG stays JPEG, other rasters become PNG); their SVGs cannot be rendered here and are
    served as SVG even as thumbnails, and a file Pillow cannot decode (a truncated JPEG) gets
    400 "Error generating thumbnail", as an impossible width does.
``/w/images/...``
    The original: SVG XML, or the picture at its full size, of exactly the size ``imageinfo``
    reports.
``/w/api.php?action=query&prop=imageinfo&iiprop=extmetadata|url|size|mime|sha1&titles=File:A|File:B``
    Licence and attribution (``extmetadata``: ``LicenseShortName``, ``License``, ``LicenseUrl``,
    ``UsageTerms``, ``AttributionRequired``, ``Artist`` (HTML for some files, as on Commons),
    ``Credit``, ``ObjectName``, ``DateTime``, ...), ``url``/``descriptionurl`` (and
    ``thumburl``/``thumbwidth``/``thumbheight`` with ``iiurlwidth``), ``size``/``width``/
    ``height``, ``mime`` and ``sha1``; up to 50 titles, normalised (``File:``/``Image:`` prefix,
    underscores, first letter), ``missing`` for unknown files, formatversion 1 or 2. As on
    Commons, some description pages lack data: ``metadata_gap(name)`` says which files have no
    licence templates at all or no author (neither ``Artist`` nor ``Credit``), and public-domain
    files have no ``LicenseUrl``. ``sha1`` is the original's for a person's own files; a
    generated original would have to be drawn at full size for it, so those report a digest of
    the file's name and declared size instead (stable, and as long as Commons' own).

Rules (see :mod:`mlm_pipeline.world.wiki_server`, which holds the shared handling): 403 for a
missing, browser-like or generic User-Agent; at most ``MEDIA_CONCURRENCY`` media requests
(file paths, thumbnails, originals together) and ``API_CONCURRENCY`` (one) API request in flight
per client, else 429 with Retry-After; ``maxlag`` on every API request; 429 *without*
Retry-After for non-standard thumbnail widths, as upload.wikimedia.org answers them (waiting
does not help). Each breach counts in ``violations`` and ``violation:<kind>`` (``user_agent``,
``concurrency``, ``maxlag``, ``thumb_width``, ``retry_after``). Faults: every kind of the plan
but ``redirect``; ``corrupt`` keeps an image's magic bytes and
destroys the rest, ``oversize`` answers with a decompression bomb (a few KB that declare
50,000 x 50,000 pixels), the multi-megapixel original, or the image padded to
``OVERSIZE_BYTES``, ``redirect_loop`` sends ``Special:FilePath`` round in a circle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import struct
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from PIL import Image

from mlm_pipeline.world import imagegen
from mlm_pipeline.world.faults import FaultPlan
from mlm_pipeline.world.serving import RunningServer, start_server
from mlm_pipeline.world.wiki_server import (
    API_CONCURRENCY,
    API_FAULTS,
    MAX_TITLES,
    OVERSIZE_BYTES,
    Reply,
    Route,
    RuleServerHandler,
    RuleState,
    api_error,
    api_key,
    error_page,
    json_reply,
)

STANDARD_WIDTHS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
MEDIA_CONCURRENCY = 2  # Wikimedia's limit for media downloads per client
BOMB_SIDE = 50_000
MIME = {"jpeg": "image/jpeg", "png": "image/png", "svg": "image/svg+xml", "gif": "image/gif", "webp": "image/webp", "tiff": "image/tiff"}
FORMAT_OF_SUFFIX = {".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".png": "png", ".svg": "svg", ".gif": "gif", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
MEDIA_FAULTS = ("http429", "http5xx", "timeout", "truncate", "corrupt", "content_type", "oversize", "garbage")
URL_SAFE = "()!,;:@$*'"

LICENSES: dict[str, dict[str, str]] = {
    "CC BY-SA 4.0": {"License": "cc-by-sa-4.0", "LicenseUrl": "https://creativecommons.org/licenses/by-sa/4.0",
                     "UsageTerms": "Creative Commons Attribution-Share Alike 4.0", "AttributionRequired": "true", "Copyrighted": "True"},
    "CC BY-SA 3.0": {"License": "cc-by-sa-3.0", "LicenseUrl": "https://creativecommons.org/licenses/by-sa/3.0",
                     "UsageTerms": "Creative Commons Attribution-Share Alike 3.0", "AttributionRequired": "true", "Copyrighted": "True"},
    "CC BY 4.0": {"License": "cc-by-4.0", "LicenseUrl": "https://creativecommons.org/licenses/by/4.0",
                  "UsageTerms": "Creative Commons Attribution 4.0", "AttributionRequired": "true", "Copyrighted": "True"},
    "CC BY 2.0": {"License": "cc-by-2.0", "LicenseUrl": "https://creativecommons.org/licenses/by/2.0",
                  "UsageTerms": "Creative Commons Attribution 2.0", "AttributionRequired": "true", "Copyrighted": "True"},
    "CC0": {"License": "cc0", "LicenseUrl": "http://creativecommons.org/publicdomain/zero/1.0/deed.en",
            "UsageTerms": "Creative Commons Zero, Public Domain Dedication", "AttributionRequired": "false", "Copyrighted": "False"},
    "Public domain": {"License": "pd", "UsageTerms": "Public domain", "AttributionRequired": "false", "Copyrighted": "False"},
}  # fmt: skip


def normalize_file_name(raw: str) -> str | None:
    """A Commons file name as MediaWiki stores it (spaces, first letter upper), without ``File:``."""
    name = re.sub(r"[ _]+", " ", raw).strip()
    name = re.sub(r"^(?i:file|image)\s*:\s*", "", name)
    if not name or any(ch in name for ch in "<>[]{}|#"):
        return None
    first = name[0].upper()
    return (first if len(first) == 1 else name[0]) + name[1:]


def hash_dirs(name: str) -> tuple[str, str]:
    digest = hashlib.md5(name.replace(" ", "_").encode("utf-8")).hexdigest()
    return digest[0], digest[:2]


def url_name(name: str) -> str:
    """The name as one URL path segment: underscores for spaces, everything else escaped (even '/')."""
    return quote(name.replace(" ", "_"), safe=URL_SAFE)


def thumb_name(name: str, width: int, as_png: bool) -> str:
    """MediaWiki's thumbnail file name; a rendering of an SVG as PNG gets ``.png`` appended."""
    return f"{width}px-{name}" + (".png" if as_png else "")


class Source:
    """One file's bytes, generated from the world's picture or read from a person's folder."""

    def __init__(self, info: Any, pic: imagegen.Picture, path: str = "") -> None:
        self.info = info
        self.pic = pic
        self.path = Path(path) if path else None

    @property
    def name(self) -> str:
        return self.info.file_name

    @property
    def format(self) -> str:
        return self.info.format

    @property
    def size(self) -> tuple[int, int]:
        return self.info.width, self.info.height

    @property
    def n_bytes(self) -> int:
        return self.path.stat().st_size if self.path else imagegen.declared_size(self.pic)

    def original(self) -> bytes:
        return self.path.read_bytes() if self.path else imagegen.original_bytes(self.pic)

    def renders_as_png(self) -> bool:
        """Generated SVG files named .svg are rasterised for thumbnails (a person's SVGs cannot be)."""
        return self.format == "svg" and self.name.lower().endswith(".svg") and self.path is None

    def thumbnail(self, width: int) -> tuple[bytes, str]:
        """The thumbnail's bytes and format."""
        if self.path is None:
            fmt = imagegen.thumbnail_format(self.pic)
            return imagegen.thumbnail_bytes(self.pic, width), fmt
        return _own_thumbnail(str(self.path), self.format, width)


@lru_cache(maxsize=512)
def _own_thumbnail(path: str, fmt: str, width: int) -> tuple[bytes, str]:
    """A person's own picture scaled to ``width``: JPEG stays JPEG, other rasters become PNG, and
    an SVG (which cannot be rendered here) is served as it is."""
    if fmt == "svg":
        return Path(path).read_bytes(), fmt
    out = "jpeg" if fmt == "jpeg" else "png"
    with Image.open(path) as img:
        height = imagegen.thumb_height(width, img.size)
        scaled = img.convert("RGB" if out == "jpeg" else "RGBA").resize((width, height), Image.Resampling.LANCZOS)
    return imagegen.encode(scaled, out), out


def _place_coords(world: Any, qid: str) -> tuple[float, float]:
    try:
        place = world.place(qid)
    except KeyError:
        return 0.0, 0.0
    return (place.coords[0][0], place.coords[0][1]) if place.coords else (0.0, 0.0)


def _place_name(world: Any, qid: str) -> str:
    try:
        return world.place(qid).name
    except KeyError:
        return ""


def _place_scenery(world: Any, qid: str) -> Any:
    try:
        return getattr(world.place(qid), "scenery", None)
    except KeyError:
        return None


class FileIndex:
    """The world's files by normalised name, each with where its bytes come from."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.names: dict[str, str] = {}
        for name in world.files:
            normal = normalize_file_name(name)
            if normal is not None:
                self.names.setdefault(normal, name)
        self._sources: dict[str, Source] = {}

    def find(self, raw: str) -> Source | None:
        normal = normalize_file_name(raw)
        name = self.names.get(normal) if normal is not None else None
        if name is None:
            return None
        source = self._sources.get(name)
        if source is None:
            info = self.world.files[name]
            lat, lon = _place_coords(self.world, info.place_qid)
            pic = imagegen.Picture(info.file_name, info.kind, info.format, lat, lon, info.width, info.height,
                                   _place_name(self.world, info.place_qid), _place_scenery(self.world, info.place_qid))
            source = Source(info, pic, getattr(info, "path", ""))
            self._sources[name] = source
        return source


def _date(name: str) -> str:
    """A fixed upload date per file (the world has no clock)."""
    n = int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=4).digest(), "big")
    moment = dt.datetime(2008, 1, 1) + dt.timedelta(seconds=n % (17 * 365 * 86400))
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _artist(author: str, name: str) -> str:
    """Commons gives the artist as HTML; about half the time here a user link, as there."""
    if not author:
        return ""
    if hashlib.blake2b(name.encode("utf-8"), digest_size=1).digest()[0] % 2:
        user = quote(author.replace(" ", "_"), safe="")
        return f'<a href="//commons.wikimedia.org/wiki/User:{user}" title="User:{author}">{author}</a>'
    return author


NO_LICENCE, NO_AUTHOR = "no_licence", "no_author"
GAP_EVERY = 25  # one file in 25 lacks its licence templates, one in 25 its author


def metadata_gap(name: str) -> str | None:
    """What the description page of a generated file lacks, as some Commons pages do: its
    licence templates (``NO_LICENCE``), or its author (``NO_AUTHOR``: no Artist, no Credit)."""
    n = int.from_bytes(hashlib.blake2b(f"gap\x00{name}".encode("utf-8"), digest_size=4).digest(), "big") % GAP_EVERY
    return {0: NO_LICENCE, 1: NO_AUTHOR}.get(n)


def file_sha1(source: Source) -> str:
    if source.path is not None:
        return hashlib.sha1(source.path.read_bytes()).hexdigest()
    return hashlib.sha1(f"{source.name}\x00{source.size}\x00{source.n_bytes}".encode("utf-8")).hexdigest()


def extmetadata(source: Source) -> dict[str, dict[str, str]]:
    info = source.info
    gap = metadata_gap(source.name) if source.path is None else None
    meta: dict[str, dict[str, str]] = {
        "DateTime": {"value": _date(source.name), "source": "mediawiki-metadata", "hidden": ""},
        "ObjectName": {"value": source.name.rpartition(".")[0] or source.name, "source": "mediawiki-metadata", "hidden": ""},
    }
    if gap != NO_AUTHOR:
        meta["Credit"] = {"value": '<span class="int-own-work" lang="en">Own work</span>', "source": "commons-desc-page", "hidden": ""}
    artist = _artist(info.author, source.name)
    if artist and gap != NO_AUTHOR:
        meta["Artist"] = {"value": artist, "source": "commons-desc-page"}
    if info.license and gap != NO_LICENCE:
        meta["LicenseShortName"] = {"value": info.license, "source": "commons-desc-page", "hidden": ""}
        for key, value in LICENSES.get(info.license, {}).items():
            meta[key] = {"value": value, "source": "commons-desc-page", "hidden": ""}
    return dict(sorted(meta.items()))


class CommonsHandler(RuleServerHandler):
    files: FileIndex

    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host') or f'{host}:{port}'}"

    def route(self, path: str, params: dict[str, str]) -> Route | Reply:
        loop = self.loop_reply(path)
        if loop is not None:
            return loop
        if path == "/w/api.php":
            return Route("api", api_key("commons/api", params), lambda: self._api(params), API_FAULTS, action_api=True)
        prefix = "/wiki/Special:FilePath/"
        if path.startswith(prefix):
            return self._filepath(unquote(path[len(prefix):]), params)
        segments = [unquote(part) for part in path.split("/")]
        if len(segments) == 7 and segments[1:3] == ["w", "thumb"]:
            return self._thumb(*segments[3:])
        if len(segments) == 6 and segments[1:3] == ["w", "images"]:
            return self._original(*segments[3:])
        return error_page(404, f"Not found: {path}")

    # -- media -----------------------------------------------------------------------------

    def _filepath(self, raw_name: str, params: dict[str, str]) -> Route | Reply:
        source = self.files.find(raw_name)
        if source is None:
            return error_page(404, f"No file by this name exists: {raw_name}")
        try:
            width = int(params.get("width", "0"))
        except ValueError:
            width = 0
        a, ab = hash_dirs(source.name)
        if width > 0 and (width < source.size[0] or source.format == "svg"):
            tail = thumb_name(source.name, width, source.renders_as_png())
            target = f"/w/thumb/{a}/{ab}/{url_name(source.name)}/{url_name(tail)}"
        else:
            target = f"/w/images/{a}/{ab}/{url_name(source.name)}"
        key = f"filepath:{source.name}:{width}"

        def answer() -> Reply:
            return Reply(302, b"", headers={"Location": self.base_url() + target}, served="filepath", kind="redirect")

        return Route("media", key, answer, ("http429", "http5xx", "timeout", "redirect_loop"))

    def _checked(self, a: str, ab: str, name: str) -> Source | Reply:
        source = self.files.find(name)
        if source is None or (a, ab) != hash_dirs(source.name):
            return error_page(404, f"File not found: {name}")
        return source

    def _thumb(self, a: str, ab: str, name: str, thumb: str) -> Route | Reply:
        found = self._checked(a, ab, name)
        if isinstance(found, Reply):
            return found
        source = found
        match = re.fullmatch(r"(\d+)px-(.+)", thumb.replace("_", " "))
        expected_tail = source.name + (".png" if source.renders_as_png() else "")
        if not match or match.group(2) != expected_tail:
            return error_page(400, f"Invalid thumbnail name: {thumb}")
        width = int(match.group(1))
        key = f"thumb:{source.name}:{width}"
        if width not in STANDARD_WIDTHS:
            return Route("media", key, lambda: self._nonstandard(width), ())
        if source.format != "svg" and width > source.size[0]:
            return error_page(400, f"Error generating thumbnail: the requested width {width} is bigger than the source ({source.size[0]})")

        def answer() -> Reply:
            try:
                data, fmt = source.thumbnail(width)
            except (OSError, SyntaxError, ValueError) as error:  # a person's file Pillow cannot decode
                return error_page(400, f"Error generating thumbnail: {source.name} cannot be decoded ({error})")
            return Reply(200, data, MIME.get(fmt, "application/octet-stream"), served="thumb", kind=fmt)

        return Route("media", key, answer, MEDIA_FAULTS)

    def _nonstandard(self, width: int) -> Reply:
        self._violation("thumb_width")
        return error_page(429, f"Use thumbnail steps listed on https://w.wiki/GHai ({width}px is not one of them).")

    def _original(self, a: str, ab: str, name: str) -> Route | Reply:
        found = self._checked(a, ab, name)
        if isinstance(found, Reply):
            return found
        source = found

        def answer() -> Reply:
            return Reply(200, source.original(), MIME.get(source.format, "application/octet-stream"), served="original", kind=source.format)

        return Route("media", f"original:{source.name}", answer, MEDIA_FAULTS)

    def damage(self, fault: str, reply: Reply, target: Route) -> Reply:
        if fault == "oversize" and reply.kind in ("jpeg", "png", "svg"):
            variant = self.state.plan.pick(self.state.name, target.key, ["bomb", "original", "padded"])
            if variant == "bomb" and reply.kind in ("jpeg", "png"):
                body = _bomb(reply.body, reply.kind)
            elif variant == "original" and target.key.startswith("thumb:"):
                source = self.files.find(target.key.split(":", 1)[1].rpartition(":")[0])
                body = source.original() if source is not None else reply.body
            else:
                body = imagegen.padded(reply.body, reply.kind, OVERSIZE_BYTES) if reply.kind != "svg" else (
                    reply.body + b"<!--" + b" " * OVERSIZE_BYTES + b"-->")
            return Reply(200, body, reply.content_type, dict(reply.headers))
        return super().damage(fault, reply, target)

    # -- API ---------------------------------------------------------------------------------

    def _api(self, params: dict[str, str]) -> Reply:
        if params.get("format", "json") != "json":
            return json_reply(api_error("badvalue", "Only format=json is served here."), "")
        if params.get("action") != "query":
            return json_reply(api_error("badvalue", f'Unrecognized value for parameter "action": {params.get("action")}.'), "")
        return json_reply(self._imageinfo(params), "api")

    def _imageinfo(self, params: dict[str, str]) -> dict[str, Any]:
        fv2 = params.get("formatversion") in ("2", "latest")
        warnings: dict[str, list[str]] = {}
        props = [p for p in params.get("prop", "").split("|") if p]
        for prop in props:
            if prop != "imageinfo":
                warnings.setdefault("query", []).append(f'Unrecognized value for parameter "prop": {prop}')
        iiprops = set((params.get("iiprop") or "timestamp|user").split("|"))
        for unknown in sorted(iiprops - {"timestamp", "user", "url", "size", "mime", "sha1", "extmetadata"}):
            warnings.setdefault("imageinfo", []).append(f'Unrecognized value for parameter "iiprop": {unknown}')
        meta_filter = set(params["iiextmetadatafilter"].split("|")) if params.get("iiextmetadatafilter") else None
        try:
            url_width = int(params.get("iiurlwidth", "0") or 0)
        except ValueError:
            return api_error("badinteger", 'Invalid value for integer parameter "iiurlwidth".')
        raw_titles = params["titles"].split("|") if params.get("titles") else []
        if len(raw_titles) > MAX_TITLES:
            warnings.setdefault("main", []).append(f'Too many values supplied for parameter "titles". The limit is {MAX_TITLES}.')
            raw_titles = raw_titles[:MAX_TITLES]
        self.running.count("api:titles", len(raw_titles))
        normalized: list[dict[str, Any]] = []
        pages: list[dict[str, Any]] = []
        seen: set[str] = set()
        base = self.base_url()
        for raw in raw_titles:
            is_file = re.match(r"^\s*(?i:file|image)\s*:", raw.replace("_", " ")) is not None
            name = normalize_file_name(raw)
            if name is None:
                pages.append({"title": raw, "invalidreason": "The requested page title is empty or contains invalid characters.", "invalid": True})
                continue
            title = f"File:{name}" if is_file else name
            if title != raw:
                normalized.append({"fromencoded": False, "from": raw, "to": title})
            if title in seen:
                continue
            seen.add(title)
            source = self.files.find(name) if is_file else None
            if source is None:
                pages.append({"ns": 6 if is_file else 0, "title": title, "missing": True, "imagerepository": "" if is_file else None})
                continue
            info: dict[str, Any] = {}
            if "timestamp" in iiprops:
                info["timestamp"] = _date(source.name).replace(" ", "T") + "Z"
            if "user" in iiprops:
                info["user"] = source.info.author.replace(" ", "") or "Unknown"
            if "size" in iiprops:
                info.update(size=source.n_bytes, width=source.size[0], height=source.size[1])
            if "url" in iiprops:
                a, ab = hash_dirs(source.name)
                if url_width > 0:
                    thumb_width = url_width if source.format == "svg" else min(url_width, source.size[0])
                    if thumb_width < source.size[0] or source.format == "svg":
                        tail = thumb_name(source.name, thumb_width, source.renders_as_png())
                        info["thumburl"] = f"{base}/w/thumb/{a}/{ab}/{url_name(source.name)}/{url_name(tail)}"
                    else:
                        info["thumburl"] = f"{base}/w/images/{a}/{ab}/{url_name(source.name)}"
                    info["thumbwidth"] = thumb_width
                    info["thumbheight"] = imagegen.thumb_height(thumb_width, source.size)
                info["url"] = f"{base}/w/images/{a}/{ab}/{url_name(source.name)}"
                info["descriptionurl"] = f"{base}/wiki/File:{url_name(source.name)}"
                info["descriptionshorturl"] = f"{base}/w/index.php?curid={_file_page_id(source.name)}"
            if "mime" in iiprops:
                info["mime"] = MIME.get(source.format, "application/octet-stream")
            if "sha1" in iiprops:
                info["sha1"] = file_sha1(source)
            if "extmetadata" in iiprops:
                meta = extmetadata(source)
                info["extmetadata"] = {k: v for k, v in meta.items() if meta_filter is None or k in meta_filter}
            page: dict[str, Any] = {"pageid": _file_page_id(source.name), "ns": 6, "title": title, "imagerepository": "local"}
            if "imageinfo" in props:
                page["imageinfo"] = [info]
            pages.append(page)
        for page in pages:  # fv2 drops keys whose value is None (no image repository outside File:)
            if page.get("imagerepository", "") is None:
                del page["imagerepository"]
        out: dict[str, Any] = {"batchcomplete": True if fv2 else ""}
        if warnings:
            text_key = "warnings" if fv2 else "*"
            out["warnings"] = {module: {text_key: "\n".join(texts)} for module, texts in warnings.items()}
        query: dict[str, Any] = {}
        if normalized:
            query["normalized"] = normalized if fv2 else [{k: v for k, v in n.items() if k != "fromencoded"} for n in normalized]
        if pages:
            if fv2:
                query["pages"] = pages
            else:
                keyed: dict[str, Any] = {}
                negative = -1
                for page in pages:
                    page = dict(page)
                    for flag in ("missing", "invalid"):
                        if page.pop(flag, False):
                            page[flag] = ""
                    if "pageid" in page:
                        keyed[str(page["pageid"])] = page
                    else:
                        keyed[str(negative)] = page
                        negative -= 1
                query["pages"] = keyed
        if query:
            out["query"] = query
        return out


def _file_page_id(name: str) -> int:
    return 100_000 + int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big") % 150_000_000


def _bomb(data: bytes, fmt: str) -> bytes:
    """A small image whose header declares ``BOMB_SIDE`` squared pixels."""
    if fmt == "jpeg":
        return imagegen.with_declared_size(data, BOMB_SIDE, BOMB_SIDE)
    ihdr = struct.pack(">II", BOMB_SIDE, BOMB_SIDE) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF) + data[33:]


def start_commons_server(world: Any, faults: str | FaultPlan = "") -> RunningServer:
    """Serve the world's files and their metadata (see the module docstring) until ``.stop()``."""
    plan = FaultPlan.parse(faults)
    handler = type("BoundCommonsHandler", (CommonsHandler,), {"files": FileIndex(world)})
    running = start_server("commons", handler)
    running.server.state = RuleState("commons", plan, {"media": MEDIA_CONCURRENCY, "api": API_CONCURRENCY})  # type: ignore[attr-defined]
    return running

