"""Closure and entity extraction against the embedded world's real SPARQL engine on loopback,
checked against the answer the world's builder knows (``world.truth`` / ``expected``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mlm_pipeline import schemas
from mlm_pipeline.parquet_io import ParquetIOManager
from mlm_pipeline.release import RELEASE_PARTITIONS_NAME
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.sparql import queries as Q
from mlm_pipeline.sparql.client import QueryFailed, RetryPolicy, SparqlClient
from mlm_pipeline.sparql.closure import closure_from_edges, fetch_closure
from mlm_pipeline.sparql.extraction import REASONS, ExtractionSettings, extract_entities
from mlm_pipeline.world import Served, World, expected, running_world
from mlm_pipeline.shards import release_folder, stored_table
from mlm_pipeline.world.edge_cases import SPECIALS

AGENT = "mlm-pipeline-test/0 (test@example.org)"


class NoSleep(list):
    """Records back-off waits instead of sleeping (the faults here would otherwise cost seconds)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(url: str, attempts: int = 4) -> SparqlClient:
    policy = RetryPolicy(max_attempts=attempts, backoff_base_s=0.01, timeout_s=30.0, connect_timeout_s=5.0)
    return SparqlClient(url, AGENT, policy, sleep=NoSleep(), seed=7)


def closure_labels(table) -> dict[str, str | None]:
    return dict(zip(table.column("qid").to_pylist(), table.column("label_en").to_pylist()))


def run(url: str, settings: ExtractionSettings, max_hops: int = 3, attempts: int = 4):
    with client(url, attempts) as c:
        classes = fetch_closure(c, "Q486972", max_hops, batch_size=200, page_size=settings.page_size)
        extraction = extract_entities(c, classes.column("qid").to_pylist(), settings, closure_labels(classes))
        return classes, extraction, c.stats


@pytest.fixture(scope="module")
def default_run(tiny_served: Served):
    return run(tiny_served.sparql_url, ExtractionSettings())


# ------------------------------------------------------------------------- closure


def test_closure_equals_the_truth(tiny_world: World, default_run) -> None:
    classes, _, _ = default_run
    rows = classes.to_pylist()
    assert {r["qid"]: r["hops"] for r in rows} == tiny_world.truth.closure
    assert {r["qid"]: r["parent_qid"] for r in rows} == tiny_world.truth.closure_parent
    for row in rows:
        assert row["label_en"] == tiny_world.classes[row["qid"]].label_en
    assert classes.schema == schemas.SETTLEMENT_CLASSES
    assert classes.column("qid").to_pylist() == sorted(classes.column("qid").to_pylist())


@pytest.mark.parametrize("max_hops", [0, 1, 2, 4, 6])
def test_closure_for_other_depths(tiny_served: Served, max_hops: int) -> None:
    truth = expected(tiny_served.world, max_hops=max_hops)
    with client(tiny_served.sparql_url) as c:
        rows = fetch_closure(c, "Q486972", max_hops).to_pylist()
    assert {r["qid"]: r["hops"] for r in rows} == truth.closure
    assert {r["qid"]: r["parent_qid"] for r in rows} == truth.closure_parent


def test_closure_walk_handles_cycles_ties_and_depth() -> None:
    edges = [
        ("Q10", "Q1"), ("Q9", "Q1"), ("Q20", "Q10"), ("Q20", "Q9"),  # a tie: parent Q10 < Q9 as strings
        ("Q30", "Q20"), ("Q30", "Q1"),  # a long and a short path: 1 hop
        ("Q1", "Q30"), ("Q40", "Q40"),  # a cycle through the base; a self-loop outside
        ("Q50", "Q20"), ("Q60", "Q50"),  # 3 and 4 hops
    ]  # fmt: skip
    found = closure_from_edges("Q1", 3, edges)
    assert {q: (e.hops, e.parent) for q, e in found.items()} == {
        "Q1": (0, None),
        "Q10": (1, "Q1"),
        "Q9": (1, "Q1"),
        "Q30": (1, "Q1"),
        "Q20": (2, "Q10"),
        "Q50": (3, "Q20"),
    }


# ------------------------------------------------------------------------- entities


def test_entities_and_dropouts_equal_the_truth(tiny_world: World, default_run) -> None:
    _, extraction, _ = default_run
    truth = tiny_world.truth
    got = {r["qid"]: r for r in extraction.entities.to_pylist()}
    assert set(got) == set(truth.entities)
    for qid, row in got.items():
        assert row == truth.entities[qid], qid
    dropouts = extraction.dropouts.to_pylist()
    assert {d["qid"]: d["reason"] for d in dropouts} == truth.dropouts
    assert len(dropouts) == len(truth.dropouts)
    assert {d["stage"] for d in dropouts} == {"entities"} and {d["item"] for d in dropouts} == {""}
    assert set(truth.dropouts.values()) == set(REASONS)
    # Every candidate is accounted for exactly once; non-candidates are never candidates.
    assert extraction.candidates == len(truth.entities) + len(truth.dropouts)
    assert not set(truth.non_candidates) & (set(got) | set(truth.dropouts))
    assert extraction.entities.schema == schemas.ENTITIES and extraction.dropouts.schema == schemas.DROPOUTS


