"""A world made from a person's own files: loaded, served by the same servers, bad input refused.

The example entities file and its pictures are written by the tests themselves (no committed
binaries); expected values are read back from that example.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from PIL import Image

from mlm_pipeline.shards import stored_table
from mlm_pipeline.world import WorldSpec, build_world, rdf, running_world
from mlm_pipeline.world.own_files import IMAGES_DIR, OwnFilesError, load_own_world
from mlm_pipeline_tests.conftest import stage_resources

UA = "mlm-pipeline-tests/1.0 (https://example.org/mlm-pipeline) requests/2"

HEADER = {"dataset_version": "2025-03-01T00:00:00Z"}
ENTITIES = [
    {"id": "Q90", "labels": {"en": "Paris", "fr": "Paris", "de": "Paris"}, "lat": 48.8567, "lon": 2.3508,
     "classes": [{"id": "Q515", "label": "city"}],
     "sitelinks": {"en": "Paris", "fr": "Paris", "de": "Paris"},
     "summaries": {"en": "Paris is the capital of France.", "fr": "Paris est la capitale de la France."},
     "images": ["Paris red.jpg", {"file": "Paris arms.svg", "property": "P94", "license": "CC0", "author": "Jane Doe"}]},
    {"id": "Q64", "labels": {"en": "Berlin"}, "lat": 52.52, "lon": 13.405,
     "classes": [{"id": "Q77777", "label": "my own kind of town", "parents": ["Q486972"]}],
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
            params = {"action": "query", "maxlag": "5", "prop": "extracts", "exintro": "1", "explaintext": "1", "titles": title,
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

        params = {"action": "query", "maxlag": "5", "prop": "imageinfo", "iiprop": "extmetadata|size", "format": "json",
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
        ('{"id": "Q5", "classes": ["Q99999"]}', "classes[0].id", "Q99999 is no class the world knows"),
        ('{"id": "Q5", "classes": [{"id": "Q99999", "parents": "Q1"}]}', "classes[0].parents", "list of item IDs"),
        ('{"id": "Q5", "lat": 1, "lon": 2, "coordinates": [{"lat": 1, "lon": 2}]}', "coordinates", "not both"),
        ('{"id": "Q5", "coordinates": {"lat": 1, "lon": 2}}', "coordinates", "must be a list"),
        ('{"id": "Q5", "coordinates": [{"lat": 1, "lon": 2, "rank": "best"}]}', "coordinates[0].rank", "one of normal"),
        ('{"id": "Q5", "coordinates": [{"lat": 100, "lon": 2}]}', "coordinates[0].lat", "between -90 and 90"),
        ('{"id": "Q5", "coordinates": [{"lat": 1, "lon": 2, "globe": "moon"}]}', "coordinates[0].globe", "item ID"),
        ('{"id": "Q5", "images": ["declares 30000 x 30000.png"]}', "images[0]", "declares more than"),
        ('{"id": "Q5", "images": ["declares 12000 x 12000.png"]}', "images[0]", "declares 12000 x 12000 = 144,000,000 pixels"),
    ],
)
def test_bad_lines_are_named_with_their_field(tmp_path: Path, line: str, field: str, words: str) -> None:
    write_example(tmp_path, [ENTITIES[0]])
    (tmp_path / IMAGES_DIR / "notes.jpg").write_text("these are notes, not a picture", encoding="utf-8")
    for side in (30000, 12000):  # a few hundred bytes that would decode to gigabytes
        (tmp_path / IMAGES_DIR / f"declares {side} x {side}.png").write_bytes(png_declaring(side, side))
    with open(tmp_path / "entities.jsonl", "a", encoding="utf-8") as handle:
        handle.write("\n" + line + "\n")  # after a blank line (skipped, but counted): line 3
    with pytest.raises(OwnFilesError) as caught:
        load_own_world(str(tmp_path))
    message = str(caught.value)
    assert f"entities.jsonl line 3: field {field!r}" in message and words in message, message
    assert "1 problem(s)" in message


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header for ``width`` x ``height`` pixels, with almost no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    write_example(tmp_path, [ENTITIES[0]])
    with open(tmp_path / "entities.jsonl", "ab") as handle:
        handle.write(b'{"id": "Q5", "labels": {"en": "Caf\xe9"}}\n')
    with pytest.raises(OwnFilesError) as caught:
        load_own_world(str(tmp_path))
    assert "entities.jsonl line 2: field '(line)': not UTF-8 text: byte 0xe9 at column 35" in str(caught.value)


def test_an_entity_can_have_two_coordinates(tmp_path: Path) -> None:
    twice = {**ENTITIES[0], "coordinates": [{"lat": 48.80, "lon": 2.30}, {"lat": 48.8567, "lon": 2.3508, "rank": "preferred"},
                                            {"lat": 10.0, "lon": 10.0, "rank": "deprecated"}]}
    del twice["lat"], twice["lon"]
    world = load_own_world(str(write_example(tmp_path, [twice])))
    paris = world.place("Q90")
    assert paris.coords == [(48.80, 2.30, "Q2"), (48.8567, 2.3508, "Q2"), (10.0, 10.0, "Q2")]
    assert paris.coord_ranks == ["normal", "preferred", "deprecated"]
    assert (world.truth.entities["Q90"]["lat"], world.truth.entities["Q90"]["lon"]) == (48.8567, 2.3508)


def test_files_no_entity_names_play_no_part(tmp_path: Path) -> None:
    """Only the pictures the entities name are opened: another file in images/, or a link in it to
    a file outside, changes nothing (they are not even hashed for the store's cache key)."""
    write_example(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    outside.write_bytes(b"a secret")
    (tmp_path / IMAGES_DIR / "link.jpg").symlink_to(outside)
    (tmp_path / IMAGES_DIR / "unused.bin").write_bytes(b"1")
    before = rdf.store_key(load_own_world(str(tmp_path)))
    outside.write_bytes(b"another secret")
    (tmp_path / IMAGES_DIR / "unused.bin").write_bytes(b"2")
    assert rdf.store_key(load_own_world(str(tmp_path))) == before
    with open(tmp_path / "entities.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"id": "Q5", "images": ["link.jpg"]}\n')
    with pytest.raises(OwnFilesError, match="'link.jpg' lies outside"):
        load_own_world(str(tmp_path))


def test_a_truncated_jpeg_is_answered_with_400_not_a_server_error(tmp_path: Path) -> None:
    write_example(tmp_path)
    whole = (tmp_path / IMAGES_DIR / "Paris red.jpg").read_bytes()
    (tmp_path / IMAGES_DIR / "Paris red.jpg").write_bytes(whole[: len(whole) // 3])
    s = requests.Session()
    s.headers["User-Agent"] = UA
    with running_world(load_own_world(str(tmp_path))) as served:
        thumb = s.get(served.commons_filepath + quote("Paris red.jpg"), params={"width": 250}, timeout=10)
        assert thumb.status_code == 400 and "Error generating thumbnail: Paris red.jpg cannot be decoded" in thumb.text
        assert "client_disconnects" not in served.servers["commons"].counters


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write_example(tmp_path, [{"id": "Q5", "lat": 100, "lon": 0}, {"id": "Q6", "images": ["gone.jpg"]}, {"id": "Q5"}])
    with pytest.raises(OwnFilesError, match=r"3 problem\(s\)") as caught:
        load_own_world(str(tmp_path / "entities.jsonl"))
    assert [m.strip().split(":")[0] for m in str(caught.value).splitlines()[1:]] == [
        "entities.jsonl line 1", "entities.jsonl line 2", "entities.jsonl line 3"]


def test_a_missing_entities_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(OwnFilesError, match="no entities.jsonl"):
        load_own_world(str(tmp_path))


def small_world(root: Path) -> Path:
    """19 settlements a person might bring (12 around Paris, 7 around Tokyo), each with a picture
    and an intro, and three records that are not entities of MLM for three reasons."""
    images = root / IMAGES_DIR
    images.mkdir(parents=True)
    records: list[dict] = [HEADER, {"id": "Q99000010", "classes": [{"id": "Q99000001", "label": "mountain", "parents": []}]}]
    records.append({"id": "Q99000011", "classes": ["Q174844"]})  # megacity: 4 hops below the base
    for n in range(19):
        qid, (lat, lon) = f"Q{100 + n}", ((48.8 + n / 100, 2.3) if n < 12 else (35.6 + n / 100, 139.7))
        Image.new("RGB", (300, 200), (10 * n, 80, 120)).save(images / f"place {n}.jpg", quality=85)
        records.append({"id": qid, "labels": {"en": f"Place {n}"}, "lat": lat, "lon": lon, "classes": ["Q515"],
                        "summaries": {"en": f"Place {n} is a settlement."}, "images": [f"place {n}.jpg"]})
    records[3] = {**records[3], "coordinates": [{"lat": 1.0, "lon": 1.0}, {"lat": 48.8, "lon": 2.3, "rank": "preferred"}]}
    del records[3]["lat"], records[3]["lon"]
    noise = io.BytesIO()
    Image.frombytes("RGB", (300, 200), (bytes(range(251)) * 720)[:180_000]).save(noise, format="JPEG", quality=95)
    (images / "broken.jpg").write_bytes(noise.getvalue()[: len(noise.getvalue()) // 2])  # header whole, data cut
    records[4]["images"] = ["place 1.jpg", "broken.jpg"]
    (root / "entities.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return root


def test_a_small_world_fails_where_its_data_runs_out_and_accounts_for_every_record(
    tmp_path: Path, dagster_instance
) -> None:
    from dagster import materialize

    from mlm_pipeline.assets import classes, entities, filtering, geocells, images, summaries
    from mlm_pipeline.resources import WikimediaResource

    files = small_world(tmp_path / "mine")
    release = HEADER["dataset_version"][:10]
    dagster_instance.add_dynamic_partitions("release", [release])
    data = tmp_path / "data"
    stages = [classes.settlement_classes, entities.entities, summaries.summaries, images.images,
              filtering.images_filtered, geocells.geo_cells]
    resources = stage_resources(data, WikimediaResource(world_files=str(files)))
    result = materialize(stages, partition_key=release, instance=dagster_instance, resources=resources,
                         raise_on_error=False)
    failed = {e.step_key: str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure}
    assert list(failed) == ["geo_cells"]
    assert ("0 geo-cell(s) hold at least t_min=20 entities; location estimation needs 2: the 19 entities fall "
            "in 2 cell(s) of 12, 7. To fix: lower t_min to 7 or less, or add entities") in failed["geo_cells"]
    assert not (data / "geo_cells").exists()

    dropouts = {r["qid"]: r for r in stored_table("entity_dropouts", release, data).read().to_pylist()}
    assert dropouts["Q99000010"]["reason"] == "class_outside_closure"
    assert dropouts["Q99000011"]["reason"] == "class_beyond_hops" and "4 hops below Q486972" in dropouts["Q99000011"]["detail"]
    kept = {r["qid"]: r for r in stored_table("entities", release, data).read().to_pylist()}
    assert len(kept) + len(dropouts) == 21 and (kept["Q100"]["lat"], kept["Q100"]["lon"]) == (48.8, 2.3)
    failures = stored_table("image_failures", release, data).read().to_pylist()
    assert [(f["qid"], f["item"], f["reason"]) for f in failures] == [("Q101", "Broken.jpg", "http_400")]
    meta = result.asset_materializations_for_node("images")[0].metadata
    assert meta["retries"].value == 0  # refused once, not retried

    # What the message says is enough.
    again = materialize(stages, selection=["geo_cells", "entity_cells", "geo_cell_dropouts"], partition_key=release,
                        instance=dagster_instance, resources=resources,
                        run_config={"ops": {"geo_cells": {"config": {"t_min": 7}}}})
    assert again.success and stored_table("geo_cells", release, data).read().num_rows == 2
