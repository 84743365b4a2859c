"""The embedded world's Wikipedias: a MediaWiki Action API per language answering TextExtracts.

``start_wiki_server(world, faults)`` serves ``/{lang}/w/api.php`` for en, de and fr on one
loopback port. It answers what the pipeline asks the real API::

    action=query&prop=extracts|info&exintro=1&explaintext=1&titles=A|B|...&format=json[&formatversion=2][&redirects=1]

with the real API's shapes and limits: at most 50 titles a request (more: a warning, the rest
ignored); extracts for at most 20 pages a request (``exlimit`` max 20; without ``exintro`` only
one, and the whole article) with ``continue.excontinue`` for the rest; titles normalised
(underscores to spaces, first letter upper case) and reported in ``query.normalized``; redirects
resolved with ``redirects=1`` and reported in ``query.redirects``; pages that do not exist
marked ``missing``; invalid titles marked ``invalid``; with ``prop=info`` each existing page's
``lastrevid`` (a stable id of its current text: a new text is a new revision) and ``length``.
Extracts are the world's intro texts
(:mod:`mlm_pipeline.world.texts`) or, for a world made from a person's files, their summaries.

Wikimedia's rules for clients (User-Agent policy, API:Etiquette, Manual:Maxlag_parameter) are
enforced as the real services do, and every breach is counted (``violations`` and
``violation:<kind>``) so that tests can assert the pipeline causes none:

- ``user_agent``: a missing, browser-like (``Mozilla/...``) or generic library User-Agent, or
  one without contact information, gets 403 with Wikimedia's text naming the User-Agent policy;
- ``concurrency``: a second Action API request from one client (User-Agent and IP) to one wiki
  while the first is in flight (the etiquette: "make your requests in series") gets 429 with
  ``Retry-After``, as does a media request beyond the media limit (Commons);
- ``maxlag``: an Action API request without the ``maxlag`` parameter (Wikimedia asks every
  non-interactive client to send ``maxlag=5``); it is answered all the same;
- ``retry_after``: asking for the same thing again before a ``Retry-After`` (of a 429 or a
  ``maxlag`` error) has run out.

Faults from a :class:`~mlm_pipeline.world.faults.FaultPlan` are injected after the rules are
checked (counted as ``faults`` and ``fault:<kind>``); the Action API can also be lagged
(``maxlag``: the documented error with ``Retry-After`` and ``X-Database-Lag``) and answer far too
much (``oversize``: the JSON padded past ``OVERSIZE_BYTES``). Other counters: ``requests``,
``status:<code>``, ``served:<endpoint>``, ``api:titles`` (titles asked for),
``max_inflight:<bucket>``. :func:`served_counts` gives how often each request key was answered
with a 200, for tests that check nothing is fetched twice.

The request handling shared with the Commons server (:mod:`mlm_pipeline.world.commons_server`)
lives here in :class:`RuleServerHandler`.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from mlm_pipeline.world.faults import FaultPlan
from mlm_pipeline.world.imagegen import corrupted
from mlm_pipeline.world.serving import RunningServer, start_server
from mlm_pipeline.world.texts import LANGS, PlaceFacts, full_text, intro

API_CONCURRENCY = 1  # Action API requests in flight per client and wiki: "in series", says API:Etiquette
MAX_TITLES = 50  # the Action API's limit for ordinary clients
OVERSIZE_BYTES = 32 * 1024 * 1024  # an oversized answer: past every client's default size limit
LAG_S = 7  # the replication lag a ``maxlag`` fault reports: over the maxlag=5 clients send
EXTRACTS_LIMIT = 20  # TextExtracts' exlimit maximum for intro extracts
HTTP5XX = [500, 502, 503, 504]
API_FAULTS = ("http429", "http5xx", "timeout", "truncate", "corrupt", "content_type", "redirect_loop", "oversize",
              "garbage", "maxlag")
FORBIDDEN_BODY = (
    b"Please set a user-agent and respect our robot policy https://w.wiki/4wJS. "
    b"See also https://meta.wikimedia.org/wiki/User-Agent_policy\n"
)
GENERIC_AGENTS = re.compile(
    r"^(python-requests|python-urllib|python-httpx|aiohttp|python/[\d.]+ aiohttp|curl|wget|go-http-client|"
    r"java|okhttp|libwww-perl|axios|node-fetch|undici|httpie|scrapy)\b",
    re.IGNORECASE,
)
CONTACT = re.compile(r"\([^)]*(https?://|@|www\.)[^)]*\)?")
CLIENT_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*/[A-Za-z0-9][^\s]*")


def user_agent_problem(agent: str | None) -> str | None:
    """Why Wikimedia would refuse this User-Agent, or None when it follows the policy.

    The policy asks for ``<client>/<version> (<contact URL or e-mail>) <library>/<version>``;
    browser-like and bare library agents are treated as abuse.
    """
    agent = (agent or "").strip()
    if not agent:
        return "missing"
    if agent.lower().startswith("mozilla/"):
        return "browser-like"
    if GENERIC_AGENTS.match(agent):
        return "generic library agent"
    if not CLIENT_VERSION.match(agent):
        return "no client/version"
    if not CONTACT.search(agent):
        return "no contact (URL or e-mail in parentheses)"
    return None


@dataclass
class Reply:
    """One answer before faults are applied: status, headers and the complete body."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    served: str = ""  # counter name for a successful answer, e.g. "api" or "thumb"
    kind: str = "text"  # "json", "image", "svg", "redirect", "text": how faults damage it


