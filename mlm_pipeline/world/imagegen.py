"""Deterministic pictures for the embedded world: photographs, maps and emblems.

Photographs are drawn scenes of the place's scenery (scenery.py), the meaning they share with
its summaries: the sea and a beach on the coast, snow-capped peaks in the mountains, a river or
a lake, forest, fields, desert or snow, a skyline of towers, a town's houses or a village's few,
the place's landmark in front (church, castle, bridge, lighthouse, harbour, windmill, tower),
and in most photographs the country's flag on a pole; sky, ground tint and trees (palms, olive
trees, broad-leaved trees, conifers) follow the climate band.
The viewpoint (horizon, where things stand, which side the sea is on) follows a hash of the
file name, so two photographs of one place differ as two photographs would; pixel noise makes
JPEG sizes look like photos'. Nothing that only this world could carry (an ID, a name, a
coordinate) is ever drawn.
Maps and emblems are vector designs written as real SVG XML; the same design is rasterised with
Pillow for their PNG thumbnails (as Commons serves thumbnails of SVG files as PNG).

Everything is a pure function of (file name, coordinates, scenery, kind, size): no clock, no global
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

from mlm_pipeline.world.scenery import Flag, Scenery

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
    scenery: Scenery | None = None  # what a photograph of the place shows (scenery.py)

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


# Ground colours (near, far) per land cover, and skies per climate: the place shows in the picture.
GROUNDS: dict[str, tuple[Color, Color]] = {
    "forest": ((34, 92, 40), (28, 74, 38)),
    "fields": ((150, 175, 70), (120, 150, 65)),
    "desert": ((222, 190, 128), (200, 165, 110)),
    "snow": ((236, 240, 245), (200, 210, 222)),
}
SKIES: dict[str, tuple[Color, Color]] = {
    "day": ((60, 120, 210), (170, 205, 240)),
    "haze": ((120, 160, 210), (215, 225, 235)),
    "sunset": ((70, 60, 130), (245, 150, 80)),
    "overcast": ((120, 125, 135), (185, 188, 192)),
}
CLIMATE_SKIES: dict[str, tuple[int, int, int, int]] = {  # weights of day, haze, sunset, overcast
    "tropical": (6, 3, 1, 1), "warm": (7, 2, 1, 0), "temperate": (4, 2, 1, 3), "cold": (2, 2, 1, 5), "polar": (1, 2, 1, 6),
}  # fmt: skip
# The climate tints the ground and chooses the trees: lush and palms in the tropics, dry ochre and
# olive trees where it is warm, broad-leaved trees where it is temperate, conifers where it is cold.
CLIMATE_TINT: dict[str, tuple[Color, float]] = {
    "tropical": ((10, 150, 70), 0.4), "warm": ((200, 175, 95), 0.45), "temperate": ((0, 0, 0), 0.0),
    "cold": ((85, 105, 110), 0.4), "polar": ((0, 0, 0), 0.0),
}  # fmt: skip
TREE_COLORS: dict[str, Color] = {"tropical": (20, 130, 50), "warm": (110, 125, 70), "temperate": (40, 100, 40), "cold": (25, 70, 45), "polar": (25, 70, 45)}
SEA = ((28, 84, 150), (70, 130, 190))
WATER = (55, 115, 180)
NEUTRAL = Scenery("temperate", False, False, "", "fields", "village", "", Flag("h3", ((255, 255, 255),) * 3), None)


@dataclass(frozen=True)
class Scene:
    """The layout of one photograph: its place's scenery seen from a viewpoint (the file's hash)."""

    scenery: Scenery
    sky: tuple[Color, Color]
    ground: tuple[Color, Color]
    horizon: float
    sea_side: int  # -1 left, 1 right (coast only)
    sea_width: float
    ranges: tuple[tuple[tuple[float, float], ...], ...]  # mountain or hill outlines
    range_colors: tuple[Color, ...]
    snowcaps: bool
    water_x: float  # river mouth or lake centre, in units of the width
    buildings: tuple[tuple[float, float, float, float, Color, Color], ...]  # x, width, height, base, wall, roof (roof None-like for towers)
    trees: tuple[tuple[float, float, float, Color], ...]  # x, base, size, colour
    landmark_x: float
    flag_x: float | None
    sun: tuple[float, float, float, Color] | None
    seed: int


@lru_cache(maxsize=4096)
def scene(file_name: str, lat: float, lon: float, scenery: Scenery | None = None) -> Scene:
    sc = scenery or NEUTRAL
    rng = _rng("scene", file_name, f"{lat:.5f}", f"{lon:.5f}")
    sky_name = rng.choices(list(SKIES), weights=CLIMATE_SKIES[sc.climate])[0]
    sky = tuple(_jitter(rng, c, 12) for c in SKIES[sky_name])
    tint, amount = CLIMATE_TINT[sc.climate]
    ground = tuple(_jitter(rng, _mix(c, tint, amount), 12) for c in GROUNDS[sc.cover])
    horizon = rng.uniform(0.45, 0.6)
    ranges, colors = [], []
    layers = rng.randint(1, 2) if sc.mountains else rng.randint(1, 3)
    for layer in range(layers):
        points = [(0.0, horizon)]
        x = 0.0
        while x < 1.0:
            if sc.mountains:  # peaks: steep, tall, snow-capped outside the tropics
                x = min(1.0, x + rng.uniform(0.12, 0.3))
                points.append((x - rng.uniform(0.05, 0.1), horizon - rng.uniform(0.18, 0.36) / (layer + 1)))
                points.append((x, horizon - rng.uniform(0.03, 0.1)))
            else:  # low rolling hills
                x = min(1.0, x + rng.uniform(0.08, 0.2))
                points.append((x, horizon - rng.uniform(0.01, 0.06 / (layer + 1))))
        points.append((1.0, horizon))
        ranges.append(tuple(points))
        base = (105, 112, 128) if sc.mountains else ground[1]
        colors.append(_mix(sky[1], base, 0.55 + 0.2 * layer))  # type: ignore[arg-type]
    buildings = []
    count, tall = {"city": ((10, 16), (0.18, 0.4)), "town": ((5, 9), (0.08, 0.16)), "village": ((2, 4), (0.05, 0.09))}[sc.settlement]
    for _ in range(rng.randint(*count)):
        if sc.settlement == "city":
            width = rng.uniform(0.04, 0.08)
            wall = _jitter(rng, rng.choice([(150, 160, 175), (110, 130, 150), (190, 195, 200), (90, 100, 115)]), 12)
            roof = wall
        else:
            width = rng.uniform(0.06, 0.14)
            wall = _jitter(rng, rng.choice([(215, 205, 185), (190, 110, 80), (235, 235, 225), (160, 150, 140)]), 20)
            roof = _jitter(rng, rng.choice([(150, 50, 40), (70, 70, 80), (120, 80, 50)]), 15)
        buildings.append(
            (rng.uniform(0.0, 0.95), width, rng.uniform(*tall), horizon + rng.uniform(0.01, 0.08), wall, roof)
        )
    buildings.sort(key=lambda b: b[3])  # far ones first
    n_trees = {"forest": (18, 30), "fields": (2, 5), "desert": (1, 3), "snow": (0, 3)}[sc.cover]
    trees = tuple(
        (rng.uniform(0, 1), horizon + rng.uniform(0.02, 0.4), rng.uniform(0.04, 0.09), _jitter(rng, TREE_COLORS[sc.climate], 15))
        for _ in range(rng.randint(*n_trees))
    )
    sun = None
    if sky_name != "overcast":
        sun_color = (255, 240, 200) if sky_name != "sunset" else (255, 190, 110)
        sun = (rng.uniform(0.1, 0.9), rng.uniform(0.05, horizon - 0.2), rng.uniform(0.03, 0.06), sun_color)
    return Scene(
        scenery=sc,
        sky=sky,  # type: ignore[arg-type]
        ground=ground,  # type: ignore[arg-type]
        horizon=horizon,
        sea_side=rng.choice((-1, 1)),
        sea_width=rng.uniform(0.35, 0.5),
        ranges=tuple(ranges),
        range_colors=tuple(colors),
        snowcaps=sc.mountains and sc.climate != "tropical",
        water_x=rng.uniform(0.3, 0.7),
        buildings=tuple(buildings),
        trees=trees,
        landmark_x=rng.uniform(0.25, 0.75),
        flag_x=rng.uniform(0.05, 0.85) if scenery is not None and rng.random() < 0.75 else None,
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


def _draw_flag(draw: ImageDraw.ImageDraw, flag: Flag, x0: float, y0: float, fw: float, fh: float) -> None:
    """The country's flag, simplified to its layout and colours."""
    c = flag.colors
    x1, y1 = x0 + fw, y0 + fh
    if flag.layout in ("v3", "h3", "h2"):
        n = 2 if flag.layout == "h2" else 3
        for k in range(n):
            if flag.layout == "v3":
                draw.rectangle([x0 + fw * k / n, y0, x0 + fw * (k + 1) / n, y1], fill=c[k % len(c)])
            else:
                draw.rectangle([x0, y0 + fh * k / n, x1, y0 + fh * (k + 1) / n], fill=c[k % len(c)])
    elif flag.layout == "nordic":
        draw.rectangle([x0, y0, x1, y1], fill=c[0])
        bar = fh * 0.25
        draw.rectangle([x0 + fw * 0.3, y0, x0 + fw * 0.3 + bar, y1], fill=c[1])
        draw.rectangle([x0, y0 + fh / 2 - bar / 2, x1, y0 + fh / 2 + bar / 2], fill=c[1])
        if len(c) > 2:
            thin = bar * 0.45
            draw.rectangle([x0 + fw * 0.3 + (bar - thin) / 2, y0, x0 + fw * 0.3 + (bar + thin) / 2, y1], fill=c[2])
            draw.rectangle([x0, y0 + fh / 2 - thin / 2, x1, y0 + fh / 2 + thin / 2], fill=c[2])
    elif flag.layout in ("cross", "union"):
        field, cross = (c[0], c[1]) if flag.layout == "cross" else (c[0], c[2])
        draw.rectangle([x0, y0, x1, y1], fill=field)
        if flag.layout == "union":
            draw.line([x0, y0, x1, y1], fill=c[1], width=max(1, int(fh * 0.2)))
            draw.line([x0, y1, x1, y0], fill=c[1], width=max(1, int(fh * 0.2)))
            bar = fh * 0.3
            draw.rectangle([x0 + fw / 2 - bar / 2, y0, x0 + fw / 2 + bar / 2, y1], fill=c[1])
            draw.rectangle([x0, y0 + fh / 2 - bar / 2, x1, y0 + fh / 2 + bar / 2], fill=c[1])
        bar = fh * (0.16 if flag.layout == "union" else 0.22)
        draw.rectangle([x0 + fw / 2 - bar / 2, y0 + (0 if flag.layout == "union" else fh * 0.2), x0 + fw / 2 + bar / 2,
                        y1 - (0 if flag.layout == "union" else fh * 0.2)], fill=cross)
        draw.rectangle([x0 + (0 if flag.layout == "union" else fw * 0.25), y0 + fh / 2 - bar / 2,
                        x1 - (0 if flag.layout == "union" else fw * 0.25), y0 + fh / 2 + bar / 2], fill=cross)
    elif flag.layout == "stripes":
        for k in range(7):
            draw.rectangle([x0, y0 + fh * k / 7, x1, y0 + fh * (k + 1) / 7], fill=c[0] if k % 2 == 0 else c[1])
        draw.rectangle([x0, y0, x0 + fw * 0.4, y0 + fh * 4 / 7], fill=c[2])
    else:  # disc
        draw.rectangle([x0, y0, x1, y1], fill=c[0])
        r = fh * 0.3
        draw.ellipse([x0 + fw / 2 - r, y0 + fh / 2 - r, x0 + fw / 2 + r, y0 + fh / 2 + r], fill=c[1])


