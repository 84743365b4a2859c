"""The search index and its parts without a release: building it, ranking, upload checks, the map."""

from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ElementTree
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest
import s2sphere
import torch
from PIL import Image

from mlm_pipeline import schemas
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.checks import index_complete
from mlm_pipeline.encoders.vectors import vector_matrix
from mlm_pipeline.model.networks import MLMNet, ModelShape
from mlm_pipeline.search.engine import Cells, Ranker, Rows
from mlm_pipeline.search.index import IMAGE, TEXT, ClassVectors, IndexInputError, build_search_index, embed_texts, text_sha256
from mlm_pipeline.search.queries import QueryError, QueryLimits, check_content_type, check_image, check_text, parse_k
from mlm_pipeline.search.thumbnails import ThumbnailCache, blob_reader
from mlm_pipeline.shards import store_table, stored_table
from mlm_pipeline.search.worldmap import cell_polygon, world_svg
from mlm_pipeline_tests.test_model import synthetic_tables

N = 30


@pytest.fixture(scope="module")
def inputs() -> dict[str, pa.Table]:
    tables = synthetic_tables(n_entities=N, n_cells=3)
    version = tables["mlm_irle"]
    qids = version.column("qid").to_pylist()
    # Entity 0 has only a German label; entity 1's classes have no vectors (it takes the prior).
    tables["mlm_irle"] = version.set_column(
        version.schema.get_field_index("classes"), "classes", pa.array([["Q1"] if i == 1 else c for i, c in enumerate(version.column("classes").to_pylist())])
    )
    tables["entities"] = pa.table({
        "qid": qids,
        "label_en": ["" if i == 0 else f"Place {i}" for i in range(N)],
        "label_de": [f"Ort {i}" for i in range(N)],
        "label_fr": pa.nulls(N, pa.string()),
    })
    features = tables["image_features"]
    tables["images"] = pa.table({
        "qid": features.column("qid"),
        "file_name": features.column("file_name"),
        "sha256": [f"{i:064x}" for i in range(features.num_rows)],
    })
    texts = tables["text_features"]
    tables["summaries"] = pa.table({
        "qid": texts.column("qid"),
        "lang": texts.column("lang"),
        "text": [f"  summary {q} {lang} " for q, lang in zip(texts.column("qid").to_pylist(), texts.column("lang").to_pylist())],
    })
    return tables


@pytest.fixture(scope="module")
def net() -> MLMNet:
    torch.manual_seed(0)
    return MLMNet(ModelShape("multitask", image_dim=24, text_dim=12, class_dim=12, n_cells=3, emb_dim=16)).eval()


def build(inputs: dict[str, pa.Table], net: MLMNet, **changes: pa.Table) -> pa.Table:
    tables = {**inputs, **changes}
    return build_search_index(
        image_features=tables["image_features"], text_features=tables["text_features"], images=tables["images"],
        summaries=tables["summaries"], entities=tables["entities"], version=tables["mlm_irle"],
        class_features=tables["class_features"], net=net, batch_size=7,
    )


def test_every_image_and_summary_is_indexed_with_what_shows_and_recognises_it(inputs, net) -> None:
    index = build(inputs, net)
    assert index.schema == schemas.search_index_schema(16)
    kinds = index.column("kind").to_pylist()
    assert kinds.count(IMAGE) == inputs["image_features"].num_rows
    assert kinds.count(TEXT) == inputs["text_features"].num_rows
    assert index_complete(index, inputs["image_features"], inputs["text_features"]).passed
    assert index == schemas.sort_table(index, "search_index")
    rows = {(r["kind"], r["qid"], r["item"]): r for r in index.drop(["vector"]).to_pylist()}
    first = inputs["mlm_irle"].column("qid")[0].as_py()
    image = rows[(IMAGE, first, f"{first}_0.jpg")]
    assert image["label"] == "Ort 0" and image["text"] is None and image["sha256"] == f"{0:064x}"
    assert image["lat"] == inputs["mlm_irle"].column("lat")[0].as_py()
    text = rows[(TEXT, first, "de")]
    assert text["text"] == f"  summary {first} de " and text["sha256"] == text_sha256(f"summary {first} de")
    assert rows[(TEXT, inputs["mlm_irle"].column("qid")[2].as_py(), "de")]["label"] == "Place 2"


