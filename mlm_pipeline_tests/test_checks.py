"""The check rules, fed good tables and tables broken in one known way each."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pytest
from dagster import ExecuteInProcessResult, Output, asset, materialize
from PIL import Image

from mlm_pipeline import checks, schemas
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.parquet_io import ParquetIOManager
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance

LANGUAGES = ("en", "de", "fr")


def entities(rows: list[tuple[str | None, float | None, float | None]]) -> pa.Table:
    return pa.table(
        {"qid": [r[0] for r in rows], "lat": [r[1] for r in rows], "lon": [r[2] for r in rows]},
        schema=pa.schema([("qid", pa.string()), ("lat", pa.float64()), ("lon", pa.float64())]),
    )


def test_unique_keys_names_duplicates_and_null_keys() -> None:
    table = pa.table({"qid": ["Q1", "Q2", "Q2", None, "Q3"], "lang": ["en", "en", "en", "de", None]})
    assert checks.unique_keys(table.select(["qid"]).slice(0, 2), ["qid"]).passed
    finding = checks.unique_keys(table, ["qid", "lang"])
    assert finding.offending == ("<null>/de", "Q2/en", "Q3/<null>")
    assert finding.reasons == {"duplicate": 1, "null key": 2}
    assert not finding.passed and "Q2/en" in finding.detail


def test_unique_keys_rejects_a_table_without_the_key_column() -> None:
    with pytest.raises(ValueError, match="no column \\['qid'\\]"):
        checks.unique_keys(pa.table({"id": ["Q1"]}), ["qid"])


def test_coordinates_in_range() -> None:
    good = entities([("Q1", 90.0, -180.0), ("Q2", -90.0, 180.0), ("Q3", 0.0, 0.0)])
    assert checks.coordinates_in_range(good).passed
    bad = entities(
        [("Q1", 91.0, 0.0), ("Q2", 0.0, -180.5), ("Q3", None, 1.0), ("Q4", float("nan"), 0.0), ("Q5", 1.0, 2.0)]
    )
    finding = checks.coordinates_in_range(bad)
    assert finding.offending == ("Q1", "Q2", "Q3", "Q4")
    assert finding.reasons == {
        "latitude out of range": 1,
        "longitude out of range": 1,
        "missing coordinate": 1,
        "non-finite coordinate": 1,
    }


def test_languages_within_single_and_list_columns() -> None:
    summaries = pa.table({"qid": ["Q1", "Q1", "Q2"], "lang": ["en", "it", "fr"]})
    finding = checks.languages_within(summaries, "lang", LANGUAGES, key=("qid", "lang"))
    assert finding.offending == ("Q1/it",)
    versions = pa.table(
        {"qid": ["Q1", "Q2", "Q3", "Q4"], "languages": [["en", "de"], ["es"], [], None]},
        schema=pa.schema([("qid", pa.string()), ("languages", schemas.STRS)]),
    )
    finding = checks.languages_within(versions, "languages", LANGUAGES)
    assert finding.offending == ("Q2", "Q3", "Q4")
    assert finding.reasons == {"language 'es'": 1, "no language": 2}


def splits_table(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"version": v, "qid": q, "split": s} for v, q, s in rows], schema=schemas.SPLITS
    )


def test_exactly_one_split() -> None:
    versions = {"mlm_irle": pa.table({"qid": ["Q1", "Q2", "Q3"]}), "mlm_irle_gr": pa.table({"qid": ["Q1"]})}
    good = splits_table(
        [("mlm_irle", "Q1", "train"), ("mlm_irle", "Q2", "val"), ("mlm_irle", "Q3", "test"), ("mlm_irle_gr", "Q1", "test")]
    )
    finding = checks.exactly_one_split(good, versions)
    assert finding.passed
    assert finding.counts["mlm_irle_train"] == 1 and finding.counts["mlm_irle_gr_test"] == 1
    bad = splits_table(
        [
            ("mlm_irle", "Q1", "train"),
            ("mlm_irle", "Q1", "test"),  # twice
            ("mlm_irle", "Q2", "holdout"),  # no such split
            ("mlm_irle", "Q9", "train"),  # not in the version; Q3 in no split
            ("mlm", "Q1", "train"),  # a version without splits
            ("mlm_irle_gr", "Q1", "val"),
        ]
    )
    finding = checks.exactly_one_split(bad, versions)
    assert finding.offending == ("mlm/Q1", "mlm_irle/Q1", "mlm_irle/Q2", "mlm_irle/Q3", "mlm_irle/Q9")
    assert finding.reasons == {
        "in no split": 1,
        "in several splits": 1,
        "not in the version": 1,
        "split 'holdout'": 1,
        "unknown version": 1,
    }


def geo_cells(rows: list[tuple[int, str, int, int]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"cell": c, "token": t, "level": lvl, "count": n, "mean_lat": 0.0, "mean_lon": 0.0}
            for c, t, lvl, n in rows
        ],
        schema=schemas.GEO_CELLS,
    )


def test_cell_counts_within_thresholds_and_labels_in_token_order() -> None:
    good = geo_cells([(0, "0d", 3, 20), (1, "1b", 10, 900), (2, "47", 5, 500)])
    assert checks.cell_counts_within(good, 20, 500, 10).passed
    bad = geo_cells([(0, "0d", 3, 19), (2, "1b", 9, 501), (1, "47", 5, 30)])
    finding = checks.cell_counts_within(bad, 20, 500, 10)
    assert finding.offending == ("0d", "1b", "47")
    assert finding.reasons == {
        "below the minimum count": 1,
        "above the maximum count below the deepest level": 1,
        "label 2 at token position 1": 1,
        "label 1 at token position 2": 1,
    }
    assert finding.counts == {"cells": 3, "min_cell_count": 19, "max_cell_count": 501}


def test_cells_match_entities() -> None:
    cells = geo_cells([(0, "0d", 3, 2), (1, "1b", 3, 1)])
    entity_cells = pa.Table.from_pylist(
        [{"qid": "Q1", "cell": 0, "token": "0d"}, {"qid": "Q2", "cell": 0, "token": "0d"}, {"qid": "Q3", "cell": 1, "token": "1b"}],
        schema=schemas.ENTITY_CELLS,
    )
    assert checks.cells_match_entities(cells, entity_cells).passed
    broken = pa.Table.from_pylist(
        [{"qid": "Q1", "cell": 0, "token": "0d"}, {"qid": "Q2", "cell": 7, "token": "0d"}, {"qid": "Q3", "cell": 1, "token": "ff"}],
        schema=schemas.ENTITY_CELLS,
    )
    finding = checks.cells_match_entities(cells, broken)
    assert finding.offending == ("0d", "Q2", "Q3")
    assert finding.reasons == {"unknown cell 7": 1, "token differs from the cell's": 1, "count 2 but 1 entities": 1}


def encoded(fmt: str, size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


def image_row(qid: str, name: str, fmt: str, content: bytes, size: tuple[int, int] = (8, 6)) -> dict[str, object]:
    return {
        "qid": qid,
        "file_name": name,
        "url": f"http://127.0.0.1/{name}",
        "sha256": hashlib.sha256(content).hexdigest(),
        "format": fmt,
        "width": size[0],
        "height": size[1],
        "n_bytes": len(content),
        "license": "CC0",
        "attribution": "",
    }


def test_images_decodable(tmp_path) -> None:
    blobs = BlobStore(tmp_path)
    jpeg, png = encoded("JPEG"), encoded("PNG")
    good = [image_row("Q1", "a.jpg", "JPEG", jpeg), image_row("Q2", "b.png", "PNG", png)]
    for content in (jpeg, png):
        blobs.put(content)
    assert checks.images_decodable(pa.Table.from_pylist(good, schema=schemas.IMAGES), blobs.get).passed
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="6"/>'
    truncated = jpeg[: len(jpeg) // 2]
    blobs.put(truncated)
    wrong_sha = image_row("Q5", "e.jpg", "JPEG", jpeg) | {"sha256": "0" * 64}
    blobs.path("0" * 64).parent.mkdir(parents=True)
    blobs.path("0" * 64).write_bytes(jpeg)  # bytes damaged in storage
    bad = [
        image_row("Q1", "a.jpg", "JPEG", truncated),
        image_row("Q2", "b.svg", "SVG", svg),
        image_row("Q3", "c.png", "JPEG", png),  # lies about its format
        image_row("Q4", "d.jpg", "JPEG", jpeg, size=(9, 6)),
        wrong_sha,
        image_row("Q6", "f.jpg", "JPEG", jpeg),
        image_row("Q7", "g.jpg", "JPEG", encoded("JPEG", (5, 5))),  # never stored
    ]
    table = pa.Table.from_pylist(bad, schema=schemas.IMAGES)
    finding = checks.images_decodable(table.to_batches(max_chunksize=3), blobs.get)
    assert finding.offending == ("Q1/a.jpg", "Q2/b.svg", "Q3/c.png", "Q4/d.jpg", "Q5/e.jpg", "Q7/g.jpg")
    assert finding.reasons == {
        "undecodable (OSError)": 1,
        "format SVG": 1,
        "declared JPEG but decodes as PNG": 1,
        "declared size differs from the decoded one": 1,
        "sha256 does not match the bytes": 1,
        "bytes not stored": 1,
    }
    assert finding.counts == {"images": len(bad)}


def test_detail_names_the_first_rows_and_counts_the_rest() -> None:
    table = pa.table({"qid": [f"Q{i:03d}" for i in range(30)] * 2})
    finding = checks.unique_keys(table, ["qid"])
    assert len(finding.offending) == 30
    assert "Q019" in finding.detail and "Q020" not in finding.detail and "and 10 more" in finding.detail


def vector_table(rows: list[tuple[str, list[float] | None]], dim: int | None = None) -> pa.Table:
    vector_type = pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32())
    return pa.table(
        {"qid": [q for q, _ in rows], "vector": pa.array([v for _, v in rows], type=vector_type)}
    )


def test_vectors_sound_fixed_and_variable_width() -> None:
    good = vector_table([("Q1", [0.0, 1.0, 2.0]), ("Q2", [3.0, 4.0, 5.0])], dim=3)
    assert checks.vectors_sound(good, ["qid"], 3).passed
    bad_fixed = vector_table([("Q1", [0.0, float("nan"), 2.0]), ("Q2", None), ("Q3", [1.0, 1.0, float("inf")]), ("Q4", [1.0, 2.0, 3.0])], dim=3)
    finding = checks.vectors_sound(bad_fixed, ["qid"], 3)
    assert finding.offending == ("Q1", "Q2", "Q3")
    assert finding.reasons == {"NaN or infinite value": 2, "missing vector": 1}
    ragged = vector_table([("Q1", [1.0, 2.0]), ("Q2", [1.0, 2.0, 3.0]), ("Q3", [float("nan")] * 3), ("Q4", [])])
    finding = checks.vectors_sound(ragged, ["qid"], 3)
    assert finding.offending == ("Q1", "Q3", "Q4")
    assert finding.reasons == {"2-d vector": 1, "0-d vector": 1, "NaN or infinite value": 1}
    # a fixed width other than the expected one offends on every row
    assert checks.vectors_sound(good, ["qid"], 4).reasons == {"3-d vector": 2}


def test_vectors_sound_across_chunks() -> None:
    table = pa.concat_tables(
        [vector_table([("Q1", [1.0, 2.0])], dim=2), vector_table([("Q2", [1.0, float("nan")]), ("Q3", [0.0, 0.0])], dim=2)]
    )
    assert table.column("vector").num_chunks == 2
    assert checks.vectors_sound(table, ["qid"], 2).offending == ("Q2",)


def retrieval_row(**changes: object) -> dict[str, object]:
    row = {
        "version": "mlm_irle", "system": "multitask", "direction": "image->text", "medr": 19.9, "medr_std": 2.0,
        "r1": 0.05, "r5": 0.2, "r10": 0.34, "subset_size": 500, "n_subsets": 10, "n_test": 21869,
        "model": "model_multitask_mlm_irle", "best_epoch": 7,
    }
    return row | changes


def test_retrieval_metrics_within() -> None:
    good = pa.Table.from_pylist([retrieval_row(), retrieval_row(direction="text->image", medr=1.0)], schema=schemas.RETRIEVAL_RESULTS)
    assert checks.retrieval_metrics_within(good).passed
    bad = pa.Table.from_pylist(
        [
            retrieval_row(direction="a", medr=0.5),
            retrieval_row(direction="b", r5=0.01),
            retrieval_row(direction="c", r10=1.2),
            retrieval_row(direction="d", subset_size=30000),
            retrieval_row(direction="e", medr=float("nan")),
        ],
        schema=schemas.RETRIEVAL_RESULTS,
    )
    finding = checks.retrieval_metrics_within(bad)
    assert finding.offending == tuple(f"mlm_irle/multitask/{d}" for d in "abcde")
    assert finding.reasons == {
        "medR outside 1..subset size": 2,
        "recalls not ordered shares": 2,
        "subset size outside 1..n_test": 1,
    }


def location_row(**changes: object) -> dict[str, object]:
    row = {
        "version": "mlm_irle", "system": "multitask", "input": "image", "precision": 0.2, "recall": 0.15, "f1": 0.15,
        "within_1km": 0.0, "within_25km": 0.1, "within_200km": 0.3, "within_750km": 0.6, "within_2500km": 0.9,
        "n_test": 100, "model": "m", "best_epoch": 3,
    }
    return row | changes


def test_location_metrics_within() -> None:
    assert checks.location_metrics_within(pa.Table.from_pylist([location_row()], schema=schemas.LOCATION_RESULTS)).passed
    bad = pa.Table.from_pylist(
        [location_row(input="a", f1=1.5), location_row(input="b", within_750km=0.2), location_row(input="c", n_test=0)],
        schema=schemas.LOCATION_RESULTS,
    )
    finding = checks.location_metrics_within(bad)
    assert finding.offending == ("mlm_irle/multitask/a", "mlm_irle/multitask/b", "mlm_irle/multitask/c")
    assert finding.reasons == {"precision/recall/F1 outside [0, 1]": 1, "distance shares not ordered": 1, "no test items": 1}


def curve(rows: list[tuple[int, float, float, bool]]) -> pa.Table:
    defaults = {name: None for name in schemas.LEARNING_CURVE.names}
    return pa.Table.from_pylist(
        [defaults | {"model": "m", "epoch": e, "train_loss": t, "val_loss": v, "best": b} for e, t, v, b in rows],
        schema=schemas.LEARNING_CURVE,
    )


def test_learning_curve_sound() -> None:
    assert checks.learning_curve_sound(curve([(1, 2.0, 1.5, False), (2, 1.0, 1.2, True), (3, 0.9, 1.3, False)])).passed
    finding = checks.learning_curve_sound(curve([(1, 2.0, 1.5, True), (3, float("nan"), 1.2, False)]))
    assert finding.offending == ("m/1", "m/3")
    assert finding.reasons == {
        "epoch 3 at position 2": 1,
        "loss not finite": 1,
        "best epoch without the lowest validation loss": 1,
    }
    assert checks.learning_curve_sound(curve([(1, 2.0, 1.5, False)])).reasons == {"0 best epochs": 1}


def stats(rows: dict[str, tuple[int, int, int]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"row": i, "measure": m, "mlm": a, "mlm_irle": b, "mlm_irle_gr": c} for i, (m, (a, b, c)) in enumerate(rows.items())],
        schema=schemas.DATASET_STATS,
    )


def test_stats_consistent() -> None:
    good = {
        "entities": (10, 8, 4), "images": (20, 12, 5), "train": (8, 6, 2), "val": (1, 1, 1), "test": (1, 1, 1),
        "entities_EU": (7, 6, 4), "entities_AS": (3, 2, 0),
    }
    assert checks.stats_consistent(stats(good)).passed
    bad = good | {"entities": (10, 8, 9), "test": (1, 2, 1), "entities_AS": (2, 2, 0)}
    finding = checks.stats_consistent(stats(bad))
    assert finding.offending == (
        "entities/mlm_irle_gr", "entities_<continent>/mlm", "entities_<continent>/mlm_irle_gr",
        "train+val+test/mlm_irle", "train+val+test/mlm_irle_gr",
    )


# ------------------------------------------------------------------ the Dagster checks in a run

RELEASE = "2026-01-05"


def run_with_checks(tmp_path, instance, assets: list, selection_checks: list) -> ExecuteInProcessResult:
    instance.add_dynamic_partitions("release", [RELEASE])
    return materialize(
        [*assets, *selection_checks],
        partition_key=RELEASE,
        instance=instance,
        resources={"io_manager": ParquetIOManager(base_dir=str(tmp_path))},
        raise_on_error=False,
    )


def check_evaluations(result) -> dict[str, object]:
    return {
        f"{e.event_specific_data.asset_key.to_user_string()}:{e.event_specific_data.check_name}": e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_a_failing_blocking_check_names_the_rows_and_stops_what_is_downstream(tmp_path, dagster_instance) -> None:
    bad = [{"qid": "Q1", "lat": 10.0, "lon": 20.0}, {"qid": "Q2", "lat": 95.0, "lon": 0.0}, {"qid": "Q1", "lat": 1.0, "lon": 1.0}]

    @asset(name="entities", partitions_def=release_partitions)
    def bad_entities() -> pa.Table:
        defaults = {name: None for name in schemas.ENTITIES.names}
        return pa.Table.from_pylist([defaults | row for row in bad], schema=schemas.ENTITIES)

    built = []

    @asset(partitions_def=release_partitions, deps=["entities"])
    def downstream() -> None:
        built.append(True)

    entity_checks = [c for c in checks.asset_checks if {k.asset_key.to_user_string() for k in c.check_keys} == {"entities"}]
    result = run_with_checks(tmp_path, dagster_instance, [bad_entities, downstream], entity_checks)
    assert not result.success and not built
    evaluations = check_evaluations(result)
    unique, in_range = evaluations["entities:unique_qid"], evaluations["entities:coordinates_in_range"]
    assert not unique.passed and unique.metadata["offending"].value == ["Q1"]
    assert not in_range.passed and in_range.metadata["offending"].value == ["Q2"]
    assert in_range.metadata["reasons"].value == {"latitude out of range": 1}
    assert "Q2" in in_range.description


def test_language_check_holds_summaries_to_the_languages_they_were_built_with(tmp_path, dagster_instance) -> None:
    rows = [{"qid": "Q1", "lang": "en", "title": "A", "text": "a"}, {"qid": "Q1", "lang": "de", "title": "A", "text": "b"}]

    @asset(name="summaries", partitions_def=release_partitions)
    def english_only():
        table = pa.Table.from_pylist(rows, schema=schemas.SUMMARIES)
        return Output(table, metadata=provenance(config={"languages": ["en"]}))

    language_check = [
        c
        for c in checks.asset_checks
        if any(k.name == "languages_within_configured" and k.asset_key.path == ["summaries"] for k in c.check_keys)
    ]
    result = run_with_checks(tmp_path, dagster_instance, [english_only], language_check)
    evaluation = check_evaluations(result)["summaries:languages_within_configured"]
    assert not evaluation.passed and evaluation.metadata["offending"].value == ["Q1/de"]


def _dropouts(rows: list[tuple[str, str, str, str | None]]) -> pa.Table:
    return pa.table({name: [r[i] for r in rows] for i, name in enumerate(("qid", "item", "stage", "reason"))})


def test_dropouts_name_a_stage_a_reason_token_and_an_entity_known_upstream() -> None:
    kept = {"Q1", "Q2"}
    good = _dropouts([("Q1", "en", "summaries", "missing_page"), ("Q2", "a.jpg", "images", "http_404")])
    assert checks.dropouts_sound(good, kept, dropped_from_upstream=True).passed
    bad = _dropouts([
        ("Q9", "en", "summaries", "missing_page"),  # no such entity
        ("Q1", "", "somewhere", "no_image"),  # no such stage
        ("Q2", "", "images", "HTTP 404: Not Found"),  # prose, not a token
        ("Q1", "", "images", None),
    ])
    found = checks.dropouts_sound(bad, kept, dropped_from_upstream=True)
    assert dict(found.reasons) == {"qid unknown upstream": 1, "stage is no asset": 1, "reason is no token": 2}
    # Extraction's dropouts are the candidates it did not keep.
    extraction = _dropouts([("Q1", "", "entities", "no_image"), ("Q7", "", "entities", "no_article")])
    assert checks.dropouts_sound(extraction, kept, dropped_from_upstream=False).offending == ("Q1//entities",)


def test_a_release_diff_fits_the_release_it_describes() -> None:
    diff = pa.table({
        "qid": ["Q1", "Q2", "Q3", "Q4", "Q5"],
        "change": ["added", "removed", "changed", "changed", "renamed"],
        "fields": [[], [], ["coordinates"], [], []],
    })
    found = checks.diff_sound(diff, {"Q1", "Q3", "Q4"})
    assert found.offending == ("Q4", "Q5")
    assert checks.diff_sound(diff.slice(0, 3), {"Q1", "Q3"}).passed
    assert not checks.diff_sound(diff.slice(0, 3), {"Q1", "Q2", "Q3"}).passed  # removed, yet still there