@pytest.mark.parametrize("edge", sorted(set(SPECIALS)))
def test_every_edge_case_ends_where_the_truth_says(tiny_world: World, default_run, edge: str) -> None:
    _, extraction, _ = default_run
    places = tiny_world.with_edge(edge)
    assert places, f"the world has no place with edge case {edge}"
    rows = {r["qid"]: r for r in extraction.entities.to_pylist()}
    reasons = {r["qid"]: r["reason"] for r in extraction.dropouts.to_pylist()}
    truth = tiny_world.truth
    for place in places:
        if place.qid in truth.entities:
            assert rows.get(place.qid) == truth.entities[place.qid]
        elif place.qid in truth.dropouts:
            assert reasons.get(place.qid) == truth.dropouts[place.qid]
        else:
            assert place.qid not in rows and place.qid not in reasons


@pytest.mark.parametrize(
    "image_props, languages",
    [(("P18", "P94", "P242"), ("en", "de", "fr")), (("P94", "P18"), ("de",)), (("P18",), ("fr", "en"))],
)
def test_other_configurations_equal_the_truth(tiny_served: Served, image_props, languages) -> None:
    settings = ExtractionSettings(languages=languages, image_properties=image_props)
    truth = expected(tiny_served.world, image_props=image_props, languages=languages)
    _, extraction, _ = run(tiny_served.sparql_url, settings)
    assert {r["qid"]: r for r in extraction.entities.to_pylist()} == truth.entities
    assert {d["qid"]: d["reason"] for d in extraction.dropouts.to_pylist()} == truth.dropouts


def test_the_result_does_not_depend_on_page_batch_or_round_size(tiny_served: Served, default_run) -> None:
    classes, extraction, stats = default_run
    small = ExtractionSettings(page_size=7, batch_size=100, class_batch=4, candidates_per_round=50)
    classes_small, extraction_small, stats_small = run(tiny_served.sparql_url, small)
    assert classes_small.equals(classes)
    assert extraction_small.entities.equals(extraction.entities)
    assert extraction_small.dropouts.equals(extraction.dropouts)
    assert stats_small.by_name["entities.candidates"] > 2 * stats.by_name["entities.candidates"]


@pytest.mark.parametrize("page_size", [1, 2, 5])
def test_lookups_split_batches_and_page_single_keys_without_losing_rows(tiny_served: Served, page_size: int) -> None:
    """Every place has up to three labels: with pages of 1 or 2 rows a batch is halved down to
    single places, whose labels then page in order; the rows must be the same as in one go."""
    qids = [p.qid for p in tiny_served.world.places[:40]]
    build = lambda batch, limit, offset: Q.labels_query(batch, ["en", "de", "fr"], limit, offset)  # noqa: E731

    def labels(rows) -> list[tuple[str, str, str | None]]:
        return sorted((r["item"].value, r["label"].value, r["label"].lang) for r in rows)

    with client(tiny_served.sparql_url) as c:
        whole = labels(Q.select_lookup(c, qids, build, 10_000))
        assert c.stats.queries == 1
        paged = labels(Q.select_lookup(c, qids, build, page_size))
    assert paged == whole and len(whole) > 2 * len(qids)
    assert c.stats.queries > len(qids)


def test_few_queries_per_thousand_entities(default_run, tiny_served: Served) -> None:
    """The point of batching: the query count grows with batches, not with entities."""
    _, extraction, stats = default_run
    assert stats.queries < extraction.candidates / 10
    assert tiny_served.servers["sparql"].counters.get("violations", 0) == 0


# ------------------------------------------------------------------------- faults


def test_faults_end_in_the_same_complete_answer(tiny_world: World, default_run) -> None:
    kinds = ("http429", "http5xx", "timeout", "truncate", "corrupt", "content_type", "garbage", "redirect",
             "redirect_loop")
    faults = ",".join(f"{kind}=0.07" for kind in kinds) + ",retry_after=0,hang=0.2,seed=11"
    settings = ExtractionSettings(page_size=100, batch_size=100, class_batch=10)
    with running_world(tiny_world, faults=faults) as served:
        _, extraction, stats = run(served.sparql_url, settings, attempts=12)
        counters = dict(served.servers["sparql"].counters)
    _, clean, _ = default_run
    assert extraction.entities.equals(clean.entities) and extraction.dropouts.equals(clean.dropouts)
    assert {kind for kind in kinds if counters.get(f"fault:{kind}")} == set(kinds)
    # Every fault was retried or, for a redirect, the query posted again where it pointed (a
    # slow machine may add timeouts).
    assert stats.retries + stats.redirects >= counters["faults"]
    assert counters.get("violations", 0) == 0


