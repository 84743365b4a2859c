"""Learning-curve figure for the Dagster UI: a PNG inlined as a Markdown data URI."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from mlm_pipeline.model.train import EpochRecord  # noqa: E402


def learning_curve_png(history: list[EpochRecord], title: str, best_epoch: int) -> bytes:
    """Train/validation loss (left) and task weights (right) per epoch."""
    epochs = [r.epoch for r in history]
    figure, (losses, weights) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    losses.plot(epochs, [r.train_loss for r in history], marker=".", label="train")
    losses.plot(epochs, [r.val_loss for r in history], marker=".", label="validation")
    losses.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
    losses.set_xlabel("epoch")
    losses.set_ylabel("sum of task losses")
    losses.legend()
    for name in history[0].weights:
        weights.plot(epochs, [r.weights[name] for r in history], marker=".", label=name)
    weights.set_xlabel("epoch")
    weights.set_ylabel("task weight exp(-log variance)")
    weights.legend()
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def png_markdown(png: bytes, caption: str) -> str:
    return f"![{caption}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
