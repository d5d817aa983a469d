"""Label-rate splits: which clips of a training pool keep their labels.

`stratified_split(labels, rate, seed)` labels about `rate` of every class, at least one
clip per class, deterministically from `seed`. Per class the quota is rate * n_c; each
class first gets max(1, floor(quota)) clips, then the clips still owed to reach the
overall target max(C, round(rate * N)) go, one each, to the classes with the largest
fractional remainders (ties: lower class id). The clips of a class are chosen by a
permutation from `numpy.random.default_rng(seed)`, classes visited in ascending order,
so the split depends only on (labels, rate, seed). Clips with an unknown label (-1)
are never labeled.

The split is saved as a small json (`save_split` / `load_split`) in the run folder so
the run can be reproduced exactly even if the pool's order changes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write_json


def check_rate(label_rate: float) -> float:
    rate = float(label_rate)
    if not (0.0 < rate <= 1.0) or math.isnan(rate):
        raise SefarError(f"label rate {label_rate} must be in (0, 1], e.g. 0.05 for 5% labeled clips")
    return rate


def class_quotas(counts: np.ndarray, rate: float) -> np.ndarray:
    """Labeled clips per class: at least one, about rate * n_c, summing to max(C, round(rate * N)) when possible."""
    present = counts > 0
    quota = rate * counts
    take = np.where(present, np.maximum(1, np.floor(quota + 1e-9)), 0).astype(np.int64)
    take = np.minimum(take, counts)
    target = max(int(present.sum()), int(round(rate * counts.sum())))
    owed = target - int(take.sum())
    if owed > 0:
        remainder = np.where(take < counts, quota - take, -np.inf)
        order = np.lexsort((np.arange(len(counts)), -remainder))  # largest remainder first, then class id
        for c in order[:owed]:
            if remainder[c] > -np.inf:
                take[c] += 1
    return take


def stratified_split(labels: Sequence[int], label_rate: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into `labels`) of the labeled and the unlabeled clips, each sorted ascending."""
    rate = check_rate(label_rate)
    labels = np.asarray(labels, np.int64)
    known = labels >= 0
    if not known.any():
        raise SefarError("the training pool has no labeled clips to split; check the list files or annotations")
    num_classes = int(labels[known].max()) + 1
    counts = np.bincount(labels[known], minlength=num_classes)
    take = class_quotas(counts, rate)
    rng = np.random.default_rng(split_seed)
    chosen = []
    for c in range(num_classes):
        if take[c]:
            members = np.flatnonzero(labels == c)
            chosen.append(members[rng.permutation(len(members))[: take[c]]])
    labeled = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    mask = np.zeros(len(labels), bool)
    mask[labeled] = True
    return labeled.astype(np.int64), np.flatnonzero(~mask).astype(np.int64)


def save_split(path, labeled: Sequence[int], unlabeled: Sequence[int], *, label_rate: float, split_seed: int,
               clip_ids: Sequence[str] | None = None, extra: dict | None = None) -> None:
    """Write the split as json (atomically). With clip_ids, the clips are also named, for humans and checks;
    `extra` adds fields that describe it (they are read by people, not by `load_split`)."""
    data = {"label_rate": float(label_rate), "split_seed": int(split_seed), **(extra or {}),
            "labeled": [int(i) for i in labeled], "unlabeled": [int(i) for i in unlabeled]}
    if clip_ids is not None:
        data["labeled_ids"] = [clip_ids[int(i)] for i in labeled]
    atomic_write_json(path, data)


def load_split(path) -> dict:
    """Read a split written by `save_split`: dict with label_rate, split_seed, labeled, unlabeled."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        data["labeled"] = [int(i) for i in data["labeled"]]
        data["unlabeled"] = [int(i) for i in data["unlabeled"]]
    except FileNotFoundError:
        raise SefarError(f"split file {path} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise SefarError(f"split file {path} is corrupt ({e}); delete it to draw the split again") from None
    return data
