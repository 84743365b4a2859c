"""``mlm-pipeline serve`` on the tiny world's release, as a person and a program use it.

The release is materialised up to ``search_index`` (with its checks) in an instance under a
temporary DAGSTER_HOME; the CLI then serves it on 127.0.0.1 in its own process, and the tests
talk to it over HTTP: the JSON API with texts and images of the release and with bad uploads,
the thumbnails and entity pages, and the page itself in Chromium. The release's multitask model
trains longer than the embedded world's quick profile so that retrieval has learnt something
to measure (the other models keep the profile).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster import AssetSelection, DagsterInstance, materialize
from playwright.sync_api import sync_playwright

from mlm_pipeline import checks
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.cli import PROJECT_ROOT
from mlm_pipeline.definitions import assets
from mlm_pipeline.model.metrics import haversine_km
from mlm_pipeline.resources import WikimediaResource
from mlm_pipeline.run_profiles import run_config_for
from mlm_pipeline.serve import build_app, is_loopback
from mlm_pipeline.shards import stored_table
from mlm_pipeline.world import World
from mlm_pipeline_tests.test_ui import CHROMIUM, CHROMIUM_ARGS, free_port, keep, stop_group
from mlm_pipeline_tests.conftest import stage_resources

SEARCH_MODEL = {"epochs": 40, "batch_size": 16, "lr": 1e-3, "emb_dim": 256, "threads": 1}
STARTUP_S = 180
K = 10


@dataclass(frozen=True)
class Served:
    release: str
    home: Path
    data: Path
    url: str
    log: Path

    def table(self, asset: str, columns: list[str] | None = None) -> pa.Table:
        return stored_table(asset, self.release, self.data).read(columns)

    def images(self, columns: list[str]) -> list[dict[str, Any]]:
        """Rows of ``images_filtered`` with each image's bytes from the blob store as ``content``."""
        blobs = BlobStore.of_release(self.data, self.release)
        return [{**row, "content": blobs.get(row["sha256"])} for row in self.table("images_filtered", [*columns, "sha256"]).to_pylist()]


