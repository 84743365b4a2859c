"""A world made from a person's own files: loaded, served by the same servers, bad input refused.

The example entities file and its pictures are written by the tests themselves (no committed
binaries); expected values are read back from that example.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from PIL import Image

from mlm_pipeline.world import WorldSpec, build_world, running_world
from mlm_pipeline.world.own_files import IMAGES_DIR, OwnFilesError, load_own_world

UA = "mlm-pipeline-tests/1.0 (https://example.org/mlm-pipeline) requests/2"

HEADER = {"dataset_version": "2025-03-01T00:00:00Z"}
ENTITIES = [
    {"id": "Q90", "labels": {"en": "Paris", "fr": "Paris", "de": "Paris"}, "lat": 48.8567, "lon": 2.3508,
     "classes": [{"id": "Q515", "label": "city"}],
     "sitelinks": {"en": "Paris", "fr": "Paris", "de": "Paris"},
     "summaries": {"en": "Paris is the capital of France.", "fr": "Paris est la capitale de la France."},
     "images": ["Paris red.jpg", {"file": "Paris arms.svg", "property": "P94", "license": "CC0", "author": "Jane Doe"}]},
    {"id": "Q64", "labels": {"en": "Berlin"}, "lat": 52.52, "lon": 13.405,
     "classes": [{"id": "Q77777", "label": "my own kind of town"}],
     "summaries": {"de": "Berlin ist die Hauptstadt Deutschlands."},
     "images": [{"file": "berlin_blue.png", "license": "CC BY-SA 4.0", "author": "John Roe"}]},
    {"id": "Q1", "labels": {"en": "Nowhere"}, "classes": ["Q532"], "sitelinks": {"en": "Nowhere"},
     "summaries": {"en": "Nowhere has no coordinates."}, "images": ["Paris red.jpg"]},
]


def write_example(root: Path, lines: list[dict] | None = None) -> Path:
    """entities.jsonl and images/ under ``root`` (pictures drawn with Pillow, an SVG by hand)."""
    images = root / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (800, 600), (210, 20, 20)).save(images / "Paris red.jpg", quality=90)
    Image.new("RGB", (640, 480), (20, 20, 210)).save(images / "berlin_blue.png")
    (images / "Paris arms.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="400"><rect width="300" height="400" fill="gold"/></svg>',
        encoding="utf-8",
    )
    records = [HEADER, *ENTITIES] if lines is None else lines
    (root / "entities.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return root


def test_the_example_loads_into_a_world(tmp_path: Path) -> None:
    world = load_own_world(str(write_example(tmp_path)))
    assert world.release == HEADER["dataset_version"][:10] and world.dataset_version == HEADER["dataset_version"]
    assert [p.qid for p in world.places] == sorted(e["id"] for e in ENTITIES)
    paris = world.place("Q90")
    assert paris.coords == [(48.8567, 2.3508, "Q2")] and paris.images == {"P18": ["Paris red.jpg"], "P94": ["Paris arms.svg"]}
    berlin = world.place("Q64")
    assert berlin.sitelinks == {"de": "Berlin"}  # a summary without a sitelink gets the label as title
    assert world.classes["Q77777"].parents == ["Q486972"] and world.classes["Q77777"].label_en == "my own kind of town"
    # Named as Commons names files; the bytes still come from the person's file.
    assert world.place("Q64").images == {"P18": ["Berlin blue.png"]}
    assert (world.files["Berlin blue.png"].format, world.files["Berlin blue.png"].width) == ("png", 640)
    assert world.files["Paris arms.svg"].format == "svg" and world.files["Paris arms.svg"].height == 400
    # The truth follows from the same rules as for the generated world: Nowhere has no coordinates.
    assert set(world.truth.entities) == {"Q64", "Q90"} and world.truth.dropouts == {"Q1": "no_coordinates"}
    assert build_world(WorldSpec(files=str(tmp_path))).places == world.places


def test_the_example_is_served_like_the_generated_world(tmp_path: Path) -> None:
    world = load_own_world(str(write_example(tmp_path)))
    s = requests.Session()
    s.headers["User-Agent"] = UA
    with running_world(world) as served:
        query = "SELECT ?item ?image WHERE { ?item <http://www.wikidata.org/prop/direct/P18> ?image }"
        rows = s.get(served.sparql_url, params={"query": query}, headers={"Accept": "application/sparql-results+json"},
                     timeout=10).json()["results"]["bindings"]
        assert {(r["item"]["value"].rsplit("/", 1)[1], r["image"]["value"].rsplit("/", 1)[1]) for r in rows} == {
            ("Q90", quote("Paris red.jpg")), ("Q1", quote("Paris red.jpg")), ("Q64", quote("Berlin blue.png"))}

        def summary(lang: str, title: str) -> dict:
            params = {"action": "query", "prop": "extracts", "exintro": "1", "explaintext": "1", "titles": title,
                      "format": "json", "formatversion": "2"}
            return s.get(served.wikipedia_api.format(lang=lang), params=params, timeout=10).json()["query"]["pages"][0]

        assert summary("en", "Paris")["extract"] == ENTITIES[0]["summaries"]["en"]
        assert summary("de", "Berlin")["extract"] == ENTITIES[1]["summaries"]["de"]
        assert summary("de", "Paris")["missing"] is True  # a sitelink without a summary

        thumb = s.get(served.commons_filepath + quote("Paris_red.jpg"), params={"width": 250}, timeout=10)
        img = Image.open(io.BytesIO(thumb.content))
        assert thumb.headers["Content-Type"] == "image/jpeg" and img.size == (250, 188)
        red, green, blue = img.convert("RGB").getpixel((125, 94))
        assert red > 180 and green < 60 and blue < 60
        png = s.get(served.commons_filepath + "berlin_blue.png", params={"width": 120}, timeout=10)
        assert Image.open(io.BytesIO(png.content)).format == "PNG"
        svg = s.get(served.commons_filepath + quote("Paris arms.svg"), params={"width": 120}, timeout=10)
        assert svg.headers["Content-Type"] == "image/svg+xml" and b"<svg" in svg.content
        original = s.get(served.commons_filepath + quote("Paris red.jpg"), timeout=10)
        assert original.content == (tmp_path / IMAGES_DIR / "Paris red.jpg").read_bytes()

        params = {"action": "query", "prop": "imageinfo", "iiprop": "extmetadata|size", "format": "json",
                  "formatversion": "2", "titles": "File:Berlin blue.png|File:Paris arms.svg"}
        pages = {p["title"]: p["imageinfo"][0] for p in
                 s.get(served.commons_api, params=params, timeout=10).json()["query"]["pages"]}
        assert pages["File:Berlin blue.png"]["extmetadata"]["LicenseShortName"]["value"] == "CC BY-SA 4.0"
        assert "John Roe" in pages["File:Berlin blue.png"]["extmetadata"]["Artist"]["value"]
        assert pages["File:Paris arms.svg"]["extmetadata"]["LicenseShortName"]["value"] == "CC0"
        assert pages["File:Berlin blue.png"]["size"] == (tmp_path / IMAGES_DIR / "berlin_blue.png").stat().st_size
        assert all(server.counters.get("violations", 0) == 0 for server in served.servers.values())


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ('{"id": "Q5", "lat": "north", "lon": 3}', "lat", "must be a number"),
        ('{"id": "Q5", "lat": 95, "lon": 3}', "lat", "between -90 and 90"),
        ('{"id": "Q5", "lat": 45}', "lon", "give both"),
        ('{"id": "Q90"}', "id", "already used on line 1"),
        ('{"id": "five"}', "id", "item ID"),
        ('{"id": "Q5", "images": ["missing.jpg"]}', "images[0]", "is not in"),
        ('{"id": "Q5", "images": ["../entities.jsonl"]}', "images[0]", "lies outside"),
        ('{"id": "Q5", "images": [{"file": "Paris red.jpg", "property": "18"}]}', "images[0].property", "property ID"),
        ('{"id": "Q5", "classes": [{"id": "city"}]}', "classes[0].id", "item ID"),
        ('{"id": "Q5", "sitelinks": {"en": "A [b]"}}', "sitelinks.en", "not a valid page title"),
        ('{"id": "Q5", "sitelinks": {"en": "Paris"}}', "sitelinks.en", "already the en title of line 1"),
        ('{"id": "Q5", "summaries": {"en": 7}}', "summaries", "language -> text"),
        ('{"id": "Q5", "colour": "red"}', "colour", "unknown field"),
        ('{"id": "Q5", "images": ["notes.jpg"]}', "images[0]", "is not a JPEG"),
        ("{not json", "(line)", "not valid JSON"),
    ],
)
def test_bad_lines_are_named_with_their_field(tmp_path: Path, line: str, field: str, words: str) -> None:
    write_example(tmp_path, [ENTITIES[0]])
    (tmp_path / IMAGES_DIR / "notes.jpg").write_text("these are notes, not a picture", encoding="utf-8")
    with open(tmp_path / "entities.jsonl", "a", encoding="utf-8") as handle:
        handle.write("\n" + line + "\n")  # after a blank line (skipped, but counted): line 3
    with pytest.raises(OwnFilesError) as caught:
        load_own_world(str(tmp_path))
    message = str(caught.value)
    assert f"entities.jsonl line 3: field {field!r}" in message and words in message, message
    assert "1 problem(s)" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write_example(tmp_path, [{"id": "Q5", "lat": 100, "lon": 0}, {"id": "Q6", "images": ["gone.jpg"]}, {"id": "Q5"}])
    with pytest.raises(OwnFilesError, match=r"3 problem\(s\)") as caught:
        load_own_world(str(tmp_path / "entities.jsonl"))
    assert [m.strip().split(":")[0] for m in str(caught.value).splitlines()[1:]] == [
        "entities.jsonl line 1", "entities.jsonl line 2", "entities.jsonl line 3"]


def test_a_missing_entities_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(OwnFilesError, match="no entities.jsonl"):
        load_own_world(str(tmp_path))
