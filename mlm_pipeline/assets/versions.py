"""Stage 6: MLM, MLM-irle and MLM-irle-gr, their splits, and the paper's Table 2 / Figure 2."""

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, AssetIn, Config, Failure, MetadataValue, Output, asset, multi_asset
from pydantic import Field, model_validator

from mlm_pipeline import schemas
from mlm_pipeline.assets.subsets import outs, selected
from mlm_pipeline.geo.cells import CellParams, cell_shortage
from mlm_pipeline.geo.countries import CITY_POPULATIONS, geocoder
from mlm_pipeline.geo.stats import data_uri_markdown, figure2_png, table2, table2_markdown
from mlm_pipeline.geo.versions import Quota, assign_splits, build_mlm, build_mlm_irle, build_mlm_irle_gr, check_ratios
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.shards import StoredTable
from mlm_pipeline.storage import StorageResource


class VersionsConfig(Config):
    """MLM-irle-gr's sample (the paper's 24,000 and seed) and the reverse geocoder's resolution."""

    gr_total: int = Field(24000, ge=0)  # entities wanted over the EU-28 before short countries and sparse cells
    gr_seed: int = 1234
    gr_start_level: int = 2  # MLM-irle-gr's own geo-cells, same algorithm as geo_cells
    gr_max_level: int = 10
    gr_t_max: int = 500
    gr_t_min: int = 20
    geocoder_min_population: int = 1000  # GeoNames extract used for the country: 500, 1000, 5000 or 15000

    def gr_params(self) -> CellParams:
        return CellParams(self.gr_start_level, self.gr_max_level, self.gr_t_max, self.gr_t_min)

    @model_validator(mode="after")
    def _valid_settings(self) -> "VersionsConfig":
        try:
            self.gr_params()
        except ValueError as error:
            raise ValueError(f"MLM-irle-gr's cells (gr_start_level, gr_max_level, gr_t_max, gr_t_min): {error}") from None
        if self.geocoder_min_population not in CITY_POPULATIONS:
            raise ValueError(f"geocoder_min_population={self.geocoder_min_population}: use one of {CITY_POPULATIONS}")
        return self


def _quota_markdown(quotas: list[Quota]) -> str:
    lines = ["| country | population | wanted | available | taken |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {q.country} | {q.population:,} | {q.wanted} | {q.available} | {q.taken} |" for q in quotas]
    return "\n".join(lines)


@multi_asset(
    outs=outs(
        mlm="MLM, the raw dataset: entities with a usable image (raster/SVG) and a summary.",
        mlm_irle="MLM-irle: MLM entities with a raster image in a kept geo-cell.",
        mlm_irle_gr="MLM-irle-gr: EU-28 population-weighted sample with its own cells.",
        mlm_irle_gr_cells="MLM-irle-gr's geo-cells (its `cell` labels refer to these).",
        version_dropouts="Every entity that leaves a version, in the first one it leaves.",
    ),
    ins={
        "entities": AssetIn(),
        "summaries": AssetIn(),
        "images": AssetIn(),
        "images_filtered": AssetIn(),
        "entity_cells": AssetIn(),
        "geo_cell_dropouts": AssetIn(),
    },
    partitions_def=release_partitions,
    can_subset=True,
)
def dataset_versions(
    context: AssetExecutionContext,
    config: VersionsConfig,
    storage: StorageResource,
    entities: StoredTable,
    summaries: StoredTable,
    images: StoredTable,
    images_filtered: StoredTable,
    entity_cells: StoredTable,
    geo_cell_dropouts: StoredTable,
):
    gr_params = config.gr_params()
    spill = storage.spill()
    mlm = build_mlm(entities, summaries, images, images_filtered, geocoder(config.geocoder_min_population), spill)
    context.log.info(f"MLM: {mlm.table.num_rows} of {entities.num_rows} entities")
    irle = build_mlm_irle(mlm.table, images_filtered, entity_cells, geo_cell_dropouts, spill)
    context.log.info(f"MLM-irle: {irle.table.num_rows} entities")
    gr = build_mlm_irle_gr(irle.table, config.gr_total, config.gr_seed, gr_params, spill)
    context.log.info(f"MLM-irle-gr: {gr.table.num_rows} entities in {gr.cells.num_rows} cells")
    if (shortage := cell_shortage(gr.cells, gr.sparse_counts, gr_params, "gr_t_min", "gr_t_max")) is not None:
        in_eu = sum(q.available for q in gr.quotas)
        raise Failure(
            description=f"dataset_versions: MLM-irle-gr (the EU-28 sample, {in_eu} of {irle.table.num_rows} MLM-irle "
            f"entities available): {shortage} (run config ops.dataset_versions.config)"
        )

    common = provenance(release=context.partition_key, config=config, seed=config.gr_seed)
    if selected(context, "mlm"):
        yield Output(mlm.table, output_name="mlm", metadata={**common, **_version_metadata(mlm.table)})
    if selected(context, "mlm_irle"):
        yield Output(irle.table, output_name="mlm_irle", metadata={**common, **_version_metadata(irle.table)})
    if selected(context, "mlm_irle_gr"):
        short = {q.country: f"{q.taken} of {q.wanted}" for q in gr.quotas if q.taken < q.wanted}
        yield Output(
            gr.table,
            output_name="mlm_irle_gr",
            metadata={
                **common,
                **_version_metadata(gr.table),
                "sampled": sum(q.taken for q in gr.quotas),
                "wanted": sum(q.wanted for q in gr.quotas),
                "short_countries": MetadataValue.json(short),
                "quotas": MetadataValue.md(_quota_markdown(gr.quotas)),
            },
        )
    if selected(context, "mlm_irle_gr_cells"):
        yield Output(gr.cells, output_name="mlm_irle_gr_cells", metadata={**common, "cells": gr.cells.num_rows})
    if selected(context, "version_dropouts"):
        dropouts = schemas.sort_table(pa.concat_tables([mlm.dropouts, irle.dropouts, gr.dropouts]), "version_dropouts")
        yield Output(dropouts, output_name="version_dropouts", metadata={
            **common,
            "by_stage_and_reason": MetadataValue.json(_counts(dropouts, ["stage", "reason"])),
        })


