"""A trained network on a test split: embeddings and cell predictions, then the paper's scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlm_pipeline.model import metrics
from mlm_pipeline.model.data import SplitData
from mlm_pipeline.model.networks import MLMNet


@dataclass(frozen=True)
class Predictions:
    image: np.ndarray  # [n, emb_dim] unit vectors
    text: np.ndarray
    image_cell: np.ndarray | None  # [n] top-1 cell from the image; None without location heads
    text_cell: np.ndarray | None


def predict(net: MLMNet, split: SplitData, batch_size: int = 1024) -> Predictions:
    """Embeddings and top-1 cells of each entity, from its first image and its text."""
    device = next(net.parameters()).device
    net.eval()
    images = split.first_images()
    parts: dict[str, list[np.ndarray]] = {"image": [], "text": [], "image_cell": [], "text_cell": []}
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            rows = slice(start, start + batch_size)
            out = net(images[rows].to(device), split.summary[rows].to(device), split.classes[rows].to(device))
            parts["image"].append(out.image.cpu().numpy())
            parts["text"].append(out.text.cpu().numpy())
            if out.image_logits is not None and out.text_logits is not None:
                parts["image_cell"].append(out.image_logits.argmax(dim=1).cpu().numpy())
                parts["text_cell"].append(out.text_logits.argmax(dim=1).cpu().numpy())
    joined = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    assert joined["image"] is not None and joined["text"] is not None, "predict needs a non-empty split"
    return Predictions(joined["image"], joined["text"], joined["image_cell"], joined["text_cell"])


@dataclass(frozen=True)
class LocationScores:
    scores: metrics.ClassificationScores
    within: dict[float, float]  # km threshold -> share of predictions within it


def location_scores(
    predicted: np.ndarray, split: SplitData, cell_lat: np.ndarray, cell_lon: np.ndarray
) -> LocationScores:
    """Top-1 cell scores; distances from the predicted cell's mean coordinates (indexed by cell)."""
    true = split.cell.cpu().numpy()
    distance = metrics.haversine_km(cell_lat[predicted], cell_lon[predicted], split.lat, split.lon)
    return LocationScores(metrics.weighted_scores(true, predicted), metrics.within_shares(distance))
