"""Stage 6: MLM, MLM-irle and MLM-irle-gr, their splits, and the paper's Table 2 / Figure 2."""

from collections import Counter

import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, AssetOut, Config, Failure, MetadataValue, Output, asset, multi_asset
from pydantic import Field, model_validator

from mlm_pipeline import schemas
from mlm_pipeline.geo.cells import CellParams, cell_shortage
from mlm_pipeline.geo.countries import CITY_POPULATIONS, geocoder
from mlm_pipeline.geo.stats import continent_counts, data_uri_markdown, figure2_png, table2, table2_markdown
from mlm_pipeline.geo.versions import (
    Quota,
    assign_splits,
    build_mlm,
    build_mlm_irle,
    build_mlm_irle_gr,
    check_ratios,
)
from mlm_pipeline.partitions import release_partitions
from mlm_pipeline.provenance import provenance
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
    outs={
        "mlm": AssetOut(description="MLM, the raw dataset: entities with a usable image (raster/SVG) and a summary."),
        "mlm_irle": AssetOut(description="MLM-irle: MLM entities with a raster image in a kept geo-cell."),
        "mlm_irle_gr": AssetOut(description="MLM-irle-gr: EU-28 population-weighted sample with its own cells."),
        "mlm_irle_gr_cells": AssetOut(description="MLM-irle-gr's geo-cells (its `cell` labels refer to these)."),
        "version_dropouts": AssetOut(description="Every entity that leaves a version, in the first one it leaves."),
    },
    ins={
        "entities": AssetIn(),
        "summaries": AssetIn(),
        "images": AssetIn(),
        "images_filtered": AssetIn(),
        "entity_cells": AssetIn(),
        "geo_cell_dropouts": AssetIn(),
    },
    partitions_def=release_partitions,
    code_version="1",
)
def dataset_versions(
    context: AssetExecutionContext,
    config: VersionsConfig,
    entities: pa.Table,
    summaries: pa.Table,
    images: pa.Table,
    images_filtered: pa.Table,
    entity_cells: pa.Table,
    geo_cell_dropouts: pa.Table,
):
    gr_params = config.gr_params()
    mlm = build_mlm(entities, summaries, images, images_filtered, geocoder(config.geocoder_min_population))
    context.log.info(f"MLM: {mlm.table.num_rows} of {entities.num_rows} entities")
    irle = build_mlm_irle(mlm.table, images_filtered, entity_cells, geo_cell_dropouts)
    context.log.info(f"MLM-irle: {irle.table.num_rows} entities")
    gr = build_mlm_irle_gr(irle.table, config.gr_total, config.gr_seed, gr_params)
    context.log.info(f"MLM-irle-gr: {gr.table.num_rows} entities in {gr.cells.num_rows} cells")
    if (shortage := cell_shortage(gr.cells, gr.sparse_counts, gr_params, "gr_t_min", "gr_t_max")) is not None:
        in_eu = sum(q.available for q in gr.quotas)
        raise Failure(
            description=f"dataset_versions: MLM-irle-gr (the EU-28 sample, {in_eu} of {irle.table.num_rows} MLM-irle "
            f"entities available): {shortage} (run config ops.dataset_versions.config)"
        )

    dropouts = pa.concat_tables([mlm.dropouts, irle.dropouts, gr.dropouts])
    common = provenance(release=context.partition_key, config=config, seed=config.gr_seed)
    yield Output(mlm.table, output_name="mlm", metadata={**common, **_version_metadata(mlm.table)})
    yield Output(irle.table, output_name="mlm_irle", metadata={**common, **_version_metadata(irle.table)})
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
    yield Output(gr.cells, output_name="mlm_irle_gr_cells", metadata={**common, "cells": gr.cells.num_rows})
    reasons = Counter(zip(dropouts.column("stage").to_pylist(), dropouts.column("reason").to_pylist()))
    yield Output(
        schemas.sort_table(dropouts, "version_dropouts"),
        output_name="version_dropouts",
        metadata={
            **common,
            "by_stage_and_reason": MetadataValue.json({f"{s}/{r}": n for (s, r), n in sorted(reasons.items())}),
        },
    )


def _version_metadata(table: pa.Table) -> dict:
    countries = Counter(table.column("country_code").to_pylist())
    return {
        "entities": table.num_rows,
        "images": sum(table.column("n_images").to_pylist()),
        "summaries": sum(table.column("n_summaries").to_pylist()),
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
    code_version="1",
    description="Train/val/test by entity for each version (keyed hash of seed and entity id).",
)
def splits(
    context: AssetExecutionContext, config: SplitsConfig, mlm: pa.Table, mlm_irle: pa.Table, mlm_irle_gr: pa.Table
):
    versions = {"mlm": mlm, "mlm_irle": mlm_irle, "mlm_irle_gr": mlm_irle_gr}
    table = assign_splits(
        {name: t.column("qid").to_pylist() for name, t in versions.items()},
        config.seed,
        config.train,
        config.val,
        config.test,
    )
    counts = Counter(zip(table.column("version").to_pylist(), table.column("split").to_pylist()))
    context.log.info(f"splits: {dict(sorted(counts.items()))}")
    return Output(
        table,
        metadata={
            **provenance(release=context.partition_key, config=config, seed=config.seed),
            **{f"{v}/{s}": n for (v, s), n in sorted(counts.items())},
        },
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
    code_version="1",
    description="The paper's Table 2 per version (plus cells, splits, entities per continent) and Figure 2.",
)
def dataset_stats(
    context: AssetExecutionContext,
    storage: StorageResource,
    mlm: pa.Table,
    mlm_irle: pa.Table,
    mlm_irle_gr: pa.Table,
    geo_cells: pa.Table,
    mlm_irle_gr_cells: pa.Table,
    splits: pa.Table,
):
    versions = {"mlm": mlm, "mlm_irle": mlm_irle, "mlm_irle_gr": mlm_irle_gr}
    stats = table2(
        versions, {"mlm": None, "mlm_irle": geo_cells.num_rows, "mlm_irle_gr": mlm_irle_gr_cells.num_rows}, splits
    )
    path = storage.folder("figures", context.partition_key) / "figure2_entities_by_continent.png"
    png = figure2_png(continent_counts(mlm), path)
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