def _counts(table: pa.Table, columns: list[str]) -> dict[str, int]:
    """Rows per combination of values, keyed "a/b"."""
    grouped = table.group_by(columns).aggregate([([], "count_all")]).to_pylist()
    return {"/".join(str(row[c]) for c in columns): row["count_all"] for row in sorted(
        grouped, key=lambda row: tuple(str(row[c]) for c in columns))}


def _version_metadata(table: pa.Table) -> dict:
    countries = Counter(table.column("country_code").to_pylist())
    return {
        "entities": table.num_rows,
        "images": pc.sum(table.column("n_images")).as_py() or 0,
        "summaries": pc.sum(table.column("n_summaries")).as_py() or 0,
        "top_countries": MetadataValue.json(dict(countries.most_common(20))),
    }


class SplitsConfig(Config):
    """Seeded split by entity; an entity's split is the same in every version that holds it."""

    seed: int = 1234
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> "SplitsConfig":
        check_ratios(self.train, self.val, self.test)
        return self


@asset(
    ins={"mlm": AssetIn(), "mlm_irle": AssetIn(), "mlm_irle_gr": AssetIn()},
    partitions_def=release_partitions,
    description="Train/val/test by entity for each version (keyed hash of seed and entity id).",
)
def splits(
    context: AssetExecutionContext,
    config: SplitsConfig,
    storage: StorageResource,
    mlm: StoredTable,
    mlm_irle: StoredTable,
    mlm_irle_gr: StoredTable,
):
    versions = {"mlm": mlm, "mlm_irle": mlm_irle, "mlm_irle_gr": mlm_irle_gr}
    table = assign_splits(versions, config.seed, config.train, config.val, config.test, storage.spill())
    counts = _counts(table, ["version", "split"])
    context.log.info(f"splits: {counts}")
    return Output(
        table,
        metadata={**provenance(release=context.partition_key, config=config, seed=config.seed), **counts},
    )


@asset(
    ins={
        "mlm": AssetIn(),
        "mlm_irle": AssetIn(),
        "mlm_irle_gr": AssetIn(),
        "geo_cells": AssetIn(),
        "mlm_irle_gr_cells": AssetIn(),
        "splits": AssetIn(),
    },
    partitions_def=release_partitions,
    description="The paper's Table 2 per version (plus cells, splits, entities per continent) and Figure 2.",
)
def dataset_stats(
    context: AssetExecutionContext,
    storage: StorageResource,
    mlm: StoredTable,
    mlm_irle: StoredTable,
    mlm_irle_gr: StoredTable,
    geo_cells: StoredTable,
    mlm_irle_gr_cells: StoredTable,
    splits: StoredTable,
):
    versions = {"mlm": mlm, "mlm_irle": mlm_irle, "mlm_irle_gr": mlm_irle_gr}
    cells = {"mlm": None, "mlm_irle": geo_cells.num_rows, "mlm_irle_gr": mlm_irle_gr_cells.num_rows}
    stats, continents = table2(versions, cells, splits, storage.spill())
    path = storage.folder("figures", context.partition_key) / "figure2_entities_by_continent.png"
    png = figure2_png(continents, path)
    context.log.info(f"Table 2:\n{table2_markdown(stats)}\nFigure 2 written to {path}")
    return Output(
        stats,
        metadata={
            **provenance(release=context.partition_key),
            "table_2": MetadataValue.md(table2_markdown(stats)),
            "figure_2": MetadataValue.md(data_uri_markdown(png, "Figure 2: MLM entities by continent (000)")),
            "figure_2_path": MetadataValue.path(str(path)),
        },
    )