def _draw_landmark(draw: ImageDraw.ImageDraw, kind: str, cx: float, base: float, unit: float, sc: Scene) -> None:
    """The place's landmark, large and in front: ``unit`` is a tenth of the picture's width."""
    stone, dark = (200, 195, 185), (70, 70, 80)
    if kind == "church":
        draw.rectangle([cx - 0.6 * unit, base - 1.0 * unit, cx + 0.6 * unit, base], fill=(225, 220, 205))
        draw.rectangle([cx - 0.25 * unit, base - 2.0 * unit, cx + 0.25 * unit, base - 0.9 * unit], fill=(225, 220, 205))
        draw.polygon([(cx - 0.3 * unit, base - 2.0 * unit), (cx, base - 3.2 * unit), (cx + 0.3 * unit, base - 2.0 * unit)], fill=dark)
        draw.rectangle([cx - 0.03 * unit, base - 3.6 * unit, cx + 0.03 * unit, base - 3.2 * unit], fill=(40, 40, 40))
        draw.rectangle([cx - 0.15 * unit, base - 3.45 * unit, cx + 0.15 * unit, base - 3.38 * unit], fill=(40, 40, 40))
    elif kind == "castle":
        draw.rectangle([cx - 1.4 * unit, base - 1.2 * unit, cx + 1.4 * unit, base], fill=stone)
        for tx in (-1.4, 1.0):
            draw.rectangle([cx + tx * unit, base - 2.0 * unit, cx + (tx + 0.4) * unit, base], fill=(185, 180, 170))
        for k in range(7):
            x = cx - 1.4 * unit + k * 0.4 * unit
            draw.rectangle([x, base - 1.4 * unit, x + 0.2 * unit, base - 1.2 * unit], fill=stone)
        draw.rectangle([cx - 0.25 * unit, base - 0.6 * unit, cx + 0.25 * unit, base], fill=dark)
    elif kind == "bridge":
        y = base - 0.4 * unit
        draw.rectangle([cx - 2.5 * unit, y - 0.2 * unit, cx + 2.5 * unit, y], fill=(150, 120, 90))
        for k in range(3):
            ax = cx - 2.5 * unit + k * 1.67 * unit
            draw.arc([ax, y - 0.1 * unit, ax + 1.67 * unit, y + 1.2 * unit], 180, 360, fill=(120, 95, 70), width=max(1, int(0.15 * unit)))
    elif kind == "lighthouse":
        for k in range(5):
            top, bottom = base - (k + 1) * 0.7 * unit, base - k * 0.7 * unit
            half_b, half_t = (0.35 - 0.04 * k) * unit, (0.35 - 0.04 * (k + 1)) * unit
            draw.polygon([(cx - half_b, bottom), (cx - half_t, top), (cx + half_t, top), (cx + half_b, bottom)],
                         fill=(200, 30, 35) if k % 2 else (245, 245, 245))
        draw.rectangle([cx - 0.2 * unit, base - 3.9 * unit, cx + 0.2 * unit, base - 3.5 * unit], fill=(255, 230, 120))
    elif kind == "harbour":
        for k in range(3):
            bx = cx + (k - 1) * 1.2 * unit
            draw.polygon([(bx - 0.5 * unit, base - 0.3 * unit), (bx + 0.5 * unit, base - 0.3 * unit), (bx + 0.35 * unit, base), (bx - 0.35 * unit, base)], fill=(120, 60, 40))
            draw.polygon([(bx, base - 0.3 * unit), (bx, base - 1.5 * unit), (bx + 0.45 * unit, base - 0.35 * unit)], fill=(245, 245, 240))
    elif kind == "windmill":
        draw.polygon([(cx - 0.4 * unit, base), (cx - 0.25 * unit, base - 1.8 * unit), (cx + 0.25 * unit, base - 1.8 * unit), (cx + 0.4 * unit, base)], fill=(120, 90, 70))
        hub = (cx, base - 1.8 * unit)
        for angle in (0.4, 0.4 + math.pi / 2, 0.4 + math.pi, 0.4 + 3 * math.pi / 2):
            tip = (hub[0] + math.cos(angle) * 1.4 * unit, hub[1] + math.sin(angle) * 1.4 * unit)
            draw.line([hub, tip], fill=(240, 235, 220), width=max(1, int(0.18 * unit)))
    elif kind == "tower":
        draw.rectangle([cx - 0.1 * unit, base - 4.0 * unit, cx + 0.1 * unit, base], fill=(180, 180, 185))
        draw.ellipse([cx - 0.35 * unit, base - 3.4 * unit, cx + 0.35 * unit, base - 2.8 * unit], fill=(150, 150, 160))
        draw.rectangle([cx - 0.02 * unit, base - 4.6 * unit, cx + 0.02 * unit, base - 4.0 * unit], fill=(200, 40, 40))


