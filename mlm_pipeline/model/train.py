"""Seeded training with validation every epoch and the best checkpoint kept.

Reproducibility: ``torch.manual_seed(seed)`` fixes the initial weights and the dropout masks;
one ``torch.Generator`` seeded with the same seed draws, in a fixed order, the epoch's entity
order, each entity's image and each batch's negative pairs. On CPU the same data and settings
give the same losses bit for bit. (On CUDA, cuDNN's LSTM kernels may differ in the last bits.)

Validation loss is the *unweighted* sum of the task losses, on the validation split with each
entity's first image and a fixed set of negative pairs, so that it is comparable across epochs
while the task weights move; the best checkpoint is chosen by it.

Collapse: when every image and text embedding is the same vector, the cosine embedding loss is
0 on positive pairs and 1 - margin on negative ones, so the retrieval loss sits at
(1 - margin) x the share of negative pairs (0.45 with half negatives and margin 0.1) whatever
the data. A retrieval loss within 1% of that value for three epochs in a row means the model
learnt nothing shared by the two modalities: training logs a warning and the result says so
(``TrainResult.collapse``), so that a Table 3 built on it cannot pass for a result. A model that
starts at that plateau and leaves it later is reported as such, not as collapsed.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mlm_pipeline.model.data import SplitData, VersionData
from mlm_pipeline.model.losses import COSINE_MARGIN, Objective, sample_pairs
from mlm_pipeline.model.networks import MLMNet, ModelShape
from mlm_pipeline.model.settings import TrainSettings
from mlm_pipeline.model.tasks import RETRIEVAL, Task

LOG = logging.getLogger(__name__)
PROGRESS_EVERY_S = 30.0
COLLAPSE_TOLERANCE = 0.01  # relative distance to the collapse value
COLLAPSE_EPOCHS = 3


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float  # unweighted sum of task losses, mean over the epoch's samples
    train_objective: float  # the weighted loss that was optimised
    val_loss: float  # unweighted sum of task losses on the validation split
    train_losses: dict[str, float]
    val_losses: dict[str, float]
    weights: dict[str, float]  # exp(-log variance) per task at the end of the epoch
    seconds: float = field(compare=False)
    samples_per_s: float = field(compare=False)


@dataclass(frozen=True)
class Collapse:
    """Retrieval at the value every-embedding-the-same gives, for ``COLLAPSE_EPOCHS`` epochs or more."""

    value: float  # the retrieval loss of collapsed embeddings on this training set
    epochs: tuple[int, ...]  # the epochs whose retrieval loss was within the tolerance of it
    last_epoch: int  # the last epoch trained

    @property
    def ended_collapsed(self) -> bool:
        """Still there at the end: the model learnt nothing the two modalities share."""
        return self.epochs[-1] == self.last_epoch

    def message(self) -> str:
        plateau = (
            f"the training retrieval loss stayed within {COLLAPSE_TOLERANCE:.0%} of its collapse value "
            f"{self.value:.4f} (all embeddings equal) in epochs {list(self.epochs)}"
        )
        if self.ended_collapsed:
            return f"retrieval collapsed: {plateau}; the image and text features share no signal the model found"
        return f"retrieval started collapsed: {plateau}, and left it afterwards (more epochs may still help)"


@dataclass(frozen=True)
class TrainResult:
    history: list[EpochRecord]
    best_epoch: int
    best_val_loss: float
    checkpoint: Path
    shape: ModelShape
    collapse: Collapse | None = None


def collapse_value(n: int, batch_size: int, margin: float = COSINE_MARGIN) -> float:
    """The mean retrieval loss over an epoch when all embeddings are equal: (1 - margin) x the
    share of negative pairs, which ``sample_pairs`` makes floor(B / 2) of each batch of B."""
    negatives = sum(min(batch_size, n - start) // 2 for start in range(0, n, batch_size))
    return (1.0 - margin) * negatives / n


def find_collapse(history: list[EpochRecord], value: float) -> Collapse | None:
    """The first run of ``COLLAPSE_EPOCHS`` epochs at the collapse value, with every epoch at it."""
    at_value = [
        r.epoch
        for r in history
        if RETRIEVAL in r.train_losses and abs(r.train_losses[RETRIEVAL] - value) <= COLLAPSE_TOLERANCE * value
    ]
    for i in range(len(at_value) - COLLAPSE_EPOCHS + 1):
        if at_value[i + COLLAPSE_EPOCHS - 1] - at_value[i] == COLLAPSE_EPOCHS - 1:
            return Collapse(value, tuple(at_value), history[-1].epoch)
    return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


@contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op CPU threads for a block (0: leave torch's default), restored afterwards.

    On a shared machine one thread can be several times faster than two contending ones
    (benchmarks/train.py measures both).
    """
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_optimiser(objective: Objective, settings: TrainSettings) -> torch.optim.Adam:
    """Adam over the network at ``lr`` and over the task log variances at ``weight_lr``.

    At the network's step size the log variances move about ``lr`` per step: 8 quick epochs on
    the default world (about 340 steps at 1e-3) took the weights from 1.0 only to 1.5 (retrieval)
    and 0.8 (location), far from their balance near 1 / (2 * loss) (about 3 and 0.2-0.3), so the
    cross-entropy terms kept most of the shared layers' gradient and multitask retrieval trailed
    single-task retrieval. The paper's 100 epochs on MLM-irle (about 137k steps) get there at lr.
    """
    weights = list(objective.weighting.parameters())
    own = {id(p) for p in weights}
    groups: list[dict] = [{"params": [p for p in objective.parameters() if id(p) not in own]}]
    if weights:
        groups.append({"params": weights, "lr": settings.weight_lr or settings.lr})
    return torch.optim.Adam(groups, lr=settings.lr)


