"""Losses of the IR+LE framework (paper section 5.1) without the reference code's two defects.

Defect 1 (weights never learned): the task weights are log variances held by ``TaskWeighting``,
an ``nn.Module`` that lives inside the module the optimiser is built from (train.py builds Adam
over ``Objective.parameters()``, which include them, and checks that it did).

Defect 2 (wrong cell labels on negatives): negative pairs are formed *by index* inside a batch
of distinct entities: text row i is paired with the image of another row j. The location
losses never look at the pairs: the image head is trained on every image of the batch with the
cell of the entity that image belongs to, the text head on every text with its own cell. So a
swapped-in image carries its own cell label, and a negative pair cannot reach a location head
at all. ``task_losses`` takes the pairs only for the retrieval term, which makes this a
property of the function's signature rather than of a comment.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mlm_pipeline.model.networks import MLMNet, Outputs
from mlm_pipeline.model.tasks import LOCATION_IMAGE, LOCATION_TEXT, RETRIEVAL, TASK_LOSSES

COSINE_MARGIN = 0.1


class Pairs(NamedTuple):
    image_index: torch.Tensor  # [B] long: which batch row's image is paired with text row i
    target: torch.Tensor  # [B] float: +1 for the entity's own image, -1 for another entity's


def sample_pairs(batch_size: int, generator: torch.Generator) -> Pairs:
    """Half the texts (rounded down) get another row's image, chosen at random, as a negative.

    The rows of a batch are distinct entities, so shifting an index by 1..B-1 always lands on a
    different entity's image: a true negative.
    """
    index = torch.arange(batch_size)
    target = torch.ones(batch_size)
    n_negative = batch_size // 2
    if n_negative:
        negative = torch.randperm(batch_size, generator=generator)[:n_negative]
        shift = torch.randint(1, batch_size, (n_negative,), generator=generator)
        index[negative] = (negative + shift) % batch_size
        target[negative] = -1.0
    return Pairs(index, target)


def task_losses(
    outputs: Outputs,
    cells: torch.Tensor,
    pairs: Pairs,
    names: tuple[str, ...],
    margin: float = COSINE_MARGIN,
) -> dict[str, torch.Tensor]:
    """Unweighted loss of each task; ``cells[i]`` is the cell of batch row i's entity."""
    losses: dict[str, torch.Tensor] = {}
    if RETRIEVAL in names:
        index = pairs.image_index.to(outputs.image.device)
        target = pairs.target.to(outputs.image.device)
        losses[RETRIEVAL] = F.cosine_embedding_loss(outputs.image[index], outputs.text, target, margin=margin)
    if LOCATION_IMAGE in names:
        if outputs.image_logits is None:
            raise ValueError("the image location loss needs a network with location heads")
        losses[LOCATION_IMAGE] = F.cross_entropy(outputs.image_logits, cells)
    if LOCATION_TEXT in names:
        if outputs.text_logits is None:
            raise ValueError("the text location loss needs a network with location heads")
        losses[LOCATION_TEXT] = F.cross_entropy(outputs.text_logits, cells)
    return losses


class TaskWeighting(nn.Module):
    """Uncertainty weighting: one learned log variance s_t per task.

    The combined loss is mean_t(exp(-s_t) * L_t + s_t / 2): each loss scaled by its precision
    1/sigma^2, plus log(sigma) so that the weights cannot run to zero. With a single task there
    is nothing to balance and the loss is used as it is (no parameter), which keeps the
    single-task baselines plain.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names
        self.log_vars: nn.Parameter | None = None
        if len(names) > 1:
            self.log_vars = nn.Parameter(torch.zeros(len(names)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack([losses[name] for name in self.names])
        if self.log_vars is None:
            return stacked.sum()
        return (torch.exp(-self.log_vars) * stacked + 0.5 * self.log_vars).mean()

    def weights(self) -> dict[str, float]:
        """Current weight exp(-s_t) of each task (1.0 for a lone task)."""
        if self.log_vars is None:
            return {name: 1.0 for name in self.names}
        values = torch.exp(-self.log_vars.detach()).cpu().tolist()
        return dict(zip(self.names, values))


class Objective(nn.Module):
    """The network and its task weights as one module, so one ``parameters()`` call covers both."""

    def __init__(self, net: MLMNet, margin: float = COSINE_MARGIN) -> None:
        super().__init__()
        self.net = net
        self.names = TASK_LOSSES[net.shape.task]
        self.weighting = TaskWeighting(self.names)
        self.margin = margin

    def forward(
        self,
        image: torch.Tensor,
        summary: torch.Tensor,
        classes: torch.Tensor,
        cells: torch.Tensor,
        pairs: Pairs,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(weighted loss to optimise, unweighted loss per task)."""
        losses = task_losses(self.net(image, summary, classes), cells, pairs, self.names, self.margin)
        return self.weighting(losses), losses