def json_reply(data: Any, served: str) -> Reply:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Reply(200, body, "application/json; charset=utf-8", served=served, kind="json")


def error_page(status: int, message: str) -> Reply:
    body = (
        f"<!DOCTYPE html><html><head><title>{status}</title></head>"
        f"<body><h1>{status}</h1><p>{html.escape(message)}</p></body></html>\n"
    ).encode("utf-8")
    return Reply(status, body, "text/html; charset=utf-8")


@dataclass
class Route:
    """What a request is: its concurrency bucket, its identity for faults, and how to answer it."""

    bucket: str
    key: str
    answer: Callable[[], Reply]
    fault_kinds: tuple[str, ...]  # the faults this endpoint can suffer
    action_api: bool = False  # an ``api.php`` request: the API's etiquette (maxlag) applies


class RuleState:
    """Per-server bookkeeping: requests in flight per client, pending Retry-Afters, served keys."""

    def __init__(self, name: str, plan: FaultPlan, limits: dict[str, int]) -> None:
        self.name = name
        self.plan = plan
        self.limits = limits  # bucket prefix -> concurrency per client
        self.lock = threading.Lock()
        self.inflight: Counter[tuple[str, str]] = Counter()
        self.quiet_until: dict[tuple[str, str], float] = {}
        self.served: Counter[str] = Counter()

    def limit(self, bucket: str) -> int:
        return self.limits.get(bucket.split(":", 1)[0], 1_000_000)


def served_counts(running: RunningServer) -> Counter[str]:
    """How many times each request key got a successful answer (e.g. ``thumb:<name>:250``)."""
    state: RuleState = running.server.state  # type: ignore[attr-defined]
    with state.lock:
        return Counter(state.served)


