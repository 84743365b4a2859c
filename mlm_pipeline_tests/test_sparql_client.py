"""The SPARQL client against a real engine (pyoxigraph) behind a real loopback HTTP server that
misbehaves on cue: every fault ends in a retried success or an error naming the query, never in
a short answer; configuration is refused before a single request reaches the server."""

from __future__ import annotations

import email.utils
import json
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Iterator

import pyoxigraph as ox
import pytest

from mlm_pipeline.endpoints import ConfigError
from mlm_pipeline.sparql import queries as Q
from mlm_pipeline.sparql.client import (
    Query,
    QueryFailed,
    RetryPolicy,
    SparqlClient,
    TransientFailure,
    parse_results,
)
from mlm_pipeline.sparql.closure import fetch_closure
from mlm_pipeline.sparql.extraction import ExtractionSettings
from mlm_pipeline.world.serving import RunningServer, start_server

TTL = """
@prefix wd: <http://www.wikidata.org/entity/> . @prefix wdt: <http://www.wikidata.org/prop/direct/> .
@prefix schema: <http://schema.org/> . @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
<http://www.wikidata.org> schema:dateModified "2026-01-05T00:00:00Z"^^<http://www.w3.org/2001/XMLSchema#dateTime> .
wd:Q15284 wdt:P279 wd:Q486972 ; rdfs:label "municipality"@en .
wd:Q747074 wdt:P279 wd:Q15284 ; rdfs:label "comune of Italy"@en .
wd:Q515 wdt:P279 wd:Q486972 ; rdfs:label "city"@en .
"""

EDGES = Q.subclasses_query(["Q486972", "Q15284"], 100, 0)