def build_release(home: Path, release: str) -> None:
    """The tiny release up to ``search_index``, every check of those assets passing."""
    source = WikimediaResource(source="embedded", world_size="tiny", world_seed=1234, world_version=1)
    run_config = run_config_for(source)
    run_config["ops"]["model_multitask_mlm_irle"] = {"config": SEARCH_MODEL}
    data = home / "mlm_data"
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("release", [release])
        result = materialize(
            [*assets, *checks.asset_checks],
            selection=AssetSelection.assets("search_index").upstream().required_multi_asset_neighbors(),
            partition_key=release,
            instance=instance,
            resources=stage_resources(data, source),
            run_config=run_config,
        )
    assert result.success
    failed = [e.asset_check_key.to_user_string() for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == []
    assert {e.asset_check_key.name for e in result.get_asset_check_evaluations()
            if e.asset_check_key.asset_key.to_user_string() == "search_index"} == {
        "unique_kind_qid_item", "coordinates_in_range", "complete_unit_vectors"}


def serve_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLM_")}
    return {**env, "DAGSTER_HOME": str(home)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_world: World) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("serve_home")
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    build_release(home, tiny_world.release)
    port = free_port()
    log = home / "serve.log"
    command = [sys.executable, "-m", "mlm_pipeline.cli", "serve", "--release", tiny_world.release, "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=serve_env(home), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"serve did not answer within {STARTUP_S} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield Served(tiny_world.release, home, home / "mlm_data", url, log)
    finally:
        stop_group(process)


def call(served: Served, path: str, body: bytes | None = None, content_type: str | None = None) -> tuple[int, Any, dict]:
    request = urllib.request.Request(served.url + path, data=body, method="POST" if body is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            raw, status, headers = answer.read(), answer.status, dict(answer.headers)
    except urllib.error.HTTPError as error:
        raw, status, headers = error.read(), error.code, dict(error.headers)
    is_json = headers.get("content-type", "").startswith("application/json")
    return status, json.loads(raw) if is_json else raw, headers


def search_text(served: Served, text: str, k: int = K) -> dict:
    status, answer, _ = call(served, "/api/search?" + urllib.parse.urlencode({"text": text, "k": k}))
    assert status == 200, answer
    return answer


def test_serve_listens_on_loopback_and_health_names_the_release_and_its_encoders(served: Served) -> None:
    assert f"at http://127.0.0.1:{served.url.rsplit(':', 1)[1]}/" in served.log.read_text()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    status, health, headers = call(served, "/api/health")
    assert status == 200 and headers["x-content-type-options"] == "nosniff"
    index = served.table("search_index", ["kind"])
    kinds = index.column("kind").to_pylist()
    assert health["release"] == served.release and health["model"] == "model_multitask_mlm_irle"
    assert (health["images"], health["texts"]) == (kinds.count("image"), kinds.count("text"))
    assert health["cells"] == served.table("geo_cells").num_rows
    text, image = health["encoders"]["text"], health["encoders"]["image"]
    assert text["dims"] == 512 and text["pretrained"] and text["weights"][0]["sha256"]  # text_features' recorded encoder
    assert image["dims"] == 4096 and image["branches"][0]["encoder"] == "efficientnet-lite0 (ImageNet)"


def test_queries_are_encoded_as_the_release_encoded_its_features(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """A summary and an image of the release, encoded by the server's encoders, give the vectors
    the feature assets stored for them: a query lands in the index's space."""
    monkeypatch.setenv("DAGSTER_HOME", str(served.home))
    monkeypatch.delenv("MLM_DATA_DIR", raising=False)
    with DagsterInstance.from_config(str(served.home)) as instance:
        app = build_app(instance, served.release)
    try:
        texts = {(r["qid"], r["lang"]): r["text"] for r in served.table("summaries").to_pylist()}
        for row in served.table("text_features").slice(0, 3).to_pylist():
            np.testing.assert_allclose(app.searcher.encode_text(texts[row["qid"], row["lang"]]), row["vector"], atol=2e-5)
        images = {(r["qid"], r["file_name"]): r["content"] for r in served.images(["qid", "file_name"])}
        for row in served.table("image_features").slice(0, 3).to_pylist():
            np.testing.assert_allclose(app.searcher.encode_image(images[row["qid"], row["file_name"]]), row["vector"], atol=2e-5)
    finally:
        app.close()


def test_a_dataset_summary_finds_its_own_entitys_image_more_often_than_chance(served: Served) -> None:
    index = served.table("search_index", ["kind", "qid", "text"])
    images = index.filter(pc.equal(index.column("kind"), "image"))
    with_images = set(images.column("qid").to_pylist())
    texts = index.filter(pc.equal(index.column("kind"), "text")).to_pylist()
    queries = [t for t in texts if t["qid"] in with_images]
    top = 20  # a tenth of the tiny world's entities with images
    hits = 0
    for query in queries:
        answer = search_text(served, query["text"], k=top)
        assert answer["query"]["item"]["qid"] == query["qid"]  # recognised as the dataset's summary
        hits += query["qid"] in {r["qid"] for r in answer["results"]}
    chance = top / len(with_images)  # each answer holds `top` distinct entities of those with images
    n = len(queries)
    # One-sided binomial tail: the chance of this many hits or more if ranking were random.
    tail = sum(math.comb(n, h) * chance**h * (1 - chance) ** (n - h) for h in range(hits, n + 1))
    print(f"own image in the top {top}: {hits}/{n} = {hits / n:.3f}, chance {chance:.3f}, p = {tail:.2e}")
    assert hits / n > chance and tail < 1e-4


def test_an_answer_has_the_documented_shape(served: Served) -> None:
    summary = served.table("summaries").to_pylist()[0]
    answer = search_text(served, summary["text"], k=5)
    assert set(answer) == {"release", "model", "query", "results", "location"}
    assert (answer["release"], answer["model"]) == (served.release, "model_multitask_mlm_irle")
    assert answer["query"]["kind"] == "text" and answer["query"]["text"] == summary["text"].strip()
    assert len(answer["results"]) == 5
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert len({r["qid"] for r in answer["results"]}) == 5
    for result in answer["results"]:
        assert set(result) == {"qid", "label", "score", "kind", "file_name", "image_url", "entity_url"}
        assert result["kind"] == "image" and result["image_url"].startswith("/image/")
    location = answer["location"]
    assert set(location) == {"cells", "lat", "lon"}
    cells = location["cells"]
    assert 1 <= len(cells) <= 5 and sum(c["probability"] for c in cells) <= 1.0001
    assert [c["probability"] for c in cells] == sorted((c["probability"] for c in cells), reverse=True)
    known = dict(zip(served.table("geo_cells").column("token").to_pylist(), served.table("geo_cells").column("mean_lat").to_pylist()))
    for cell in cells:
        assert set(cell) == {"token", "probability", "lat", "lon", "polygon"}
        assert cell["lat"] == pytest.approx(known[cell["token"]], abs=1e-4)
        assert cell["polygon"][0] == cell["polygon"][-1] and len(cell["polygon"]) > 4
    assert (location["lat"], location["lon"]) == (cells[0]["lat"], cells[0]["lon"])
    item = answer["query"]["item"]
    entity = served.table("mlm_irle").filter(pc.equal(served.table("mlm_irle").column("qid"), summary["qid"])).to_pylist()[0]
    assert (item["qid"], item["kind"], item["item"], item["lat"], item["lon"]) == (
        summary["qid"], "text", summary["lang"], entity["lat"], entity["lon"])
    expected = haversine_km(np.array([location["lat"]]), np.array([location["lon"]]), np.array([entity["lat"]]), np.array([entity["lon"]]))
    assert item["error_km"] == pytest.approx(float(expected[0]), abs=0.1)

    free = search_text(served, "ein kleines Dorf am Fluss", k=3)
    assert free["query"]["item"] is None and len(free["results"]) == 3


def test_an_image_of_the_release_finds_summaries_and_is_placed_with_its_error(served: Served) -> None:
    image = served.images(["qid", "file_name", "format"])[0]
    status, answer, _ = call(served, "/api/search?k=4", image["content"], "image/jpeg")
    assert status == 200, answer
    query = answer["query"]
    assert (query["kind"], query["format"], query["bytes"]) == ("image", image["format"], len(image["content"]))
    assert (query["item"]["qid"], query["item"]["item"]) == (image["qid"], image["file_name"])
    assert query["item"]["error_km"] >= 0
    assert len(answer["results"]) == 4
    for result in answer["results"]:
        assert set(result) == {"qid", "label", "score", "kind", "lang", "text", "entity_url"}
        assert result["kind"] == "text" and result["lang"] in {"en", "de", "fr"} and result["text"]
    assert answer["location"]["cells"]

    # the thumbnail of a text query's result is the release's image bytes
    first = search_text(served, "Stadt", k=1)["results"][0]
    status, content, headers = call(served, first["image_url"])
    stored = served.images(["qid", "file_name"])
    assert status == 200 and headers["content-type"] in {"image/jpeg", "image/png", "image/gif"}
    assert content == next(r["content"] for r in stored if (r["qid"], r["file_name"]) == (first["qid"], first["file_name"]))
    status, page, _ = call(served, first["entity_url"])
    assert status == 200 and first["label"] in page.decode()


def post_streamed(served: Served, chunks: list[bytes], declared: int | None) -> tuple[int, dict]:
    """A POST whose body is sent after the headers, as declared (Content-Length) or chunked."""
    connection = http.client.HTTPConnection(served.url.removeprefix("http://"), timeout=60)
    try:
        connection.putrequest("POST", "/api/search")
        connection.putheader("Content-Type", "image/jpeg")
        if declared is not None:
            connection.putheader("Content-Length", str(declared))
        else:
            connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for chunk in chunks:
            connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if declared is None else chunk)
        if declared is None:
            connection.send(b"0\r\n\r\n")
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def test_bad_queries_get_the_documented_errors(served: Served) -> None:
    from mlm_pipeline_tests.test_search_index import bomb_png

    limit = 8 << 20
    # Too large by its declared length: refused from the headers, before any of the body is sent.
    status, answer = post_streamed(served, [], declared=limit + 1)
    assert status == 413 and f"has {limit + 1} bytes; at most {limit}" in answer["error"]
    # No length declared: refused as soon as the streamed body passes the limit.
    status, answer = post_streamed(served, [b"\xff" * (1 << 20)] * 8 + [b"\xff" * 1024], declared=None)
    assert status == 413 and f"more than {limit} bytes" in answer["error"]
    cases = [
        (call(served, "/api/search?k=3", b"hello", "text/plain"), 415, "not an image type"),
        (call(served, "/api/search", bomb_png(6000, 6000), "image/png"), 413, "too many pixels"),
        (call(served, "/api/search", bomb_png(100_000, 100_000), "image/png"), 413, "too many pixels"),
        (call(served, "/api/search", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png"), 422, "not a JPEG/PNG/GIF/WEBP image"),
        (call(served, "/api/search", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"), 422, "not a JPEG"),
        (call(served, "/api/search?text=%20"), 422, "text is empty"),
        (call(served, "/api/search?text=x&k=1000"), 422, "k=1000 must be between 1 and 100"),
        (call(served, "/api/search?text=" + "x" * 2001), 422, "at most 2000"),
    ]
    for (status, answer, _), expected, message in cases:
        assert status == expected and message in answer["error"], (status, answer)
    images = served.table("search_index", ["kind"]).column("kind").to_pylist().count("image")
    for path in (f"/image/{images}", "/image/-1", "/image/..%2F..%2Fetc%2Fpasswd", "/entity/..%2F..%2Fetc%2Fpasswd",
                 "/entity/Q1", "/static/../serve.py"):
        status, _, _ = call(served, path)
        assert status == 404, path
    assert search_text(served, "Stadt", k=1)["results"]  # and it still answers


def test_serve_refuses_a_release_without_an_index_and_names_those_with_one(served: Served) -> None:
    run = subprocess.run([sys.executable, "-m", "mlm_pipeline.cli", "serve", "--release", "1999-01-01"],
                         cwd=PROJECT_ROOT, env=serve_env(served.home), capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert f"release '1999-01-01' has no search_index (releases with one: {served.release})" in run.stderr


def test_the_page_finds_images_for_a_text_and_summaries_and_a_place_for_an_image(served: Served, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (mlm_pipeline_tests/run.sh does)")
    image = served.images(["qid", "file_name"])[3]
    upload = tmp_path / "upload.jpg"
    upload.write_bytes(image["content"])
    index = served.table("search_index", ["qid", "label"])
    label = index.filter(pc.equal(index.column("qid"), image["qid"])).column("label")[0].as_py()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(60_000)
            page.goto(served.url)
            page.get_by_text(f"release {served.release}").wait_for()

            page.get_by_placeholder("a text in English, German or French", exact=False).fill("Une petite ville au bord de la mer")
            page.get_by_role("button", name="Find images").click()
            page.locator(".result.image img").first.wait_for()
            assert page.locator(".result.image").count() == K
            page.wait_for_function("() => [...document.querySelectorAll('.result.image img')].every(i => i.complete && i.naturalWidth > 0)")
            assert page.locator("#map .cell").count() >= 1
            page.wait_for_function("() => document.querySelectorAll('#basemap path.land').length > 1000")  # offline outlines
            assert page.locator("#cells li").count() >= 1 and "%" in page.locator("#cells li").first.inner_text()
            page.screenshot(path=tmp_path / "serve_text.png")
            keep(tmp_path / "serve_text.png")

            page.set_input_files("#image", str(upload))
            page.locator(".result.text").first.wait_for()
            assert page.get_by_role("heading", name="Summaries").is_visible()
            truth = page.locator("#truth").inner_text()
            assert "This image is in the dataset" in truth and label in truth and "km away" in truth
            assert page.locator("#map .true").count() == 1 and page.locator("#map .predicted").count() == 1
            assert page.locator("#map .cell").count() >= 1
            page.screenshot(path=tmp_path / "serve_image.png")
            keep(tmp_path / "serve_image.png")

            page.locator(".result.text a.label").first.click()
            page.wait_for_url("**/entity/Q*")
            assert page.locator("h1").inner_text()
        finally:
            browser.close()
