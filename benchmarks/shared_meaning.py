"""What a built release's features carry, each figure beside its baseline from the same run.

Reads a release the pipeline built (``mlm_data/<asset>/release=<release>/``, as the README's main
command leaves it) and prints:

- ``probe``: for each visual attribute of the embedded world's scenery (coast, mountains,
  water, cover, settlement, climate, landmark), the accuracy of a linear probe (multinomial
  logistic regression, fitted on 80% of MLM-irle's entities, scored on the other 20%) on
  ``image_features``, beside the majority share of the attribute (what guessing scores);
- ``languages``: the multitask model trained with the quick profile on summaries of every
  language (the pipeline's choice: per-language vectors averaged) against English summaries only,
  on the same entities (those with an English summary) and the same split: medR both ways on
  the test split and location F1 from image and text, with the chance figures beside.

    .venv/bin/python benchmarks/shared_meaning.py [--release 2026-01-05] [--data mlm_data] [--skip-languages]

The attributes come from the embedded world the release was built from (``MLM_WORLD_SIZE``,
``MLM_WORLD_SEED``, ``MLM_WORLD_VERSION``, as for the main command).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mlm_pipeline.encoders.vectors import vector_matrix
from mlm_pipeline.model import metrics
from mlm_pipeline.model.data import load_version
from mlm_pipeline.model.evaluate import location_scores, predict
from mlm_pipeline.model.settings import TrainSettings
from mlm_pipeline.model.train import load_checkpoint, train
from mlm_pipeline.run_profiles import quick_settings
from mlm_pipeline.shards import stored_table
from mlm_pipeline.world import WorldSpec, build_world


def read(root: Path, asset: str, release: str) -> pa.Table:
    return stored_table(asset, release, root).read()


def probe_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray, steps: int = 300) -> float:
    """Softmax regression on standardised features (full-batch Adam, light L2), scored on the rest."""
    classes, codes = np.unique(y, return_inverse=True)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    features = torch.from_numpy(((x - mean) / std).astype(np.float32))
    labels = torch.from_numpy(codes)
    torch.manual_seed(0)
    layer = torch.nn.Linear(features.shape[1], len(classes))
    optimiser = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-3)
    index = torch.from_numpy(np.flatnonzero(train))
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(layer(features[index]), labels[index]).backward()
        optimiser.step()
    test = torch.from_numpy(np.flatnonzero(~train))
    with torch.no_grad():
        return float((layer(features[test]).argmax(1) == labels[test]).float().mean())


def probe(root: Path, release: str, spec: WorldSpec) -> None:
    images = read(root, "image_features", release)
    world = build_world(spec)
    qids = images.column("qid").to_pylist()
    x = vector_matrix(images.column("vector"))
    x = x[:, np.abs(x).sum(axis=0) > 0]  # the empty slot and the padding carry nothing
    scenery = {p.qid: p.scenery for p in world.places if p.scenery is not None}
    keep = np.array([q in scenery for q in qids])
    # Split by entity, so that two photographs of one place never sit on both sides.
    entity_hash = np.array([zlib.crc32(q.encode()) % 10 for q in qids])
    train = (entity_hash < 8)[keep]
    x = x[keep]
    kept = [q for q, k in zip(qids, keep) if k]
    print(f"linear probe on image_features: {len(kept)} images, {x.shape[1]} non-zero dims, "
          f"{int(train.sum())} train / {int((~train).sum())} test (by entity)")
    print(f"  {'attribute':<11} {'classes':>7} {'probe acc':>9} {'majority':>9}")
    for attribute in ("coast", "mountains", "water", "cover", "settlement", "climate", "landmark"):
        y = np.array([scenery[q].visual()[attribute] for q in kept])
        values, counts = np.unique(y[~train], return_counts=True)
        majority = counts.max() / counts.sum()
        accuracy = probe_accuracy(x, y, train)
        print(f"  {attribute:<11} {len(np.unique(y)):>7} {accuracy:>9.3f} {majority:>9.3f}")


def evaluate(data, settings: TrainSettings, label: str) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(data, "multitask", settings, Path(tmp) / "best.pt")
        net, _ = load_checkpoint(result.checkpoint)
    test = data.splits["test"]
    predictions = predict(net, test)
    size = metrics.resolve_subset_size(len(test), None, label)
    index = metrics.subsets(len(test), size, 10, settings.seed)
    retrieval = metrics.evaluate_retrieval(predictions.image, predictions.text, index)
    zeros = np.zeros(data.n_cells)
    f1 = [location_scores(getattr(predictions, f"{s}_cell"), test, zeros, zeros).scores.f1 for s in ("image", "text")]
    print(f"  {label:<28} {retrieval['image->text'].medr:7.1f} {retrieval['text->image'].medr:7.1f} "
          f"{f1[0]:8.3f} {f1[1]:8.3f}   {len(test)} test, {time.perf_counter() - started:.0f} s, "
          f"collapse: {'yes' if result.collapse else 'no'}")


def languages(root: Path, release: str) -> None:
    tables = {a: read(root, a, release) for a in ("mlm_irle", "splits", "image_features", "text_features", "class_features", "geo_cells")}
    texts = tables["text_features"]
    english = texts.filter(pc.equal(texts.column("lang"), "en"))
    with_english = english.column("qid").unique()
    version = tables["mlm_irle"].filter(pc.is_in(tables["mlm_irle"].column("qid"), value_set=with_english))
    splits = tables["splits"].filter(pc.is_in(tables["splits"].column("qid"), value_set=with_english))
    share = version.num_rows / tables["mlm_irle"].num_rows
    settings = quick_settings(device="cpu")
    print(f"summaries: all languages (mean of the per-language vectors) vs English only, on the {version.num_rows} "
          f"entities of MLM-irle with an English summary ({share:.0%}), quick profile, multitask")
    print(f"  {'text input':<28} {'i→t medR':>7} {'t→i medR':>7} {'image F1':>8} {'text F1':>8}")
    for label, text_table in (("all languages (pipeline)", texts), ("English only (baseline)", english)):
        data = load_version("mlm_irle", version, splits, tables["image_features"], text_table, tables["class_features"],
                            "signal benchmark", n_cells=tables["geo_cells"].num_rows)
        evaluate(data, settings, label)
    test = data.splits["test"]
    chance = metrics.chance_retrieval(min(500, len(test)), 10, 0)["image->text"].medr
    train_cells = np.bincount(data.splits["train"].cell.numpy(), minlength=data.n_cells)
    majority = np.full(len(test), int(train_cells.argmax()))
    f1 = metrics.weighted_scores(test.cell.numpy(), majority).f1
    print(f"  {'chance':<28} {chance:7.1f} {chance:7.1f} {f1:8.3f} {f1:8.3f}   (random ranking, majority cell)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", default="2026-01-05")
    parser.add_argument("--data", default="mlm_data", help="the storage folder (MLM_DATA_DIR)")
    parser.add_argument("--skip-languages", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    spec = WorldSpec.from_config(
        os.environ.get("MLM_WORLD_SIZE", "default"), int(os.environ.get("MLM_WORLD_SEED", "1234")),
        int(os.environ.get("MLM_WORLD_VERSION", "1")),
    )
    print(f"release {args.release} in {root}; world {spec.label()}; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    probe(root, args.release, spec)
    if not args.skip_languages:
        languages(root, args.release)


if __name__ == "__main__":
    main()