def check_optimised(objective: Objective, optimiser: torch.optim.Optimizer) -> None:
    """Every trainable parameter, the task log variances included, must reach the optimiser."""
    given = {id(p) for group in optimiser.param_groups for p in group["params"]}
    missing = [name for name, p in objective.named_parameters() if p.requires_grad and id(p) not in given]
    if missing:
        raise RuntimeError(f"parameters not given to the optimiser: {missing}")


def _batches(n: int, batch_size: int) -> range:
    return range(0, n, batch_size)


def _validate(objective: Objective, split: SplitData, batch_size: int, seed: int, device: torch.device) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    images = split.first_images()
    sums = torch.zeros(len(objective.names), dtype=torch.float64, device=device)
    objective.eval()
    with torch.no_grad():
        for start in _batches(len(split), batch_size):
            rows = slice(start, start + batch_size)
            n = len(split.qids[rows])
            pairs = sample_pairs(n, generator)
            _, losses = objective(images[rows], split.summary[rows], split.classes[rows], split.cell[rows], pairs)
            sums += torch.stack([losses[name] for name in objective.names]).double() * n
    values = (sums / len(split)).cpu().tolist()
    return dict(zip(objective.names, values))


def save_checkpoint(path: Path, net: MLMNet, payload: dict[str, object]) -> None:
    """Atomically, so a killed run never leaves a half-written best checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"shape": net.shape.to_dict(), "state_dict": net.state_dict(), **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[MLMNet, dict[str, object]]:
    if not Path(path).exists():
        raise FileNotFoundError(f"model checkpoint {path} does not exist: train the model for this release first")
    payload = torch.load(path, map_location=device, weights_only=True)
    net = MLMNet(ModelShape(**payload["shape"]))
    net.load_state_dict(payload["state_dict"])
    return net.to(device).eval(), payload


def train(
    data: VersionData,
    task: Task,
    settings: TrainSettings,
    checkpoint: Path,
    extra: dict[str, object] | None = None,
    log: logging.Logger | logging.LoggerAdapter = LOG,
) -> TrainResult:
    """Train ``task`` on ``data``'s train split; the best epoch's weights end up in ``checkpoint``.

    ``extra`` is stored in the checkpoint beside the weights (e.g. the evaluation protocol).
    """
    train_split, val_split = data.splits["train"], data.splits["val"]
    for name, split in (("train", train_split), ("val", val_split)):
        if len(split) == 0:
            raise ValueError(f"{data.version}: the {name} split has no entities with features")
    if task != "ir" and data.n_cells < 2:
        raise ValueError(f"{data.version}: location estimation needs at least 2 geo-cells, found {data.n_cells}")
    device = resolve_device(settings.device)
    shape = ModelShape(
        task=task,
        image_dim=data.image_dim,
        text_dim=data.text_dim,
        class_dim=data.class_dim,
        n_cells=data.n_cells,
        emb_dim=settings.emb_dim,
        dropout=settings.dropout,
    )
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    net = MLMNet(shape)
    net.fit_image_statistics(train_split.images)
    objective = Objective(net).to(device)
    optimiser = build_optimiser(objective, settings)
    check_optimised(objective, optimiser)
    train_split, val_split = train_split.to(device), val_split.to(device)
    n = len(train_split)
    names = objective.names
    log.info(
        "training %s on %s: %d train / %d val entities, %d cells, %d epochs, batch %d, device %s",
        task, data.version, n, len(val_split), data.n_cells, settings.epochs, settings.batch_size, device,
    )

    history: list[EpochRecord] = []
    best_epoch, best_val = 0, math.inf
    for epoch in range(1, settings.epochs + 1):
        started = last_report = time.perf_counter()
        objective.train()
        order = torch.randperm(n, generator=generator).to(device)
        image_rows = train_split.image_rows(generator).to(device)
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=device)
        for batch_no, start in enumerate(_batches(n, settings.batch_size)):
            index = order[start : start + settings.batch_size]
            pairs = sample_pairs(len(index), generator)
            loss, losses = objective(
                train_split.images[image_rows[index]],
                train_split.summary[index],
                train_split.classes[index],
                train_split.cell[index],
                pairs,
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            parts = torch.stack([loss.detach()] + [losses[name].detach() for name in names])
            sums += parts.double() * len(index)
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_S:
                done = min(n, start + settings.batch_size)
                log.info("epoch %d: %d/%d samples, %.0f samples/s", epoch, done, n, done / (now - started))
                last_report = now
        means = (sums / n).cpu().tolist()
        train_losses = dict(zip(names, means[1:]))
        val_losses = _validate(objective, val_split, settings.batch_size, settings.seed + 1, device)
        seconds = time.perf_counter() - started
        record = EpochRecord(
            epoch=epoch,
            train_loss=sum(train_losses.values()),
            train_objective=means[0],
            val_loss=sum(val_losses.values()),
            train_losses=train_losses,
            val_losses=val_losses,
            weights=objective.weighting.weights(),
            seconds=seconds,
            samples_per_s=n / seconds,
        )
        history.append(record)
        improved = record.val_loss < best_val
        if improved:
            best_epoch, best_val = epoch, record.val_loss
            save_checkpoint(
                checkpoint,
                objective.net,
                {"task": task, "version": data.version, "epoch": epoch, "val_loss": record.val_loss,
                 "settings": asdict(settings), "extra": extra or {}},
            )
        log.info(
            "epoch %d/%d: train %.4f (objective %.4f), val %.4f%s, weights %s, %.1f s, %.0f samples/s",
            epoch, settings.epochs, record.train_loss, record.train_objective, record.val_loss,
            " (best)" if improved else "", {k: round(v, 3) for k, v in record.weights.items()},
            seconds, record.samples_per_s,
        )
    if best_epoch == 0:
        raise RuntimeError(f"{task} on {data.version}: the validation loss was never finite; no checkpoint kept")
    collapse = find_collapse(history, collapse_value(n, settings.batch_size))
    if collapse is not None:
        log.warning("%s on %s: %s", task, data.version, collapse.message())
    return TrainResult(history, best_epoch, best_val, checkpoint, shape, collapse)
