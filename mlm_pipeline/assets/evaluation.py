"""Stage 9: the paper's Table 3 (cross-modal retrieval) and Table 4 (location estimation).

Each model is evaluated on its version's test split with the protocol stored in its checkpoint
(fixed at training time, where a bad request fails early). Retrieval compares the multitask
model with single-task IR, location with single-task LE; rows = dataset x system, as in the
paper, plus a chance row per dataset so that a number can be read against what no model at all
scores under the same protocol: a random ranking of the same subsets for retrieval, the train
split's most frequent cell for location. Subsets smaller than the paper's 500 are marked in the
tables and logged as warnings. The Markdown tables go to the asset metadata and, beside the
Parquet, to ``results/<release>/`` in the storage folder.
"""


from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Config, MetadataValue, asset
from pydantic import Field

from mlm_pipeline import schemas
from mlm_pipeline.config_rules import Device
from mlm_pipeline.assets.training import BENCHMARK_VERSIONS, CELL_TABLES, model_name
from mlm_pipeline.model import metrics
from mlm_pipeline.model.tasks import Task
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.storage import StorageResource

# The model code (torch) is imported inside the functions that run it: every step process of a
# run imports the code location, and importing torch there would cost each one seconds.
if TYPE_CHECKING:
    from mlm_pipeline.model.data import SplitData, VersionData
    from mlm_pipeline.model.evaluate import Predictions

VERSION_TITLES = {"mlm_irle": "MLM-irle", "mlm_irle_gr": "MLM-irle-gr"}
RETRIEVAL_SYSTEMS: dict[str, Task] = {"multitask": "multitask", "single-task": "ir"}
LOCATION_SYSTEMS: dict[str, Task] = {"multitask": "multitask", "single-task": "le"}
CHANCE = "chance"
RANDOM_RANKING = "random ranking"
MAJORITY_CELL = "majority cell"
DIRECTIONS = ("image->text", "text->image")
INPUTS = ("image", "text")


class EvaluationConfig(Config):
    device: Device = "auto"  # "auto" = CUDA when available, else CPU
    batch_size: int = Field(1024, ge=1)  # inference only: does not change any number


@dataclass(frozen=True)
class EvaluatedModel:
    name: str
    best_epoch: int
    protocol: dict[str, int]
    test: "SplitData"
    predictions: "Predictions"


def _evaluate(
    name: str, curve: pa.Table, data: "VersionData", storage: StorageResource, config: EvaluationConfig
) -> EvaluatedModel:
    from mlm_pipeline.model.evaluate import predict
    from mlm_pipeline.model.train import load_checkpoint, resolve_device

    best = curve.filter(curve.column("best"))
    if best.num_rows != 1:
        raise ValueError(f"{name}: its learning curve marks {best.num_rows} best epochs, expected 1")
    path = storage.root() / best.column("checkpoint")[0].as_py()
    net, payload = load_checkpoint(path, resolve_device(config.device))
    if net.shape.task != "ir" and net.shape.n_cells != data.n_cells:
        raise ValueError(f"{name}: checkpoint {path} predicts {net.shape.n_cells} cells, {data.version} has {data.n_cells}")
    test = data.splits["test"]
    if len(test) == 0:
        raise ValueError(f"{name}: the {data.version} test split has no entities with features")
    protocol = payload["extra"]["protocol"]  # type: ignore[index]
    return EvaluatedModel(name, int(best.column("epoch")[0].as_py()), protocol, test, predict(net, test, config.batch_size))


def _version_data(version: str, tables: dict[str, pa.Table], n_cells: int | None, stage: str) -> "VersionData":
    from mlm_pipeline.model.data import load_version

    return load_version(
        version,
        tables[version],
        tables["splits"],
        tables["image_features"],
        tables["text_features"],
        tables["class_features"],
        stage,
        n_cells=n_cells,
    )


def retrieval_rows(version: str, system: str, model: EvaluatedModel) -> list[dict[str, object]]:
    n_test = len(model.test)
    size = metrics.resolve_subset_size(n_test, model.protocol["test_subset_size"], model.name)
    index = metrics.subsets(n_test, size, model.protocol["test_subsets"], model.protocol["test_seed"])
    scores = metrics.evaluate_retrieval(model.predictions.image, model.predictions.text, index)
    return _retrieval_rows(version, system, scores, size, len(index), n_test, model.name, model.best_epoch)


