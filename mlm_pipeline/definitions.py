"""The Dagster code location: every stage of MLM, in pipeline order, one module each."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    define_asset_job,
    load_assets_from_modules,
)

from mlm_pipeline.assets import (
    classes,  # 1. base entity type and its subclass closure
    entities,  # 2. entity extraction
    summaries,  # 3a. Wikipedia intro summaries
    images,  # 3b. Commons thumbnails
    filtering,  # 4. SVG and undecodable images removed
    geocells,  # 5. S2 geo-cells
    versions,  # 6. MLM, MLM-irle, MLM-irle-gr, splits, Table 2 / Figure 2
    features,  # 7. image, text and class features
    training,  # 8. multitask and single-task models
    evaluation,  # 9. retrieval and location results
    search_index,  # 10. the paper's use case: every image and summary embedded for search
    package,  # 11. the release as a publishable dataset package
    release_diff,  # what changed since the previous release
)
from mlm_pipeline import automation, checks
from mlm_pipeline.asset_attributes import with_attributes
from mlm_pipeline.parquet_io import ParquetIOManager
from mlm_pipeline.resources import wikimedia_from_env
from mlm_pipeline.run_checks import checked_executor
from mlm_pipeline.run_profiles import run_config_for
from mlm_pipeline.storage import StorageResource

STAGES = [
    classes,
    entities,
    summaries,
    images,
    filtering,
    geocells,
    versions,
    features,
    training,
    evaluation,
    search_index,
    package,
    release_diff,
]

mlm_job = define_asset_job(
    automation.RELEASE_JOB,
    selection=AssetSelection.all(),
    # Runs that nobody configured (a backfill, "Materialize" in the launchpad) get the source's
    # profile, as the CLI and the sensor do; the launchpad shows it and lets one edit it.
    config=run_config_for(wikimedia_from_env()),
    description="Builds one MLM release end to end: extraction, dataset versions, benchmark.",
)

assets = [asset for stage in STAGES for asset in with_attributes(stage, load_assets_from_modules([stage]))]
"""Every stage's assets with their groups, kinds, owners, column docs and code versions
(mlm_pipeline/asset_attributes.py); tests materialise these."""

defs = Definitions(
    assets=assets,
    asset_checks=checks.asset_checks,
    jobs=[mlm_job],
    sensors=automation.sensors,
    schedules=automation.schedules,
    executor=checked_executor,  # refuses a bad run config before the first step
    resources={
        "io_manager": ParquetIOManager(),
        "wikimedia": wikimedia_from_env(),
        "storage": StorageResource(),
    },
)
