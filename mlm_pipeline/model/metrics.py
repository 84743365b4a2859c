"""The paper's evaluation protocol (section 6), in numpy.

Retrieval: 10 seeded random subsets of 500 test items (fewer items only when the test split has
fewer); within a subset each query ranks every item of the other modality by cosine similarity.

Tie rule: *pessimistic*. The rank of the true match is the number of items whose similarity is
at least the true match's (the match itself included), i.e. 1 + the number of other items
scoring >= it. A model whose embeddings collapse to one point therefore ranks every match last
instead of first: ties never flatter a model.

Location: sklearn's "weighted" averaging, written out: per-cell precision, recall and F1,
averaged with the cell's support (its number of true items) as weight; a cell never predicted
has precision 0. Recall weighted this way equals accuracy. Distances: haversine from the
predicted cell's mean coordinates to the entity's true coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SUBSET_SIZE = 500
DEFAULT_SUBSETS = 10
RECALL_AT = (1, 5, 10)
DISTANCE_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)
EARTH_RADIUS_KM = 6371.0


MIN_SUBSET_SIZE = max(RECALL_AT) + 1
"""Below this R@10 is 1.0 whatever the model does: a subset that small is refused, not scored."""


def resolve_subset_size(n_test: int, requested: int | None, what: str) -> int:
    """The subset size to use: the paper's 500 capped at the split, or exactly what was asked.

    ``requested=None`` means the paper's protocol (500, fewer only when the test split is
    smaller: a reduced protocol, which the results mark, see :func:`reduced_protocol`). An
    explicit size larger than the split, or any size at which R@10 is 1.0 by construction, is an
    error naming what was asked and what exists, raised before anything is trained.
    """
    if n_test < 1:
        raise ValueError(f"{what}: the test split is empty; nothing to evaluate")
    if requested is not None and requested < 1:
        raise ValueError(f"{what}: test_subset_size must be at least 1, got {requested}")
    if requested is not None and requested > n_test:
        raise ValueError(
            f"{what}: test_subset_size={requested} asks for more test items than the test split "
            f"has ({n_test}); lower it or leave it unset for min({DEFAULT_SUBSET_SIZE}, split size)"
        )
    size = min(DEFAULT_SUBSET_SIZE, n_test) if requested is None else requested
    if size < MIN_SUBSET_SIZE:
        asked = f"test_subset_size={requested}" if requested is not None else f"the protocol's {DEFAULT_SUBSET_SIZE} items"
        raise ValueError(
            f"{what}: refusing to evaluate on subsets of {size} items ({asked} asked, the test split has "
            f"{n_test}): with fewer than {MIN_SUBSET_SIZE} items R@{max(RECALL_AT)} is 1.0 whatever the model "
            f"does. Build a bigger release or keep more entities (lower T_min keeps more cells, more "
            f"entities give bigger splits)"
        )
    return size


def reduced_protocol(size: int) -> str:
    """A warning for subsets smaller than the paper's, or "" at the paper's size."""
    if size >= DEFAULT_SUBSET_SIZE:
        return ""
    return (
        f"subsets of {size} items, not the paper's {DEFAULT_SUBSET_SIZE}: medR and R@K are not comparable "
        f"with the paper's; by chance alone medR is about {(size + 1) / 2:.0f} and R@10 about {min(1.0, 10 / size):.2f}"
    )


def chance_retrieval(size: int, count: int, seed: int) -> dict[str, RetrievalScores]:
    """A random ranking under the same protocol: ``count`` subsets of ``size`` random similarities."""
    rng = np.random.default_rng(seed)
    draws = [rng.random((size, size)) for _ in range(count)]
    return {
        "image->text": retrieval_scores([match_ranks(d) for d in draws]),
        "text->image": retrieval_scores([match_ranks(d.T) for d in draws]),
    }


def subsets(n: int, size: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` random subsets of ``size`` distinct indices below ``n``, each sorted."""
    if not 1 <= size <= n:
        raise ValueError(f"subset size {size} must be between 1 and {n}")
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n, size=size, replace=False)) for _ in range(count)]


def match_ranks(similarity: np.ndarray) -> np.ndarray:
    """1-based pessimistic rank of the diagonal entry within each row (queries are rows)."""
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square, got shape {similarity.shape}")
    true = np.diagonal(similarity)[:, None]
    return (similarity >= true).sum(axis=1)


@dataclass(frozen=True)
class RetrievalScores:
    medr: float  # mean over subsets of the median rank
    medr_std: float  # its standard deviation over the subsets
    recall: dict[int, float]  # K -> mean over subsets of the share of queries ranked <= K


def retrieval_scores(ranks_per_subset: Sequence[np.ndarray], recall_at: Sequence[int] = RECALL_AT) -> RetrievalScores:
    medians = np.array([np.median(r) for r in ranks_per_subset], dtype=np.float64)
    recall = {k: float(np.mean([np.mean(r <= k) for r in ranks_per_subset])) for k in recall_at}
    return RetrievalScores(float(medians.mean()), float(medians.std()), recall)


def evaluate_retrieval(
    image: np.ndarray, text: np.ndarray, index_sets: Sequence[np.ndarray]
) -> dict[str, RetrievalScores]:
    """Scores for "image->text" (an image queries the texts) and "text->image".

    Row i of ``image`` and of ``text`` belong to the same entity; the embeddings are unit
    vectors, so their dot product is the cosine similarity.
    """
    image_to_text: list[np.ndarray] = []
    text_to_image: list[np.ndarray] = []
    for index in index_sets:
        similarity = image[index].astype(np.float64) @ text[index].astype(np.float64).T
        image_to_text.append(match_ranks(similarity))
        text_to_image.append(match_ranks(similarity.T))
    return {"image->text": retrieval_scores(image_to_text), "text->image": retrieval_scores(text_to_image)}


@dataclass(frozen=True)
class ClassificationScores:
    precision: float
    recall: float
    f1: float


def weighted_scores(y_true: np.ndarray, y_pred: np.ndarray) -> ClassificationScores:
    """Support-weighted precision, recall and F1 over the labels present in either array."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"need two equal, non-empty 1-d label arrays, got {y_true.shape} and {y_pred.shape}")
    labels, encoded = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    true_code, pred_code = encoded[: len(y_true)], encoded[len(y_true) :]
    n = len(labels)
    support = np.bincount(true_code, minlength=n).astype(np.float64)
    predicted = np.bincount(pred_code, minlength=n).astype(np.float64)
    hits = np.bincount(true_code[true_code == pred_code], minlength=n).astype(np.float64)
    precision = np.divide(hits, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(n), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(n), where=denominator > 0)
    weight = support / support.sum()
    return ClassificationScores(float(weight @ precision), float(weight @ recall), float(weight @ f1))


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dphi = phi2 - phi1
    dlambda = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def within_shares(distance_km: np.ndarray, thresholds: Sequence[float] = DISTANCE_KM) -> dict[float, float]:
    """Share of predictions at most each threshold away from the truth."""
    return {t: float(np.mean(distance_km <= t)) for t in thresholds}
