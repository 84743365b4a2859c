"""Judging downloaded bytes: format from content, pixel limits, SVG and undecodable removal."""

from __future__ import annotations

import struct
import zlib

import pyarrow as pa
import pytest

from mlm_pipeline import schemas, sql
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.download.filtering import filter_images
from mlm_pipeline.download.validate import ImageFacts, TooManyPixels, inspect_image, is_svg, max_pixels_problem
from mlm_pipeline.world.imagegen import (
    Picture, corrupted, encode, raster, svg_document, thumbnail_bytes, with_declared_size,
)

LIMIT = 25_000_000
PHOTO = Picture("Pantin town hall.jpg", "photo", "jpeg", 48.9, 2.4, 4000, 3000)
MAP = Picture("Pantin locator map.svg", "map", "svg", 48.9, 2.4, 1000, 800)
PNG_PHOTO = Picture("Panorama Pantin.png", "photo", "png", 48.9, 2.4, 2048, 1536)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few dozen bytes (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_format_and_size_come_from_the_bytes() -> None:
    jpeg = thumbnail_bytes(PHOTO, 250)
    facts = inspect_image(jpeg, LIMIT)
    assert (facts.format, facts.width, facts.height, facts.problem) == ("JPEG", 250, 188, "")
    png = encode(raster(PNG_PHOTO, 250), "png")
    assert inspect_image(png, LIMIT).format == "PNG"
    svg = svg_document(MAP)
    assert is_svg(svg) and inspect_image(svg, LIMIT).format == "SVG"
    assert is_svg(b"\xef\xbb\xbf  <!-- drawn by hand -->\n<!DOCTYPE svg PUBLIC \"x\">\n<svg width='1'/>")
    assert not is_svg(b"<html><body><svg></svg></body></html>") and not is_svg(jpeg)


def test_damaged_bytes_are_reported_not_raised() -> None:
    jpeg = thumbnail_bytes(PHOTO, 250)
    damaged = inspect_image(corrupted(jpeg, "k"), LIMIT)
    assert damaged.problem and damaged.width is None
    assert inspect_image(jpeg[: len(jpeg) // 2], LIMIT).problem  # truncated
    unknown = inspect_image(b"<!DOCTYPE html><html>error</html>", LIMIT)
    assert unknown.format is None and unknown.problem


@pytest.mark.parametrize("width,height", [(6000, 6000), (60_000, 60_000)])  # ours, then Pillow's own limit
def test_decompression_bombs_are_refused_before_decoding(width: int, height: int) -> None:
    small = thumbnail_bytes(PHOTO, 250)
    for bomb in (with_declared_size(small, width, height), png_header_only(width, height)):
        assert len(bomb) < 100_000
        with pytest.raises(TooManyPixels):
            inspect_image(bomb, LIMIT)


def test_pixel_limit_must_stay_under_pillows() -> None:
    from PIL import Image

    assert max_pixels_problem(LIMIT) is None
    assert "max_pixels" in max_pixels_problem(Image.MAX_IMAGE_PIXELS + 1)
    assert max_pixels_problem(0)


def facts_or_none(content: bytes) -> ImageFacts | None:
    try:
        return inspect_image(content, LIMIT)
    except TooManyPixels:
        return None


def images_table(rows: list[tuple[str, str, bytes]], blobs: BlobStore) -> pa.Table:
    """Rows as the images stage would store them, bytes in ``blobs`` (a bomb as if stored under
    a laxer limit)."""
    facts = [facts_or_none(content) for _, _, content in rows]
    return pa.Table.from_pylist([
        {"qid": qid, "file_name": name, "url": f"http://127.0.0.1/thumb/{i}", "sha256": blobs.put(c),
         "format": f.format if f else "PNG", "width": f.width if f else None, "height": f.height if f else None,
         "n_bytes": len(c), "license": "CC BY-SA 4.0", "attribution": "A. Person"}
        for i, ((qid, name, c), f) in enumerate(zip(rows, facts))
    ], schema=schemas.IMAGES)


def run_filter(images: pa.Table, blobs: BlobStore) -> tuple[pa.Table, pa.Table, dict[str, int], int]:
    with sql.connect() as con:
        sql.register(con, images=images)
        filtered = filter_images(con, blobs.get, LIMIT)
        return (sql.table(con, filtered.kept, schemas.IMAGES), sql.table(con, filtered.dropouts, schemas.DROPOUTS),
                dict(filtered.counts), filtered.orphans)


def test_filter_drops_svg_by_content_and_by_name_and_undecodable_files(tmp_path) -> None:
    blobs = BlobStore(tmp_path)
    photo = thumbnail_bytes(PHOTO, 250)
    map_png = thumbnail_bytes(MAP, 250)  # how Commons serves an SVG's thumbnail: a PNG rendering
    rows = [
        ("Q1", "Pantin town hall.jpg", photo),
        ("Q2", "Pantin town hall.jpg", photo),  # one file, two entities
        ("Q1", "Pantin locator map.svg", map_png),
        ("Q2", "Disguised map.png", svg_document(MAP)),  # an SVG document under a raster name
        ("Q3", "Broken.jpg", corrupted(photo, "x")),
        ("Q3", "Huge.png", png_header_only(100_000, 100_000)),
        ("Q4", "Only map.svg", map_png),
    ]
    kept, dropouts, counts, orphans = run_filter(images_table(rows, blobs), blobs)
    assert kept.schema == schemas.IMAGES and dropouts.schema == schemas.DROPOUTS
    assert sorted(zip(kept["qid"].to_pylist(), kept["file_name"].to_pylist())) == [
        ("Q1", "Pantin town hall.jpg"), ("Q2", "Pantin town hall.jpg")]
    reasons = {(q, f): r for q, f, r in zip(*(dropouts[c].to_pylist() for c in ("qid", "item", "reason")))}
    assert reasons == {
        ("Q1", "Pantin locator map.svg"): "svg",
        ("Q2", "Disguised map.png"): "svg",
        ("Q3", "Broken.jpg"): "undecodable",
        ("Q3", "Huge.png"): "too_many_pixels",
        ("Q4", "Only map.svg"): "svg",
    }
    assert set(dropouts["stage"].to_pylist()) == {"images_filtered"}
    assert counts == {"kept": 2, "svg": 3, "undecodable": 1, "too_many_pixels": 1}
    assert orphans == 2  # Q3 and Q4 had images and have none left


def test_filter_of_nothing_is_empty_tables(tmp_path) -> None:
    kept, dropouts, counts, orphans = run_filter(schemas.IMAGES.empty_table(), BlobStore(tmp_path))
    assert kept.num_rows == dropouts.num_rows == orphans == 0 and not counts
