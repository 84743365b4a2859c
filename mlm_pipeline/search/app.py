"""The web app: one page, a JSON API, thumbnails and entity pages, over a ``Searcher``.

Routes (all answers are built from the loaded index; no part of a request is ever used as a
file path: images are addressed by their row number in the index, entities by a QID that must
be in it):

- ``GET /``: the search page (``static/``); ``GET /map/world.svg``: the base map.
- ``GET /api/health``: ``{"status", "release", "model", "images", "texts", "cells", "encoders"}``.
- ``GET /api/search?text=...&k=10``: images for a text.
- ``POST /api/search?k=10`` with an image body (``Content-Type: image/*``): summaries for an image.
  Both answer ``{"release", "model", "query", "results", "location"}`` (see engine.Searcher);
  a refused query answers ``{"error": message}`` with 413, 415 or 422 (see queries).
- ``GET /image/{row}``: a result's thumbnail; ``GET /entity/{qid}``: an entity's page.

Model work runs in Starlette's thread pool, so the event loop keeps accepting requests while
queries are encoded and ranked (torch and numpy release the GIL while they compute).
"""

from __future__ import annotations

import html
import io
from importlib.resources import files
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlm_pipeline.search.engine import Searcher
from mlm_pipeline.search.queries import QueryError, QueryLimits, check_content_type, check_declared_length, check_image, check_text, parse_k
from mlm_pipeline.search.thumbnails import ThumbnailCache
from mlm_pipeline.search.worldmap import world_svg

STATIC = files("mlm_pipeline.search") / "static"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
]


class SecurityHeaders:
    """Every answer forbids content sniffing, inline scripts and framing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


async def read_body(request: Request, limits: QueryLimits) -> bytes:
    """The body, stopped as soon as it passes the byte limit (a missing Content-Length is no way round it)."""
    check_declared_length(request.headers.get("content-length"), limits)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_bytes:
            raise QueryError(413, f"the image has more than {limits.max_bytes} bytes, the most accepted")
        chunks.append(chunk)
    return b"".join(chunks)


def _entity_page(entity: dict[str, Any]) -> str:
    e = html.escape
    images = "".join(
        f'<figure><img src="{e(i["image_url"])}" alt="{e(i["file_name"])}"><figcaption>{e(i["file_name"])}</figcaption></figure>'
        for i in entity["images"]
    )
    summaries = "".join(f'<p><span class="lang">{e(s["lang"])}</span> {e(s["text"] or "")}</p>' for s in entity["summaries"])
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(entity["label"])} ({e(entity["qid"])})</title>'
        '<style>body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:60em;padding:0 1em}'
        "figure{display:inline-block;margin:0 1em 1em 0}img{max-height:180px}figcaption{font-size:12px;color:#555}"
        ".lang{background:#234;color:#fff;border-radius:3px;padding:0 .35em;font-size:12px}</style></head><body>"
        f'<p><a href="/">← search</a></p><h1>{e(entity["label"])} <small>{e(entity["qid"])}</small></h1>'
        f'<p>{entity["lat"]:.5f}, {entity["lon"]:.5f}</p>{images}{summaries}</body></html>'
    )


def create_app(searcher: Searcher, thumbnails: ThumbnailCache, limits: QueryLimits = QueryLimits()) -> Starlette:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    script = (STATIC / "search.js").read_text(encoding="utf-8")
    world_map = world_svg()  # built once, before the first page asks for it

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def search_js(request: Request) -> Response:
        return Response(script, media_type="text/javascript")

    async def world(request: Request) -> Response:
        return Response(world_map, media_type="image/svg+xml", headers={"cache-control": "public, max-age=86400"})

    async def health(request: Request) -> Response:
        return JSONResponse(searcher.health())

    async def search(request: Request) -> Response:
        k = parse_k(request.query_params.get("k"), limits)
        if request.method == "GET":
            text = check_text(request.query_params.get("text"), limits)
            answer = await run_in_threadpool(searcher.search_text, text, k)
            thumbnails.expect(searcher.thumbnail_keys(answer))
        else:
            check_content_type(request.headers.get("content-type"))
            upload = check_image(await read_body(request, limits), limits)
            answer = await run_in_threadpool(searcher.search_image, upload, k)
        return JSONResponse(answer)

    async def image(request: Request) -> Response:
        key = searcher.image_key(request.path_params["row"])
        content = await run_in_threadpool(thumbnails.get, key) if key is not None else None
        if content is None:
            return JSONResponse({"error": "no such image in this release's index"}, status_code=404)
        with Image.open(io.BytesIO(content)) as opened:
            media_type = Image.MIME.get(opened.format or "", "application/octet-stream")
        return Response(content, media_type=media_type, headers={"cache-control": "private, max-age=3600"})

    async def entity(request: Request) -> Response:
        found = searcher.entity(request.path_params["qid"])
        if found is None:
            return HTMLResponse("<!doctype html><p>No such entity in this release's index.</p>", status_code=404)
        return HTMLResponse(_entity_page(found))

    async def refused(request: Request, error: Exception) -> Response:
        assert isinstance(error, QueryError)
        return JSONResponse({"error": error.message}, status_code=error.status)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/static/search.js", search_js),
            Route("/map/world.svg", world),
            Route("/api/health", health),
            Route("/api/search", search, methods=["GET", "POST"]),
            Route("/image/{row:int}", image),
            Route("/entity/{qid}", entity),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(GZipMiddleware, minimum_size=1024)],
        exception_handlers={QueryError: refused},
    )
