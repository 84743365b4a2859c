"""The paper's multitask IR+LE network (section 5.2) and its two single-task baselines.

One class serves all three systems so that the baselines differ from the multitask model only
in which heads exist and which losses train them: the comparison in Tables 3 and 4 is then
about multitask learning, not about two differently built networks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mlm_pipeline.model.tasks import TASKS, Task

NORM_EPS = 1e-12  # the paper's clamp on the norm


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2.0, dim=-1, eps=NORM_EPS)


@dataclass(frozen=True)
class ModelShape:
    """Everything needed to rebuild a network from a checkpoint without its training config."""

    task: Task
    image_dim: int  # 4096 in the paper (Places365 ResNet-50 + geolocation ResNet)
    text_dim: int  # depends on the text encoder: 768 for BERT, 384 for MiniLM
    class_dim: int  # same encoder as the summaries, so usually equal to text_dim
    n_cells: int
    emb_dim: int = 1024
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {TASKS}")
        for name in ("image_dim", "text_dim", "class_dim", "emb_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.task != "ir" and self.n_cells < 2:
            raise ValueError(f"location estimation needs at least 2 geo-cells, got {self.n_cells}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ImageBranch(nn.Module):
    """Conv1d(k=1) -> ReLU -> Linear -> Tanh -> norm, as in the paper's visual branch."""

    def __init__(self, in_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, emb_dim, kernel_size=1)
        self.fc = nn.Linear(emb_dim, emb_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.conv(image.unsqueeze(-1)).squeeze(-1))
        return l2_normalise(torch.tanh(self.fc(hidden)))


class TextBranch(nn.Module):
    """LSTM -> ReLU -> dropout -> Linear -> norm; the LSTM takes the place of the conv1d.

    Each entity's text arrives as one pooled vector (a sequence of length one), so the LSTM acts
    as a gated layer; it is kept because the paper's system uses it.
    """

    def __init__(self, in_dim: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, emb_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(emb_dim, emb_dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        sequence = text.unsqueeze(1) if text.dim() == 2 else text
        output, _ = self.lstm(sequence)
        hidden = torch.relu(output[:, -1])
        return l2_normalise(self.fc(self.dropout(hidden)))


class LocationHead(nn.Module):
    """Linear -> ReLU -> Dropout -> Linear to geo-cell logits."""

    def __init__(self, emb_dim: int, n_cells: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(emb_dim, emb_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(emb_dim, n_cells),
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding)


class Outputs(NamedTuple):
    image: torch.Tensor  # [B, emb_dim], unit length
    text: torch.Tensor  # [B, emb_dim], unit length
    image_logits: torch.Tensor | None  # [B, n_cells]; None without location heads
    text_logits: torch.Tensor | None


class MLMNet(nn.Module):
    """Image and text embedded into one space; geo-cell heads on both embeddings.

    ``task="ir"`` has no location heads, ``task="le"`` has them but is trained without the
    retrieval loss (see tasks.TASK_LOSSES); the encoders are the same in all three.
    """

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.shape = shape
        self.image_branch = ImageBranch(shape.image_dim, shape.emb_dim)
        self.summary_branch = TextBranch(shape.text_dim, shape.emb_dim, shape.dropout)
        self.class_branch = TextBranch(shape.class_dim, shape.emb_dim, shape.dropout)
        self.text_fusion = nn.Linear(2 * shape.emb_dim, shape.emb_dim)
        # Per-dimension standardisation of the image features, fitted on the training images
        # (fit_image_statistics) and saved with the weights. Pooled CNN features have scales that
        # differ by orders of magnitude between dimensions; standardised, the same network leaves
        # the collapse plateau in fewer epochs (medR 56 against 74 of 500 on the default world).
        self.register_buffer("image_mean", torch.zeros(shape.image_dim))
        self.register_buffer("image_scale", torch.ones(shape.image_dim))
        self.image_location: LocationHead | None = None
        self.text_location: LocationHead | None = None
        if shape.task != "ir":
            self.image_location = LocationHead(shape.emb_dim, shape.n_cells, shape.dropout)
            self.text_location = LocationHead(shape.emb_dim, shape.n_cells, shape.dropout)

    @torch.no_grad()
    def fit_image_statistics(self, images: torch.Tensor, floor: float = 1e-3) -> None:
        """Mean and standard deviation per dimension (at least ``floor``: constant dims stay 0)."""
        self.image_mean.copy_(images.mean(dim=0))
        self.image_scale.copy_(images.std(dim=0).clamp_min(floor))

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_branch((image - self.image_mean) / self.image_scale)

    def embed_text(self, summary: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.summary_branch(summary), self.class_branch(classes)], dim=-1)
        return l2_normalise(self.text_fusion(fused))

    def forward(self, image: torch.Tensor, summary: torch.Tensor, classes: torch.Tensor) -> Outputs:
        image_emb = self.embed_image(image)
        text_emb = self.embed_text(summary, classes)
        if self.image_location is None or self.text_location is None:
            return Outputs(image_emb, text_emb, None, None)
        return Outputs(image_emb, text_emb, self.image_location(image_emb), self.text_location(text_emb))
