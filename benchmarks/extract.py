"""Entity extraction at MLM's scale: batched, staged queries versus one query per entity.

Run:  .venv/bin/python benchmarks/extract.py [--size mlm|default|tiny|N] [--baseline-sample 300]

Both run in the same process against the same embedded world (a real SPARQL engine on
loopback), through the same polite client (one query at a time, retries, User-Agent).

- ours: ``extract_entities`` (candidates listed per class batch with keyset pages, then
  coordinates / images / articles / details looked up in VALUES batches, each stage only for
  the survivors of the one before).
- baseline: the reference code's approach, one SPARQL query per candidate for its details
  (here a single portable query per entity with one UNION branch per aspect, which is kinder to
  the baseline than the reference's extra query per language). The candidate listing is shared
  and timed separately. The per-entity queries run for a random sample of candidates (seeded)
  and the rate is extrapolated to all candidates; the printout says so. The sample's verdicts
  are checked against the world's truth, so the baseline computes the same thing.

Figures: entities per second (entities kept / wall time of the whole extraction) and queries
per thousand entities kept.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time

from mlm_pipeline.sparql.client import Query, SparqlClient
from mlm_pipeline.sparql.closure import fetch_closure
from mlm_pipeline.sparql.extraction import (
    LABEL_LANGUAGES,
    Coordinate,
    ExtractionSettings,
    Facts,
    check_articles,
    check_coordinates,
    check_images,
    extract_entities,
    file_name,
)
from mlm_pipeline.sparql.queries import PREFIXES, iter_candidates, maybe_qid, wikipedia
from mlm_pipeline.world import WorldSpec, running_world
from mlm_pipeline.world.rdf import load_world

AGENT = "mlm-pipeline-benchmark/0.1 (https://github.com/mlm-pipeline/mlm-pipeline)"


def per_entity_query(qid: str, settings: ExtractionSettings) -> Query:
    """Everything about one entity in one query: the baseline's unit of work."""
    images = " UNION ".join(
        f'{{ BIND("image" AS ?kind) BIND("{p}" AS ?a) wd:{qid} wdt:{p} ?b }}' for p in settings.image_properties
    )
    sites = ", ".join(f"<{wikipedia(lang)}>" for lang in LABEL_LANGUAGES)
    langs = ", ".join(f'"{lang}"' for lang in LABEL_LANGUAGES)
    text = (
        PREFIXES
        + "SELECT ?kind ?a ?b ?c ?d ?e WHERE {\n"
        + f'  {{ BIND("coord" AS ?kind) wd:{qid} p:P625 ?a . ?a psv:P625 ?v .\n'
        + "    ?v wikibase:geoLatitude ?c ; wikibase:geoLongitude ?d .\n"
        + "    OPTIONAL { ?a wikibase:rank ?b } OPTIONAL { ?v wikibase:geoGlobe ?e } }\n"
        + f"  UNION {images}\n"
        + f'  UNION {{ BIND("sitelink" AS ?kind) ?article schema:about wd:{qid} ; schema:isPartOf ?a ;\n'
        + f"    schema:name ?b FILTER(?a IN ({sites})) }}\n"
        + f'  UNION {{ BIND("class" AS ?kind) wd:{qid} wdt:P31 ?a }}\n'
        + f'  UNION {{ BIND("label" AS ?kind) wd:{qid} rdfs:label ?a FILTER(LANG(?a) IN ({langs})) }}\n'
        + f'  UNION {{ BIND("country" AS ?kind) wd:{qid} wdt:P17 ?a OPTIONAL {{ ?a wdt:P297 ?b }} }}\n'
        + "}"
    )
    return Query("baseline.entity", text, ("kind", "a", "b", "c", "d", "e"))


