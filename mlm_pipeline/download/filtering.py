"""Stage 4: keep the raster images the encoders can use; say why each other one goes.

The paper excludes SVG files (maps, flags, coats of arms: drawings, not views of the place).
Commons serves an SVG's thumbnail as a PNG rendering, so the name is one witness; the bytes are
the other (an SVG document whatever the name says). Bytes that Pillow cannot decode (still
damaged after every download attempt) go too. Each file's bytes are judged once, however many
entities share it.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from mlm_pipeline import schemas
from mlm_pipeline.download.validate import TooManyPixels, inspect_image, is_svg, svg_by_name

STAGE = "images_filtered"


def verdict(file_name: str, content: bytes, max_pixels: int) -> tuple[str, str] | None:
    """(reason, detail) for a file to drop, None to keep it."""
    if is_svg(content):
        return "svg", "the bytes are an SVG document"
    if svg_by_name(file_name):
        return "svg", "a rendering of an SVG original (by its file name)"
    try:
        facts = inspect_image(content, max_pixels)
    except TooManyPixels as exc:
        return "too_many_pixels", str(exc)[:200]
    if facts.problem:
        return "undecodable", facts.problem
    return None


def filter_images(images: pa.Table, max_pixels: int) -> tuple[pa.Table, pa.Table, Counter[str]]:
    """IMAGES rows kept, DROPOUTS rows for the others, and counts per reason (plus ``kept``)."""
    verdicts: dict[tuple[str, str], tuple[str, str] | None] = {}
    keep = []
    drops: dict[str, list[str]] = {"qid": [], "item": [], "stage": [], "reason": [], "detail": []}
    counts: Counter[str] = Counter()
    names, hashes = images["file_name"].to_pylist(), images["sha256"].to_pylist()
    qids = images["qid"].to_pylist()
    contents = images["content"]
    for i, (qid, name, digest) in enumerate(zip(qids, names, hashes)):
        if (name, digest) not in verdicts:
            verdicts[(name, digest)] = verdict(name, contents[i].as_py(), max_pixels)
        found = verdicts[(name, digest)]
        keep.append(found is None)
        if found is None:
            counts["kept"] += 1
            continue
        counts[found[0]] += 1
        for column, value in zip(drops, (qid, name, STAGE, *found)):
            drops[column].append(value)
    kept = images.filter(pa.array(keep, pa.bool_())) if images.num_rows else images
    return (schemas.sort_table(kept.cast(schemas.IMAGES), "images_filtered"),
            schemas.sort_table(pa.table(drops, schema=schemas.DROPOUTS), "image_dropouts"),
            counts)


def entities_without_images(images: pa.Table, kept: pa.Table) -> set[str]:
    """Entities that had images before the filter and have none after (e.g. only SVG maps)."""
    before = set(images["qid"].to_pylist())
    return before - set(pc.unique(kept["qid"]).to_pylist())
