"""Deterministic pictures for the embedded world: photographs, maps and emblems.

Photographs are drawn scenes (sky, hills, ground, houses, trees, sun) whose colours follow the
place's latitude (snow near the poles, sand and deep green near the equator) and whose layout
follows a hash of the file name, plus pixel noise, so that an image encoder sees content that
varies with the place rather than one flat colour, and so that JPEG sizes look like photos'.
Maps and emblems are vector designs written as real SVG XML; the same design is rasterised with
Pillow for their PNG thumbnails (as Commons serves thumbnails of SVG files as PNG).

Everything is a pure function of (file name, coordinates, kind, size): no clock, no global
random state, so the same world always serves the same bytes. Drawing is in coordinates
relative to the picture, so a thumbnail looks like the original scaled down. A 250px JPEG
takes a few milliseconds; encoded thumbnails are cached (LRU) since clients ask for them
repeatedly in retries.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from xml.sax.saxutils import escape

from PIL import Image, ImageChops, ImageDraw, ImageOps

Color = tuple[int, int, int]

RENDER_LIMIT = 1600  # larger pictures are drawn at this width and scaled up: cheap, and nobody needs more detail
VECTOR_KINDS = {"map", "emblem", "flag", "coat_of_arms", "seal", "logo"}


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


def is_vector_kind(kind: str) -> bool:
    """Maps, flags and emblems are drawn as designs; photos and banners as scenes."""
    return kind in VECTOR_KINDS or kind.endswith("map")


@dataclass(frozen=True)
class Picture:
    """What a file shows and its original size: enough to draw it at any width."""

    file_name: str
    kind: str  # photo | banner | map | flag | emblem ...
    format: str  # jpeg | png | svg
    lat: float
    lon: float
    width: int
    height: int
    title: str = ""  # what an SVG's <title> says

    @property
    def vector(self) -> bool:
        return self.format == "svg" or is_vector_kind(self.kind)


def thumb_height(width: int, original: tuple[int, int]) -> int:
    """MediaWiki's rounding: the height that keeps the aspect ratio, at least 1."""
    ow, oh = original
    return max(1, round(width * oh / ow))


# --- photographs --------------------------------------------------------------------------


def _mix(a: Color, b: Color, t: float) -> Color:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _jitter(rng: random.Random, color: Color, amount: int) -> Color:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in color)  # type: ignore[return-value]


def _climate(lat: float, rng: random.Random) -> tuple[Color, Color]:
    """Ground colours (near, far) for the latitude: the place shows in the picture."""
    band = abs(lat)
    if band > 62:
        return (232, 236, 240), (190, 200, 210)  # snow
    if 15 < band < 33 and rng.random() < 0.5:
        return (214, 180, 120), (190, 150, 95)  # desert
    if band < 15:
        return (40, 120, 45), (25, 90, 40)  # tropical green
    if band < 45:
        return (110, 140, 60), (85, 115, 55)  # temperate, dry summers
    return (60, 115, 55), (45, 90, 50)  # temperate, wet


SKIES: dict[str, tuple[Color, Color]] = {
    "day": ((60, 120, 210), (170, 205, 240)),
    "haze": ((120, 160, 210), (215, 225, 235)),
    "sunset": ((70, 60, 130), (245, 150, 80)),
    "overcast": ((120, 125, 135), (185, 188, 192)),
}


@dataclass(frozen=True)
class Scene:
    sky: tuple[Color, Color]
    ground: tuple[Color, Color]
    horizon: float
    hills: tuple[tuple[tuple[float, float], ...], ...]
    hill_colors: tuple[Color, ...]
    houses: tuple[tuple[float, float, float, float, Color, Color], ...]  # x, width, height, base, wall, roof
    trees: tuple[tuple[float, float, float, Color], ...]  # x, base, size, color
    sun: tuple[float, float, float, Color] | None
    seed: int


