"""The evaluation protocol against cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlm_pipeline.model import metrics


def test_ranks_of_a_hand_worked_matrix_in_both_directions() -> None:
    similarity = np.array(
        [
            [0.9, 0.1, 0.3],
            [0.8, 0.2, 0.2],  # true 0.2 ties with another 0.2 and is beaten by 0.8: rank 3
            [0.1, 0.5, 0.4],
        ]
    )
    assert metrics.match_ranks(similarity).tolist() == [1, 3, 2]
    # columns as queries: [0.9, 0.8, 0.1] -> 1; [0.1, 0.2, 0.5] -> 2; [0.3, 0.2, 0.4] -> 1
    assert metrics.match_ranks(similarity.T).tolist() == [1, 2, 1]


def test_ties_are_pessimistic_so_collapsed_embeddings_rank_last() -> None:
    n = 7
    assert metrics.match_ranks(np.zeros((n, n))).tolist() == [n] * n
    collapsed = np.ones((n, 3)) / math.sqrt(3)
    scores = metrics.evaluate_retrieval(collapsed, collapsed, [np.arange(n)])
    for direction in ("image->text", "text->image"):
        assert scores[direction].medr == n
        assert scores[direction].recall == {1: 0.0, 5: 0.0, 10: 1.0}


def test_perfect_and_worst_rankings() -> None:
    n = 12
    eye = np.eye(n)
    perfect = metrics.evaluate_retrieval(eye, eye, [np.arange(n)])
    assert perfect["image->text"].medr == 1.0
    assert perfect["text->image"].recall == {1: 1.0, 5: 1.0, 10: 1.0}
    worst = metrics.match_ranks(-eye)  # every wrong item scores 0 > -1
    assert worst.tolist() == [n] * n
    # a derangement of one-hot texts: every true match scores 0 and ties with all but one item
    shifted = np.roll(eye, 1, axis=0)
    scores = metrics.evaluate_retrieval(eye, shifted, [np.arange(n)])
    assert scores["image->text"].medr == n
    assert scores["image->text"].recall[10] == 0.0


def test_median_of_an_even_subset_and_averaging_over_subsets() -> None:
    scores = metrics.retrieval_scores([np.array([1, 2, 3, 4]), np.array([4, 4, 6, 6])])
    assert scores.medr == pytest.approx((2.5 + 5.0) / 2)
    assert scores.medr_std == pytest.approx(1.25)
    assert scores.recall[1] == pytest.approx((0.25 + 0.0) / 2)
    assert scores.recall[5] == pytest.approx((1.0 + 0.5) / 2)


def test_evaluate_retrieval_ranks_within_each_subset_only() -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(size=(40, 5))
    text = image + rng.normal(scale=0.8, size=image.shape)
    index = metrics.subsets(40, 10, 3, seed=1)
    scores = metrics.evaluate_retrieval(image, text, index)
    by_hand = [metrics.match_ranks(image[i] @ text[i].T) for i in index]
    assert scores["image->text"].medr == pytest.approx(np.mean([np.median(r) for r in by_hand]))
    assert max(int(r.max()) for r in by_hand) <= 10


def test_subsets_are_seeded_distinct_and_of_the_asked_size() -> None:
    first = metrics.subsets(1200, 500, 10, seed=42)
    again = metrics.subsets(1200, 500, 10, seed=42)
    other = metrics.subsets(1200, 500, 10, seed=43)
    assert len(first) == 10
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    for subset in first:
        assert len(subset) == 500 == len(np.unique(subset))
        assert subset.min() >= 0 and subset.max() < 1200
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], other[0])
    whole = metrics.subsets(30, 30, 2, seed=0)
    assert all(s.tolist() == list(range(30)) for s in whole)


def test_subset_size_is_500_capped_at_the_split_and_too_large_a_request_fails() -> None:
    assert metrics.resolve_subset_size(2000, None, "mlm_irle") == 500
    assert metrics.resolve_subset_size(37, None, "mlm_irle") == 37
    assert metrics.resolve_subset_size(2000, 100, "mlm_irle") == 100
    with pytest.raises(ValueError, match=r"refusing to evaluate on subsets of 2 items \(the protocol's 500 items asked, the test split has 2\)"):
        metrics.resolve_subset_size(2, None, "mlm_irle")  # R@10 would be 1.0 whatever the model
    with pytest.raises(ValueError, match=r"subsets of 10 items \(test_subset_size=10 asked"):
        metrics.resolve_subset_size(450, 10, "mlm_irle")
    assert metrics.reduced_protocol(500) == "" and "not the paper's 500" in metrics.reduced_protocol(37)
    with pytest.raises(ValueError, match=r"mlm_irle_gr: test_subset_size=600 .* \(450\)"):
        metrics.resolve_subset_size(450, 600, "mlm_irle_gr")
    with pytest.raises(ValueError, match="at least 1"):
        metrics.resolve_subset_size(450, 0, "mlm_irle_gr")
    with pytest.raises(ValueError, match="empty"):
        metrics.resolve_subset_size(0, None, "mlm_irle_gr")


def test_weighted_precision_recall_f1_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 1])
    # cell 0: P 1/2 R 1/2; cell 1: P 2/4 R 2/3 F1 4/7; cell 2: never predicted, P R F1 0
    scores = metrics.weighted_scores(y_true, y_pred)
    assert scores.precision == pytest.approx((2 * 0.5 + 3 * 0.5) / 6)
    assert scores.recall == pytest.approx(3 / 6)
    assert scores.f1 == pytest.approx((2 * 0.5 + 3 * 4 / 7) / 6)


def test_a_predicted_label_without_support_weighs_nothing() -> None:
    scores = metrics.weighted_scores(np.array([5, 5]), np.array([5, 9]))
    assert (scores.precision, scores.recall, scores.f1) == pytest.approx((1.0, 0.5, 2 / 3))
    perfect = metrics.weighted_scores(np.array([1, 2, 2, 3]), np.array([1, 2, 2, 3]))
    assert (perfect.precision, perfect.recall, perfect.f1) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        metrics.weighted_scores(np.array([1, 2]), np.array([1]))


def test_haversine_and_distance_shares() -> None:
    one_degree = 2 * math.pi * metrics.EARTH_RADIUS_KM / 360
    got = metrics.haversine_km(np.array([0.0, 0.0, 52.0]), np.array([0.0, 0.0, 13.0]),
                               np.array([0.0, 0.0, 52.0]), np.array([1.0, 180.0, 13.0]))
    assert got == pytest.approx([one_degree, math.pi * metrics.EARTH_RADIUS_KM, 0.0])
    shares = metrics.within_shares(np.array([0.5, 1.0, 30.0, 3000.0]))
    assert shares == {1.0: 0.5, 25.0: 0.5, 200.0: 0.75, 750.0: 0.75, 2500.0: 0.75}
