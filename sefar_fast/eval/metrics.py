"""Classification metrics from clip-level class scores, and a streaming view averager.

Evaluation scores each clip from several views (temporal x spatial); the clip's
score is the mean of its views' softmax probabilities. `ScoreAccumulator` does
that averaging while batches stream in; `compute_metrics` then turns the clip
scores [N, C] and labels [N] into the numbers a report needs.

Definitions (they matter for fine-grained sets with rare classes):

- top-k: the label is among the k highest scores, k capped at C. Ties are
  broken towards the lower class id, the same rule as argmax, so top-1 always
  agrees with the confusion matrix.
- recall of class c = correct c / clips labelled c; undefined (NaN) for a class
  absent from the labels.
- mean class accuracy = mean recall over the classes PRESENT in the labels, so a
  class with no evaluation clips neither helps nor hurts.
- precision of class c = correct c / clips predicted c; a class never predicted
  has precision defined as 0 and is flagged in `never_predicted`.
- confusion[i, j] = clips of true class i predicted as j (rows true, cols predicted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sefar_fast.errors import SefarError


def as_numpy(x: Any, dtype=None) -> np.ndarray:
    """A numpy array from a numpy array, torch tensor (any device, bf16 included) or sequence."""
    if hasattr(x, "detach"):  # torch tensor; avoid importing torch for numpy users
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = as_numpy(scores, np.float64)
    labels = as_numpy(labels)
    if scores.ndim != 2:
        raise SefarError(f"scores must be [N, C]; got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise SefarError(f"labels must be [N] with N={scores.shape[0]}; got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise SefarError(f"labels must be integers; got dtype {labels.dtype}")
    num_classes = scores.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise SefarError(
            f"label {bad} is outside 0..{num_classes - 1}; the scores have {num_classes} classes "
            "(is the checkpoint for another class count?)"
        )
    if not np.isfinite(scores).all():
        raise SefarError("scores contain NaN or inf; the model diverged or the checkpoint is broken")
    return scores, labels.astype(np.int64)


def label_ranks(scores: Any, labels: Any) -> np.ndarray:
    """0-based rank of each clip's true class among its scores (ties: lower class id ranks first)."""
    scores, labels = _check_scores_labels(scores, labels)
    rows = np.arange(len(labels))
    true_score = scores[rows, labels][:, None]
    class_ids = np.arange(scores.shape[1])[None, :]
    ahead = (scores > true_score) | ((scores == true_score) & (class_ids < labels[:, None]))
    return ahead.sum(axis=1)


def topk_accuracy(scores: Any, labels: Any, k: int) -> float:
    """Fraction of clips whose label is among the top min(k, C) scores; NaN when there are no clips."""
    ranks = label_ranks(scores, labels)
    if ranks.size == 0:
        return float("nan")
    k = min(k, as_numpy(scores).shape[1])
    return float(np.mean(ranks < k))


def confusion_matrix(predictions: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Counts [C, C]: row = true class, column = predicted class."""
    predictions = as_numpy(predictions).astype(np.int64)
    labels = as_numpy(labels).astype(np.int64)
    flat = labels * num_classes + predictions
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class ConfusedPair:
    """Two classes confused with each other, both directions counted."""

    class_a: int
    class_b: int
    name_a: str
    name_b: str
    a_as_b: int  # clips of class a predicted as b
    b_as_a: int  # clips of class b predicted as a

    @property
    def total(self) -> int:
        return self.a_as_b + self.b_as_a

    def as_dict(self) -> dict:
        return {
            "class_a": self.class_a, "name_a": self.name_a,
            "class_b": self.class_b, "name_b": self.name_b,
            "a_as_b": self.a_as_b, "b_as_a": self.b_as_a, "total": self.total,
        }


def class_names_or_ids(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The given names (checked for length) or the ids as strings."""
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise SefarError(f"{len(class_names)} class names given for {num_classes} classes")
    return list(class_names)


def most_confused_pairs(confusion: np.ndarray, class_names: Sequence[str] | None = None,
                        top: int = 20) -> list[ConfusedPair]:
    """Unordered class pairs by off-diagonal count summed over both directions, largest first.

    Pairs with no confusion are left out; ties keep the lower class ids first.
    """
    confusion = np.asarray(confusion)
    names = class_names_or_ids(class_names, confusion.shape[0])
    both = confusion + confusion.T
    a, b = np.triu_indices(confusion.shape[0], k=1)
    totals = both[a, b]
    keep = totals > 0
    a, b, totals = a[keep], b[keep], totals[keep]
    order = np.lexsort((b, a, -totals))[:top]  # last key is primary: total descending
    return [
        ConfusedPair(int(a[i]), int(b[i]), names[a[i]], names[b[i]],
                     int(confusion[a[i], b[i]]), int(confusion[b[i], a[i]]))
        for i in order
    ]


@dataclass(frozen=True)
class EvalMetrics:
    """Everything `compute_metrics` measures; arrays are indexed by class id."""

    num_clips: int
    num_classes: int
    top1: float
    top5: float  # top-min(5, C)
    mean_class_acc: float  # mean recall over classes present in the labels
    precision: np.ndarray  # float [C]; 0 for never-predicted classes
    recall: np.ndarray  # float [C]; NaN for classes absent from the labels
    support: np.ndarray  # int [C]: clips labelled c
    predicted_count: np.ndarray  # int [C]: clips predicted c
    never_predicted: np.ndarray  # bool [C]
    confusion: np.ndarray  # int [C, C], rows true, cols predicted

    @property
    def classes_present(self) -> int:
        return int((self.support > 0).sum())

    def confused_pairs(self, class_names: Sequence[str] | None = None, top: int = 20) -> list[ConfusedPair]:
        return most_confused_pairs(self.confusion, class_names, top)

    def summary(self, class_names: Sequence[str] | None = None, top_pairs: int = 10) -> dict:
        """JSON-ready headline numbers, plus the most confused pairs and never-predicted classes."""
        names = class_names_or_ids(class_names, self.num_classes)
        return {
            "top1": self.top1,
            "top5": self.top5,
            "top5_k": min(5, self.num_classes),
            "mean_class_acc": self.mean_class_acc,
            "num_clips": self.num_clips,
            "num_classes": self.num_classes,
            "classes_present": self.classes_present,
            "classes_never_predicted": [
                {"class_id": int(c), "name": names[c]} for c in np.flatnonzero(self.never_predicted)
            ],
            "most_confused_pairs": [p.as_dict() for p in self.confused_pairs(names, top_pairs)],
        }


def compute_metrics(scores: Any, labels: Any) -> EvalMetrics:
    """Metrics of clip scores [N, C] (probabilities or logits: only their order matters) against labels [N]."""
    scores, labels = _check_scores_labels(scores, labels)
    num_clips, num_classes = scores.shape
    ranks = label_ranks(scores, labels)
    predictions = scores.argmax(axis=1) if num_clips else np.zeros(0, np.int64)
    confusion = confusion_matrix(predictions, labels, num_classes)
    correct = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, correct / support, np.nan)
        precision = np.where(predicted > 0, correct / predicted, 0.0)
    present = support > 0
    nan = float("nan")
    return EvalMetrics(
        num_clips=num_clips,
        num_classes=num_classes,
        top1=float(np.mean(ranks < 1)) if num_clips else nan,
        top5=float(np.mean(ranks < min(5, num_classes))) if num_clips else nan,
        mean_class_acc=float(recall[present].mean()) if present.any() else nan,
        precision=precision,
        recall=recall,
        support=support,
        predicted_count=predicted,
        never_predicted=predicted == 0,
        confusion=confusion,
    )