@lru_cache(maxsize=4096)
def scene(file_name: str, lat: float, lon: float) -> Scene:
    rng = _rng("scene", file_name, f"{lat:.5f}", f"{lon:.5f}")
    sky_name = rng.choices(list(SKIES), weights=(5, 2, 1, 2))[0]
    sky = tuple(_jitter(rng, c, 12) for c in SKIES[sky_name])
    ground = tuple(_jitter(rng, c, 15) for c in _climate(lat, rng))
    horizon = rng.uniform(0.38, 0.66)
    hills = []
    hill_colors = []
    for layer in range(rng.randint(1, 3)):
        points = [(0.0, horizon)]
        x = 0.0
        while x < 1.0:
            x = min(1.0, x + rng.uniform(0.05, 0.2))
            points.append((x, horizon - rng.uniform(0.02, 0.18 / (layer + 1))))
        points.append((1.0, horizon))
        hills.append(tuple(points))
        hill_colors.append(_mix(sky[1], ground[1], 0.45 + 0.2 * layer))  # type: ignore[arg-type]
    houses = []
    for _ in range(rng.randint(2, 9)):
        width = rng.uniform(0.05, 0.16)
        houses.append(
            (
                rng.uniform(-0.02, 0.98),
                width,
                rng.uniform(0.06, 0.25),
                horizon + rng.uniform(0.02, 0.2),
                _jitter(rng, rng.choice([(215, 205, 185), (190, 110, 80), (235, 235, 225), (160, 150, 140)]), 20),
                _jitter(rng, rng.choice([(150, 50, 40), (70, 70, 80), (120, 80, 50)]), 15),
            )
        )
    houses.sort(key=lambda h: h[3])  # far houses first
    trees = tuple(
        (rng.uniform(0, 1), horizon + rng.uniform(0.0, 0.3), rng.uniform(0.03, 0.08), _jitter(rng, (35, 85, 40), 20))
        for _ in range(rng.randint(0, 8))
    )
    sun = None
    if sky_name != "overcast":
        sun_color = (255, 240, 200) if sky_name != "sunset" else (255, 190, 110)
        sun = (rng.uniform(0.1, 0.9), rng.uniform(0.05, horizon - 0.08), rng.uniform(0.03, 0.07), sun_color)
    return Scene(
        sky=sky,  # type: ignore[arg-type]
        ground=ground,  # type: ignore[arg-type]
        horizon=horizon,
        hills=tuple(hills),
        hill_colors=tuple(hill_colors),
        houses=tuple(houses),
        trees=trees,
        sun=sun,
        seed=rng.getrandbits(32),
    )


def _gradient(size: tuple[int, int], top: Color, bottom: Color) -> Image.Image:
    ramp = Image.linear_gradient("L").resize(size)
    return ImageOps.colorize(ramp, top, bottom)


