"""Stage 8: the multitask IR+LE model and the single-task baselines, for both benchmark versions.

Six assets from one factory: ``model_{multitask,ir,le}_{mlm_irle,mlm_irle_gr}``. Each trains
on its version's train split, validates every epoch, keeps the best checkpoint under
``checkpoints/<release>/<asset>/best.pt`` in the storage folder, and returns its learning curve.
The evaluation protocol (test subset size) is part of the training config so that a request for
more test items than exist fails here, before any training time is spent, and it travels to the
evaluation inside the checkpoint.
"""


from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Config, MetadataValue, asset
from pydantic import Field, model_validator

from mlm_pipeline import schemas
from mlm_pipeline.config_rules import Device
from mlm_pipeline.model import metrics
from mlm_pipeline.model.settings import TrainSettings
from mlm_pipeline.model.tasks import LOSS_NAMES, TASKS, Task
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.storage import StorageResource

# Training and plotting (torch, matplotlib) are imported inside the functions that use them:
# every step process of a run imports the code location, and those imports would cost each one seconds.
if TYPE_CHECKING:
    from mlm_pipeline.model.data import VersionData
    from mlm_pipeline.model.train import TrainResult

BENCHMARK_VERSIONS = ("mlm_irle", "mlm_irle_gr")
CELL_TABLES = {"mlm_irle": "geo_cells", "mlm_irle_gr": "mlm_irle_gr_cells"}
TASK_TITLES = {"multitask": "multitask IR+LE", "ir": "single-task retrieval", "le": "single-task location"}


PAPER = TrainSettings()
"""The paper's hyperparameters live in one place, ``TrainSettings``; the config shows them."""


class TrainingConfig(Config):
    """Paper defaults (section 6.1); CI lowers ``epochs`` and ``emb_dim`` for the tiny world."""

    epochs: int = PAPER.epochs
    batch_size: int = PAPER.batch_size
    lr: float = PAPER.lr
    weight_lr: Optional[float] = PAPER.weight_lr  # step size of the learned task weights; None = lr
    dropout: float = PAPER.dropout
    emb_dim: int = Field(PAPER.emb_dim, ge=1)
    seed: int = PAPER.seed
    device: Device = PAPER.device  # "auto" = CUDA when available, else CPU; or "cpu", "cuda", "cuda:1"
    threads: int = Field(0, ge=0)  # torch CPU threads while training; 0 = torch's default (one per core)
    test_subset_size: Optional[int] = Field(None, ge=1)  # None = 500, fewer only when the test split is smaller
    test_subsets: int = Field(10, ge=1)

    def settings(self) -> TrainSettings:
        return TrainSettings(**{f.name: getattr(self, f.name) for f in fields(TrainSettings)})

    @model_validator(mode="after")
    def _valid_settings(self) -> "TrainingConfig":
        self.settings()  # TrainSettings refuses bad hyperparameters, naming them
        return self


def model_name(task: Task, version: str) -> str:
    return f"model_{task}_{version}"


def checkpoint_path(release: str, name: str) -> Path:
    """Relative to the storage root, so the stored table does not depend on where data lives."""
    return Path("checkpoints", release, name, "best.pt")


def learning_curve_table(name: str, version: str, task: Task, result: "TrainResult", checkpoint: str) -> pa.Table:
    rows = []
    for record in result.history:
        row: dict[str, object] = {
            "model": name,
            "version": version,
            "task": task,
            "epoch": record.epoch,
            "train_loss": record.train_loss,
            "train_objective": record.train_objective,
            "val_loss": record.val_loss,
            "best": record.epoch == result.best_epoch,
            "checkpoint": checkpoint,
        }
        for loss in LOSS_NAMES:
            row[f"train_{loss}"] = record.train_losses.get(loss)
            row[f"val_{loss}"] = record.val_losses.get(loss)
            row[f"weight_{loss}"] = record.weights.get(loss)
        rows.append(row)
    return schemas.sort_table(pa.Table.from_pylist(rows, schema=schemas.LEARNING_CURVE), "learning_curve")


