"""Training hyperparameters, checked on their own, without torch.

The training asset validates them before it loads any data, in a process that should not pay
for importing torch just to find a negative learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSettings:
    """The paper's hyperparameters (section 6.1) as defaults."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-4
    weight_lr: float | None = None  # step size of the task weights (log variances); None: lr
    dropout: float = 0.1
    emb_dim: int = 1024
    seed: int = 1234
    device: str = "auto"  # "auto": CUDA when available, else CPU

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (negative pairs need two entities), got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_lr is not None and not self.weight_lr > 0:
            raise ValueError(f"weight_lr must be positive (or unset to use lr), got {self.weight_lr}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