def test_a_summary_is_embedded_with_its_entitys_classes_and_without_them_with_the_mean(inputs, net) -> None:
    index = build(inputs, net)
    classes = ClassVectors(inputs["class_features"], inputs["mlm_irle"])
    text_rows = index.filter(pa.compute.equal(index.column("kind"), TEXT))
    features = inputs["text_features"].sort_by([("qid", "ascending"), ("lang", "ascending")])
    qids = features.column("qid").to_pylist()
    expected = embed_texts(net, vector_matrix(features.column("vector")), classes.batch(qids))
    np.testing.assert_allclose(vector_matrix(text_rows.column("vector")), expected, atol=1e-6)
    # the class input matters, and the entity whose classes have no vectors got the prior
    assert not np.allclose(classes.of(qids[0]), classes.prior)
    assert np.array_equal(classes.of(inputs["mlm_irle"].column("qid")[1].as_py()), classes.prior)
    assert np.array_equal(classes.of(None), classes.prior)


def test_the_same_inputs_give_the_same_index_whatever_the_batch_size(inputs, net) -> None:
    once = build(inputs, net)
    again = build_search_index(
        image_features=inputs["image_features"], text_features=inputs["text_features"], images=inputs["images"],
        summaries=inputs["summaries"], entities=inputs["entities"], version=inputs["mlm_irle"],
        class_features=inputs["class_features"], net=net, batch_size=1000,
    )
    assert once.drop(["vector"]) == again.drop(["vector"])
    np.testing.assert_allclose(vector_matrix(once.column("vector")), vector_matrix(again.column("vector")), atol=1e-6)
    assert build(inputs, net) == once


def test_a_feature_row_without_its_image_entity_or_text_is_refused_by_name(inputs, net) -> None:
    with pytest.raises(IndexInputError, match=r"image_features vs images_filtered: 1 rows have no match.*Q9000000000"):
        build(inputs, net, images=inputs["images"].slice(1))
    with pytest.raises(IndexInputError, match="text_features vs summaries: 1 rows have no match"):
        build(inputs, net, summaries=inputs["summaries"].slice(1))
    with pytest.raises(IndexInputError, match="image_features vs the dataset version"):
        build(inputs, net, mlm_irle=inputs["mlm_irle"].slice(1))
    with pytest.raises(IndexInputError, match=r"entities lacks columns \['label_fr'\]"):
        build(inputs, net, entities=inputs["entities"].drop(["label_fr"]))


def test_the_completeness_check_names_missing_extra_and_non_unit_rows(inputs, net) -> None:
    index = build(inputs, net)
    vectors = vector_matrix(index.column("vector")).copy()
    vectors[3] *= 2.0
    from mlm_pipeline.encoders.vectors import to_vector_array

    broken = index.set_column(index.schema.get_field_index("vector"), "vector", to_vector_array(vectors)).slice(1)
    finding = index_complete(broken, inputs["image_features"], inputs["text_features"])
    first = index.slice(0, 1).to_pylist()[0]
    third = index.slice(3, 1).to_pylist()[0]
    assert f"image/{first['qid']}/{first['item']}" in finding.offending
    assert f"{third['kind']}/{third['qid']}/{third['item']}" in finding.offending
    assert dict(finding.reasons) == {"has features but is not indexed": 1, "vector not of unit length": 1}
    extra = index_complete(index, inputs["image_features"].slice(1), inputs["text_features"])
    assert dict(extra.reasons) == {"indexed without features": 1}


def rows_of(vectors: list[list[float]], qids: list[str]) -> Rows:
    n = len(qids)
    table = pa.table({
        "kind": [IMAGE] * n, "qid": qids, "item": [f"{i}.jpg" for i in range(n)], "label": qids,
        "lat": [0.0] * n, "lon": [0.0] * n, "sha256": [f"{i:064x}" for i in range(n)], "text": pa.nulls(n, pa.string()),
        "vector": pa.array(vectors, pa.list_(pa.float32(), 2)),
    })
    return Rows(table, IMAGE)