class Endpoint:
    """A scripted SPARQL endpoint: ``script`` lists what to do with the next requests."""

    def __init__(self) -> None:
        self.store = ox.Store()
        self.store.load(TTL.encode(), format=ox.RdfFormat.TURTLE)
        self.script: list[str] = []
        self.agents: list[str] = []
        self.calls: list[tuple[str, str, str | None]] = []  # method, path, the query it carried
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        self.server: RunningServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url + "/sparql"

    @property
    def requests(self) -> int:
        assert self.server is not None
        return self.server.counters.get("requests", 0)

    def answer(self, text: str) -> bytes:
        return self.store.query(text).serialize(format=ox.QueryResultsFormat.JSON)


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # what a client that turns a redirected POST into a GET sends
            self.server.running.count("requests")  # type: ignore[attr-defined]
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("query", [None])[0]
            with endpoint.lock:
                endpoint.calls.append(("GET", self.path, query))
            self.send(400, b"no query given (parameter 'query')", "text/plain")

        def do_POST(self) -> None:
            self.server.running.count("requests")  # type: ignore[attr-defined]
            length = int(self.headers.get("Content-Length", 0))
            query = urllib.parse.parse_qs(self.rfile.read(length).decode())["query"][0]
            with endpoint.lock:
                endpoint.calls.append(("POST", self.path, query))
                endpoint.agents.append(self.headers.get("User-Agent", ""))
                action = endpoint.script.pop(0) if endpoint.script else "ok"
            if not action.startswith("ok"):
                self.act(action, query)
                return
            # Concurrency is measured over answered requests only: a "timeout" handler of an
            # earlier test may still be hanging, and the client has rightly given up on it.
            with endpoint.lock:
                endpoint.in_flight += 1
                endpoint.most_in_flight = max(endpoint.most_in_flight, endpoint.in_flight)
            try:
                self.act(action, query)
            finally:
                with endpoint.lock:
                    endpoint.in_flight -= 1

        def act(self, action: str, query: str) -> None:
            json_type = "application/sparql-results+json"
            kind, _, arg = action.partition(":")
            if kind == "ok":
                time.sleep(float(arg or 0))
                try:
                    body = endpoint.answer(query)
                except (SyntaxError, ValueError, OSError) as error:
                    self.send(400, f"bad query: {error}".encode(), "text/plain")
                    return
                self.send(200, body, json_type)
            elif kind == "429":
                self.send(429, b"slow down", "text/plain", {"Retry-After": arg})
            elif kind == "redirect":  # the endpoint moved (or a balancer sends us on)
                self.send(int(arg), b"", "text/plain", {"Location": "/sparql?moved=1"})
            elif kind == "403agent":
                self.send(403, b"Please set a user-agent and respect our robot policy https://w.wiki/4wJS.", "text/plain")
            elif kind in ("500", "502", "503", "504"):
                self.send(int(kind), b"busy", "text/html")
            elif kind == "timeout":
                time.sleep(float(arg))
                self.close_connection = True
            elif kind == "truncate":  # a Content-Length promise broken half way
                body = endpoint.answer(query)
                self.send_response(200)
                self.send_header("Content-Type", json_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
            elif kind == "cut":  # no length at all, the connection simply ends early
                body = endpoint.answer(query)
                self.send_response(200)
                self.send_header("Content-Type", json_type)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
            elif kind == "garbage":
                self.send(200, b"\x00\xffnot json at all", json_type)
            elif kind == "content_type":
                self.send(200, b"<html><body>Service unavailable</body></html>", "text/html")
            elif kind == "wrong_vars":
                self.send(200, json.dumps({"head": {"vars": ["x"]}, "results": {"bindings": []}}).encode(), json_type)
            else:
                raise AssertionError(f"unknown script action {action}")

    return Handler


@pytest.fixture(scope="module")
def served_endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    ep.server = start_server("scripted-sparql", _handler(ep))
    try:
        yield ep
    finally:
        ep.server.stop()


@pytest.fixture
def endpoint(served_endpoint: Endpoint) -> Endpoint:
    """The module's server with a fresh script and fresh counters."""
    ep = served_endpoint
    assert ep.server is not None
    with ep.lock, ep.server.lock:
        ep.script, ep.agents, ep.calls, ep.most_in_flight = [], [], [], 0
        ep.server.counters.clear()
    return ep


class Waits(list):
    """Records the client's back-off instead of sleeping through it (tests stay fast)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(endpoint: Endpoint, waits: Waits | None = None, **policy: float) -> SparqlClient:
    settings = dict(max_attempts=4, backoff_base_s=0.5, timeout_s=1.0, connect_timeout_s=1.0)
    settings.update(policy)
    return SparqlClient(endpoint.url, "mlm-pipeline-test/0 (test@example.org)", RetryPolicy(**settings), sleep=waits if waits is not None else Waits(), seed=1)


def expected_edges(endpoint: Endpoint) -> list[tuple[str, str]]:
    rows = json.loads(endpoint.answer(EDGES.text))["results"]["bindings"]
    return [(r["child"]["value"], r["parent"]["value"]) for r in rows]


def edges(rows: list) -> list[tuple[str, str]]:
    return [(r["child"].value, r["parent"].value) for r in rows]


@pytest.mark.parametrize(
    "fault",
    ["429:0", "500", "502", "503", "504", "timeout:1.5", "truncate", "cut", "garbage", "content_type", "wrong_vars"],
)
def test_each_fault_is_retried_until_the_complete_answer(endpoint: Endpoint, fault: str) -> None:
    endpoint.script = [fault, fault]
    waits = Waits()
    with client_for(endpoint, waits) as client:
        rows = client.select(EDGES)
    assert edges(rows) == expected_edges(endpoint) and len(rows) == 3
    assert endpoint.requests == 3
    assert client.stats.retries == 2 and len(waits) == 2
    assert client.stats.queries == 1


def test_retry_after_in_seconds_is_honoured(endpoint: Endpoint) -> None:
    endpoint.script = ["429:7"]
    waits = Waits()
    with client_for(endpoint, waits) as client:
        client.select(EDGES)
    assert len(waits) == 1 and waits[0] >= 7


def test_retry_after_as_http_date_is_honoured(endpoint: Endpoint) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    endpoint.script = ["429:" + email.utils.format_datetime(when, usegmt=True)]
    waits = Waits()
    with client_for(endpoint, waits) as client:
        client.select(EDGES)
    assert len(waits) == 1 and 25 <= waits[0] <= 31


def test_back_off_grows_exponentially_with_jitter(endpoint: Endpoint) -> None:
    endpoint.script = ["503"] * 3
    waits = Waits()
    with client_for(endpoint, waits, backoff_base_s=1.0) as client:
        client.select(EDGES)
    for attempt, wait in enumerate(waits, start=1):
        step = 2 ** (attempt - 1)
        assert step / 2 <= wait <= step
    assert waits[2] > waits[0]


def test_exhausted_retries_fail_with_the_query_named(endpoint: Endpoint) -> None:
    endpoint.script = ["503"] * 10
    with client_for(endpoint) as client, pytest.raises(QueryFailed) as failure:
        client.select(EDGES)
    message = str(failure.value)
    assert EDGES.label in message and "HTTP 503" in message and "4 attempts" in message
    assert endpoint.requests == 4


def test_a_retry_after_beyond_the_limit_fails_at_once(endpoint: Endpoint) -> None:
    endpoint.script = ["429:3600"]
    waits = Waits()
    with client_for(endpoint, waits, max_retry_after_s=600) as client, pytest.raises(QueryFailed) as failure:
        client.select(EDGES)
    assert "3600" in str(failure.value) and EDGES.label in str(failure.value)
    assert endpoint.requests == 1 and waits == []


def test_a_rejected_query_is_not_retried(endpoint: Endpoint) -> None:
    broken = Query("broken", "SELECT ?x WHERE { ?x ", ("x",))
    with client_for(endpoint) as client, pytest.raises(QueryFailed) as failure:
        client.select(broken)
    assert "HTTP 400" in str(failure.value) and broken.label in str(failure.value)
    assert endpoint.requests == 1


def test_a_paged_listing_fails_whole_when_one_page_keeps_failing(endpoint: Endpoint) -> None:
    """A page that cannot be fetched fails the listing; the pages before it are not returned."""
    endpoint.script = ["ok", "503", "503", "503", "503"]
    with client_for(endpoint) as client, pytest.raises(QueryFailed):
        Q.select_all(client, lambda limit, offset: Q.subclasses_query(["Q486972", "Q15284"], limit, offset), 1)


def test_queries_go_one_at_a_time_with_the_agent_given(endpoint: Endpoint) -> None:
    endpoint.script = ["ok:0.05"] * 8
    with client_for(endpoint) as client:
        threads = [threading.Thread(target=client.select, args=(EDGES,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert endpoint.requests == 8 and endpoint.most_in_flight == 1
    assert set(endpoint.agents) == {"mlm-pipeline-test/0 (test@example.org)"}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_query_is_posted_again_where_the_redirect_points(endpoint: Endpoint, status: int) -> None:
    endpoint.script = [f"redirect:{status}", "ok"]
    with client_for(endpoint) as client:
        rows = client.select(EDGES)
    assert edges(rows) == expected_edges(endpoint)
    assert endpoint.calls == [("POST", "/sparql", EDGES.text), ("POST", "/sparql?moved=1", EDGES.text)]
    assert client.stats.redirects == 1 and client.stats.retries == 0


def test_redirects_are_followed_a_bounded_number_of_times(endpoint: Endpoint) -> None:
    endpoint.script = ["redirect:302"] * 20
    with client_for(endpoint, max_attempts=2, max_redirects=2) as client, pytest.raises(QueryFailed) as failure:
        client.select(EDGES)
    assert "more than 2 redirects" in str(failure.value) and EDGES.label in str(failure.value)
    assert endpoint.requests == 2 * 3 and all(method == "POST" for method, _, _ in endpoint.calls)


def test_a_refused_user_agent_is_named(endpoint: Endpoint) -> None:
    endpoint.script = ["403agent"]
    with client_for(endpoint) as client, pytest.raises(QueryFailed) as failure:
        client.select(EDGES)
    message = str(failure.value)
    assert "mlm-pipeline-test/0 (test@example.org)" in message and "MLM_CONTACT" in message
    assert "the query or the endpoint URL is wrong" not in message and endpoint.requests == 1


def test_sparqlwrapper_keeps_retry_after_but_loses_a_redirected_post_query(endpoint: Endpoint) -> None:
    """Why the client is not built on SPARQLWrapper: a 429 keeps its Retry-After (urllib's
    HTTPError carries the headers), but urllib turns a POST that meets a 302 into a GET without
    the query, so the server's 400 for the lost query reads as a malformed query."""
    from urllib.error import HTTPError

    from SPARQLWrapper import JSON, POST, SPARQLWrapper
    from SPARQLWrapper.SPARQLExceptions import QueryBadFormed

    from mlm_pipeline.backoff import parse_retry_after

    wrapper = SPARQLWrapper(endpoint.url, agent="mlm-pipeline-test/0 (test@example.org)")
    wrapper.setMethod(POST)
    wrapper.setReturnFormat(JSON)
    wrapper.setQuery(EDGES.text)
    endpoint.script = ["429:7"]
    with pytest.raises(HTTPError) as throttled:
        wrapper.query()
    assert throttled.value.code == 429 and parse_retry_after(throttled.value.headers["Retry-After"]) == 7.0
    endpoint.script = ["redirect:302"]
    with pytest.raises(QueryBadFormed):
        wrapper.query()
    assert [(method, query) for method, _, query in endpoint.calls[1:]] == [("POST", EDGES.text), ("GET", None)]


def test_results_must_be_complete_and_well_formed() -> None:
    good = {"head": {"vars": ["a"]}, "results": {"bindings": [{"a": {"type": "uri", "value": "x"}}]}}
    body = json.dumps(good).encode()
    assert parse_results(body, ("a",))[0]["a"].value == "x"
    bad = [
        body[:-3],
        b"",
        json.dumps({"head": {"vars": ["a"]}}).encode(),
        json.dumps({**good, "results": {"bindings": [{"b": {"type": "uri", "value": "x"}}]}}).encode(),
        json.dumps({**good, "results": {"bindings": [{"a": {"type": "thing", "value": "x"}}]}}).encode(),
        json.dumps({**good, "results": {"bindings": [{"a": {"type": "uri"}}]}}).encode(),
    ]
    for body in bad:
        with pytest.raises(TransientFailure):
            parse_results(body, ("a",))


@pytest.mark.parametrize(
    "make",
    [
        lambda url: fetch_closure(SparqlClient(url, "ua"), 'Q486972 } ?x ?y ?z . { ', 3),
        lambda url: fetch_closure(SparqlClient(url, "ua"), "486972", 3),
        lambda url: fetch_closure(SparqlClient(url, "ua"), "Q486972", -1),
        lambda url: ExtractionSettings(languages=("en", 'de") } #')),
        lambda url: ExtractionSettings(languages=("it",)),
        lambda url: ExtractionSettings(image_properties=("P18>",)),
        lambda url: ExtractionSettings(image_properties=("wdt:P18",)),
        lambda url: ExtractionSettings(image_properties=()),
        lambda url: ExtractionSettings(page_size=0),
        lambda url: Q.check_endpoint("sparql_endpoint", url + "?query=DROP ALL"),
        lambda url: Q.check_endpoint("sparql_endpoint", "file:///etc/passwd"),
        lambda url: Q.check_endpoint("sparql_endpoint", url + '/"><'),
    ],
    ids=[
        "class-injection",
        "class-without-Q",
        "negative-hops",
        "language-injection",
        "language-without-column",
        "property-injection",
        "property-with-prefix",
        "no-properties",
        "page-size-zero",
        "endpoint-query-string",
        "endpoint-not-http",
        "endpoint-quotes",
    ],
)
def test_bad_configuration_is_refused_before_any_request(endpoint: Endpoint, make) -> None:
    with pytest.raises(ConfigError) as failure:
        make(endpoint.url)
    assert "=" in str(failure.value) or ":" in str(failure.value)
    assert endpoint.requests == 0


def test_configuration_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="base_class"):
        Q.check_qid("base_class", "Q1 }")
    with pytest.raises(ConfigError, match="languages"):
        ExtractionSettings(languages=("EN",))
    with pytest.raises(ConfigError, match="image_properties"):
        ExtractionSettings(image_properties=("P18", "P18"))


