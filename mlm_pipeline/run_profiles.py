"""Run configuration that depends on the source: the paper's settings, or a quick profile.

Every ``Config`` class defaults to the paper's settings (100 epochs, 1024-d embeddings, lr 1e-4,
T_min 20), which is what a release built from Wikidata should use. The embedded world exists to
try the pipeline on a laptop, so runs on it (the README's main command, the sensor and schedule,
backfills, CI) get a quick training profile instead: the whole default world builds in minutes
on two cores. The tiny world (300 places) also keeps cells of 10 entities: at the paper's 20 its
later versions leave MLM-irle-gr a single cell, too few to train location estimation on.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from mlm_pipeline.assets.training import BENCHMARK_VERSIONS, model_name
from mlm_pipeline.model.settings import TrainSettings
from mlm_pipeline.model.tasks import TASKS
from mlm_pipeline.resources import WikimediaResource

QUICK_TRAINING: dict[str, Any] = {"epochs": 8, "emb_dim": 256, "lr": 1e-3, "weight_lr": 5e-3, "threads": 1}
"""Small embeddings and a larger step size learn something in 8 epochs; the task weights get a
larger step still, or in about 340 steps they stay near 1 and the location losses, many times
the retrieval loss, steer the shared layers (see ``build_optimiser``). One thread is faster than two
for models this small on a shared two-core machine."""


def quick_settings(**overrides: Any) -> TrainSettings:
    """The quick profile as plain settings, for training outside Dagster (tests, benchmarks)."""
    names = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{**{k: v for k, v in QUICK_TRAINING.items() if k in names}, **overrides})


TINY_WORLD_T_MIN = 10
"""Cells of the tiny world keep 10 entities or more (geo_cells and MLM-irle-gr's own cells)."""


def training_config(settings: dict[str, Any]) -> dict[str, Any]:
    """Run config giving every model asset the same training settings."""
    return {
        "ops": {
            model_name(task, version): {"config": dict(settings)}
            for task in TASKS
            for version in BENCHMARK_VERSIONS
        }
    }


def run_config_for(source: WikimediaResource) -> dict[str, Any]:
    """The run config a release of this source is built with when nobody chose one."""
    if source.source != "embedded":
        return {}
    config = training_config(QUICK_TRAINING)
    if source.world_size == "tiny" and not source.world_files:
        config["ops"]["geo_cells"] = {"config": {"t_min": TINY_WORLD_T_MIN}}
        config["ops"]["dataset_versions"] = {"config": {"gr_t_min": TINY_WORLD_T_MIN}}
    return config
