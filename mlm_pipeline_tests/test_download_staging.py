"""Staged download progress: what counts as stored, what a later run tries again."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mlm_pipeline.download.images import STAGED_IMAGES, ImagePlan
from mlm_pipeline.download.politeness import Politeness
from mlm_pipeline.download.staging import STAGED_FAILURES, BatchOutcome, Staging, pending_keys
from mlm_pipeline.download.summaries import STAGED_SUMMARIES
from mlm_pipeline.shards import write_parquet
from mlm_pipeline.world import Served, World, running_world
from mlm_pipeline_tests.test_download_images import run as run_images
from mlm_pipeline_tests.test_download_summaries import entities_of, fast_politeness, run, titles_asked


def outcome(results: list[str], failures: list[tuple[str, str, bool]]) -> BatchOutcome:
    return BatchOutcome(
        pa.table({"key": results, "lang": ["en"] * len(results), "title": [k[3:] for k in results],
                  "text": [f"text of {k}" for k in results], "revision": [None] * len(results)}, schema=STAGED_SUMMARIES),
        pa.table({"key": [f[0] for f in failures], "reason": [f[1] for f in failures],
                  "detail": ["d"] * len(failures), "transient": [f[2] for f in failures]}, schema=STAGED_FAILURES),
    )


def test_results_win_and_the_latest_failure_counts(tmp_path: Path) -> None:
    staging = Staging(tmp_path, STAGED_SUMMARIES)
    staging.write(outcome(["en|A"], [("en|B", "timeout", True), ("en|C", "http_503", True), ("en|D", "missing_page", False)]))
    staging.write(outcome(["en|B"], [("en|C", "http_404", False)]))  # a later run: B arrived, C is gone
    stored = Staging(tmp_path, STAGED_SUMMARIES).load()  # a new process sees the same
    assert sorted(stored.results["key"].to_pylist()) == ["en|A", "en|B"]
    assert dict(zip(stored.failures["key"].to_pylist(), stored.failures["reason"].to_pylist())) == {
        "en|C": "http_404", "en|D": "missing_page"}
    assert pending_keys(["en|A", "en|B", "en|C", "en|D", "en|E"], stored) == ["en|E"]


def test_transient_failures_are_pending_again(tmp_path: Path) -> None:
    staging = Staging(tmp_path, STAGED_SUMMARIES)
    staging.write(outcome([], [("en|A", "timeout", True), ("en|B", "missing_page", False)]))
    assert pending_keys(["en|A", "en|B"], staging.load(keys_only=True)) == ["en|A"]


def test_a_batch_killed_while_being_stored_does_not_count(tmp_path: Path) -> None:
    staging = Staging(tmp_path, STAGED_SUMMARIES)
    staging.write(outcome(["en|A"], []))
    # What a kill can leave: a batch's failures without its results, a temporary file.
    (tmp_path / "000002-0123456789abcdef.failures.parquet").write_bytes(
        (tmp_path / next(p.name for p in tmp_path.glob("*.failures.parquet"))).read_bytes())
    (tmp_path / "000003-fedcba9876543210.results.parquet.tmp").write_bytes(b"half a file")
    stored = Staging(tmp_path, STAGED_SUMMARIES).load()
    assert stored.results["key"].to_pylist() == ["en|A"] and stored.failures.num_rows == 0
    assert pending_keys(["en|A", "en|B"], stored) == ["en|B"]


def test_a_rerun_fetches_what_failed_for_passing_reasons_only(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world).slice(0, 60)
    with running_world(tiny_world, faults="wiki.http5xx=1,seed=1") as broken:
        summaries, dropouts = run(entities, broken, tmp_path)
    assert summaries.num_rows == 0
    assert set(dropouts["reason"].to_pylist()) <= {"http_500", "http_502", "http_503", "http_504"}
    with running_world(tiny_world) as served:
        summaries, dropouts = run(entities, served, tmp_path)
        asked_once = titles_asked(served)
        again = run(entities, served, tmp_path)
        assert titles_asked(served) == asked_once  # permanent failures (missing pages) are not asked again
    with running_world(tiny_world) as clean:
        expected = run(entities, clean, tmp_path / "clean")
    assert summaries.equals(expected[0]) and dropouts.equals(expected[1])
    assert again[0].equals(expected[0]) and again[1].equals(expected[1])


# Faults a retry cures but that look like verdicts on the item: answers too large (a padded body,
# an original instead of a thumbnail, a decompression bomb), damaged or garbage bodies. Two
# attempts only, so that the faulty run ends with some of them as its last word.
CURABLE = ("wiki.oversize=0.2,wiki.garbage=0.15,wiki.corrupt=0.1,"
           "commons.oversize=0.15,commons.corrupt=0.15,commons.garbage=0.1,commons.truncate=0.05,seed=3")


def test_a_rerun_after_a_faulty_run_gives_the_clean_builds_bytes(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world).slice(0, 80)
    plan = ImagePlan(public_origin="http://commons.test")  # stored URLs must not name the servers' ports

    def build(served: Served, folder: Path, politeness: Politeness) -> dict[str, bytes]:
        texts = run(entities, served, folder / "summaries", politeness=politeness)
        images = run_images(entities, served, folder / "images", plan, politeness)
        tables = {"summaries": texts[0], "summary_dropouts": texts[1], "images": images[0], "image_failures": images[1]}
        for name, table in tables.items():
            write_parquet(table, folder / "out" / f"{name}.parquet")
        return {name: (folder / "out" / f"{name}.parquet").read_bytes() for name in tables}

    with running_world(tiny_world) as clean:
        expected = build(clean, tmp_path / "clean", fast_politeness())
    with running_world(tiny_world, faults=CURABLE) as faulty:
        # Generous timeout: drawing a multi-megapixel original (one oversize variant) takes a while.
        build(faulty, tmp_path / "rerun", fast_politeness(max_attempts=2, timeout_s=20.0, timeout_hold_s=20.0))
        injected = {k for s in faulty.servers.values() for k in s.counters if k.startswith("fault:")}
    assert {"fault:oversize", "fault:corrupt", "fault:garbage"} <= injected
    lost = Staging(tmp_path / "rerun" / "images", STAGED_IMAGES).load().failures
    lost_summaries = Staging(tmp_path / "rerun" / "summaries", STAGED_SUMMARIES).load().failures
    reasons = set(lost["reason"].to_pylist()) | set(lost_summaries["reason"].to_pylist())
    assert reasons & {"too_large", "too_many_pixels", "wrong_size", "corrupt"}  # the faults had the last word
    with running_world(tiny_world) as good_again:
        rebuilt = build(good_again, tmp_path / "rerun", fast_politeness())
    assert rebuilt == expected