def test_ranking_keeps_each_entitys_best_row_best_first_and_breaks_ties_by_row() -> None:
    rows = rows_of(
        [[1, 0], [0.9, 0.1], [0.8, 0.2], [1, 0], [0, 1], [-1, 0]],
        ["Q1", "Q1", "Q2", "Q3", "Q4", "Q5"],
    )
    picked, scores = rows.top(np.array([1.0, 0.0]), 3)
    assert picked.tolist() == [0, 3, 2]  # Q1's best row and Q3 tie: the lower row first; Q1's second row is left out
    assert scores.tolist() == pytest.approx([1.0, 1.0, 0.8])
    picked, _ = rows.top(np.array([1.0, 0.0]), 50)
    assert picked.tolist() == [0, 3, 2, 4, 5]  # every entity once, even when k is more than there are
    assert rows.find(f"{4:064x}") == 4 and rows.find("f" * 64) is None
    assert list(rows.of_entity("Q1")) == [0, 1] and list(rows.of_entity("Q9")) == []


def test_ranking_widens_its_candidates_until_it_has_k_entities() -> None:
    # 300 rows of one entity score above everything else: 4k candidates would hold one entity.
    vectors = [[1.0, 0.0]] * 300 + [[0.5, 0.5]] * 5
    qids = ["Q1"] * 300 + [f"Q{2 + i}" for i in range(5)]
    picked, _ = rows_of(vectors, qids).top(np.array([1.0, 0.0]), 4)
    assert picked.tolist() == [0, 300, 301, 302]


def test_concurrent_queries_ranked_together_get_what_each_would_get_alone() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 2)).tolist()
    rows = rows_of(vectors, [f"Q{i // 3}" for i in range(500)])
    ranker = Ranker(rows, max_batch=8)
    queries = rng.standard_normal((40, 2)).astype(np.float32)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            together = list(pool.map(lambda q: ranker.top(q, 5), queries))
        for query, (picked, scores) in zip(queries, together):
            alone = rows.top(query, 5)
            assert picked.tolist() == alone[0].tolist() and np.allclose(scores, alone[1])
        with pytest.raises(ValueError):  # a bad query fails its caller, not the ranker
            ranker.top(np.zeros(3, np.float32), 5)
        assert ranker.top(queries[0], 2)[0].tolist() == rows.top(queries[0], 2)[0].tolist()
    finally:
        ranker.close()
    assert not ranker.thread.is_alive()


def test_thumbnails_of_an_answer_are_read_together_once_and_only_when_asked_for(tmp_path) -> None:
    keys = [(f"Q{i}", f"{i}.png") for i in range(6)]
    blobs = BlobStore(tmp_path / "blobs")
    store_table(tmp_path, "images_filtered", "r1", pa.table({
        "qid": [q for q, _ in keys], "file_name": [f for _, f in keys],
        "sha256": [blobs.put(png(10 + i, 10)) for i in range(6)]}))
    reads: list[list[tuple[str, str]]] = []
    read = blob_reader(stored_table("images_filtered", "r1", tmp_path), blobs)

    def counted(wanted: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        reads.append(sorted(wanted))
        return read(wanted)

    cache = ThumbnailCache(counted, max_bytes=3 * len(png(15, 10)))
    try:
        cache.expect(keys[:3])
        assert reads == []  # an answer alone reads nothing
        with ThreadPoolExecutor(max_workers=3) as pool:
            got = list(pool.map(cache.get, keys[:3]))
        assert reads == [keys[:3]]  # the page's three requests: one read of the group
        assert [Image.open(io.BytesIO(g)).size for g in got] == [(10, 10), (11, 10), (12, 10)]
        assert cache.get(keys[1]) == got[1] and len(reads) == 1
        assert cache.get(("Q9", "9.png")) is None and reads[-1] == [("Q9", "9.png")]
        cache.get(keys[4])
        cache.get(keys[5])  # past max_bytes: the least recently used go
        assert keys[0] not in cache.cached and keys[5] in cache.cached and cache.size <= cache.max_bytes
    finally:
        cache.close()


def test_location_gives_the_most_probable_cells_with_polygons_and_the_best_cells_centre() -> None:
    tokens = [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lon)).parent(4).to_token()
              for lat, lon in ((48.8, 2.3), (-33.9, 151.2), (40.7, -74.0))]
    cells = Cells(pa.table({"cell": pa.array([0, 1, 2], pa.int32()), "token": tokens,
                            "mean_lat": [48.8, -33.9, 40.7], "mean_lon": [2.3, 151.2, -74.0]}))
    location = cells.predict(torch.tensor([0.0, 2.0, 1.0]), top=2)
    assert [c["token"] for c in location["cells"]] == [tokens[1], tokens[2]]
    assert (location["lat"], location["lon"]) == (-33.9, 151.2)
    probabilities = torch.softmax(torch.tensor([0.0, 2.0, 1.0]), 0)
    assert location["cells"][0]["probability"] == pytest.approx(float(probabilities[1]), abs=1e-4)
    with pytest.raises(ValueError, match="cell labels are not 0..1"):
        Cells(pa.table({"cell": pa.array([0, 2], pa.int32()), "token": tokens[:2], "mean_lat": [0.0, 0.0], "mean_lon": [0.0, 0.0]}))