def test_dataset_version_and_release_key(endpoint: Endpoint) -> None:
    from mlm_pipeline.endpoints import Endpoints

    eps = Endpoints(endpoint.url, "", "", "", "mlm-pipeline-test/0 (test@example.org)", live=False)
    version = Q.fetch_dataset_version(eps)
    assert version == "2026-01-05T00:00:00Z"
    assert Q.release_key(version) == "2026-01-05"
    assert Q.release_key("2026-01-05T10:11:12.5+01:00") == "2026-01-05"
    with pytest.raises(ValueError, match="not an xsd:dateTime"):
        Q.release_key("last tuesday")
    assert Q.check_release(version, "2026-01-05", mismatch_allowed=False) == "2026-01-05"
    with pytest.raises(ValueError, match="2026-01-12"):
        Q.check_release(version, "2026-01-12", mismatch_allowed=False)
    assert Q.check_release(version, "2026-01-12", mismatch_allowed=True) == "2026-01-05"


def test_release_key_follows_the_cadence() -> None:
    # 2026-01-05 is a Monday; live Wikidata's version moves every day of that week.
    week = [f"2026-01-{day:02d}T{day:02d}:30:00Z" for day in range(5, 12)]
    assert {Q.release_key(v, "weekly") for v in week} == {"2026-01-05"}
    assert {Q.release_key(v, "iso_week") for v in week} == {"2026-W02"}
    assert len({Q.release_key(v, "daily") for v in week}) == 7
    assert Q.release_key("2026-01-12T00:00:00Z", "weekly") == "2026-01-12"
    assert Q.release_key("2027-01-01T00:00:00Z", "iso_week") == "2026-W53"  # ISO weeks cross the new year
    keys = [Q.release_key(f"20{y}-{m:02d}-{d:02d}T00:00:00Z", c) for c in ("weekly", "iso_week")
            for y, m, d in ((25, 12, 31), (26, 1, 1), (26, 2, 9), (26, 11, 30))]
    assert keys[:4] == sorted(keys[:4]) and keys[4:] == sorted(keys[4:])  # time order is string order
    # A build on Thursday of the week is that week's release, without allow_version_mismatch.
    assert Q.check_release(week[3], "2026-01-05", mismatch_allowed=False, cadence="weekly") == "2026-01-05"
    with pytest.raises(ValueError, match="release 2026-W02"):
        Q.check_release(week[3], "2026-W03", mismatch_allowed=False, cadence="iso_week")


@pytest.mark.parametrize("page_size", [3, 12, 1000])
def test_candidate_buckets_are_complete_and_disjoint(endpoint: Endpoint, page_size: int) -> None:
    """Q1..Q250 (short QIDs, so some equal a bucket's suffix exactly) in one class, listed with
    pages far smaller than the class: every item exactly once, whatever the page size."""
    if not any(True for _ in endpoint.store.quads_for_pattern(None, None, ox.NamedNode(Q.WD + "Q3957"), None)):
        triples = "".join(f"<{Q.WD}Q{n}> <http://www.wikidata.org/prop/direct/P31> <{Q.WD}Q3957> .\n" for n in range(1, 251))
        endpoint.store.load(triples.encode(), format=ox.RdfFormat.N_TRIPLES)
    with client_for(endpoint) as client:
        found = list(Q.iter_candidates(client, ["Q3957", "Q532"], 2, page_size))
    assert sorted(found, key=lambda q: int(q[1:])) == [f"Q{n}" for n in range(1, 251)]
    if page_size < 250:
        assert client.stats.queries > 10
