"""What a hostile page, a planted file or a shared instance must not get: a federated query run
by the embedded endpoint, code run from the world cache, credentials in provenance."""

from __future__ import annotations

import http.server
import pickle
import threading
from pathlib import Path
from typing import Iterator

import pytest
import requests

from mlm_pipeline.provenance import provenance
from mlm_pipeline.endpoints import Endpoints
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.world import Served, WorldSpec, rdf

UA = {"User-Agent": "mlm-pipeline-tests/0 (https://example.org/tests) requests"}


@pytest.fixture
def bystander() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on loopback that records every request it gets: the address a federated
    query would make the endpoint fetch."""
    hits: list[str] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/sparql-results+json")
            self.end_headers()
            self.wfile.write(b'{"head":{"vars":[]},"results":{"bindings":[]}}')

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "clause",
    [
        "SERVICE <{url}/a> {{ ?s ?p ?o }}",
        "service silent <{url}/b> {{ ?s ?p ?o }}",
        "\\u0053ERVICE <{url}/c> {{ ?s ?p ?o }}",
        "BIND(<{url}/d> AS ?where) SERVICE ?where {{ ?s ?p ?o }}",
    ],
)
def test_the_endpoint_refuses_federated_queries(tiny_served: Served, bystander, clause: str) -> None:
    url, hits = bystander
    query = "SELECT * WHERE { " + clause.format(url=url) + " }"
    for send in (
        lambda: requests.get(tiny_served.sparql_url, params={"query": query}, headers=UA, timeout=10),
        lambda: requests.post(tiny_served.sparql_url, data={"query": query}, headers=UA, timeout=10),
    ):
        answer = send()
        assert answer.status_code == 400 and "SERVICE (federated query) is refused" in answer.text
    assert hits == []


def test_the_word_service_elsewhere_is_no_federated_query(tiny_served: Served) -> None:
    query = (
        'PREFIX service: <http://example.org/service/> SELECT ?service WHERE { ?service service:x "SERVICE <x> {}" } '
        "# SERVICE <http://example.org/> {}"
    )
    answer = requests.get(tiny_served.sparql_url, params={"query": query}, headers=UA, timeout=10)
    assert answer.status_code == 200, answer.text


class Payload:
    """Unpickling this runs ``Path.touch`` on the marker: what a planted cache file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_planted_world_cache_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLM_WORLD_CACHE", str(tmp_path))
    spec = WorldSpec(size=120, seed=5)
    key = rdf.cache_key(spec)
    marker = tmp_path / "payload-ran"
    for name in (f"world-{key}.pickle", f"world-{key}.json"):  # where the cache was, and where it is
        (tmp_path / name).write_bytes(pickle.dumps(Payload(marker)))
    world = rdf.load_world(spec)
    assert not marker.exists()
    assert world.spec == spec and len(world.places) == 120
    assert rdf.load_world(spec).places == world.places  # the rebuilt cache is read back


def test_credentials_in_source_urls_stay_out_of_provenance() -> None:
    source = WikimediaResource(
        source="endpoints",
        contact="me@example.org",
        sparql_endpoint="https://reader:s3cret@query.example.org/sparql",
        wikipedia_api="https://bot:hunter2@{lang}.wiki.example.org/w/api.php?token=abc123&format=json",
        commons_api="https://commons.example.org/w/api.php?api_key=k3y",
    )
    endpoints = Endpoints(source.sparql_endpoint, source.wikipedia_api, source.commons_api, source.commons_filepath,
                          "agent", live=False)
    text = str({k: v.value for k, v in provenance(source=source, endpoints=endpoints, release="2026-01-05").items()})
    for secret in ("s3cret", "hunter2", "abc123", "k3y", "reader:", "bot:"):
        assert secret not in text
    assert "https://***@query.example.org/sparql" in text and "token=***&format=json" in text
    # The embedded world's ports are gone after the step: no link to them.
    loopback = Endpoints("http://127.0.0.1:41234/sparql", "", "", "", "agent", live=False)
    entry = provenance(endpoints=loopback)["provenance/endpoint"]
    assert "127.0.0.1" not in str(entry.value) and "loopback" in str(entry.value)
