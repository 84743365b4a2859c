"""The paper's S2 geo-cells (section 3.3.5), computed for all entities at once with numpy.

Algorithm (the paper's, with both thresholds and both levels configurable):

1. every entity starts in its S2 cell at ``start_level`` (default 2, as the reference code);
2. while a cell holds more than ``t_max`` entities (default 500) and is above ``max_level``
   (default 10, as the reference code), its members move one level down, i.e. the cell is
   replaced by its non-empty children;
3. cells holding fewer than ``t_min`` entities (default 20; the paper removes cells with
   *fewer than* 20, so a cell of exactly 20 stays, unlike the reference code's ``<= 20``)
   are dropped and their entities recorded as dropouts.

A cell that still holds more than ``t_max`` entities at ``max_level`` is kept as it is: its
entities are real settlements that a location classifier must still be able to predict, and
only a pathological input (hundreds of settlements within ~10 km) produces one. Such cells
are counted in :attr:`CellResult.oversized` so the asset can report them.

The reference code asked s2sphere for each entity's cell at every level it visited, which
costs tens of microseconds per call in pure Python. Here every entity's *leaf* cell id
(level 30) is computed once, vectorised, with the same arithmetic as the S2 library
(quadratic projection, Hilbert-curve lookup table), and the cell at any level is derived
from it by bit operations, which is exact: an S2 cell id's parent at level L keeps the top
``3 + 2L`` bits and sets the marker bit below them.

Cell centres are the normalised mean of the members' unit vectors, not the arithmetic mean
of latitudes and longitudes, so that a cell across the antimeridian gets a centre inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlm_pipeline import schemas

MAX_LEVEL = 30
_POS_BITS = 2 * MAX_LEVEL + 1
_MAX_SIZE = 1 << MAX_LEVEL
_LOOKUP_BITS = 4
_SWAP = 1
_INVERT = 2

# S2's Hilbert curve: for each orientation, the (i, j) quadrant (i << 1 | j) visited at
# positions 0..3, and the orientation change each position applies to its sub-curve.
_POS_TO_IJ = ((0, 1, 3, 2), (0, 2, 3, 1), (3, 2, 0, 1), (3, 1, 0, 2))
_POS_TO_ORIENTATION = (_SWAP, 0, 0, _INVERT | _SWAP)


def _build_lookup() -> np.ndarray:
    """Map (4 bits of i, 4 bits of j, orientation) to (8 bits of position, new orientation)."""
    ij_to_pos = [[row.index(ij) for ij in range(4)] for row in _POS_TO_IJ]
    size = 1 << _LOOKUP_BITS
    table = np.zeros(1 << (2 * _LOOKUP_BITS + 2), dtype=np.uint64)
    for orientation in range(4):
        for i in range(size):
            for j in range(size):
                current, pos = orientation, 0
                for bit in range(_LOOKUP_BITS - 1, -1, -1):
                    quadrant = (((i >> bit) & 1) << 1) | ((j >> bit) & 1)
                    step = ij_to_pos[current][quadrant]
                    pos = (pos << 2) | step
                    current ^= _POS_TO_ORIENTATION[step]
                table[(((i << _LOOKUP_BITS) | j) << 2) | orientation] = (pos << 2) | current
    return table


_LOOKUP_POS = _build_lookup()


@dataclass(frozen=True)
class CellParams:
    """Thresholds and levels of the algorithm; defaults are the paper's and the reference's."""

    start_level: int = 2
    max_level: int = 10
    t_max: int = 500
    t_min: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.start_level <= self.max_level <= MAX_LEVEL:
            raise ValueError(
                f"geo-cell levels need 0 <= start_level <= max_level <= {MAX_LEVEL}; "
                f"got start_level={self.start_level}, max_level={self.max_level}"
            )
        if not 1 <= self.t_min <= self.t_max:
            raise ValueError(
                f"geo-cell thresholds need 1 <= t_min <= t_max; got t_min={self.t_min}, t_max={self.t_max}"
            )


@dataclass(frozen=True)
class CellResult:
    cells: pa.Table  # schemas.GEO_CELLS, one row per kept cell
    entity_cells: pa.Table  # schemas.ENTITY_CELLS, one row per entity in a kept cell
    dropouts: pa.Table  # schemas.DROPOUTS, one row per entity in a dropped (sparse) cell
    dropped_cells: int  # sparse cells removed
    oversized: int  # kept cells above t_max because they reached max_level
    sparse_counts: tuple[int, ...] = ()  # entities in each sparse cell, most first


MIN_CELLS = 2
"""Location estimation chooses among cells: with fewer than two there is nothing to estimate."""


def cell_shortage(
    cells: pa.Table, sparse_counts: tuple[int, ...], params: CellParams, t_min_name: str, t_max_name: str
) -> str | None:
    """Why ``cells`` (kept; ``sparse_counts``: the dropped ones' sizes) are too few for the
    benchmark, naming the thresholds as the person configures them and the value that would fix
    it; None when there are enough."""
    kept = cells.num_rows
    if kept >= MIN_CELLS:
        return None
    counts = sorted([*cells.column("count").to_pylist(), *sparse_counts], reverse=True)
    found = f"{kept} geo-cell(s) hold at least {t_min_name}={params.t_min} entities; location estimation needs {MIN_CELLS}"
    if not counts:
        return f"{found}, and there are no entities to place in cells"
    spread = f"the {sum(counts)} entities fall in {len(counts)} cell(s) of {', '.join(map(str, counts[:5]))}"
    if len(counts) >= MIN_CELLS:
        fix = f"lower {t_min_name} to {counts[MIN_CELLS - 1]} or less, or add entities"
    else:
        fix = f"lower {t_max_name} (now {params.t_max}) below {counts[0]} so that the cell splits, and {t_min_name} with it, or add entities elsewhere"
    return f"{found}: {spread}. To fix: {fix}"


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    theta = np.radians(np.asarray(lon, dtype=np.float64))
    cos_phi = np.cos(phi)
    return np.cos(theta) * cos_phi, np.sin(theta) * cos_phi, np.sin(phi)


def _uv_to_ij(u: np.ndarray) -> np.ndarray:
    """Quadratic projection from face coordinate u in [-1, 1] to leaf index 0..2^30-1."""
    root = 0.5 * np.sqrt(1.0 + 3.0 * np.abs(u))
    s = np.where(u >= 0, root, 1.0 - root)
    return np.clip(np.floor(_MAX_SIZE * s), 0, _MAX_SIZE - 1).astype(np.uint64)


def leaf_cell_ids(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Level-30 S2 cell ids (uint64) of the given coordinates in degrees."""
    return _leaf_ids(*unit_vectors(lat, lon))


def _leaf_ids(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    ax, ay, az = np.abs(x), np.abs(y), np.abs(z)
    axis = np.where(ax > ay, np.where(ax > az, 0, 2), np.where(ay > az, 1, 2))
    component = np.choose(axis, (x, y, z))
    face = axis + 3 * (component < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.select(
            [face == 0, face == 1, face == 2, face == 3, face == 4],
            [y / x, -x / y, -x / z, z / x, z / y],
            -y / z,
        )
        v = np.select(
            [face == 0, face == 1, face == 2, face == 3, face == 4],
            [z / x, z / y, -y / z, y / x, -x / y],
            -x / z,
        )
    i, j = _uv_to_ij(u), _uv_to_ij(v)
    face64 = face.astype(np.uint64)
    n = face64 << np.uint64(_POS_BITS - 1)
    bits = face64 & np.uint64(_SWAP)
    mask = np.uint64((1 << _LOOKUP_BITS) - 1)
    for k in range(7, -1, -1):
        shift = np.uint64(k * _LOOKUP_BITS)
        bits = bits + (((i >> shift) & mask) << np.uint64(_LOOKUP_BITS + 2))
        bits = bits + (((j >> shift) & mask) << np.uint64(2))
        bits = _LOOKUP_POS[bits]
        n |= (bits >> np.uint64(2)) << np.uint64(2 * k * _LOOKUP_BITS)
        bits &= np.uint64(_SWAP | _INVERT)
    return n * np.uint64(2) + np.uint64(1)


def parent_ids(leaf: np.ndarray, level: np.ndarray | int) -> np.ndarray:
    """The cell at ``level`` (scalar or per id) containing each leaf cell."""
    lsb = np.uint64(1) << (np.uint64(2) * (np.uint64(MAX_LEVEL) - np.asarray(level, dtype=np.uint64)))
    return (leaf & ~(lsb - np.uint64(1))) | lsb


def token(cell_id: int) -> str:
    """S2's cell token: the id in hexadecimal with trailing zeros removed."""
    return format(cell_id, "016x").rstrip("0")


def check_coordinates(qids: list[str], lat: np.ndarray, lon: np.ndarray, source: str) -> None:
    """Refuse missing or impossible coordinates before any cell is computed."""
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    if bad.any():
        where = np.flatnonzero(bad)
        examples = ", ".join(f"{qids[k]} ({lat[k]}, {lon[k]})" for k in where[:5])
        raise ValueError(f"{source}: {bad.sum()} entities have missing or out-of-range coordinates, e.g. {examples}")


def build_cells(
    qids: list[str],
    lat: np.ndarray,
    lon: np.ndarray,
    params: CellParams = CellParams(),
    stage: str = "geo_cells",
    source: str = "entities",
) -> CellResult:
    """Partition the entities into geo-cells; ``stage`` names the dropouts' origin."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    check_coordinates(qids, lat, lon, source)
    qid_array = pa.array(qids, pa.string())
    if pc.count_distinct(qid_array).as_py() != len(qids):
        raise ValueError(f"{source}: entity ids are not unique")
    x, y, z = unit_vectors(lat, lon)
    # In leaf order every cell, at any mix of levels, is one contiguous run of entities (S2 cells
    # are intervals of the Hilbert curve), so grouping needs one sort, not one per level.
    leaf = _leaf_ids(x, y, z)
    order = np.argsort(leaf, kind="stable")
    leaf = leaf[order]
    n = len(qids)
    level = np.full(n, params.start_level, dtype=np.int64)
    while True:
        ids = parent_ids(leaf, level)
        change = np.ones(n, dtype=bool)
        change[1:] = ids[1:] != ids[:-1]
        starts = np.flatnonzero(change)
        counts = np.diff(np.append(starts, n))
        cell_levels = level[starts]
        split = (counts > params.t_max) & (cell_levels < params.max_level)
        if not split.any():
            break
        level = level + np.repeat(split, counts)
    cell_ids = ids[starts]
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.repeat(np.arange(len(starts)), counts)

    keep = counts >= params.t_min
    tokens = pa.array([token(int(c)) for c in cell_ids], pa.string())
    labels = np.cumsum(keep, dtype=np.int64) - 1
    sums = [np.bincount(inverse, weights=w, minlength=len(cell_ids)) for w in (x, y, z)]
    mean_lat = np.degrees(np.arctan2(sums[2], np.hypot(sums[0], sums[1])))
    mean_lon = np.degrees(np.arctan2(sums[1], sums[0]))

    kept_cells = np.flatnonzero(keep)
    cells = pa.table(
        {
            "cell": pa.array(labels[keep], pa.int32()),
            "token": tokens.take(kept_cells),
            "level": pa.array(cell_levels[keep], pa.int8()),
            "count": pa.array(counts[keep], pa.int32()),
            "mean_lat": pa.array(mean_lat[keep], pa.float64()),
            "mean_lon": pa.array(mean_lon[keep], pa.float64()),
        },
        schema=schemas.GEO_CELLS,
    )
    kept = keep[inverse]
    members = np.flatnonzero(kept)
    entity_cells = pa.table(
        {
            "qid": qid_array.take(members),
            "cell": pa.array(labels[inverse[members]], pa.int32()),
            "token": tokens.take(inverse[members]),
        },
        schema=schemas.ENTITY_CELLS,
    )
    gone = np.flatnonzero(~kept)
    details = [
        f"cell {tokens[inverse[k]].as_py()} (level {cell_levels[inverse[k]]}) holds {counts[inverse[k]]} entities, "
        f"fewer than t_min={params.t_min}"
        for k in gone
    ]
    dropouts = pa.table(
        {
            "qid": qid_array.take(gone),
            "item": pa.array([""] * len(gone), pa.string()),
            "stage": pa.array([stage] * len(gone), pa.string()),
            "reason": pa.array(["sparse_cell"] * len(gone), pa.string()),
            "detail": pa.array(details, pa.string()),
        },
        schema=schemas.DROPOUTS,
    )
    return CellResult(
        cells=schemas.sort_table(cells, "geo_cells"),
        entity_cells=schemas.sort_table(entity_cells, "entity_cells"),
        dropouts=schemas.sort_table(dropouts, "geo_cell_dropouts"),
        dropped_cells=int((~keep).sum()),
        oversized=int((keep & (counts > params.t_max)).sum()),
        sparse_counts=tuple(sorted((int(c) for c in counts[~keep]), reverse=True)),
    )