def baseline_verdict(client: SparqlClient, qid: str, settings: ExtractionSettings) -> str:
    """'' for an entity, else its dropout reason, from one query."""
    facts = Facts()
    site_language = {wikipedia(lang): lang for lang in LABEL_LANGUAGES}
    for row in client.select(per_entity_query(qid, settings)):
        kind = row["kind"].value
        if kind == "coord":
            globe = maybe_qid(row["e"].value) if "e" in row else None
            rank = row["b"].value if "b" in row else None
            facts.coordinates.append(
                Coordinate(row["a"].value, rank, globe, float(row["c"].value), float(row["d"].value))
            )
        elif kind == "image":
            name = file_name(row["b"].value)
            if name:
                facts.images.setdefault(row["a"].value, []).append(name)
        elif kind == "sitelink":
            facts.titles[site_language[row["a"].value]] = row["b"].value
    for check in (check_coordinates, check_images, check_articles):
        dropout = check(qid, facts, settings)
        if dropout is not None:
            return dropout.reason
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="mlm", help="world size: tiny, default, mlm (~240k) or a number")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--page-size", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--class-batch", type=int, default=50)
    parser.add_argument("--baseline-sample", type=int, default=300, help="candidates queried one by one")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds the server adds to every answer (a network round trip)"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")

    spec = WorldSpec.from_config(size=args.size, seed=args.seed)
    settings = ExtractionSettings(page_size=args.page_size, batch_size=args.batch_size, class_batch=args.class_batch)
    started = time.perf_counter()
    world = load_world(spec)
    print(f"world {spec.label()}: {len(world.places)} places, built/loaded in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    faults = f"latency={args.latency}" if args.latency else ""
    with running_world(world, faults=faults) as served:
        print(f"served (store loaded) in {time.perf_counter() - started:.1f} s at {served.sparql_url}")
        with SparqlClient(served.sparql_url, AGENT) as client:
            classes = fetch_closure(client, "Q486972", 3).column("qid").to_pylist()

        # baseline, part 1: shared candidate listing, then one query per sampled candidate. The
        # sample runs half before and half after ours, so a busy machine hurts both alike.
        with SparqlClient(served.sparql_url, AGENT) as client:
            t0 = time.perf_counter()
            candidates = sorted(set(iter_candidates(client, classes, settings.class_batch, settings.page_size)))
            listing_s = time.perf_counter() - t0
            listing_queries = client.stats.queries
        sample = random.Random(args.seed).sample(candidates, min(args.baseline_sample, len(candidates)))
        halves = (sample[: len(sample) // 2], sample[len(sample) // 2 :])
        verdicts: dict[str, str] = {}
        sample_s = 0.0
        with SparqlClient(served.sparql_url, AGENT) as client:
            t0 = time.perf_counter()
            verdicts.update((qid, baseline_verdict(client, qid, settings)) for qid in halves[0])
            sample_s += time.perf_counter() - t0

        # ours
        with SparqlClient(served.sparql_url, AGENT) as client:
            t0 = time.perf_counter()
            extraction = extract_entities(client, classes, settings)
            ours_s = time.perf_counter() - t0
            ours_queries = client.stats.queries
        kept = extraction.entities.num_rows
        truth = world.truth
        exact = {r["qid"]: r for r in extraction.entities.to_pylist()} == truth.entities and {
            r["qid"]: r["reason"] for r in extraction.dropouts.to_pylist()
        } == truth.dropouts

        # baseline, part 2
        with SparqlClient(served.sparql_url, AGENT) as client:
            t0 = time.perf_counter()
            verdicts.update((qid, baseline_verdict(client, qid, settings)) for qid in halves[1])
            sample_s += time.perf_counter() - t0
        wrong = [q for q, v in verdicts.items() if v != ("" if q in truth.entities else truth.dropouts.get(q))]
        per_entity_s = sample_s / max(len(sample), 1)
        base_s = listing_s + per_entity_s * len(candidates)
        base_queries = listing_queries + len(candidates)

    print()
    print(f"added latency per answer: {args.latency * 1000:.0f} ms")
    print(f"candidates {len(candidates)}, entities kept {kept}, dropouts {extraction.dropouts.num_rows}")
    print(f"ours matches the world's truth exactly: {exact}; baseline sample verdicts wrong: {len(wrong)}")
    print()
    print(f"{'method':<34}{'wall s':>10}{'entities/s':>13}{'queries':>10}{'queries/1k entities':>22}")
    print(f"{'ours (batched, staged)':<34}{ours_s:>10.1f}{kept / ours_s:>13.0f}{ours_queries:>10}{1000 * ours_queries / kept:>22.2f}")
    print(
        f"{'baseline (1 query/entity) *':<34}{base_s:>10.1f}{kept / base_s:>13.0f}{base_queries:>10}"
        f"{1000 * base_queries / kept:>22.2f}"
    )
    print(f"speed-up {base_s / ours_s:.1f}x, {base_queries / ours_queries:.0f}x fewer queries")
    print()
    print(
        f"* baseline measured on a random sample of {len(sample)} of {len(candidates)} candidates "
        f"({per_entity_s * 1000:.1f} ms per entity query) and extrapolated to all candidates, plus "
        f"the shared candidate listing ({listing_queries} queries, {listing_s:.1f} s, measured)."
    )
    return 0 if exact and not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
