"""The release diff's logic on small hand-made releases (the sensor test diffs real ones)."""

from __future__ import annotations

import pyarrow as pa

from mlm_pipeline import schemas
from mlm_pipeline.diff import Previous, Release, diff_counts, diff_releases, previous_release


def entities(rows: list[dict[str, object]]) -> pa.Table:
    defaults = {name: None for name in schemas.ENTITIES.names}
    return pa.Table.from_pylist([defaults | row for row in rows], schema=schemas.ENTITIES)


def summaries(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"qid": q, "lang": lang, "title": q, "text": t} for q, lang, t in rows], schema=schemas.SUMMARIES
    )


OLD = entities(
    [
        {"qid": "Q1", "lat": 1.0, "lon": 2.0, "classes": ["Q5", "Q6"], "images": ["a.jpg"]},
        {"qid": "Q2", "lat": 3.0, "lon": 4.0, "classes": ["Q5"], "images": ["b.jpg"]},
        {"qid": "Q3", "lat": 5.0, "lon": 6.0, "classes": ["Q5"], "images": ["c.jpg"]},
        {"qid": "Q4", "lat": 7.0, "lon": 8.0, "classes": ["Q5"], "images": ["d.jpg", "e.jpg"]},
    ]
)
NEW = entities(
    [
        {"qid": "Q1", "lat": 1.0 + 1e-9, "lon": 2.0, "classes": ["Q6", "Q5"], "images": ["a.jpg"]},  # noise only
        {"qid": "Q2", "lat": 3.5, "lon": 4.0, "classes": ["Q7"], "images": ["b.jpg"]},  # moved, reclassed
        {"qid": "Q4", "lat": 7.0, "lon": 8.0, "classes": ["Q5"], "images": ["e.jpg", "d.jpg", "f.jpg"]},
        {"qid": "Q8", "lat": 9.0, "lon": 9.0, "classes": ["Q5"], "images": ["g.jpg"]},  # new
    ]
)
OLD_TEXTS = summaries([("Q1", "en", "Old text."), ("Q4", "de", "Text.")])
NEW_TEXTS = summaries([("Q1", "en", "New text."), ("Q4", "de", "Text."), ("Q8", "fr", "Texte.")])


def test_previous_release_is_the_latest_earlier_registered_one() -> None:
    registered = ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]
    built = {"2026-01-05", "2026-01-12"}
    assert previous_release("2026-01-19", registered, built) == Previous("2026-01-12")
    assert previous_release("2026-01-12", registered, {*built, "2026-01-19"}) == Previous("2026-01-05")
    assert previous_release("2026-01-05", registered, set(registered)) == Previous(None)
    # Built at once (a backfill): the later release waits for the earlier one's entities...
    assert previous_release("2026-01-26", registered, built, building={"2026-01-19"}) == Previous(
        None, wait_for="2026-01-19"
    )
    # ...but a release that nobody builds is skipped, and named.
    assert previous_release("2026-01-26", registered, built) == Previous("2026-01-12", skipped=("2026-01-19",))
    assert previous_release("2026-01-12", registered, set()) == Previous(None, skipped=("2026-01-05",))


def test_diff_names_added_removed_and_changed_fields() -> None:
    diff = diff_releases(Release(NEW, NEW_TEXTS), Release(OLD, OLD_TEXTS), "2026-01-05")
    assert diff.schema == schemas.RELEASE_DIFF
    rows = {r["qid"]: (r["change"], r["fields"]) for r in diff.to_pylist()}
    assert rows == {
        "Q1": ("changed", ["summaries"]),
        "Q2": ("changed", ["coordinates", "classes"]),
        "Q3": ("removed", []),
        "Q4": ("changed", ["images"]),
        "Q8": ("added", []),
    }
    assert set(diff.column("previous_release").to_pylist()) == {"2026-01-05"}
    counts = diff_counts(diff, NEW.num_rows)
    assert counts == {
        "n_added": 1,
        "n_removed": 1,
        "n_changed": 3,
        "n_changed_coordinates": 1,
        "n_changed_classes": 1,
        "n_changed_images": 1,
        "n_changed_summaries": 1,
        "n_unchanged": 0,
    }


def test_summaries_unknown_on_one_side_are_not_reported_as_changed() -> None:
    diff = diff_releases(Release(NEW, NEW_TEXTS), Release(OLD, None), "2026-01-05")
    assert "summaries" not in {f for fields in diff.column("fields").to_pylist() for f in fields}
    assert "Q1" not in diff.column("qid").to_pylist()


def test_first_release_has_everything_added() -> None:
    diff = diff_releases(Release(NEW, NEW_TEXTS), None, None)
    assert diff.column("qid").to_pylist() == sorted(NEW.column("qid").to_pylist())
    assert set(diff.column("change").to_pylist()) == {"added"}
    assert diff.column("previous_release").null_count == diff.num_rows
    assert diff_counts(diff, NEW.num_rows)["n_unchanged"] == 0
