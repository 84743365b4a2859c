"""The embedded world: deterministic, complete in its edge cases, served by a real SPARQL engine
whose answers agree with the builder's ground truth, with faults exactly as configured."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from mlm_pipeline.world import FaultPlan, World, WorldSpec, build_world, expected, running_world
from mlm_pipeline.world import builder, rdf
from mlm_pipeline.world.edge_cases import SPECIALS
from mlm_pipeline.world.right_answer import class_hops
from mlm_pipeline.world.model import BASE_CLASS, EARTH

UA = {"User-Agent": "mlm-pipeline-tests/0 (https://example.org/tests) requests"}
PREFIXES = "".join(f"PREFIX {k}: <{v}>\n" for k, v in rdf.PREFIXES.items())


def select(url: str, query: str, **kwargs) -> list[dict]:
    response = requests.get(url, params={"query": PREFIXES + query}, headers=UA, timeout=30, **kwargs)
    response.raise_for_status()
    assert response.headers["Content-Type"].startswith("application/sparql-results+json")
    return response.json()["results"]["bindings"]


# -- the builder --------------------------------------------------------------------------------


def test_same_spec_same_triples_other_seed_other_world(tiny_world: World) -> None:
    again = build_world(WorldSpec("tiny", seed=1234))
    assert rdf.ntriples_digest(again) == rdf.ntriples_digest(tiny_world)
    other = build_world(WorldSpec("tiny", seed=99))
    assert rdf.ntriples_digest(other) != rdf.ntriples_digest(tiny_world)
    assert {p.name for p in other.places} != {p.name for p in tiny_world.places}


def test_world_does_not_depend_on_the_process(tiny_world: World) -> None:
    """String hashing differs per process; the world must not (Parquet downstream must match)."""
    code = "from mlm_pipeline.world import WorldSpec, build_world, rdf; print(rdf.ntriples_digest(build_world(WorldSpec('tiny'))))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == rdf.ntriples_digest(tiny_world)


def test_spec_rejects_bad_values() -> None:
    for bad in ({"size": "huge"}, {"size": 3}, {"version": 0}):
        with pytest.raises(ValueError, match="world"):
            WorldSpec(**bad)
    assert WorldSpec.from_config(size="500").n_places == 500


def test_every_edge_case_is_in_the_tiny_world(tiny_world: World) -> None:
    for edge in set(SPECIALS):
        assert tiny_world.with_edge(edge), edge
    truth = tiny_world.truth
    assert set(truth.dropouts.values()) == {"no_coordinates", "not_on_earth", "no_image", "no_article"}
    assert set(truth.non_candidates.values()) == {"class_beyond_hops", "class_outside_closure"}
    assert truth.svg_only and truth.svg_only <= set(truth.entities)
    assert {p.qid for p in tiny_world.with_edge("svg_only")} <= truth.svg_only
    for edge, reason in [("no_coordinates", "no_coordinates"), ("moon", "not_on_earth"), ("mars", "not_on_earth"),
                         ("no_image", "no_image"), ("other_image_props_only", "no_image"),
                         ("no_article", "no_article"), ("other_language_article_only", "no_article")]:
        assert all(truth.dropouts.get(p.qid) == reason for p in tiny_world.with_edge(edge)), edge
    for edge in ("beyond_hops", "outside_closure"):
        assert all(p.qid in truth.non_candidates for p in tiny_world.with_edge(edge))
    (both,) = tiny_world.with_edge("beyond_and_within")
    assert "Q208511" in truth.entities[both.qid]["classes"]
    assert any(len(truth.entities[p.qid]["classes"]) > 1 for p in tiny_world.with_edge("several_classes"))
    (unlabelled,) = tiny_world.with_edge("unlabelled_class")
    assert truth.entities[unlabelled.qid]["class_labels"] == [""]
    assert truth.entities[tiny_world.with_edge("no_country")[0].qid]["country_code"] is None
    assert truth.entities[tiny_world.with_edge("no_label_en")[0].qid]["label_en"] is None
    for edge in ("articles_en", "articles_de", "articles_fr", "articles_en_de", "articles_en_de_fr"):
        (place,) = tiny_world.with_edge(edge)
        row = truth.entities[place.qid]
        assert {lang for lang in ("en", "de", "fr") if row[f"title_{lang}"]} == set(edge.split("_")[1:])


def test_coordinate_rule(tiny_world: World) -> None:
    truth = tiny_world.truth.entities
    (preferred,) = tiny_world.with_edge("preferred_coordinate")
    want = preferred.coords[preferred.coord_ranks.index("preferred")]
    assert (truth[preferred.qid]["lat"], truth[preferred.qid]["lon"]) == want[:2]
    assert min(c[:2] for c in preferred.coords) != want[:2]  # ignoring ranks gives another answer
    (deprecated,) = tiny_world.with_edge("deprecated_coordinate")
    wrong = deprecated.coords[deprecated.coord_ranks.index("deprecated")]
    assert (truth[deprecated.qid]["lat"], truth[deprecated.qid]["lon"]) != wrong[:2]
    (two,) = tiny_world.with_edge("two_coordinates")
    assert (truth[two.qid]["lat"], truth[two.qid]["lon"]) == min(c[:2] for c in two.coords) != two.coords[0][:2]
    (mixed,) = tiny_world.with_edge("earth_and_moon")
    assert (truth[mixed.qid]["lat"], truth[mixed.qid]["lon"]) == next(c[:2] for c in mixed.coords if c[2] == EARTH)


def test_class_graph_closure(tiny_world: World) -> None:
    truth = tiny_world.truth
    assert set(truth.closure.values()) == {0, 1, 2, 3}
    hops, _ = class_hops(tiny_world.classes, BASE_CLASS)
    assert {c for c, h in hops.items() if h == 4} == {"Q208511", "Q174844"}
    assert not {"Q208511", "Q174844", "Q123705", "Q23413"} & set(truth.closure)
    # Reachable by two paths: the shorter one counts.
    assert truth.closure["Q1093829"] == 2 and truth.closure_parent["Q1093829"] == "Q515"
    assert truth.closure["Q42744322"] == 2 and truth.closure_parent["Q42744322"] == "Q515"
    # town and "city or town" are each other's subclass.
    assert "Q7930989" in tiny_world.classes["Q3957"].parents and "Q3957" in tiny_world.classes["Q7930989"].parents
    assert truth.closure["Q3957"] == 1 and truth.closure["Q7930989"] == 2
    assert tiny_world.classes["Q253019"].label_en is None
    narrower = expected(tiny_world, max_hops=1)
    assert set(narrower.closure.values()) == {0, 1}
    assert set(narrower.non_candidates) > set(truth.non_candidates)


def test_identifiers_files_and_titles_are_sound(tiny_world: World) -> None:
    qids = [p.qid for p in tiny_world.places]
    assert len(set(qids)) == len(qids)
    assert all(q.startswith("Q9") and len(q) == 11 for q in qids)
    assert all(c.qid.startswith("Q999") for c in tiny_world.countries.values())
    used = [name for p in tiny_world.places for names in p.images.values() for name in names]
    assert set(used) == set(tiny_world.files)
    for name, info in tiny_world.files.items():
        assert rdf.file_name_from_iri(rdf.commons_file_iri(name)) == name
        assert "/" not in rdf.commons_file_iri(name).split("Special:FilePath/")[1]
        assert info.format in {"jpeg", "png", "svg"} and name.lower().endswith(
            {"jpeg": (".jpg", ".jpeg"), "png": (".png",), "svg": (".svg",)}[info.format]
        )
    assert any("/" in n for n in tiny_world.files) and any(".." in n for n in tiny_world.files)
    assert any('"' in n for n in tiny_world.files) and {"P41", "P94", "P242"} <= {
        prop for p in tiny_world.places for prop in p.images
    }
    for lang in ("en", "de", "fr"):
        titles = [p.sitelinks[lang] for p in tiny_world.places if lang in p.sitelinks]
        assert len(titles) == len(set(titles)), lang
    (redirect,) = tiny_world.with_edge("title_redirect")
    assert redirect.pages["de"] == redirect.redirects["de"] != redirect.sitelinks["de"]
    (missing,) = tiny_world.with_edge("article_missing")
    assert "fr" in missing.missing_articles and "fr" not in missing.pages
    (odd,) = tiny_world.with_edge("title_normalise")
    assert odd.pages["en"] != odd.sitelinks["en"]


def test_country_mix_follows_mlm(tiny_world: World) -> None:
    counts = collections.Counter(p.country_code for p in tiny_world.places if "no_country" not in p.edge_cases)
    assert [c for c, _ in counts.most_common(3)] == ["FR", "US", "DE"]
    europe = sum(n for c, n in counts.items() if tiny_world.countries[next(
        q for q, k in tiny_world.countries.items() if k.code == c)].continent == "EU")
    assert 0.65 < europe / sum(counts.values()) < 0.80  # MLM: 72%


def test_country_quotas_take_all_when_short() -> None:
    available = {"FR": 10, "DE": 1000, "US": 1000, "XX": 5, "YY": 1000}
    continents = {"FR": "EU", "DE": "EU", "US": "NA", "XX": "EU", "YY": "AS"}
    quotas = builder.country_quotas(500, available, continents)
    assert sum(quotas.values()) == 500
    assert quotas["FR"] == 10 and quotas["XX"] <= 5
    assert all(quotas[c] <= available[c] for c in available)
    assert builder.country_quotas(10_000, available, continents) == available


def test_later_versions_edit_version_one(tiny_world: World) -> None:
    v2 = build_world(WorldSpec("tiny", version=2))
    assert v2.release == "2026-01-12" and v2.dataset_version == "2026-01-12T00:00:00Z"
    kinds = collections.Counter(c.kind for c in v2.changes)
    assert kinds["added"] and kinds["removed"] and sum(kinds.values()) > kinds["added"] + kinds["removed"]
    old = {p.qid: p for p in tiny_world.places}
    new = {p.qid: p for p in v2.places}
    touched = {c.qid for c in v2.changes}
    assert {c.qid for c in v2.changes if c.kind == "removed"} == set(old) - set(new)
    assert {c.qid for c in v2.changes if c.kind == "added"} == set(new) - set(old)
    assert min(set(new) - set(old)) > max(old)
    for qid in set(old) & set(new) - touched:
        assert new[qid] == old[qid], qid
    for edge in set(SPECIALS):
        assert v2.with_edge(edge), edge


# -- the SPARQL endpoint ------------------------------------------------------------------------


def test_endpoint_answers_standard_json_that_matches_the_truth(tiny_served) -> None:
    world, url = tiny_served.world, tiny_served.sparql_url
    (row,) = select(url, "SELECT ?v WHERE { <http://www.wikidata.org> schema:dateModified ?v }")
    assert row["v"] == {"type": "literal", "value": world.dataset_version, "datatype": rdf.XSD + "dateTime"}
    # The closure computed from the served P279 edges equals the truth.
    edges = select(url, "SELECT ?c ?p WHERE { ?c wdt:P279 ?p }")
    children = collections.defaultdict(set)
    for e in edges:
        children[e["p"]["value"].rsplit("/", 1)[1]].add(e["c"]["value"].rsplit("/", 1)[1])
    hops, frontier = {"Q486972": 0}, ["Q486972"]
    for depth in (1, 2, 3):
        frontier = [c for f in frontier for c in children[f] if c not in hops]
        hops.update({c: depth for c in frontier})
    assert hops == world.truth.closure
    # Coordinates through full statements with ranks give the truth's coordinate.
    rows = select(url, """SELECT ?item ?rank ?lat ?lon ?globe WHERE {
        ?item p:P625 ?st . ?st wikibase:rank ?rank ; psv:P625 ?v .
        ?v wikibase:geoLatitude ?lat ; wikibase:geoLongitude ?lon ; wikibase:geoGlobe ?globe }""")
    seen = collections.defaultdict(list)
    for r in rows:
        seen[r["item"]["value"].rsplit("/", 1)[1]].append(
            (r["rank"]["value"].rsplit("#", 1)[1], float(r["lat"]["value"]), float(r["lon"]["value"]), r["globe"]["value"])
        )
    for qid, want in world.truth.entities.items():
        statements = [s for s in seen[qid] if s[0] != "DeprecatedRank"]
        best = [s for s in statements if s[0] == "PreferredRank"] or statements
        assert min((s[1], s[2]) for s in best if s[3].endswith("/Q2")) == (want["lat"], want["lon"])
    # Sitelinks and images as the truth has them.
    rows = select(url, """SELECT ?item ?name WHERE { ?a schema:about ?item ; schema:isPartOf <https://de.wikipedia.org/> ;
        schema:inLanguage "de" ; schema:name ?name }""")
    titles = {r["item"]["value"].rsplit("/", 1)[1]: r["name"]["value"] for r in rows}
    assert {q: e["title_de"] for q, e in world.truth.entities.items() if e["title_de"]} == {
        q: t for q, t in titles.items() if q in world.truth.entities
    }
    rows = select(url, "SELECT ?item ?file WHERE { ?item wdt:P18 ?file }")
    files = collections.defaultdict(list)
    for r in rows:
        files[r["item"]["value"].rsplit("/", 1)[1]].append(rdf.file_name_from_iri(r["file"]["value"]))
    assert {q: e["images"] for q, e in world.truth.entities.items()} == {
        q: sorted(files[q]) for q in world.truth.entities
    }


def test_endpoint_protocol_errors(tiny_served) -> None:
    url = tiny_served.sparql_url
    ask = "ASK { ?s ?p ?o }"
    as_form = requests.post(url, data={"query": ask}, headers=UA, timeout=10)
    as_body = requests.post(url, data=ask.encode(), headers={**UA, "Content-Type": "application/sparql-query"}, timeout=10)
    assert as_form.json() == as_body.json() == {"head": {}, "boolean": True}
    bad = requests.get(url, params={"query": "SELEC ?x WHERE {}"}, headers=UA, timeout=10)
    assert bad.status_code == 400 and "MalformedQuery" in bad.text
    before = tiny_served.servers["sparql"].counters.get("forbidden", 0)
    anonymous = requests.get(url, params={"query": ask}, headers={"User-Agent": ""}, timeout=10)
    assert anonymous.status_code == 403
    assert tiny_served.servers["sparql"].counters["forbidden"] == before + 1
    assert requests.get(url.replace("/sparql", "/other"), headers=UA, timeout=10).status_code == 404


def test_one_query_at_a_time_per_client(tiny_world: World) -> None:
    with running_world(tiny_world, faults="latency=0.6") as served:
        url = served.sparql_url
        slow = threading.Thread(target=lambda: requests.get(url, params={"query": "ASK {}"}, headers=UA, timeout=10))
        slow.start()
        while not served.servers["sparql"].counters.get("requests"):
            threading.Event().wait(0.01)
        threading.Event().wait(0.1)
        second = requests.get(url, params={"query": "ASK { ?s ?p ?o }"}, headers=UA, timeout=10)
        other = requests.get(url, params={"query": "ASK { ?s ?p ?o }"}, headers={"User-Agent": "another/1 (https://example.org/other)"}, timeout=10)
        slow.join()
        assert second.status_code == 429 and "Retry-After" in second.headers
        assert other.status_code == 200
        assert served.servers["sparql"].counters["violations"] == 1


# -- faults -------------------------------------------------------------------------------------


def test_fault_plan_parsing_and_determinism() -> None:
    plan = FaultPlan.parse("latency=0.1,http429=0.05,http5xx=0.02,timeout=0.01,truncate=0.01,corrupt=0.02,"
                           "content_type=0.01,redirect_loop=0.01,oversize=0.01,garbage=0.01,seed=7")
    assert plan.seed == 7 and plan.latency == 0.1 and plan.rates["http429"] == 0.05
    assert FaultPlan.parse(plan) is plan and not FaultPlan.parse("") and plan
    for bad in ("http429=2", "nonsense=0.1", "http429", "http429=0.6,http5xx=0.6", "latency=-1", "seed=x"):
        with pytest.raises(ValueError, match="faults"):
            FaultPlan.parse(bad)
    draws = [plan.decide("sparql", f"q{i}", 0) for i in range(20_000)]
    assert draws == [FaultPlan.parse("http429=0.05,http5xx=0.02,timeout=0.01,truncate=0.01,corrupt=0.02,"
                                     "content_type=0.01,redirect_loop=0.01,oversize=0.01,garbage=0.01,seed=7")
                     .decide("sparql", f"q{i}", 0) for i in range(20_000)]
    share = collections.Counter(draws)
    assert abs(share["http429"] / 20_000 - 0.05) < 0.01 and abs(share[None] / 20_000 - 0.85) < 0.015
    # Attempts draw afresh, so a retried request gets through.
    assert any(plan.decide("sparql", "q-x", a) is None for a in range(10))
    scoped = FaultPlan.parse("http429=0.0,sparql.http429=1")
    assert scoped.decide("sparql", "k", 0) == "http429" and scoped.decide("wiki", "k", 0) is None
    assert scoped.next("sparql", "k") == scoped.next("sparql", "k") == "http429"


@pytest.mark.parametrize(
    "kind", ["http429", "http5xx", "truncate", "corrupt", "garbage", "content_type", "redirect_loop", "timeout"]
)
def test_endpoint_injects_each_fault(tiny_world: World, kind: str) -> None:
    query = "SELECT ?c ?p WHERE { ?c <http://www.wikidata.org/prop/direct/P279> ?p }"
    with running_world(tiny_world, faults=f"sparql.{kind}=1,hang=1") as served:
        url = served.sparql_url
        if kind == "timeout":
            with pytest.raises((requests.Timeout, requests.ConnectionError)):
                requests.get(url, params={"query": query}, headers=UA, timeout=0.3)
        elif kind == "redirect_loop":
            with pytest.raises(requests.TooManyRedirects):
                requests.get(url, params={"query": query}, headers=UA, timeout=10)
        else:
            response = requests.get(url, params={"query": query}, headers=UA, timeout=10)
            if kind == "http429":
                assert response.status_code == 429 and response.headers["Retry-After"] == "1"
            elif kind == "http5xx":
                assert response.status_code in (500, 502, 503, 504)
            elif kind == "content_type":
                assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
            else:
                assert response.status_code == 200
                with pytest.raises(ValueError):
                    json.loads(response.content)
        counters = served.servers["sparql"].counters
        assert counters["faults"] >= 1 and counters[f"fault:{kind}"] == counters["faults"]
        assert counters.get("queries", 0) == 0


def test_faults_follow_the_plan_and_retries_succeed(tiny_world: World) -> None:
    plan = "http429=0.3,http5xx=0.2,seed=5"
    statuses = []
    for _ in range(2):
        with running_world(tiny_world, faults=plan) as served:
            run = []
            for i in range(30):
                for attempt in range(20):
                    r = requests.get(served.sparql_url, params={"query": f"ASK {{ ?s ?p {i} }}"}, headers=UA, timeout=10)
                    run.append(r.status_code)
                    if r.status_code == 200:
                        break
                assert r.status_code == 200
            counters = served.servers["sparql"].counters
            assert counters["faults"] == sum(s != 200 for s in run) > 0
            assert counters["queries"] == 30
            statuses.append(run)
    assert statuses[0] == statuses[1]


def test_servers_stop_on_exit(tiny_world: World) -> None:
    with running_world(tiny_world) as served:
        urls = [served.sparql_url] + [s.url for s in served.servers.values()]
        assert requests.get(served.sparql_url, params={"query": "ASK {}"}, headers=UA, timeout=10).ok
    for url in urls:
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=2)


# -- the on-disk cache --------------------------------------------------------------------------


def test_disk_store_is_cached_and_rebuilt_when_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLM_WORLD_CACHE", str(tmp_path))
    spec = WorldSpec(size=120, seed=3)
    world = rdf.load_world(spec)
    assert rdf.load_world(spec) is not world and rdf.load_world(spec).places == world.places
    ask = "ASK { <http://www.wikidata.org> <http://schema.org/dateModified> ?v }"
    store = rdf.open_store(world, on_disk=True)
    assert store.query(ask)
    (folder,) = tmp_path.glob("store-*")
    stamp = (folder / "COMPLETE").stat().st_mtime_ns
    del store
    assert rdf.open_store(world, on_disk=True).query(ask)
    assert (folder / "COMPLETE").stat().st_mtime_ns == stamp  # reused, not rebuilt
    for item in folder.iterdir():  # a store whose data is gone but still claims to be complete
        if item.name != "COMPLETE":
            item.unlink() if item.is_file() else None
    assert rdf.open_store(world, on_disk=True).query(ask)
    (folder / "COMPLETE").unlink()  # an interrupted build
    assert rdf.open_store(world, on_disk=True).query(ask)
    assert (folder / "COMPLETE").exists()
    (cached,) = tmp_path.glob("world-*.json")
    cached.write_bytes(b"torn")
    assert rdf.load_world(spec).places == world.places
    assert not list(tmp_path.glob(".tmp-*"))


def test_command_line_release_and_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_world: World
) -> None:
    from mlm_pipeline.world.__main__ import main

    monkeypatch.setenv("MLM_WORLD_CACHE", str(tmp_path / "cache"))
    assert main(["release", "--size", "tiny", "--version", "3"]) == 0
    assert capsys.readouterr().out.strip() == "2026-01-19"
    out = tmp_path / "tiny.nt"
    assert main(["export", str(out), "--size", "tiny"]) == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == rdf.ntriples_digest(tiny_world)