class RuleServerHandler(BaseHTTPRequestHandler):
    """Checks Wikimedia's client rules, injects faults, and writes a route's reply.

    Subclasses implement ``route(path, params)`` returning a :class:`Route` (or a :class:`Reply`
    for answers outside the rules, such as 404s for unknown paths).
    """

    protocol_version = "HTTP/1.1"
    server_version = "mlm-world"
    sys_version = ""
    timeout = 60  # idle keep-alive connections close after this

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK stall every keep-alive answer by about 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
        return

    @property
    def running(self) -> RunningServer:
        return self.server.running  # type: ignore[attr-defined]

    @property
    def state(self) -> RuleState:
        return self.server.state  # type: ignore[attr-defined]

    def route(self, path: str, params: dict[str, str]) -> Route | Reply:
        raise NotImplementedError

    # -- request entry points ----------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle(b"")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(b"", head=True)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length) if length > 0 else b"")

    def _handle(self, form: bytes, head: bool = False) -> None:
        self.running.count("requests")
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if form:
            params.update(parse_qsl(form.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            target = self.route(parts.path, params)
        except Exception as exc:  # a bug here must show as a 500, not a dropped connection
            target = error_page(500, f"{type(exc).__name__}: {exc}")
        if isinstance(target, Reply):
            self._write(target, head=head)
            return
        agent = self.headers.get("User-Agent")
        problem = user_agent_problem(agent)
        if problem:
            self._violation("user_agent")
            self._write(Reply(403, FORBIDDEN_BODY), head=head)
            return
        client = f"{agent}|{self.client_address[0]}"
        now = time.monotonic()
        bucket_key = (client, target.bucket)
        with self.state.lock:
            early = self.state.quiet_until.get((client, target.key), 0.0) - now > 0.05
            over = self.state.inflight[bucket_key] >= self.state.limit(target.bucket)
            if not over:
                self.state.inflight[bucket_key] += 1
                peak = self.state.inflight[bucket_key]
        if early:
            self._violation("retry_after")
        if target.action_api and "maxlag" not in params:
            self._violation("maxlag")
        if over:
            self._violation("concurrency")
            self._write(self._too_many(client, target.key, "concurrency"), head=head)
            return
        with self.running.lock:
            name = f"max_inflight:{target.bucket.split(':', 1)[0]}"
            self.running.counters[name] = max(self.running.counters.get(name, 0), peak)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                with self.state.lock:
                    self.state.inflight[bucket_key] -= 1

        try:
            plan = self.state.plan
            if plan.latency > 0:
                time.sleep(plan.latency)
            fault = plan.next(self.state.name, target.key, target.fault_kinds)
            if fault is None:
                reply = target.answer()
            else:
                self.running.count("faults")
                self.running.count(f"fault:{fault}")
                if fault == "timeout":
                    release()  # the client gives up on it; it must not count against the client
                    self._hang(plan.hang)
                    return
                reply = self._faulty(fault, target, client)
            if reply.status in (200, 302) and reply.served and fault is None:
                self.running.count(f"served:{reply.served}")
                with self.state.lock:
                    self.state.served[target.key] += 1
            # Free the slot before the last byte leaves: a client that starts its next request
            # the moment this one completes must not be counted as over its limit.
            release()
            self._write(reply, head=head, truncate=fault == "truncate")
        finally:
            release()

    # -- rules and faults --------------------------------------------------------------------

    def _violation(self, kind: str) -> None:
        self.running.count("violations")
        self.running.count(f"violation:{kind}")

    def _quiet(self, client: str, key: str) -> str:
        """Ask this client not to repeat ``key`` for the plan's ``retry_after``; the header value."""
        seconds = self.state.plan.retry_after
        with self.state.lock:
            self.state.quiet_until[(client, key)] = time.monotonic() + seconds
        return str(int(math.ceil(seconds)))

    def _too_many(self, client: str, key: str, why: str) -> Reply:
        reply = error_page(429, f"Too many requests ({why}). Please respect Retry-After.")
        reply.headers["Retry-After"] = self._quiet(client, key)
        return reply

    def _lagged(self, client: str, key: str) -> Reply:
        """The Action API's answer while replicas lag more than the client's ``maxlag``: HTTP 200."""
        host = f"db{1000 + int(hashlib.blake2b(key.encode(), digest_size=2).hexdigest(), 16) % 200}"
        info = f"Waiting for {host}: {LAG_S} seconds lagged."
        reply = json_reply({"error": {"code": "maxlag", "info": info, "host": host, "lag": LAG_S}}, "")
        reply.headers.update({"Retry-After": self._quiet(client, key), "X-Database-Lag": str(LAG_S)})
        return reply

    def _hang(self, seconds: float) -> None:
        """Say nothing for ``seconds`` (or until the server stops), then drop the connection."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.server.socket.fileno() != -1:
            time.sleep(0.05)
        self.close_connection = True

    def _faulty(self, fault: str, target: Route, client: str) -> Reply:
        plan, name = self.state.plan, self.state.name
        if fault == "http429":
            return self._too_many(client, target.key, "injected")
        if fault == "maxlag":
            return self._lagged(client, target.key)
        if fault == "http5xx":
            status = int(plan.pick(name, target.key, HTTP5XX))  # type: ignore[call-overload]
            return error_page(status, "Our servers are currently under maintenance or experiencing a technical problem.")
        if fault == "redirect_loop":
            token = hashlib.blake2b(target.key.encode("utf-8"), digest_size=6).hexdigest()
            return Reply(302, b"", headers={"Location": f"/loop/{token}/a"}, kind="redirect")
        if fault == "content_type":
            page = error_page(200, "Wikimedia Error: our servers are having trouble.")
            return page
        if fault == "garbage":
            noise = hashlib.shake_256(f"{plan.seed}|{target.key}".encode("utf-8")).digest(2048)
            reply = target.answer()
            return Reply(200, noise, reply.content_type)
        reply = target.answer()
        if fault == "truncate":
            return reply
        return self.damage(fault, reply, target)

    def damage(self, fault: str, reply: Reply, target: Route) -> Reply:
        """``corrupt`` / ``oversize`` for this server's kinds of answers (subclasses add images)."""
        if fault == "corrupt" and reply.body:
            return Reply(reply.status, corrupted(reply.body, target.key), reply.content_type, dict(reply.headers))
        if fault == "oversize" and reply.kind == "json":  # still valid JSON, just far too much of it
            return Reply(reply.status, reply.body + b" " * OVERSIZE_BYTES, reply.content_type, dict(reply.headers))
        return reply

    def loop_reply(self, path: str) -> Reply | None:
        """The two halves of an injected redirect loop: /loop/<token>/a -> .../b -> .../a."""
        match = re.fullmatch(r"/loop/([0-9a-f]+)/([ab])", path)
        if not match:
            return None
        other = "b" if match.group(2) == "a" else "a"
        return Reply(302, b"", headers={"Location": f"/loop/{match.group(1)}/{other}"}, kind="redirect")

    # -- writing -----------------------------------------------------------------------------

    def _write(self, reply: Reply, head: bool = False, truncate: bool = False) -> None:
        self.running.count(f"status:{reply.status}")
        body = reply.body
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if truncate:
                self.send_header("Connection", "close")
            self.end_headers()
            if head:
                return
            if truncate:
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)
            self.running.count("bytes_sent", len(body))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# --- the Wikipedias ---------------------------------------------------------------------------


def normalize_title(raw: str) -> str | None:
    """MediaWiki's title normalisation for the main namespace; None for an invalid title."""
    title = re.sub(r"[ _]+", " ", raw).strip()
    if not title or any(ch in title for ch in "<>[]{}|#") or len(title.encode("utf-8")) > 255:
        return None
    first = title[0].upper()
    return (first if len(first) == 1 else title[0]) + title[1:]


def page_id(lang: str, title: str) -> int:
    digest = hashlib.blake2b(f"{lang}|{title}".encode("utf-8"), digest_size=8).digest()
    return 1000 + int.from_bytes(digest, "big") % 90_000_000


def revision_id(lang: str, title: str, text: str) -> int:
    """The page's latest revision: the same text keeps its id, an edited one gets another."""
    digest = hashlib.blake2b(f"{lang}|{title}|{text}".encode("utf-8"), digest_size=8).digest()
    return 100_000_000 + int.from_bytes(digest, "big") % 1_900_000_000


def _admin_name(place: Any) -> str:
    """A name for the first-level division where GeoNames gives one (US states); codes stay out of texts."""
    if getattr(place, "country_code", None) != "US" or not getattr(place, "admin1", ""):
        return ""
    from mlm_pipeline.world import geonames

    return geonames.load_us_states().get(place.admin1, "")


def place_facts(world: Any, place: Any) -> PlaceFacts:
    """The facts an intro may state, looked up in the world (class and country names)."""
    lat, lon = (place.coords[0][0], place.coords[0][1]) if place.coords else (None, None)
    kind = next((world.classes[q].label_en for q in place.classes if q in world.classes and world.classes[q].label_en), "")
    country = world.countries.get(place.country_qid or "")
    return PlaceFacts(
        key=place.qid,
        name=place.labels.get("en") or place.name,
        kind_en=kind,
        country_code=place.country_code or "",
        country=dict(country.labels) if country is not None else {},
        lat=lat,
        lon=lon,
        population=place.population or None,
        admin=_admin_name(place),
        continent=place.continent or "",
        scenery=getattr(place, "scenery", None),
    )


@dataclass
class Page:
    title: str
    pageid: int
    place: Any


class WikiIndex:
    """Per language: the pages (articles), the redirects to them, and the texts behind them.

    From the world's places: ``pages[lang]`` is the title of the page holding the article,
    ``redirects[lang]`` the page a sitelink title redirects to, and ``missing_articles`` the
    languages whose sitelinked page does not exist. A place's own ``summaries`` (worlds made
    from a person's files) replace the generated intro.
    """

    def __init__(self, world: Any) -> None:
        self.world = world
        self.pages: dict[str, dict[str, Page]] = {lang: {} for lang in LANGS}
        self.redirects: dict[str, dict[str, str]] = {lang: {} for lang in LANGS}
        for place in world.places:
            for lang, title in place.pages.items():
                normal = normalize_title(title)
                if lang in self.pages and normal is not None and lang not in place.missing_articles:
                    self.pages[lang].setdefault(normal, Page(normal, page_id(lang, normal), place))
            for lang, target in place.redirects.items():
                source, normal_target = normalize_title(place.sitelinks.get(lang, "")), normalize_title(target)
                if lang in self.redirects and source and normal_target and source != normal_target:
                    self.redirects[lang][source] = normal_target

    def extract(self, lang: str, page: Page, whole: bool) -> str:
        own = (getattr(page.place, "summaries", None) or {}).get(lang)
        if own is not None:
            return own
        facts = place_facts(self.world, page.place)
        return full_text(facts, lang) if whole else intro(facts, lang)


def _flag(value: str | None) -> bool:
    """MediaWiki boolean parameters are true when present, whatever their value."""
    return value is not None


def _warn(warnings: dict[str, list[str]], module: str, text: str) -> None:
    warnings.setdefault(module, []).append(text)


def query_extracts(index: WikiIndex, lang: str, params: dict[str, str]) -> dict[str, Any]:
    """The Action API's ``action=query`` answer for titles (with ``prop=extracts`` if asked)."""
    fv2 = params.get("formatversion") in ("2", "latest")
    warnings: dict[str, list[str]] = {}
    props = [p for p in params.get("prop", "").split("|") if p]
    for prop in props:
        if prop not in ("extracts", "info"):
            _warn(warnings, "query", f'Unrecognized value for parameter "prop": {prop}')
    raw_titles = [t for t in params.get("titles", "").split("|")] if params.get("titles") else []
    if len(raw_titles) > MAX_TITLES:
        _warn(warnings, "main", f'Too many values supplied for parameter "titles". The limit is {MAX_TITLES}.')
        raw_titles = raw_titles[:MAX_TITLES]
    normalized: list[dict[str, Any]] = []
    redirects: list[dict[str, str]] = []
    invalid: list[dict[str, Any]] = []
    wanted: list[str] = []
    follow = _flag(params.get("redirects"))
    for raw in raw_titles:
        title = normalize_title(raw)
        if title is None:
            invalid.append({"title": raw, "invalidreason": f'The requested page title contains invalid characters: "{raw}".', "invalid": True})
            continue
        if title != raw:
            entry = {"fromencoded": False, "from": raw, "to": title}
            if entry not in normalized:
                normalized.append(entry)
        if follow and title in index.redirects[lang]:
            target = index.redirects[lang][title]
            if {"from": title, "to": target} not in redirects:
                redirects.append({"from": title, "to": target})
            title = target
        if title not in wanted:
            wanted.append(title)
    existing = sorted((index.pages[lang][t] for t in wanted if t in index.pages[lang]), key=lambda p: p.pageid)
    missing = [t for t in wanted if t not in index.pages[lang] and t not in index.redirects[lang]]
    redirect_pages = [t for t in wanted if t in index.redirects[lang]]  # asked for without redirects=1

    extracts: dict[int, str] = {}
    cont: dict[str, Any] | None = None
    if "extracts" in props:
        whole = not _flag(params.get("exintro"))
        limit_text = params.get("exlimit", "max" if not whole else str(EXTRACTS_LIMIT))
        try:
            limit = EXTRACTS_LIMIT if limit_text == "max" else int(limit_text)
        except ValueError:
            return {"error": {"code": "badinteger", "info": f'Invalid value "{limit_text}" for integer parameter "exlimit".'}}
        if limit > EXTRACTS_LIMIT:
            _warn(warnings, "extracts", f'"exlimit" may not be over {EXTRACTS_LIMIT} (set to {EXTRACTS_LIMIT}) for users.')
            limit = EXTRACTS_LIMIT
        if whole and limit > 1:
            _warn(warnings, "extracts", "exlimit was too large for a whole article extracts request, lowered to 1.")
            limit = 1
        try:
            offset = int(params.get("excontinue", "0"))
        except ValueError:
            return {"error": {"code": "badinteger", "info": 'Invalid value for integer parameter "excontinue".'}}
        batch = existing[offset : offset + max(limit, 1)]
        plain = _flag(params.get("explaintext"))
        for page in batch:
            text = index.extract(lang, page, whole)
            extracts[page.pageid] = text if plain else "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n\n"))
        if offset + len(batch) < len(existing):
            cont = {"excontinue": offset + len(batch), "continue": "||"}
            _warn(warnings, "extracts", f"Only {len(batch)} of {len(existing)} extracts in this answer; continue with excontinue={offset + len(batch)}.")

    pages_v2: list[dict[str, Any]] = []
    for title in missing:
        pages_v2.append({"ns": 0, "title": title, "missing": True})
    for title in redirect_pages:
        pages_v2.append({"pageid": page_id(lang, title), "ns": 0, "title": title, "extract": ""} if "extracts" in props
                        else {"pageid": page_id(lang, title), "ns": 0, "title": title})
    for page in existing:
        entry: dict[str, Any] = {"pageid": page.pageid, "ns": 0, "title": page.title}
        if "info" in props:
            whole = index.extract(lang, page, True)
            entry.update(lastrevid=revision_id(lang, page.title, whole), length=len(whole.encode("utf-8")))
        if page.pageid in extracts:
            entry["extract"] = extracts[page.pageid]
        pages_v2.append(entry)
    for entry in invalid:
        pages_v2.append(entry)

    query: dict[str, Any] = {}
    if normalized:
        query["normalized"] = normalized
    if redirects:
        query["redirects"] = redirects
    out: dict[str, Any] = {}
    if cont is None:
        out["batchcomplete"] = True if fv2 else ""
    else:
        out["continue"] = cont
    if warnings:
        text_key = "warnings" if fv2 else "*"
        out["warnings"] = {module: {text_key: "\n".join(texts)} for module, texts in warnings.items()}
    if fv2:
        if pages_v2:
            query["pages"] = pages_v2
    else:
        for item in normalized:
            item.pop("fromencoded", None)
        pages_v1: dict[str, Any] = {}
        negative = -1
        for entry in pages_v2:
            entry = dict(entry)
            if entry.pop("missing", False):
                entry["missing"] = ""
                pages_v1[str(negative)] = entry
                negative -= 1
            elif entry.pop("invalid", False):
                entry["invalid"] = ""
                pages_v1[str(negative)] = entry
                negative -= 1
            else:
                pages_v1[str(entry["pageid"])] = entry
        if pages_v1:
            query["pages"] = pages_v1
    if query:
        out["query"] = query
    return out