def chance_retrieval_rows(version: str, model: EvaluatedModel) -> list[dict[str, object]]:
    """What a random ranking scores on subsets of the same size and number as ``model``'s."""
    n_test = len(model.test)
    size = metrics.resolve_subset_size(n_test, model.protocol["test_subset_size"], model.name)
    count = model.protocol["test_subsets"]
    scores = metrics.chance_retrieval(size, count, model.protocol["test_seed"])
    return _retrieval_rows(version, CHANCE, scores, size, count, n_test, RANDOM_RANKING, None)


def _retrieval_rows(
    version: str,
    system: str,
    scores: dict[str, metrics.RetrievalScores],
    size: int,
    n_subsets: int,
    n_test: int,
    model: str,
    best_epoch: int | None,
) -> list[dict[str, object]]:
    return [
        {
            "version": version,
            "system": system,
            "direction": direction,
            "medr": scores[direction].medr,
            "medr_std": scores[direction].medr_std,
            "r1": scores[direction].recall[1],
            "r5": scores[direction].recall[5],
            "r10": scores[direction].recall[10],
            "subset_size": size,
            "n_subsets": n_subsets,
            "n_test": n_test,
            "model": model,
            "best_epoch": best_epoch,
        }
        for direction in DIRECTIONS
    ]