def test_an_endpoint_that_keeps_failing_fails_with_the_query_named(tiny_world: World) -> None:
    with running_world(tiny_world, faults="sparql.http5xx=1,seed=1") as served:
        with pytest.raises(QueryFailed, match=r"query [a-z_.]+#[0-9a-f]{12} against .* failed after 3 attempts"):
            run(served.sparql_url, ExtractionSettings(), attempts=3)
        assert served.servers["sparql"].counters["requests"] == 3


def test_progress_is_logged(tiny_served: Served, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mlm_pipeline.sparql"):
        run(tiny_served.sparql_url, ExtractionSettings())
    text = caplog.text
    for stage in ("candidates done", "coordinates done", "images done", "articles done", "entities kept of"):
        assert stage in text
    assert "items/s" in text


# ------------------------------------------------------------------------- Dagster


def _materialize(tiny_world: World, instance, tmp_path: Path, partition: str, **config):
    from dagster import materialize

    from mlm_pipeline.assets.classes import settlement_classes
    from mlm_pipeline.assets.entities import entities

    if not instance.has_dynamic_partition(RELEASE_PARTITIONS_NAME, partition):
        instance.add_dynamic_partitions(RELEASE_PARTITIONS_NAME, [partition])
    spec = tiny_world.spec
    return materialize(
        [settlement_classes, entities],
        partition_key=partition,
        instance=instance,
        resources={
            "io_manager": ParquetIOManager(base_dir=str(tmp_path / "data")),
            "wikimedia": WikimediaResource(world_size=str(spec.size), world_seed=spec.seed, world_version=spec.version),
        },
        run_config={"ops": config} if config else None,
        raise_on_error=False,
    )


def test_materialize_writes_the_true_tables(tiny_world: World, dagster_instance, tmp_path: Path) -> None:
    result = _materialize(tiny_world, dagster_instance, tmp_path, tiny_world.release)
    assert result.success
    data = tmp_path / "data"
    classes = stored_table("settlement_classes", tiny_world.release, data).read()
    entities = stored_table("entities", tiny_world.release, data).read()
    dropouts = stored_table("entity_dropouts", tiny_world.release, data).read()
    assert {r["qid"]: r["hops"] for r in classes.to_pylist()} == tiny_world.truth.closure
    assert {r["qid"]: r for r in entities.to_pylist()} == tiny_world.truth.entities
    assert {r["qid"]: r["reason"] for r in dropouts.to_pylist()} == tiny_world.truth.dropouts
    events = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    metadata = {m.asset_key.to_user_string(): m.metadata for m in events}
    assert metadata["entities"]["entities"].value == len(tiny_world.truth.entities)
    assert "no_image" in metadata["entities"]["dropouts_by_reason"].value
    assert metadata["entities"]["queries"].value > 0
    assert metadata["settlement_classes"]["provenance/dataset_version"].value == tiny_world.dataset_version
    assert metadata["settlement_classes"]["query_labels"].value


def test_materialize_refuses_a_release_the_endpoint_does_not_serve(
    tiny_world: World, dagster_instance, tmp_path: Path
) -> None:
    result = _materialize(tiny_world, dagster_instance, tmp_path, "2020-01-01")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "2020-01-01" in message and tiny_world.release in message
    assert not release_folder(tmp_path / "data", "settlement_classes", "2020-01-01").exists()


def test_materialize_refuses_bad_configuration_before_serving_anything(
    tiny_world: World, dagster_instance, tmp_path: Path
) -> None:
    config = {"settlement_classes": {"config": {"base_class": "Q486972 } ?s ?p ?o {"}}}
    result = _materialize(tiny_world, dagster_instance, tmp_path, tiny_world.release, **config)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "base_class" in str(failure.step_failure_data.error)
    assert not (tmp_path / "data").exists()


def test_image_values_become_commons_file_names() -> None:
    from mlm_pipeline.sparql.extraction import file_name
    from mlm_pipeline.world.rdf import commons_file_iri

    for name in ["Rue de la Gare/Bahnhofstraße in X.jpg", "A \"b\" & 100% c?.jpg", "..jpg", "Été.JPG"]:
        assert file_name(commons_file_iri(name)) == name
    base = "http://commons.wikimedia.org/wiki/Special:FilePath/"
    assert file_name(base + "Rue_de_la_Gare/Nord.jpg") == "Rue de la Gare/Nord.jpg"  # as MediaWiki writes it
    assert file_name("http://example.org/not-a-file") is None
    assert file_name(base) is None