class ScoreAccumulator:
    """Collects per-view class probabilities and averages them per clip id.

    `add` takes one batch of views: probabilities [B, C] (or logits with
    `from_logits=True`, turned into probabilities here), labels [B] and clip ids
    [B]. The same id may come back in later batches (another temporal or spatial
    view); its probabilities are summed and divided by its view count at the end.
    Clips keep the order in which their ids first appeared.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self._row: dict[Any, int] = {}
        self._ids: list[Any] = []
        self._sums = np.zeros((0, num_classes), np.float64)
        self._labels = np.zeros(0, np.int64)
        self._views = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def _grow(self, needed: int) -> None:
        if needed <= len(self._sums):
            return
        size = max(needed, 2 * len(self._sums), 64)
        self._sums = np.concatenate([self._sums, np.zeros((size - len(self._sums), self.num_classes))])
        self._labels = np.concatenate([self._labels, np.full(size - len(self._labels), -1, np.int64)])
        self._views = np.concatenate([self._views, np.zeros(size - len(self._views), np.int64)])

    def add(self, scores: Any, labels: Any, ids: Any, *, from_logits: bool = False) -> None:
        scores, labels = _check_scores_labels(scores, labels)
        if scores.shape[1] != self.num_classes:
            raise SefarError(f"scores have {scores.shape[1]} classes; the accumulator expects {self.num_classes}")
        ids = as_numpy(ids).tolist() if not isinstance(ids, (list, tuple)) else list(ids)
        if len(ids) != len(labels):
            raise SefarError(f"{len(ids)} clip ids for {len(labels)} scores")
        if from_logits:
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = shifted / shifted.sum(axis=1, keepdims=True)
        rows = np.empty(len(ids), np.int64)
        for i, clip_id in enumerate(ids):
            row = self._row.get(clip_id)
            if row is None:
                row = self._row[clip_id] = len(self._ids)
                self._ids.append(clip_id)
            rows[i] = row
        self._grow(len(self._ids))
        known = self._labels[rows]
        clash = (known >= 0) & (known != labels)
        if clash.any():
            i = int(np.flatnonzero(clash)[0])
            raise SefarError(f"clip {ids[i]!r} arrived with label {labels[i]} after label {known[i]}")
        self._labels[rows] = labels
        np.add.at(self._sums, rows, scores)  # add.at: an id may repeat inside one batch
        np.add.at(self._views, rows, 1)

    def merge(self, other: "ScoreAccumulator") -> None:
        """Fold in another accumulator's views (e.g. gathered from another process)."""
        n = len(other)
        for clip_id, s, label, v in zip(other._ids, other._sums[:n], other._labels[:n], other._views[:n]):
            # Each of `other`'s clips holds v views summed; add the sum once, then correct the count.
            self.add(s[None], [label], [clip_id])
            self._views[self._row[clip_id]] += v - 1

    @property
    def ids(self) -> list:
        return list(self._ids)

    @property
    def labels(self) -> np.ndarray:
        return self._labels[: len(self)].copy()

    @property
    def views_per_clip(self) -> np.ndarray:
        return self._views[: len(self)].copy()

    def scores(self) -> np.ndarray:
        """Per-clip mean probabilities [N, C]."""
        n = len(self)
        return self._sums[:n] / np.maximum(self._views[:n], 1)[:, None]

    def metrics(self) -> EvalMetrics:
        return compute_metrics(self.scores(), self.labels)

    def scores_by_id(self) -> dict:
        """clip id -> mean probabilities [C] (what QA scoring looks up)."""
        return dict(zip(self._ids, self.scores()))