def _cell_coordinates(version: str, cells: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    cells = cells.sort_by("cell")
    if cells.column("cell").to_pylist() != list(range(cells.num_rows)):
        raise ValueError(f"{CELL_TABLES[version]}: cell labels are not 0..{cells.num_rows - 1}")
    return cells.column("mean_lat").to_numpy(), cells.column("mean_lon").to_numpy()


def location_rows(version: str, system: str, model: EvaluatedModel, cells: pa.Table) -> list[dict[str, object]]:
    lat, lon = _cell_coordinates(version, cells)
    rows = []
    for source in INPUTS:
        predicted = getattr(model.predictions, f"{source}_cell")
        if predicted is None:
            raise ValueError(f"{model.name} has no location heads")
        rows.append(_location_row(version, system, source, np.asarray(predicted), model.test, lat, lon, model.name, model.best_epoch))
    return rows


def chance_location_rows(version: str, data: "VersionData", cells: pa.Table) -> list[dict[str, object]]:
    """Every test entity placed in the train split's most frequent cell (from either input)."""
    lat, lon = _cell_coordinates(version, cells)
    train, test = data.splits["train"], data.splits["test"]
    majority = int(np.bincount(train.cell.cpu().numpy(), minlength=data.n_cells).argmax())
    predicted = np.full(len(test), majority, dtype=np.int64)
    return [_location_row(version, CHANCE, source, predicted, test, lat, lon, MAJORITY_CELL, None) for source in INPUTS]


def _location_row(
    version: str,
    system: str,
    source: str,
    predicted: np.ndarray,
    test: "SplitData",
    lat: np.ndarray,
    lon: np.ndarray,
    model: str,
    best_epoch: int | None,
) -> dict[str, object]:
    from mlm_pipeline.model.evaluate import location_scores

    result = location_scores(predicted, test, lat, lon)
    row: dict[str, object] = {
        "version": version,
        "system": system,
        "input": source,
        "precision": result.scores.precision,
        "recall": result.scores.recall,
        "f1": result.scores.f1,
        "n_test": len(test),
        "model": model,
        "best_epoch": best_epoch,
    }
    for km, share in result.within.items():
        row[f"within_{km:g}km"] = share
    return row


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def table3_markdown(results: pa.Table) -> str:
    """Rows dataset x system (then chance); image->text then text->image medR (mean ± std over
    the subsets) and R@1/5/10, as the paper's Table 3; reduced subsets are flagged below."""
    rows = results.to_pylist()
    by_key = {(r["version"], r["system"], r["direction"]): r for r in rows}
    lines = [
        "| Dataset | System | img→txt medR | R@1 | R@5 | R@10 | txt→img medR | R@1 | R@5 | R@10 | test subsets |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for version in BENCHMARK_VERSIONS:
        for system in (*RETRIEVAL_SYSTEMS, CHANCE):
            if (version, system, DIRECTIONS[0]) not in by_key:
                continue
            cells = []
            for direction in DIRECTIONS:
                r = by_key[(version, system, direction)]
                cells += [f"{_fmt(r['medr'], 1)} ± {_fmt(r['medr_std'], 1)}", _fmt(r["r1"]), _fmt(r["r5"]), _fmt(r["r10"])]
            r = by_key[(version, system, DIRECTIONS[0])]
            subset = f"{r['n_subsets']} x {r['subset_size']} of {r['n_test']}"
            label = f"{CHANCE} ({RANDOM_RANKING})" if system == CHANCE else system
            lines.append(f"| {VERSION_TITLES[version]} | {label} | " + " | ".join(cells) + f" | {subset} |")
            warning = metrics.reduced_protocol(int(r["subset_size"]))
            if system == CHANCE and warning:
                notes.append(f"**Warning, {VERSION_TITLES[version]}:** {warning}.")
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)


def table4_markdown(results: pa.Table) -> str:
    """Rows dataset x system (then chance); P/R/F1 from image then from text, as the paper's
    Table 4; then the shares within 1..2500 km."""
    rows = results.to_pylist()
    by_key = {(r["version"], r["system"], r["input"]): r for r in rows}
    head = "| Dataset | System | image P | R | F1 | text P | R | F1 | test entities |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    km_columns = [f"within_{km:g}km" for km in metrics.DISTANCE_KM]
    distance = [
        "| Dataset | System | input | " + " | ".join(f"≤ {km:g} km" for km in metrics.DISTANCE_KM) + " |",
        "|---|---|---|" + "---|" * len(km_columns),
    ]
    for version in BENCHMARK_VERSIONS:
        for system in (*LOCATION_SYSTEMS, CHANCE):
            if (version, system, INPUTS[0]) not in by_key:
                continue
            label = f"{CHANCE} ({MAJORITY_CELL})" if system == CHANCE else system
            cells = []
            for source in INPUTS:
                r = by_key[(version, system, source)]
                cells += [_fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["f1"])]
                distance.append(
                    f"| {VERSION_TITLES[version]} | {label} | {source} | "
                    + " | ".join(_fmt(r[c]) for c in km_columns)
                    + " |"
                )
            n_test = by_key[(version, system, INPUTS[0])]["n_test"]
            lines.append(f"| {VERSION_TITLES[version]} | {label} | " + " | ".join(cells) + f" | {n_test} |")
    return "\n".join(lines) + "\n\nShare of predictions within a distance (predicted cell's mean coordinates):\n\n" + "\n".join(distance) + "\n"


def _write_markdown(storage: StorageResource, release: str, name: str, text: str) -> Path:
    path = storage.folder("results", release) / f"{name}.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _evaluate_systems(
    context: AssetExecutionContext,
    config: EvaluationConfig,
    storage: StorageResource,
    tables: dict[str, pa.Table],
    systems: dict[str, Task],
    stage: str,
    rows_for: Callable[[str, str, EvaluatedModel], list[dict[str, object]]],
    chance_for: Callable[[str, "VersionData", EvaluatedModel], list[dict[str, object]]],
    cells: bool = False,
) -> list[dict[str, object]]:
    """Each benchmark version's test split through each system's best checkpoint, then chance."""
    rows: list[dict[str, object]] = []
    for version in BENCHMARK_VERSIONS:
        n_cells = tables[CELL_TABLES[version]].num_rows if cells else None
        data = _version_data(version, tables, n_cells, stage)
        for system, task in systems.items():
            name = model_name(task, version)
            model = _evaluate(name, tables[name], data, storage, config)
            rows += rows_for(version, system, model)
            context.log.info("%s: %s on %d test entities", name, stage, len(model.test))
            size = metrics.resolve_subset_size(len(model.test), model.protocol["test_subset_size"], name)
            if metrics.reduced_protocol(size):
                context.log.warning("%s: %s", name, metrics.reduced_protocol(size))
        rows += chance_for(version, data, model)
    return rows