def _noise(size: tuple[int, int], seed: int, strength: int) -> Image.Image:
    """Grain from a seeded generator (Pillow's own noise is not reproducible)."""
    w, h = size
    raw = random.Random(seed).randbytes(w * h)
    lut = [128 + (v - 128) * strength // 128 for v in range(256)]
    grain = Image.frombytes("L", size, raw).point(lut)
    return Image.merge("RGB", (grain, grain, grain))


def draw_photo(file_name: str, lat: float, lon: float, width: int, height: int, grain: int) -> Image.Image:
    """The scene at ``width`` x ``height`` pixels."""
    sc = scene(file_name, lat, lon)
    w, h = width, height
    horizon = int(sc.horizon * h)
    img = Image.new("RGB", (w, h))
    img.paste(_gradient((w, max(1, horizon)), *sc.sky), (0, 0))
    img.paste(_gradient((w, max(1, h - horizon)), sc.ground[1], sc.ground[0]), (0, horizon))
    draw = ImageDraw.Draw(img)
    if sc.sun:
        sx, sy, r, color = sc.sun
        draw.ellipse([(sx - r) * w, sy * h - r * w, (sx + r) * w, sy * h + r * w], fill=color)
    for points, color in zip(sc.hills, sc.hill_colors):
        draw.polygon([(x * w, y * h) for x, y in points], fill=color)
    for x, bw, bh, base, wall, roof in sc.houses:
        # Sizes in units of the width, so houses keep their shape in portrait pictures.
        x0, x1, bottom = x * w, (x + bw) * w, base * h
        top = bottom - bh * w * 0.6
        draw.rectangle([x0, top, x1, bottom], fill=wall)
        draw.polygon([(x0 - bw * w * 0.08, top), ((x0 + x1) / 2, top - bh * w * 0.27), (x1 + bw * w * 0.08, top)], fill=roof)
        win = max(1, int(bw * w / 6))
        for wx in (x0 + win, x1 - 2 * win):
            draw.rectangle([wx, top + (bottom - top) * 0.3, wx + win, top + (bottom - top) * 0.3 + win], fill=(60, 70, 90))
    for x, base, size, color in sc.trees:
        draw.rectangle([(x - size * 0.08) * w, (base - size) * h, (x + size * 0.08) * w, base * h], fill=(90, 60, 40))
        draw.ellipse([(x - size / 2) * w, (base - size * 1.6) * h, (x + size / 2) * w, (base - size * 0.6) * h], fill=color)
    if grain:
        img = ImageChops.add(img, _noise((w, h), sc.seed, grain), scale=1.0, offset=-128)
    return img


# --- maps and emblems (vector) ------------------------------------------------------------

# A design is a list of primitives in a 1000-unit-wide canvas:
# ("rect", x, y, w, h, fill) | ("polygon", points, fill, stroke) | ("circle", cx, cy, r, fill, stroke)
Primitive = tuple


def _hex(color: Color) -> str:
    return "#%02x%02x%02x" % color


@lru_cache(maxsize=4096)
def design(file_name: str, kind: str, lat: float, lon: float) -> tuple[tuple[int, int], tuple[Primitive, ...]]:
    """The vector design and its canvas: a locator map for maps, a shield for everything else."""
    rng = _rng("design", file_name, kind, f"{lat:.5f}", f"{lon:.5f}")
    if kind.endswith("map"):
        return (1000, 800), tuple(_map_design(rng, lat, lon))
    return (1000, 1000), tuple(_emblem_design(rng))


def _blob(rng: random.Random, cx: float, cy: float, radius: float, n: int) -> list[tuple[float, float]]:
    return [
        (cx + math.cos(2 * math.pi * i / n) * radius * rng.uniform(0.65, 1.1),
         cy + math.sin(2 * math.pi * i / n) * radius * rng.uniform(0.65, 1.1) * 0.8)
        for i in range(n)
    ]


def _map_design(rng: random.Random, lat: float, lon: float) -> list[Primitive]:
    prims: list[Primitive] = [("rect", 0, 0, 1000, 800, (170, 205, 235))]
    prims.append(("polygon", _blob(rng, 500, 400, 360, 28), (245, 240, 225), (120, 110, 100)))
    for _ in range(rng.randint(2, 5)):
        prims.append(("polygon", _blob(rng, rng.uniform(300, 700), rng.uniform(250, 550), rng.uniform(60, 140), 12),
                      _jitter(rng, (225, 215, 190), 20), (160, 150, 140)))
    for i in range(1, 5):  # graticule
        prims.append(("rect", 0, i * 160, 1000, 2, (140, 170, 200)))
        prims.append(("rect", i * 200, 0, 2, 800, (140, 170, 200)))
    # The dot sits where the place is within its 10-degree square.
    px = 150 + (lon % 10) / 10 * 700
    py = 650 - (lat % 10) / 10 * 500
    prims.append(("circle", px, py, 22, (200, 30, 30), (255, 255, 255)))
    return prims


TINCTURES: tuple[Color, ...] = ((200, 30, 40), (30, 70, 160), (20, 120, 60), (240, 200, 40), (245, 245, 245), (20, 20, 20))


def _emblem_design(rng: random.Random) -> list[Primitive]:
    field_a, field_b = rng.sample(TINCTURES, 2)
    charge = rng.choice([c for c in TINCTURES if c not in (field_a, field_b)])
    shield = [(150, 100), (850, 100), (850, 520), (800, 700), (500, 900), (200, 700), (150, 520)]
    prims: list[Primitive] = [("polygon", shield, field_a, (40, 40, 40))]
    division = rng.choice(("pale", "fess", "bend"))
    if division == "pale":
        prims.append(("polygon", [(500, 100), (850, 100), (850, 520), (800, 700), (500, 900)], field_b, None))
    elif division == "fess":
        prims.append(("polygon", [(150, 450), (850, 450), (850, 520), (800, 700), (500, 900), (200, 700), (150, 520)], field_b, None))
    else:
        prims.append(("polygon", [(150, 100), (260, 100), (850, 690), (800, 700), (720, 780)], field_b, None))
    n = rng.choice((5, 6, 8))
    star = []
    for i in range(2 * n):
        r = 170 if i % 2 == 0 else 75
        a = math.pi * i / n - math.pi / 2
        star.append((500 + r * math.cos(a), 440 + r * math.sin(a)))
    prims.append(("polygon", star, charge, (40, 40, 40)))
    return prims


def svg_document(pic: Picture) -> bytes:
    """The design as an SVG file (what Commons stores for maps and emblems)."""
    (cw, ch), prims = design(pic.file_name, pic.kind, pic.lat, pic.lon)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{pic.width}" height="{pic.height}" '
        f'viewBox="0 0 {cw} {ch}">',
        f"<title>{escape(pic.title or pic.file_name)}</title>",
    ]
    for prim in prims:
        if prim[0] == "rect":
            _, x, y, w, h, fill = prim
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{_hex(fill)}"/>')
        elif prim[0] == "polygon":
            _, points, fill, stroke = prim
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            stroke_attr = f' stroke="{_hex(stroke)}" stroke-width="6"' if stroke else ""
            parts.append(f'<polygon points="{pts}" fill="{_hex(fill)}"{stroke_attr}/>')
        else:
            _, cx, cy, r, fill, stroke = prim
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{_hex(fill)}" stroke="{_hex(stroke)}" stroke-width="6"/>'
            )
    parts.append("</svg>")
    return ("\n".join(parts) + "\n").encode("utf-8")


