"""The check rules, fed good tables and tables broken in one known way each."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pytest
from PIL import Image

from mlm_pipeline import checks, schemas


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
    finding = checks.languages_within(summaries, "lang", checks.LANGUAGES, key=("qid", "lang"))
    assert finding.offending == ("Q1/it",)
    versions = pa.table(
        {"qid": ["Q1", "Q2", "Q3", "Q4"], "languages": [["en", "de"], ["es"], [], None]},
        schema=pa.schema([("qid", pa.string()), ("languages", schemas.STRS)]),
    )
    finding = checks.languages_within(versions, "languages", checks.LANGUAGES)
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
        "content": content,
    }


def test_images_decodable() -> None:
    jpeg, png = encoded("JPEG"), encoded("PNG")
    good = [image_row("Q1", "a.jpg", "JPEG", jpeg), image_row("Q2", "b.png", "PNG", png)]
    assert checks.images_decodable(pa.Table.from_pylist(good, schema=schemas.IMAGES)).passed
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="6"/>'
    wrong_sha = image_row("Q5", "e.jpg", "JPEG", jpeg) | {"sha256": "0" * 64}
    bad = [
        image_row("Q1", "a.jpg", "JPEG", jpeg[: len(jpeg) // 2]),  # truncated
        image_row("Q2", "b.svg", "SVG", svg),
        image_row("Q3", "c.png", "JPEG", png),  # lies about its format
        image_row("Q4", "d.jpg", "JPEG", jpeg, size=(9, 6)),
        wrong_sha,
        image_row("Q6", "f.jpg", "JPEG", jpeg),
    ]
    finding = checks.images_decodable(pa.Table.from_pylist(bad, schema=schemas.IMAGES))
    assert finding.offending == ("Q1/a.jpg", "Q2/b.svg", "Q3/c.png", "Q4/d.jpg", "Q5/e.jpg")
    assert finding.reasons == {
        "undecodable (OSError)": 1,
        "format SVG": 1,
        "declared JPEG but decodes as PNG": 1,
        "declared size differs from the decoded one": 1,
        "sha256 does not match the bytes": 1,
    }


def test_detail_names_the_first_rows_and_counts_the_rest() -> None:
    table = pa.table({"qid": [f"Q{i:03d}" for i in range(30)] * 2})
    finding = checks.unique_keys(table, ["qid"])
    assert len(finding.offending) == 30
    assert "Q019" in finding.detail and "Q020" not in finding.detail and "and 10 more" in finding.detail
