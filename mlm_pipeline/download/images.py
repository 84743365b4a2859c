"""Commons thumbnails at a standard width, with licence and attribution, resumable.

The reference fetched full originals one after another; MLM pads to 256x256 anyway, so a
thumbnail at a standard width (Commons serves only those; any other width gets 429) is all the
feature encoders need, at a fraction of the bytes. One ``imageinfo`` request per 50 files gives
licence and attribution (``extmetadata``), the original's ``sha1`` and, with ``iiurlwidth``, each thumbnail's URL
(MediaWiki scales at most 50 files a request, so the batch size is the API's own), so each
image costs one media request; ``Special:FilePath/<name>?width=W`` (a redirect to the same
thumbnail, and a second request) is the fallback when the API gives no thumbnail URL. The
``imageinfo`` requests go in series (``mediawiki``); media requests share one concurrency pool
(Wikimedia allows 2 media downloads at a time per client), which 429s lower for a while.
Each thumbnail's bytes go to the release's blob store (``blobs.py``) as soon as they arrive; the
staged rows, and the ``images`` table built from them, carry its sha256. File names come from
the graph and are never used as paths: staging shards and blobs are named by hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Callable, Sequence
from urllib.parse import quote

import duckdb
import pyarrow as pa
from yarl import URL

from mlm_pipeline import schemas
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.download.mediawiki import query_titles, title_problem
from mlm_pipeline.download.politeness import FetchFailed, Invalid, Politeness, PoliteSession, Response
from mlm_pipeline.download.progress import Progress
from mlm_pipeline.download.staging import STAGED_FAILURES, BatchOutcome, BatchRunner, Staging, chunks, pending_keys
from mlm_pipeline.download.validate import ImageFacts, TooManyPixels, inspect_image, max_pixels_problem
from mlm_pipeline.endpoints import ConfigError

STAGE = "images"
STANDARD_WIDTHS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
MAX_TITLES_PER_REQUEST = 50  # the Action API's limit on titles for ordinary clients
MEDIA_POOL = "media"
STAGED_IMAGES = pa.schema([("key", pa.string()), *[f for f in schemas.IMAGES if f.name != "qid"]])
EXTMETADATA = ("LicenseShortName", "LicenseUrl", "Artist", "Credit", "Attribution", "AttributionRequired")


@dataclass(frozen=True)
class ImagePlan:
    width: int = 250  # a standard width just above the 224 pixels the encoders take
    metadata_batch: int = MAX_TITLES_PER_REQUEST
    max_bytes: int = 8 << 20  # per image
    max_pixels: int = 25_000_000  # per decoded image; decompression bombs are far beyond
    api_max_bytes: int = 16 << 20  # per metadata answer
    parallel_batches: int = 2
    max_continuations: int = 50
    progress_every_s: float = 10.0
    # Stored URLs name this origin instead of the Commons server's when set: the embedded
    # world's servers get new ports every run, and a URL with a port in it would make the same
    # release give different bytes.
    public_origin: str = ""

    def problems(self) -> list[str]:
        problems = []
        if self.width not in STANDARD_WIDTHS:
            problems.append(f"width={self.width} is not one of Commons' standard thumbnail widths {STANDARD_WIDTHS} "
                            "(other widths are refused with 429)")
        if not 1 <= self.metadata_batch <= MAX_TITLES_PER_REQUEST:
            problems.append(f"metadata_batch={self.metadata_batch} must be 1..{MAX_TITLES_PER_REQUEST}")
        if (problem := max_pixels_problem(self.max_pixels)) is not None:
            problems.append(problem)
        for name in ("max_bytes", "api_max_bytes", "parallel_batches"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be positive")
        return problems

    def fingerprint(self) -> str:
        """Names the staging folder: what decides a stored outcome (and how outcomes are stored:
        bytes in the blob store, rows with each file's rights), so other settings start afresh."""
        decisive = f"{self.max_bytes}:{self.max_pixels}:blobs:rights"
        return f"w{self.width}-" + hashlib.sha256(decisive.encode()).hexdigest()[:8]


WANTED = "SELECT DISTINCT qid, unnest(images) AS file_name FROM entities"
"""Every (entity, file) pair asked for: a map or emblem can serve several entities."""


def wanted_files(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The distinct file names of the ``entities`` view, sorted."""
    return [name for (name,) in con.execute(f"SELECT DISTINCT file_name FROM ({WANTED}) ORDER BY 1").fetchall()]


def filepath_url(base: str, name: str, width: int) -> str:
    """``Special:FilePath/<name>?width=W``, the name one percent-encoded path segment ('/' too)."""
    return f"{base}{quote(name.replace(' ', '_'), safe='')}?width={width}"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain_text(value: Any) -> str:
    """extmetadata values are HTML fragments (links to user pages); keep the words."""
    parser = _Text()
    parser.feed(str(value))
    parser.close()
    return " ".join("".join(parser.parts).split())


def _extmetadata_text(info: dict[str, Any]) -> dict[str, str]:
    meta = info.get("extmetadata") or {}
    return {k: plain_text(meta[k]["value"]) for k in EXTMETADATA if isinstance(meta.get(k), dict) and "value" in meta[k]}


def licence_and_attribution(info: dict[str, Any]) -> tuple[str | None, str | None]:
    text = _extmetadata_text(info)
    licence = text.get("LicenseShortName") or None
    attribution = text.get("Attribution") or text.get("Artist") or text.get("Credit") or None
    return licence, attribution


def rights(info: dict[str, Any]) -> dict[str, Any]:
    """The IMAGES columns that say whose file it is and under which terms (null: not given)."""
    text = _extmetadata_text(info)
    required = text.get("AttributionRequired", "").lower()
    licence, attribution = licence_and_attribution(info)
    sha1 = info.get("sha1")
    return {
        "license": licence, "attribution": attribution,
        "license_url": text.get("LicenseUrl") or None, "artist": text.get("Artist") or None,
        "credit": text.get("Credit") or None,
        "attribution_required": {"true": True, "false": False}.get(required),
        "commons_sha1": sha1 if isinstance(sha1, str) and sha1 else None,
    }


class ImageDownloader:
    def __init__(self, session: PoliteSession, commons_api: str, filepath: str, plan: ImagePlan, blobs: BlobStore) -> None:
        self.session = session
        self.commons_api = commons_api
        self.filepath = filepath
        self.plan = plan
        self.blobs = blobs

    async def metadata(self, names: Sequence[str]) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, str, bool]]]:
        """imageinfo per asked name, and failures (reason, detail, transient) for names without one."""
        titles = [f"File:{n}" for n in names]
        params = {"prop": "imageinfo", "iiprop": "extmetadata|url|sha1", "iiurlwidth": str(self.plan.width),
                  "iiextmetadatafilter": "|".join(EXTMETADATA),
                  "redirects": "1"}
        answers = await query_titles(self.session, self.commons_api, params, titles,
                                     max_bytes=self.plan.api_max_bytes, max_continuations=self.plan.max_continuations)
        infos: dict[str, dict[str, Any]] = {}
        failures: dict[str, tuple[str, str, bool]] = {}
        for title, name in zip(titles, names):
            page = answers.page(title)
            if page and page.get("imageinfo"):
                infos[name] = page["imageinfo"][0]
            elif (failed := answers.failure(title)) is not None:
                failures[name] = (f"metadata_{failed.reason}", failed.record_detail, failed.transient)
            elif page is None:
                failures[name] = ("no_answer", "the API returned no page for it", True)
            elif page.get("invalid") not in (None, False):
                failures[name] = ("invalid_file_name", str(page.get("invalidreason", ""))[:200], False)
            elif page.get("missing") not in (None, False):
                failures[name] = ("missing_file", "no such file on Commons", False)
            else:
                failures[name] = ("no_imageinfo", "the file page has no file information", True)
        return infos, failures

    def public_url(self, url: str) -> str:
        if not self.plan.public_origin:
            return url
        served, origin = URL(url), URL(self.filepath)
        if served.origin() != origin.origin():
            return url
        return self.plan.public_origin.rstrip("/") + served.raw_path_qs

    def _check(self, response: Response) -> ImageFacts:
        try:
            facts = inspect_image(response.body, self.plan.max_pixels)
        except TooManyPixels as exc:
            # Never decoded, so cheap to ask again: an original or a bomb served by mistake is no
            # verdict on the file unless every attempt gets the same bytes (see politeness).
            raise Invalid("too_many_pixels", str(exc)[:200]) from None
        if facts.problem:
            raise Invalid("corrupt", facts.problem)
        if facts.width is not None and facts.width > self.plan.width:
            # An original (megapixels) where a thumbnail was asked for: not what the encoders need,
            # and the next attempt usually gets the thumbnail.
            raise Invalid("wrong_size", f"{facts.width}px wide where {self.plan.width}px was asked for")
        return facts

    def _width_refused(self, url: str) -> ConfigError:
        """Commons answers a thumbnail width outside its steps with a 429 without Retry-After:
        not throttling (waiting cures nothing) but a width this server does not serve."""
        return ConfigError(
            f"images: {URL(url).host} refused the thumbnail {url} with HTTP 429 and no Retry-After, Commons' "
            f"answer to a width outside its standard steps (https://w.wiki/GHai): width={self.plan.width} is not "
            "served there; choose one of the widths the server lists"
        )

    async def file(self, name: str, info: dict[str, Any]) -> dict[str, Any] | tuple[str, str, bool]:
        """A staged image row, or (reason, detail, transient)."""
        url = info.get("thumburl") or filepath_url(self.filepath, name, self.plan.width)
        try:
            response = await self.session.get(url, accept=("image/",), max_bytes=self.plan.max_bytes,
                                              pool=MEDIA_POOL, check=self._check, unthrottled_429=self._width_refused)
        except FetchFailed as failed:
            if failed.reason != "corrupt" or failed.transient or failed.last is None:
                return failed.reason, failed.record_detail, failed.transient
            # The same undecodable bytes at every attempt are the file's own: kept as served, so that
            # images_filtered drops them as undecodable and the decision is made (and counted) once.
            # Damage that differed between attempts was trouble on the way: a later run tries again.
            response = failed.last
            response.checked = inspect_image(response.body, self.plan.max_pixels)
        facts: ImageFacts = response.checked
        page = info.get("descriptionurl")
        return {
            "key": name, "file_name": name, "url": self.public_url(response.url),
            "sha256": self.blobs.put(response.body), "format": facts.format,
            "width": facts.width, "height": facts.height, "n_bytes": len(response.body),
            "description_url": self.public_url(page) if isinstance(page, str) else None, **rights(info),
        }

    async def batch(self, names: Sequence[str]) -> BatchOutcome:
        infos, failures = await self.metadata(names)
        ready = [n for n in names if n in infos]
        outcomes = await asyncio.gather(*(self.file(n, infos[n]) for n in ready))
        rows = []
        for name, outcome in zip(ready, outcomes):
            if isinstance(outcome, dict):
                rows.append(outcome)
            else:
                failures[name] = outcome
        return _outcome(rows, failures)


def _outcome(rows: list[dict[str, Any]], failures: dict[str, tuple[str, str, bool]]) -> BatchOutcome:
    results = pa.Table.from_pylist(rows, schema=STAGED_IMAGES)
    failed = pa.table({
        "key": list(failures), "reason": [f[0] for f in failures.values()],
        "detail": [f[1] for f in failures.values()], "transient": [f[2] for f in failures.values()],
    }, schema=STAGED_FAILURES)
    return BatchOutcome(results, failed)


async def download_images(
    names: Sequence[str], commons_api: str, filepath: str, session: PoliteSession, staging: Staging,
    blobs: BlobStore, plan: ImagePlan, log: Callable[[str], None],
) -> None:
    """Downloads every file of ``names`` that ``staging`` holds no outcome for."""
    if problems := plan.problems():
        raise ValueError("images: " + "; ".join(problems))
    pending = pending_keys(names, staging.load(keys_only=True))
    progress = Progress("images", total=len(names), log=log, every_s=plan.progress_every_s,
                        already=len(names) - len(pending))
    unsendable = {n: problem for n in pending if (problem := title_problem(n))}
    if unsendable:
        staging.write(_outcome([], {n: ("invalid_file_name", p, False) for n, p in unsendable.items()}))
        progress.add(failed=len(unsendable))
        pending = [n for n in pending if n not in unsendable]
    downloader = ImageDownloader(session, commons_api, filepath, plan, blobs)
    await BatchRunner(staging, progress, plan.parallel_batches).run(
        chunks(pending, plan.metadata_batch), downloader.batch)


IMAGE_COLUMNS = ", ".join(f"r.{name}" for name in schemas.IMAGES.names if name != "qid")


def assemble(con: duckdb.DuckDBPyConnection, staging: Staging) -> tuple[str, str]:
    """Queries for the IMAGES rows, one per (entity, file) downloaded, and the DROPOUTS rows, one
    per (entity, file) that was not, saying why: over the ``entities`` view and the staged
    outcomes, sorted, run out of core by DuckDB."""
    staging.register(con)
    images = f"""
        SELECT w.qid, {IMAGE_COLUMNS}
        FROM ({WANTED}) w JOIN staged_results r ON r.key = w.file_name
        ORDER BY w.qid, r.file_name"""
    failures = f"""
        SELECT w.qid, w.file_name AS item, '{STAGE}' AS stage,
               coalesce(f.reason, 'not_fetched') AS reason,
               coalesce(f.detail, 'no outcome stored (download interrupted)') AS detail
        FROM ({WANTED}) w ANTI JOIN staged_results r ON r.key = w.file_name
        LEFT JOIN staged_failures f ON f.key = w.file_name
        ORDER BY qid, item, stage, reason"""
    return images, failures


def fetch_images(
    names: Sequence[str], commons_api: str, filepath: str, politeness: Politeness, staging: Staging,
    blobs: BlobStore, plan: ImagePlan, log: Callable[[str], None],
) -> Counter[str]:
    """``download_images`` for synchronous callers; returns the client's request counts."""
    async def go() -> Counter[str]:
        async with PoliteSession(politeness, log) as session:
            await download_images(names, commons_api, filepath, session, staging, blobs, plan, log)
            return session.stats

    return asyncio.run(go())