def draw_photo(file_name: str, lat: float, lon: float, width: int, height: int, grain: int, scenery: Scenery | None = None) -> Image.Image:
    """The scene at ``width`` x ``height`` pixels."""
    sc = scene(file_name, lat, lon, scenery)
    place = sc.scenery
    w, h = width, height
    horizon = int(sc.horizon * h)
    img = Image.new("RGB", (w, h))
    img.paste(_gradient((w, max(1, horizon)), *sc.sky), (0, 0))
    img.paste(_gradient((w, max(1, h - horizon)), sc.ground[1], sc.ground[0]), (0, horizon))
    draw = ImageDraw.Draw(img)
    if sc.sun:
        sx, sy, r, color = sc.sun
        draw.ellipse([(sx - r) * w, sy * h - r * w, (sx + r) * w, sy * h + r * w], fill=color)
    for points, color in zip(sc.ranges, sc.range_colors):
        draw.polygon([(x * w, y * h) for x, y in points], fill=color)
        if sc.snowcaps:
            for (x0, y0), (x1, y1), (x2, y2) in zip(points, points[1:], points[2:]):
                if y1 < y0 and y1 < y2 and sc.horizon - y1 > 0.12:  # a peak: cap its top quarter
                    depth = (sc.horizon - y1) * 0.3
                    left = x1 - (x1 - x0) * depth / max(y0 - y1, 1e-6)
                    right = x1 + (x2 - x1) * depth / max(y2 - y1, 1e-6)
                    draw.polygon([(left * w, (y1 + depth) * h), (x1 * w, y1 * h), (right * w, (y1 + depth) * h)], fill=(245, 248, 252))
    if place.coast:  # the sea from the horizon to the bottom on one side, a beach along it
        edge = sc.sea_width if sc.sea_side < 0 else 1 - sc.sea_width
        outer = 0 if sc.sea_side < 0 else w
        shore = [(edge * w, horizon), ((edge + 0.12 * sc.sea_side) * w, h)]
        draw.polygon([(outer, horizon), *shore, (outer, h)], fill=SEA[0])
        draw.line(shore, fill=(235, 220, 170), width=max(2, w // 40))
        for k in range(4):
            y = horizon + (k + 1) * (h - horizon) / 5
            draw.line([(min(outer, edge * w) + 0.05 * w, y), (max(outer, edge * w) - 0.05 * w, y)], fill=SEA[1], width=max(1, w // 150))
    if place.water == "river":
        top, bottom = sc.water_x * w, (sc.water_x + 0.15) * w
        draw.polygon([(top - 0.01 * w, horizon), (top + 0.01 * w, horizon), (bottom + 0.12 * w, h), (bottom - 0.12 * w, h)], fill=WATER)
    elif place.water == "lake":
        cx, cy = sc.water_x * w, horizon + (h - horizon) * 0.25
        draw.ellipse([cx - 0.28 * w, cy - 0.06 * h, cx + 0.28 * w, cy + 0.06 * h], fill=WATER)
    for x, bw, bh, base, wall, roof in sc.buildings:
        # Sizes in units of the width, so buildings keep their shape in portrait pictures.
        x0, x1, bottom = x * w, (x + bw) * w, base * h
        if place.settlement == "city":  # towers with a grid of windows
            top = bottom - bh * h
            draw.rectangle([x0, top, x1, bottom], fill=wall)
            step = max(2, int(bw * w / 4))
            for wy in range(int(top) + step, int(bottom) - step, step * 2):
                for wx in range(int(x0) + step // 2, int(x1) - step // 2, step):
                    draw.rectangle([wx, wy, wx + max(1, step // 2), wy + max(1, step // 2)], fill=(210, 225, 240))
            continue
        top = bottom - bh * w * 0.6
        draw.rectangle([x0, top, x1, bottom], fill=wall)
        draw.polygon([(x0 - bw * w * 0.08, top), ((x0 + x1) / 2, top - bh * w * 0.27), (x1 + bw * w * 0.08, top)], fill=roof)
        win = max(1, int(bw * w / 6))
        for wx in (x0 + win, x1 - 2 * win):
            draw.rectangle([wx, top + (bottom - top) * 0.3, wx + win, top + (bottom - top) * 0.3 + win], fill=(60, 70, 90))
    for x, base, size, color in sorted(sc.trees, key=lambda t: t[1]):
        if place.climate == "tropical":  # palms: a tall thin trunk, fronds hanging from its top
            top = (x * w, (base - size * 2.2) * h)
            draw.line([(x * w, base * h), top], fill=(120, 90, 50), width=max(1, int(size * w * 0.12)))
            for dx, dy in ((-0.6, 0.35), (-0.35, -0.1), (0.0, -0.25), (0.35, -0.1), (0.6, 0.35)):
                draw.line([top, (top[0] + dx * size * w, top[1] + dy * size * h * 1.5)], fill=color, width=max(1, int(size * w * 0.15)))
            continue
        draw.rectangle([(x - size * 0.08) * w, (base - size) * h, (x + size * 0.08) * w, base * h], fill=(90, 60, 40))
        if place.climate in ("cold", "polar") or place.mountains:
            draw.polygon([((x - size / 2) * w, (base - size * 0.5) * h), (x * w, (base - size * 2.0) * h), ((x + size / 2) * w, (base - size * 0.5) * h)], fill=color)
        elif place.climate == "warm":  # olive trees: low, wide, grey-green
            draw.ellipse([(x - size * 0.6) * w, (base - size * 1.2) * h, (x + size * 0.6) * w, (base - size * 0.6) * h], fill=color)
        else:
            draw.ellipse([(x - size / 2) * w, (base - size * 1.6) * h, (x + size / 2) * w, (base - size * 0.6) * h], fill=color)
    if place.landmark:
        lx = sc.landmark_x
        if place.landmark in ("lighthouse", "harbour") and place.coast:  # at the water's edge
            lx = sc.sea_width * 0.6 if sc.sea_side < 0 else 1 - sc.sea_width * 0.6
        elif place.landmark == "bridge" and place.water == "river":
            lx = sc.water_x + 0.08
        _draw_landmark(draw, place.landmark, lx * w, horizon + (h - horizon) * 0.45, w / 10, sc)
    if sc.flag_x is not None:
        fx, pole_top = sc.flag_x * w, horizon - 0.25 * h
        draw.rectangle([fx, pole_top, fx + max(1, w // 120), horizon + 0.1 * h], fill=(60, 60, 60))
        _draw_flag(draw, place.flag, fx + max(1, w // 120), pole_top, 0.14 * w, 0.09 * w)
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
        small = draw_photo(pic.file_name, pic.lat, pic.lon, RENDER_LIMIT, small_height, grain=grain, scenery=pic.scenery)
        return small.resize((width, height), Image.Resampling.BILINEAR)
    return draw_photo(pic.file_name, pic.lat, pic.lon, width, height, grain=grain, scenery=pic.scenery)


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
