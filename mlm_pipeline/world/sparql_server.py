"""A SPARQL 1.1 protocol endpoint on 127.0.0.1 that behaves like query.wikidata.org.

Behaviour a client must cope with on the real service is reproduced on purpose:

- a User-Agent against Wikimedia's policy (missing, browser-like, generic, without a contact):
  403 with the policy's text, counted as ``forbidden``;
- a second query from the same client (User-Agent) while one is running: 429 with
  ``Retry-After`` (WDQS allows one query at a time per client), counted as a ``violations``;
- a syntax error: 400 with the parser's message in a text body;
- a federated query (``SERVICE``): 400, never executed: the engine would fetch any URL it names,
  so a page in a local browser could make the endpoint request any address (``federated``);
- faults from the :class:`~mlm_pipeline.world.faults.FaultPlan` (key: the query text), so a
  retried query meets a fresh draw; ``redirect`` sends the query elsewhere (301, 302, 303, 307
  or 308 to ``/sparql?moved=1``, the same endpoint), where a POST query must be posted again.

Counters (``RunningServer.counters``): ``requests``, ``queries`` (answered), ``errors_400``,
``forbidden``, ``violations``, ``faults`` and ``fault:<kind>``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from pyoxigraph import QueryBoolean, QueryResultsFormat, QuerySolutions, RdfFormat, Store, serialize

from mlm_pipeline.world.faults import FaultPlan
from mlm_pipeline.world.serving import RunningServer, start_server
from mlm_pipeline.world.wiki_server import FORBIDDEN_BODY, user_agent_problem

PATH = "/sparql"
SPARQL_FAULTS = ("http429", "http5xx", "timeout", "truncate", "corrupt", "content_type", "redirect_loop", "garbage",
                 "redirect")
RESULTS_JSON = "application/sparql-results+json"

# What can hold the word SERVICE without being the keyword: comments, strings, IRIs, variables
# and prefixed names (``service:x``). The rest is read as words, so text this scanner does not
# understand (an unclosed string, say) counts against the query: it fails closed.
_NOT_KEYWORDS = re.compile(
    r'#[^\n]*|"""(?:[^"\\]|\\.|"(?!""))*"""'
    r"|'''(?:[^'\\]|\\.|'(?!''))*'''"
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|'(?:[^'\\\n]|\\.)*'"
    r'|<[^<>"{}|^`\\\x00-\x20]*>'
    r"|[?$]\w+|[\w.-]*:[\w.:%-]*"
)
_CODEPOINT = re.compile(r"\\u([0-9A-Fa-f]{4})|\\U([0-9A-Fa-f]{8})")


def federated(query: str) -> bool:
    """Whether ``query`` uses SERVICE (SPARQL 1.1 Federated Query), read as a parser reads it:
    after codepoint escapes, and not where the word is in a string, IRI, name or comment."""
    text = _CODEPOINT.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), query)
    return re.search(r"(?<!\w)service(?!\w)", _NOT_KEYWORDS.sub(" ", text), re.IGNORECASE) is not None


class _State:
    """What the handler shares across threads: the store, the fault plan, the clients in flight."""

    def __init__(self, store: Store, plan: FaultPlan) -> None:
        self.store = store
        self.plan = plan
        self.in_flight: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()


class SparqlHandler(BaseHTTPRequestHandler):
    server_version = "mlm-world-sparql/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet by design
        pass

    @property
    def running(self) -> RunningServer:
        return self.server.running  # type: ignore[attr-defined]

    @property
    def state(self) -> _State:
        return self.server.state  # type: ignore[attr-defined]

    # -- protocol --------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path != PATH:
            return self._send(404, b"not found; the endpoint is " + PATH.encode(), "text/plain")
        queries = parse_qs(url.query).get("query")
        self._handle(queries[0] if queries else None)

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path != PATH:
            return self._send(404, b"not found; the endpoint is " + PATH.encode(), "text/plain")
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind == "application/sparql-query":
            query = body.decode("utf-8", errors="replace")
        elif kind == "application/x-www-form-urlencoded":
            values = parse_qs(body.decode("utf-8", errors="replace")).get("query")
            query = values[0] if values else None
        else:
            return self._send(415, f"unsupported Content-Type {kind!r}".encode(), "text/plain")
        self._handle(query)

    # -- answering -------------------------------------------------------------------------------

    def _handle(self, query: str | None) -> None:
        running, state = self.running, self.state
        running.count("requests")
        agent = self.headers.get("User-Agent", "").strip()
        if user_agent_problem(agent):
            running.count("forbidden")
            return self._send(403, FORBIDDEN_BODY, "text/plain")
        if not query:
            running.count("errors_400")
            return self._send(400, b"no query given (parameter 'query')", "text/plain")
        with state.lock:
            busy = state.in_flight.get(agent, 0) > 0
            if not busy:
                state.in_flight[agent] = 1
        if busy:
            running.count("violations")
            return self._send(
                429, b"One query at a time per client.", "text/plain", {"Retry-After": _seconds(state.plan.retry_after)}
            )
        self._holder = agent
        try:
            self._answer(query)
        finally:
            self._release()

    def _release(self) -> None:
        """Free the client's slot before it can read the answer, so a sequential client never
        meets its own previous query still "running"."""
        agent = getattr(self, "_holder", None)
        if agent is not None:
            with self.state.lock:
                self.state.in_flight.pop(agent, None)
            self._holder = None

    def _answer(self, query: str) -> None:
        running, state, plan = self.running, self.state, self.state.plan
        if plan.latency:
            state.stopping.wait(plan.latency)
        key = hashlib.sha256(query.encode("utf-8")).hexdigest()
        fault = plan.next("sparql", key, SPARQL_FAULTS)
        if fault:
            running.count("faults")
            running.count(f"fault:{fault}")
        if fault == "http429":
            return self._send(429, b"Too Many Requests", "text/plain", {"Retry-After": _seconds(plan.retry_after)})
        if fault == "http5xx":
            status = int(plan.pick("sparql", key, [500, 502, 503, 504]))  # type: ignore[call-overload]
            return self._send(status, b"upstream trouble", "text/plain")
        if fault == "timeout":
            self._release()  # the answer is lost, not still running: a retry is no violation
            state.stopping.wait(plan.hang)
            self.close_connection = True
            return
        if fault == "redirect_loop":
            return self._send(302, b"", "text/plain", {"Location": self.path})
        if fault == "redirect":
            status = int(plan.pick("sparql", key, [301, 302, 303, 307, 308]))  # type: ignore[call-overload]
            moved = self.path + ("&" if "?" in self.path else "?") + "moved=1"
            return self._send(status, b"", "text/plain", {"Location": moved})
        try:
            body, content_type = self._execute(query)
        except SyntaxError as error:
            running.count("errors_400")
            return self._send(400, f"MalformedQueryException: {error}".encode(), "text/plain")
        except (ValueError, OSError) as error:
            running.count("errors_500")
            return self._send(500, f"query failed: {error}".encode(), "text/plain")
        if fault == "garbage":
            return self._send(200, b"<html><body>Service temporarily unavailable</body></html>", content_type)
        if fault == "content_type":
            return self._send(200, b"<!DOCTYPE html><title>Wikimedia Error</title>", "text/html; charset=utf-8")
        if fault == "truncate":
            return self._send(200, body[: max(1, len(body) // 2)], content_type)
        if fault == "corrupt":
            mangled = bytearray(body)
            for i in range(0, len(mangled), 97):
                mangled[i] = 0xFF
            return self._send(200, bytes(mangled), content_type)
        running.count("queries")
        self._send(200, body, content_type)

    def _execute(self, query: str) -> tuple[bytes, str]:
        if federated(query):
            self.running.count("refused_service")
            raise SyntaxError("SERVICE (federated query) is refused: this endpoint never fetches other URLs")
        result = self.state.store.query(query)
        if isinstance(result, (QuerySolutions, QueryBoolean)):
            return result.serialize(format=QueryResultsFormat.JSON), f"{RESULTS_JSON}; charset=utf-8"
        return serialize(result, format=RdfFormat.N_TRIPLES), "application/n-triples"

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._release()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _seconds(value: float) -> str:
    return str(max(0, round(value))) if value >= 1 or value == 0 else f"{value:g}"


def start_sparql_server(store: Store, faults: "str | FaultPlan" = "") -> RunningServer:
    """Serve ``store`` at ``<url>/sparql`` until ``.stop()``."""
    running = start_server("sparql", SparqlHandler)
    running.server.state = _State(store, FaultPlan.parse(faults))  # type: ignore[attr-defined]
    original_stop = running.stop

    def stop() -> None:
        running.server.state.stopping.set()  # type: ignore[attr-defined]
        original_stop()

    running.stop = stop  # type: ignore[method-assign]
    return running
