"""Label-rate splits: rate, at least one clip per class, determinism, bad rates, save/load."""

import numpy as np
import pytest

from sefar_fast.data.splits import class_quotas, load_split, save_split, stratified_split
from sefar_fast.errors import SefarError


def pool(counts, seed=0):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(labels)


def test_split_rate_and_one_per_class():
    counts = [200, 100, 50, 7, 3, 1]
    labels = pool(counts)
    lab, unl = stratified_split(labels, 0.1, split_seed=0)
    assert len(lab) + len(unl) == len(labels)
    assert set(lab.tolist()).isdisjoint(unl.tolist())
    per_class = np.bincount(labels[lab], minlength=len(counts))
    assert per_class.tolist()[:3] == [20, 10, 5]  # exact quotas where rate * n is whole
    assert (per_class >= 1).all()  # even the 1-, 3- and 7-clip classes
    assert len(lab) == 20 + 10 + 5 + 1 + 1 + 1  # the minimum of one per class overshoots round(36.1)


def test_split_hits_target_with_largest_remainders():
    # quotas 0.5*[3,3,3] = 1.5 each: base 1 each, target round(4.5)=4 -> one extra to class 0 (tie, lowest id)
    assert class_quotas(np.array([3, 3, 3]), 0.5).tolist() == [2, 1, 1]
    assert class_quotas(np.array([10, 0, 4]), 1.0).tolist() == [10, 0, 4]


def test_split_is_deterministic_and_seed_dependent():
    labels = pool([40, 30, 20])
    a = stratified_split(labels, 0.2, 7)
    b = stratified_split(labels, 0.2, 7)
    c = stratified_split(labels, 0.2, 8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_unknown_labels_stay_unlabeled():
    labels = np.array([0, 0, -1, 1, 1, -1])
    lab, unl = stratified_split(labels, 1.0, 0)
    assert lab.tolist() == [0, 1, 3, 4] and unl.tolist() == [2, 5]


@pytest.mark.parametrize("rate", [0, -0.1, 1.5, float("nan")])
def test_bad_rate(rate):
    with pytest.raises(SefarError, match="label rate"):
        stratified_split([0, 1], rate, 0)


def test_save_load_round_trip(tmp_path):
    save_split(tmp_path / "split.json", [1, 3], [0, 2], label_rate=0.5, split_seed=4, clip_ids=["a", "b", "c", "d"])
    got = load_split(tmp_path / "split.json")
    assert got["labeled"] == [1, 3] and got["unlabeled"] == [0, 2] and got["labeled_ids"] == ["b", "d"]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SefarError, match="corrupt"):
        load_split(tmp_path / "bad.json")
