"""Evaluation metrics against hand-computed cases, and per-clip view averaging."""

import json
import math

import numpy as np
import pytest
import torch

from sefar_fast.errors import SefarError
from sefar_fast.eval.metrics import (
    ScoreAccumulator,
    compute_metrics,
    confusion_matrix,
    label_ranks,
    most_confused_pairs,
    topk_accuracy,
)


def one_hot_scores(predictions, num_classes, seed=0):
    """Scores whose argmax is `predictions`, with small distinct noise elsewhere."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 0.1, (len(predictions), num_classes))
    scores[np.arange(len(predictions)), predictions] = 1.0
    return scores


def test_hand_case_with_absent_and_never_predicted_classes():
    # class 2: has a clip but is never predicted; class 3: predicted once but has no clips
    labels = np.array([0, 0, 1, 1, 2, 0])
    predictions = np.array([0, 1, 1, 1, 3, 0])
    m = compute_metrics(one_hot_scores(predictions, 4), labels)
    expected_confusion = np.array([[2, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(m.confusion, expected_confusion)
    assert m.top1 == pytest.approx(4 / 6)
    assert m.top5 == 1.0  # k capped at C = 4: every label is in the top 4
    np.testing.assert_allclose(m.recall[:3], [2 / 3, 1.0, 0.0])
    assert math.isnan(m.recall[3])
    assert m.mean_class_acc == pytest.approx((2 / 3 + 1 + 0) / 3)  # class 3 has no clips: left out
    np.testing.assert_allclose(m.precision, [1.0, 2 / 3, 0.0, 0.0])
    np.testing.assert_array_equal(m.never_predicted, [False, False, True, False])
    np.testing.assert_array_equal(m.support, [3, 2, 1, 0])
    np.testing.assert_array_equal(m.predicted_count, [2, 3, 0, 1])
    assert m.classes_present == 3


def test_two_classes_and_tie_goes_to_lower_id():
    scores = np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.5, 0.5]])
    labels = np.array([1, 1, 0, 1])
    m = compute_metrics(scores, labels)
    # predictions 0, 1, 0 (tie), 0 (tie)
    np.testing.assert_array_equal(m.confusion, [[1, 0], [2, 1]])
    assert m.top1 == pytest.approx(2 / 4)
    assert m.top5 == 1.0  # top-2 of 2 classes
    assert m.mean_class_acc == pytest.approx((1.0 + 1 / 3) / 2)
    np.testing.assert_array_equal(label_ranks(scores, labels), [1, 0, 0, 1])


def test_topk_matches_sorting_on_random_scores():
    rng = np.random.default_rng(3)
    scores = rng.random((200, 12))
    labels = rng.integers(0, 12, 200)
    top_sorted = np.argsort(-scores, axis=1)
    for k in (1, 3, 5, 12, 20):
        expected = np.mean([labels[i] in top_sorted[i, :k] for i in range(200)])
        assert topk_accuracy(scores, labels, k) == pytest.approx(expected)
    m = compute_metrics(scores, labels)
    assert m.top1 == pytest.approx(np.mean(scores.argmax(1) == labels))
    assert m.top5 == pytest.approx(np.mean([labels[i] in top_sorted[i, :5] for i in range(200)]))


def test_top5_with_three_classes_uses_all_classes():
    scores = np.array([[0.1, 0.2, 0.7], [0.8, 0.15, 0.05]])
    m = compute_metrics(scores, np.array([0, 2]))
    assert m.top1 == 0.0 and m.top5 == 1.0
    assert m.summary()["top5_k"] == 3


def test_torch_inputs_match_numpy():
    rng = np.random.default_rng(1)
    scores = rng.random((30, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 30)
    a = compute_metrics(scores, labels)
    b = compute_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    assert a.top1 == b.top1 and a.mean_class_acc == b.mean_class_acc
    np.testing.assert_array_equal(a.confusion, b.confusion)


def test_bad_inputs_raise_sefar_error():
    with pytest.raises(SefarError, match="label 5 is outside 0..4"):
        compute_metrics(np.ones((2, 5)), np.array([0, 5]))
    with pytest.raises(SefarError, match="labels must be"):
        compute_metrics(np.ones((2, 5)), np.array([0, 1, 2]))
    with pytest.raises(SefarError, match="NaN"):
        compute_metrics(np.array([[np.nan, 1.0]]), np.array([0]))


def test_confusion_matrix_counts_rows_true_cols_predicted():
    cm = confusion_matrix(np.array([2, 2, 0]), np.array([0, 2, 0]), 3)
    np.testing.assert_array_equal(cm, [[1, 0, 1], [0, 0, 0], [0, 0, 1]])


def test_most_confused_pairs_sum_both_directions():
    confusion = np.array([
        [9, 3, 0, 1],
        [4, 8, 0, 0],
        [0, 5, 7, 0],
        [2, 0, 0, 6],
    ])
    names = ["a", "b", "c", "d"]
    pairs = most_confused_pairs(confusion, names)
    # (0,1): 3+4 = 7; (1,2): 0+5 = 5; (0,3): 1+2 = 3; every other pair 0 and left out
    assert [(p.class_a, p.class_b, p.total) for p in pairs] == [(0, 1, 7), (1, 2, 5), (0, 3, 3)]
    first = pairs[0]
    assert (first.name_a, first.name_b, first.a_as_b, first.b_as_a) == ("a", "b", 3, 4)
    assert (pairs[1].a_as_b, pairs[1].b_as_a) == (0, 5)
    assert len(most_confused_pairs(confusion, names, top=2)) == 2


def test_summary_is_json_ready_and_names_never_predicted():
    labels = np.array([0, 1, 2, 2])
    m = compute_metrics(one_hot_scores(np.array([0, 0, 0, 2]), 3), labels)
    summary = m.summary(["x", "y", "z"])
    json.dumps(summary)
    assert summary["classes_never_predicted"] == [{"class_id": 1, "name": "y"}]
    # pairs: (0,1): 1 (y as x), (0,2): 1 (z as x); the tie keeps the lower ids first
    assert [(p["class_a"], p["class_b"], p["total"]) for p in summary["most_confused_pairs"]] == [(0, 1, 1), (0, 2, 1)]
    assert summary["mean_class_acc"] == pytest.approx((1 + 0 + 0.5) / 3)


def test_accumulator_averages_views_per_clip():
    acc = ScoreAccumulator(3)
    # batch 1: first view of clips "a", "b"; batch 2: second views, plus "c" twice in one batch
    acc.add(np.array([[0.9, 0.1, 0.0], [0.2, 0.2, 0.6]]), [0, 2], ["a", "b"])
    acc.add(np.array([[0.0, 0.6, 0.4], [0.1, 0.1, 0.8], [0.3, 0.7, 0.0], [0.5, 0.5, 0.0]]),
            [0, 2, 1, 1], ["a", "b", "c", "c"])
    assert acc.ids == ["a", "b", "c"]
    np.testing.assert_array_equal(acc.views_per_clip, [2, 2, 2])
    np.testing.assert_allclose(acc.scores(), [[0.45, 0.35, 0.2], [0.15, 0.15, 0.7], [0.4, 0.6, 0.0]])
    np.testing.assert_array_equal(acc.labels, [0, 2, 1])
    # clip "a": its second view alone would say class 1; the average says class 0 (right)
    assert acc.metrics().top1 == 1.0
    np.testing.assert_allclose(acc.scores_by_id()["b"], [0.15, 0.15, 0.7])


def test_accumulator_from_logits_and_merge():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, 4))
    ids = [10, 11, 12, 10, 11, 12]
    labels = [1, 2, 3, 1, 2, 3]
    whole = ScoreAccumulator(4)
    whole.add(torch.from_numpy(logits), torch.tensor(labels), torch.tensor(ids), from_logits=True)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(whole.scores(), (probs[:3] + probs[3:]) / 2)
    assert whole.ids == [10, 11, 12]

    first, second = ScoreAccumulator(4), ScoreAccumulator(4)
    first.add(probs[:4], labels[:4], ids[:4])
    second.add(probs[4:], labels[4:], ids[4:])
    first.merge(second)
    np.testing.assert_allclose(first.scores(), whole.scores())
    np.testing.assert_array_equal(first.views_per_clip, [2, 2, 2])


def test_accumulator_refuses_label_clash_and_wrong_width():
    acc = ScoreAccumulator(2)
    acc.add(np.array([[0.5, 0.5]]), [0], ["a"])
    with pytest.raises(SefarError, match="'a' arrived with label 1 after label 0"):
        acc.add(np.array([[0.5, 0.5]]), [1], ["a"])
    with pytest.raises(SefarError, match="expects 2"):
        acc.add(np.ones((1, 3)) / 3, [0], ["b"])
