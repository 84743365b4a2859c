"""Stage 5: S2 geo-cells for the entities that keep a raster image and a summary (paper 3.3.5)."""

import time
from collections import Counter

from dagster import AssetExecutionContext, AssetIn, Config, Failure, MetadataValue, Output, multi_asset
from pydantic import model_validator

from mlm_pipeline.assets.subsets import outs, selected
from mlm_pipeline.geo.cells import CellParams, build_cells, cell_shortage
from mlm_pipeline.geo.versions import cell_inputs
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.shards import StoredTable
from mlm_pipeline.storage import StorageResource


class GeoCellsConfig(Config):
    """The paper's thresholds (T_max=500, T_min=20) and the reference's levels (2 to 10)."""

    start_level: int = 2
    max_level: int = 10
    t_max: int = 500  # a cell with more entities is split one level down
    t_min: int = 20  # a cell with fewer entities is dropped

    def params(self) -> CellParams:
        return CellParams(self.start_level, self.max_level, self.t_max, self.t_min)

    @model_validator(mode="after")
    def _valid_params(self) -> "GeoCellsConfig":
        self.params()  # CellParams refuses levels or thresholds out of order, naming them
        return self


@multi_asset(
    outs=outs(
        geo_cells="S2 geo-cells: label 0..n-1 in token order, level, count, mean position.",
        entity_cells="Each entity's geo-cell (entities in kept cells only).",
        geo_cell_dropouts="Entities in cells below t_min, with the cell and its count.",
    ),
    ins={"entities": AssetIn(), "summaries": AssetIn(), "images_filtered": AssetIn()},
    partitions_def=release_partitions,
    can_subset=True,
)
def geo_cells(
    context: AssetExecutionContext,
    config: GeoCellsConfig,
    storage: StorageResource,
    entities: StoredTable,
    summaries: StoredTable,
    images_filtered: StoredTable,
):
    params = config.params()
    common = provenance(release=context.partition_key, config=config)
    started = time.perf_counter()
    members = cell_inputs(entities, summaries, images_filtered, storage.spill())
    result = build_cells(
        members.column("qid").to_pylist(),
        members.column("lat").to_numpy(zero_copy_only=False),
        members.column("lon").to_numpy(zero_copy_only=False),
        params,
    )
    seconds = time.perf_counter() - started
    context.log.info(
        f"{result.cells.num_rows} cells for {members.num_rows} entities in {seconds:.2f} s; "
        f"{result.dropped_cells} sparse cells dropped ({result.dropouts.num_rows} entities), "
        f"{result.oversized} cells above t_max at max_level"
    )
    if (shortage := cell_shortage(result.cells, result.sparse_counts, params, "t_min", "t_max")) is not None:
        raise Failure(description=f"geo_cells: {shortage} (run config ops.geo_cells.config)")
    if result.oversized:
        context.log.warning(
            f"{result.oversized} cells still hold more than t_max={params.t_max} entities at "
            f"max_level={params.max_level}; raise max_level to split them"
        )
    counts = result.cells.column("count").to_pylist()
    levels = Counter(result.cells.column("level").to_pylist())
    if selected(context, "geo_cells"):
        yield Output(
            result.cells,
            output_name="geo_cells",
            metadata={
                **common,
                "cells": result.cells.num_rows,
                "entities_in_cells": result.entity_cells.num_rows,
                "sparse_cells_dropped": result.dropped_cells,
                "oversized_cells": result.oversized,
                "largest_cell": max(counts, default=0),
                "smallest_cell": min(counts, default=0),
                "cells_per_level": MetadataValue.json({str(k): v for k, v in sorted(levels.items())}),
                "seconds": round(seconds, 3),
            },
        )
    if selected(context, "entity_cells"):
        yield Output(result.entity_cells, output_name="entity_cells",
                     metadata={**common, "entities": result.entity_cells.num_rows})
    if selected(context, "geo_cell_dropouts"):
        yield Output(result.dropouts, output_name="geo_cell_dropouts",
                     metadata={**common, "entities": result.dropouts.num_rows})