def _publish(
    context: AssetExecutionContext, config: EvaluationConfig, storage: StorageResource, key: str, file: str, markdown: str
) -> None:
    """The paper-shaped table in the UI and as a Markdown file beside the release's data."""
    path = _write_markdown(storage, context.partition_key, file, markdown)
    context.add_output_metadata(
        {
            **provenance(release=context.partition_key, config=config),
            key: MetadataValue.md(markdown),
            "markdown": MetadataValue.path(str(path)),
        }
    )


def _model_ins(systems: dict[str, Task]) -> dict[str, AssetIn]:
    return {
        model_name(task, version): AssetIn(key=model_name(task, version))
        for version in BENCHMARK_VERSIONS
        for task in systems.values()
    }


@dataclass(frozen=True)
class ResultsTable:
    """What sets Table 3 and Table 4 apart; the rest of their assets is one factory's."""

    name: str
    description: str
    systems: dict[str, Task]
    schema: pa.Schema
    rows_for: Callable[[str, str, EvaluatedModel, dict[str, pa.Table]], list[dict[str, object]]]
    chance_for: Callable[[str, "VersionData", EvaluatedModel, dict[str, pa.Table]], list[dict[str, object]]]
    markdown: Callable[[pa.Table], str]
    metadata_key: str  # the table's entry in the asset's metadata
    file: str  # the Markdown file's name under results/<release>/
    cells: bool  # whether the version's cell table is an input


def results_asset(spec: ResultsTable) -> AssetsDefinition:
    cell_ins = {t: AssetIn(key=t) for t in CELL_TABLES.values()} if spec.cells else {}

    @asset(
        name=spec.name,
        partitions_def=release_partitions,
        ins={**_model_ins(spec.systems), **{v: AssetIn(key=v) for v in BENCHMARK_VERSIONS}, **cell_ins},
        description=spec.description,
    )
    def results(
        context: AssetExecutionContext,
        config: EvaluationConfig,
        storage: StorageResource,
        splits: pa.Table,
        image_features: pa.Table,
        text_features: pa.Table,
        class_features: pa.Table,
        **inputs: pa.Table,
    ) -> pa.Table:
        tables = {"splits": splits, "image_features": image_features, "text_features": text_features,
                  "class_features": class_features, **inputs}
        rows = _evaluate_systems(
            context,
            config,
            storage,
            tables,
            spec.systems,
            spec.name,
            lambda version, system, model: spec.rows_for(version, system, model, inputs),
            lambda version, data, model: spec.chance_for(version, data, model, inputs),
            cells=spec.cells,
        )
        table = schemas.sort_table(pa.Table.from_pylist(rows, schema=spec.schema), spec.name)
        _publish(context, config, storage, spec.metadata_key, spec.file, spec.markdown(table))
        return table

    return results


retrieval_results = results_asset(
    ResultsTable(
        name="retrieval_results",
        description="Table 3: medR and R@1/5/10, image->text and text->image, multitask vs single-task IR.",
        systems=RETRIEVAL_SYSTEMS,
        schema=schemas.RETRIEVAL_RESULTS,
        rows_for=lambda version, system, model, inputs: retrieval_rows(version, system, model),
        chance_for=lambda version, data, model, inputs: chance_retrieval_rows(version, model),
        markdown=table3_markdown,
        metadata_key="table_3",
        file="table3_retrieval",
        cells=False,
    )
)

location_results = results_asset(
    ResultsTable(
        name="location_results",
        description="Table 4: top-1 geo-cell P/R/weighted F1 from image and text, and shares within 1..2500 km.",
        systems=LOCATION_SYSTEMS,
        schema=schemas.LOCATION_RESULTS,
        rows_for=lambda version, system, model, inputs: location_rows(version, system, model, inputs[CELL_TABLES[version]]),
        chance_for=lambda version, data, model, inputs: chance_location_rows(version, data, inputs[CELL_TABLES[version]]),
        markdown=table4_markdown,
        metadata_key="table_4",
        file="table4_location",
        cells=True,
    )
)