def draw_design(pic: Picture, width: int, height: int) -> Image.Image:
    """The design rasterised as an SVG renderer would (scaled to fit, centred, transparent around)."""
    (cw, ch), prims = design(pic.file_name, pic.kind, pic.lat, pic.lon)
    scale = min(width / cw, height / ch)
    ox, oy = (width - cw * scale) / 2, (height - ch * scale) / 2
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    line = max(1, round(6 * scale))

    def at(x: float, y: float) -> tuple[float, float]:
        return ox + x * scale, oy + y * scale

    for prim in prims:
        if prim[0] == "rect":
            _, x, y, w, h, fill = prim
            draw.rectangle([*at(x, y), *at(x + w, y + h)], fill=fill)
        elif prim[0] == "polygon":
            _, points, fill, stroke = prim
            draw.polygon([at(x, y) for x, y in points], fill=fill, outline=stroke, width=line if stroke else 0)
        else:
            _, cx, cy, r, fill, stroke = prim
            draw.ellipse([*at(cx - r, cy - r), *at(cx + r, cy + r)], fill=fill, outline=stroke, width=line)
    return img


# --- encoding -------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, fast: bool = False) -> bytes:
    """JPEG quality 85, or PNG (``fast``: light compression, for multi-megapixel originals)."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.convert("RGB").save(buf, "JPEG", quality=85)
    elif fmt == "png":
        img.save(buf, "PNG", compress_level=1 if fast else 6)
    else:
        raise ValueError(f"cannot encode raster format {fmt!r}")
    return buf.getvalue()


def raster(pic: Picture, width: int) -> Image.Image:
    """The picture at ``width`` pixels (height from the original's aspect ratio)."""
    height = thumb_height(width, (pic.width, pic.height))
    if pic.vector:
        return draw_design(pic, width, height)
    # Less grain on big pictures: per-pixel noise would make them far larger than real photos.
    # PNG photos (scans, panoramas) get none: noise would make multi-megapixel PNGs slow to encode.
    grain = int(max(4, 18 * min(1.0, 500 / width))) if pic.format == "jpeg" else 0
    if width > RENDER_LIMIT:
        small_height = thumb_height(RENDER_LIMIT, (pic.width, pic.height))
        small = draw_photo(pic.file_name, pic.lat, pic.lon, RENDER_LIMIT, small_height, grain=grain)
        return small.resize((width, height), Image.Resampling.BILINEAR)
    return draw_photo(pic.file_name, pic.lat, pic.lon, width, height, grain=grain)


def thumbnail_format(pic: Picture) -> str:
    """JPEG for JPEG files, PNG for PNG and SVG files (Commons renders SVGs as PNG)."""
    return "jpeg" if pic.format == "jpeg" else "png"


@lru_cache(maxsize=1024)
def thumbnail_bytes(pic: Picture, width: int) -> bytes:
    return encode(raster(pic, width), thumbnail_format(pic))


# Bytes per pixel that an original of each format stays under (measured on these pictures):
# with it, a file's size is known without drawing the file, as Commons' metadata knows it.
BYTES_PER_PIXEL = {"jpeg": 0.4, "png": 0.15}


def declared_size(pic: Picture) -> int:
    """The original's size in bytes, as ``imageinfo`` reports it and as the original is served."""
    if pic.format == "svg":
        return len(svg_document(pic))
    jitter = _rng("bytes", pic.file_name).uniform(0.9, 1.0)
    return int(pic.width * pic.height * BYTES_PER_PIXEL[pic.format] * jitter) + 4096


@lru_cache(maxsize=8)
def original_bytes(pic: Picture) -> bytes:
    """The original file: SVG XML for SVG files, otherwise the picture at full size, padded with
    a comment to its declared size (encoders cannot aim at a size; metadata must still be right)."""
    if pic.format == "svg":
        return svg_document(pic)
    data = encode(raster(pic, pic.width), pic.format, fast=True)
    return padded(data, pic.format, declared_size(pic))


def padded(data: bytes, fmt: str, size: int) -> bytes:
    """``data`` grown to ``size`` bytes with comments decoders skip (JPEG COM segments, a PNG tEXt chunk)."""
    missing = size - len(data)
    if missing <= 0:
        return data
    if fmt == "jpeg":
        segments = []
        while missing > 0:
            payload = min(65533, max(0, missing - 4))
            segments.append(b"\xff\xfe" + struct.pack(">H", payload + 2) + b" " * payload)
            missing -= payload + 4
        return data[:2] + b"".join(segments) + data[2:]
    if fmt == "png":
        payload = b"Comment\x00" + b" " * max(0, missing - 12 - 8)
        chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload
        chunk += struct.pack(">I", zlib.crc32(b"tEXt" + payload) & 0xFFFFFFFF)
        return data[:33] + chunk + data[33:]  # after the signature and IHDR
    return data


# --- damaged files (for fault injection) ----------------------------------------------------


def with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header claiming another size: a decompression bomb in a few KB."""
    i = 2
    while i + 4 <= len(jpeg):
        if jpeg[i] != 0xFF:
            break
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]
        i += 2 + length
    raise ValueError("no JPEG frame header found")


MAGIC_LENGTHS = {b"\xff\xd8": 20, b"\x89P": 33}  # JPEG: SOI + JFIF segment; PNG: signature + IHDR


def corrupted(data: bytes, seed: object) -> bytes:
    """Keeps the magic bytes (so the type still sniffs right) and replaces the rest with noise.

    Decoders are tolerant of damaged scan data, so the noise starts right after the first
    header segment: no quantisation or Huffman tables, no image data, nothing to decode.
    """
    keep = min(len(data), MAGIC_LENGTHS.get(data[:2], 16))
    rng = _rng("corrupt", seed)
    noise = bytes(b & 0x7F for b in rng.randbytes(max(256, len(data) - keep)))  # no 0xFF: no JPEG markers, no EOI
    return data[:keep] + noise