def dropout_markdown(dropouts: pa.Table, limit: int = 50) -> str:
    """The first entities that could not be samples, with why (all of them are counted beside)."""
    lines = ["| qid | reason | detail |", "|---|---|---|"]
    lines += [f"| {r['qid']} | {r['reason']} | {r['detail']} |" for r in dropouts.slice(0, limit).to_pylist()]
    if dropouts.num_rows > limit:
        lines.append(f"| … | {dropouts.num_rows - limit} more | |")
    return "\n".join(lines) if dropouts.num_rows else "none: every entity of the version has features"


def prepare(
    version: str,
    config: TrainingConfig,
    version_table: pa.Table,
    cells: pa.Table,
    splits: pa.Table,
    image_features: pa.Table,
    text_features: pa.Table,
    class_features: pa.Table,
    stage: str,
) -> tuple["VersionData", int]:
    """Data and the resolved test subset size; every config error is raised here, before training."""
    from mlm_pipeline.model.data import load_version

    data = load_version(
        version, version_table, splits, image_features, text_features, class_features, stage, n_cells=cells.num_rows
    )
    size = metrics.resolve_subset_size(len(data.splits["test"]), config.test_subset_size, f"{stage} ({version})")
    return data, size


def build_model_asset(task: Task, version: str) -> AssetsDefinition:
    name = model_name(task, version)

    @asset(
        name=name,
        partitions_def=release_partitions,
        ins={"version_table": AssetIn(key=version), "cells": AssetIn(key=CELL_TABLES[version])},
        description=f"{TASK_TITLES[task]} model trained on {version}: learning curve, best checkpoint.",
    )
    def _model(
        context: AssetExecutionContext,
        config: TrainingConfig,
        storage: StorageResource,
        version_table: pa.Table,
        cells: pa.Table,
        splits: pa.Table,
        image_features: pa.Table,
        text_features: pa.Table,
        class_features: pa.Table,
    ) -> pa.Table:
        from mlm_pipeline.model.plots import learning_curve_png, png_markdown
        from mlm_pipeline.model.train import cpu_threads, train

        release = context.partition_key
        data, subset_size = prepare(
            version, config, version_table, cells, splits, image_features, text_features, class_features, name
        )
        relative = checkpoint_path(release, name)
        absolute = storage.folder(*relative.parent.parts) / relative.name
        protocol = {"test_subset_size": subset_size, "test_subsets": config.test_subsets, "test_seed": config.seed}
        if data.dropouts.num_rows:
            context.log.warning("%s: %d entities without features are left out", name, data.dropouts.num_rows)
        reduced = metrics.reduced_protocol(subset_size)
        if reduced:
            context.log.warning("%s: the test split has %d entities: %s", name, len(data.splits["test"]), reduced)
        with cpu_threads(config.threads):
            result = train(data, task, config.settings(), absolute, extra={"protocol": protocol}, log=context.log)
        table = learning_curve_table(name, version, task, result, relative.as_posix())
        png = learning_curve_png(result.history, f"{name} (release {release})", result.best_epoch)
        figure = storage.folder("figures", release) / f"learning_curve_{name}.png"  # beside Figure 2
        figure.write_bytes(png)
        reasons = Counter(data.dropouts.column("reason").to_pylist())
        context.add_output_metadata(
            {
                **provenance(release=release, config=config, seed=config.seed),
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "checkpoint": MetadataValue.path(str(absolute)),
                "learning_curve": MetadataValue.md(png_markdown(png, f"{name} learning curve")),
                "learning_curve_path": MetadataValue.path(str(figure)),
                "entities": MetadataValue.json({s: len(d) for s, d in data.splits.items()}),
                "cells": data.n_cells,
                "dimensions": MetadataValue.json(
                    {"image": data.image_dim, "text": data.text_dim, "classes": data.class_dim}
                ),
                "dropouts": MetadataValue.json(dict(sorted(reasons.items()))),
                "dropout_examples": MetadataValue.md(dropout_markdown(data.dropouts)),
                "test_subset_size": subset_size,
                "protocol": MetadataValue.text(reduced or f"the paper's: subsets of {subset_size}"),
                "samples_per_s": round(sum(r.samples_per_s for r in result.history) / len(result.history), 1),
                "collapsed": MetadataValue.bool(result.collapse is not None and result.collapse.ended_collapsed),
                "collapse": MetadataValue.text(result.collapse.message() if result.collapse else "no collapse"),
            }
        )
        return table

    return _model


model_assets = [build_model_asset(task, version) for version in BENCHMARK_VERSIONS for task in TASKS]
