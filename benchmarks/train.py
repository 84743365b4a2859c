"""Training speed at MLM-irle's size: the pipeline's training loop versus the bare optimiser step.

Random features of the real dimensions (4096 image, 768 text and class vectors as from BERT,
990 geo-cells, 1.8 images per entity as in MLM-irle), with the paper's settings (batch 128,
embedding 1024, Adam lr 1e-4). MLM-irle has 174,944 training and 21,868 validation entities;
``--samples`` trains on fewer and the per-epoch figures are extrapolated linearly to the full
size (the step cost does not depend on the data, the features are in memory either way). The
output says which figures are measured and which extrapolated.

Baseline, measured in the same run on the same device: forward + backward + Adam step on one
fixed, contiguous batch, repeated: what the network alone costs. The pipeline's ``train()``
adds the per-batch gather of images, texts and cells, the negative-pair sampling, per-epoch
image draws and the validation pass; the ratio of the two is that overhead.

    .venv/bin/python benchmarks/train.py [--samples 174944] [--epochs 1] [--task multitask] [--device auto]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mlm_pipeline import schemas
from mlm_pipeline.model.data import SplitData, VersionData
from mlm_pipeline.model.losses import Objective, sample_pairs
from mlm_pipeline.model.networks import MLMNet, ModelShape
from mlm_pipeline.model.settings import TrainSettings
from mlm_pipeline.model.train import resolve_device, train

MLM_IRLE_TRAIN = 174_944
MLM_IRLE_VAL = 21_868
MLM_IRLE_CELLS = 990
IMAGES_PER_ENTITY = 314_533 / 218_681


def random_split(n: int, image_dim: int, text_dim: int, n_cells: int, generator: torch.Generator) -> SplitData:
    counts = 1 + (torch.rand(n, generator=generator) < IMAGES_PER_ENTITY - 1).long()
    starts = torch.cumsum(counts, 0) - counts
    return SplitData(
        qids=tuple(f"Q{i}" for i in range(n)),
        images=torch.randn(int(counts.sum()), image_dim, generator=generator),
        image_start=starts,
        image_count=counts,
        summary=torch.randn(n, text_dim, generator=generator),
        classes=torch.randn(n, text_dim, generator=generator),
        cell=torch.randint(0, n_cells, (n,), generator=generator),
        lat=np.zeros(n),
        lon=np.zeros(n),
    )


def bare_steps(shape: ModelShape, batch: int, steps: int, lr: float, device: torch.device) -> float:
    """Samples/s of forward + backward + Adam on one fixed batch (warm-up steps excluded)."""
    torch.manual_seed(0)
    objective = Objective(MLMNet(shape)).to(device).train()
    optimiser = torch.optim.Adam(objective.parameters(), lr=lr)
    image = torch.randn(batch, shape.image_dim, device=device)
    summary = torch.randn(batch, shape.text_dim, device=device)
    classes = torch.randn(batch, shape.class_dim, device=device)
    cells = torch.randint(0, shape.n_cells, (batch,), device=device)
    pairs = sample_pairs(batch, torch.Generator().manual_seed(0))
    started = 0.0
    for step in range(steps + 3):
        if step == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        loss, _ = objective(image, summary, classes, cells, pairs)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=MLM_IRLE_TRAIN, help="training entities (validation scales along)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--task", default="multitask", choices=["multitask", "ir", "le"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--text-dim", type=int, default=768)
    parser.add_argument("--emb-dim", type=int, default=1024)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--bare-steps", type=int, default=20)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}")

    n_val = max(2, round(args.samples * MLM_IRLE_VAL / MLM_IRLE_TRAIN))
    generator = torch.Generator().manual_seed(0)
    made = time.perf_counter()
    splits = {
        "train": random_split(args.samples, 4096, args.text_dim, MLM_IRLE_CELLS, generator),
        "val": random_split(n_val, 4096, args.text_dim, MLM_IRLE_CELLS, generator),
    }
    splits["test"] = splits["val"]
    data = VersionData("random", splits, MLM_IRLE_CELLS, 4096, args.text_dim, args.text_dim, schemas.DROPOUTS.empty_table())
    print(f"random features: {args.samples} train / {n_val} val entities, "
          f"{len(splits['train'].images)} train images, made in {time.perf_counter() - made:.1f} s")

    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch, emb_dim=args.emb_dim, device=args.device)
    shape = ModelShape(args.task, 4096, args.text_dim, args.text_dim, MLM_IRLE_CELLS, settings.emb_dim, settings.dropout)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(data, args.task, settings, Path(tmp) / "best.pt")
        total = time.perf_counter() - started
    bare = bare_steps(shape, args.batch, args.bare_steps, settings.lr, device)  # after train(): both warm
    epoch_s = sum(r.seconds for r in result.history) / len(result.history)
    rate = args.samples / epoch_s  # validation included in the epoch time
    scale = MLM_IRLE_TRAIN / args.samples
    measured = "measured" if args.samples == MLM_IRLE_TRAIN else f"extrapolated x{scale:.1f} from {args.samples}"
    print()
    print(f"{args.task}, batch {args.batch}, embedding {settings.emb_dim}, text dim {args.text_dim}, {args.epochs} epoch(s)")
    print(f"  baseline: bare step on one fixed batch      {bare:10.0f} samples/s")
    print(f"  train(): whole epoch incl. validation       {rate:10.0f} samples/s  ({rate / bare:.2f} of baseline)")
    print(f"  seconds per epoch at {args.samples} samples:   {epoch_s:10.1f} s (measured; run total {total:.1f} s)")
    print(f"  seconds per epoch at MLM-irle's 174,944:    {epoch_s * scale:10.1f} s ({measured})")
    print(f"  100 epochs (the paper's run) at MLM-irle:   {epoch_s * scale * 100 / 3600:10.2f} h ({measured})")


if __name__ == "__main__":
    main()