def test_a_cell_polygon_is_a_closed_ring_around_the_cell_also_across_the_antimeridian() -> None:
    for lat, lon, level in ((48.8, 2.3, 6), (-17.7, 179.9, 3), (65.0, -179.5, 2)):
        cell = s2sphere.Cell(s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lon)).parent(level))
        ring = cell_polygon(cell.id().to_token())
        assert ring[0] == ring[-1] and len(ring) == 33
        lons = [p[0] for p in ring]
        assert max(lons) - min(lons) < 180  # unwrapped: no jump across the map
        for k in range(4):  # the cell's corners, every 8th point
            corner = s2sphere.LatLng.from_point(cell.get_vertex(k))
            assert ring[8 * k][1] == pytest.approx(corner.lat().degrees, abs=1e-4)
            assert (ring[8 * k][0] - corner.lng().degrees + 180) % 360 - 180 == pytest.approx(0, abs=1e-4)
        assert min(p[1] for p in ring) <= lat <= max(p[1] for p in ring)
        assert any(min(lons) <= lon + shift <= max(lons) for shift in (-360, 0, 360))
    with pytest.raises(ValueError, match="not a valid S2 cell token"):
        cell_polygon("zz")


def test_the_world_map_is_an_svg_of_land_lakes_and_borders_in_the_map_frame() -> None:
    svg = ElementTree.fromstring(world_svg())
    assert svg.get("viewBox") == "0 0 360 180"
    paths = svg.iter("{http://www.w3.org/2000/svg}path")
    classes = [p.get("class") for p in paths]
    assert classes.count("land") > 500 and classes.count("lake") > 10 and classes.count(None) > 300
    numbers = [float(v) for v in world_svg().split('d="M', 1)[1].split('"', 1)[0].rstrip("Z").split()]
    assert all(0 <= v <= 360 for v in numbers[0::2]) and all(0 <= v <= 180 for v in numbers[1::2])


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header promising width x height pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (bomb_png(6_000, 6_000), 413, "too many pixels: 6000x6000 pixels exceed max_pixels=25000000"),
        (bomb_png(200_000, 200_000), 413, "too many pixels"),
        (b"\xff" * (QueryLimits().max_bytes + 1), 413, "more than 8388608 bytes"),
        (b"", 422, "body is empty"),
        (b"GIF89a not really", 422, "not a JPEG/PNG/GIF/WEBP image"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', 422, "not a JPEG/PNG/GIF/WEBP image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 422, "not a JPEG/PNG/GIF/WEBP image"),
        (png(40, 30)[:60], 422, "PNG image does not decode"),
    ],
)
def test_bad_uploads_are_refused_with_their_status(body: bytes, status: int, message: str) -> None:
    with pytest.raises(QueryError, match=message) as refused:
        check_image(body, QueryLimits())
    assert refused.value.status == status


def test_a_good_upload_passes_and_the_other_query_parts_are_checked() -> None:
    upload = check_image(png(40, 30), QueryLimits())
    assert (upload.format, upload.width, upload.height) == ("PNG", 40, 30)
    limits = QueryLimits(max_text_chars=10, max_k=20)
    for bad, status in (("text/plain", 415), (None, 415), ("application/octet-stream", 415)):
        with pytest.raises(QueryError) as refused:
            check_content_type(bad)
        assert refused.value.status == status
    check_content_type("image/png; charset=binary")
    assert check_text("  Bonn  ", limits) == "Bonn"
    for text in ("   ", "x" * 11):
        with pytest.raises(QueryError) as refused:
            check_text(text, limits)
        assert refused.value.status == 422
    assert parse_k(None, limits) == 10 and parse_k("20", limits) == 20
    for k in ("0", "21", "ten"):
        with pytest.raises(QueryError, match="k="):
            parse_k(k, limits)
    with pytest.raises(ValueError, match="max_pixels"):
        QueryLimits(max_pixels=10**12)