def api_error(code: str, info: str) -> dict[str, Any]:
    return {"error": {"code": code, "info": info, "docref": "See /w/api.php for API usage."}}


def api_key(prefix: str, params: dict[str, str]) -> str:
    """A request's identity for fault decisions and served counts: its parameters, sorted."""
    return prefix + "?" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))


class WikiHandler(RuleServerHandler):
    index: WikiIndex

    def route(self, path: str, params: dict[str, str]) -> Route | Reply:
        loop = self.loop_reply(path)
        if loop is not None:
            return loop
        match = re.fullmatch(r"/(\w+)/w/api\.php", path)
        if not match or match.group(1) not in LANGS:
            return error_page(404, f"No wiki at {path}")
        lang = match.group(1)
        return Route(
            bucket=f"api:{lang}",
            key=api_key(f"{lang}/api", params),
            answer=lambda: self._answer(lang, params),
            fault_kinds=API_FAULTS,
            action_api=True,
        )

    def _answer(self, lang: str, params: dict[str, str]) -> Reply:
        if params.get("format", "json") != "json":
            return json_reply(api_error("badvalue", 'Only format=json is served here.'), "")
        action = params.get("action")
        if action is None:
            return json_reply(api_error("missingparam", 'The "action" parameter must be set.'), "")
        if action != "query":
            return json_reply(api_error("badvalue", f'Unrecognized value for parameter "action": {action}.'), "")
        titles = params.get("titles", "")
        self.running.count("api:titles", len(titles.split("|")) if titles else 0)
        return json_reply(query_extracts(self.index, lang, params), "api")


def start_wiki_server(world: Any, faults: str | FaultPlan = "") -> RunningServer:
    """Serve the world's en/de/fr Wikipedias at ``<url>/{lang}/w/api.php`` until ``.stop()``."""
    plan = FaultPlan.parse(faults)
    handler = type("BoundWikiHandler", (WikiHandler,), {"index": WikiIndex(world)})
    running = start_server("wiki", handler)
    running.server.state = RuleState("wiki", plan, {"api": API_CONCURRENCY})  # type: ignore[attr-defined]
    return running
