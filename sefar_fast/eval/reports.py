"""Evaluation report files: report.json, per_class.csv, confusion_pairs.csv, confusion.png.

One call, `write_report`, turns `EvalMetrics` into a folder a person can read and
a script can parse. The files agree with each other: per_class.csv holds the
recalls that report.json's mean class accuracy averages, and confusion_pairs.csv
lists the off-diagonal cells of the matrix drawn in confusion.png.

The confusion picture has to stay readable for 99 or 288 fine-grained classes:
rows are normalised (so rare classes are as visible as common ones), colour
follows a square-root scale (so a 2% confusion is not lost next to a 90%
diagonal), and classes are ordered so that classes confused with each other sit
next to each other (`confusion_order`). Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from sefar_fast.eval.metrics import EvalMetrics, class_names_or_ids
from sefar_fast.io import atomic_write_bytes, atomic_write_text

REPORT_JSON = "report.json"
PER_CLASS_CSV = "per_class.csv"
CONFUSION_PAIRS_CSV = "confusion_pairs.csv"
CONFUSION_PNG = "confusion.png"


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Render a matplotlib Figure with the Agg canvas (no pyplot, no global backend) and write it atomically."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def json_safe(value: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars/arrays by Python values, so the JSON is standard."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def short_name(name: str, limit: int = 36) -> str:
    """Cut the middle of a long name: fine-grained classes differ at both ends
    ("salto backward stretched with 1 twist" vs "... with 1.5 twist")."""
    if len(name) <= limit:
        return name
    head = (limit - 1) * 3 // 5
    tail = limit - 1 - head
    return name[:head].rstrip() + "…" + name[-tail:].lstrip()


def row_rates(confusion: np.ndarray) -> np.ndarray:
    """Row-normalised confusion; rows of classes without clips are NaN."""
    support = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, confusion / support, np.nan)


def _join_ends(a: list[int], b: list[int], similarity: np.ndarray) -> list[int]:
    """Concatenate two ordered clusters, flipping either so the most similar ends touch."""
    options = [a + b, a + b[::-1], a[::-1] + b, a[::-1] + b[::-1]]
    touching = [similarity[o[len(a) - 1], o[len(a)]] for o in options]
    return options[int(np.argmax(touching))]


def confusion_order(confusion: np.ndarray, method: str = "cluster") -> np.ndarray:
    """A permutation of the class ids for drawing the confusion matrix.

    "label": class id order. "cluster": average-linkage agglomerative clustering
    on the symmetric confusion rate (rate i->j plus rate j->i); merged clusters
    are joined end to end with the most confused ends adjacent. Classes with no
    confusion left stay as their own groups, and groups are laid out by their
    lowest class id, so an error-free model gets label order.
    """
    num_classes = confusion.shape[0]
    if method == "label":
        return np.arange(num_classes)
    if method != "cluster":
        raise ValueError(f"unknown confusion order {method!r}; use 'cluster' or 'label'")
    rates = np.nan_to_num(row_rates(np.asarray(confusion, np.float64)))
    similarity = rates + rates.T
    np.fill_diagonal(similarity, 0.0)
    linkage = similarity.copy()
    np.fill_diagonal(linkage, -np.inf)
    clusters: list[list[int]] = [[c] for c in range(num_classes)]
    sizes = np.ones(num_classes)
    active = np.ones(num_classes, bool)
    while active.sum() > 1:
        masked = np.where(active[:, None] & active[None, :], linkage, -np.inf)
        i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
        if masked[i, j] <= 0:
            break
        clusters[i] = _join_ends(clusters[i], clusters[j], similarity)
        merged = (sizes[i] * linkage[i] + sizes[j] * linkage[j]) / (sizes[i] + sizes[j])
        linkage[i, :] = merged
        linkage[:, i] = merged
        linkage[i, i] = -np.inf
        sizes[i] += sizes[j]
        active[j] = False
    groups = sorted((clusters[k] for k in np.flatnonzero(active)), key=min)
    return np.array([c for group in groups for c in group], np.int64)


def plot_confusion(metrics: EvalMetrics, class_names: Sequence[str] | None, path: str | Path, *,
                   title: str, order: str = "cluster") -> Path:
    """Draw the row-normalised confusion matrix to a PNG sized and labelled for the class count."""
    return save_figure(confusion_figure(metrics.confusion, class_names, title=title, order=order), path)


def figure_rgb(fig: Figure, dpi: int = 100) -> np.ndarray:
    """A figure rendered to uint8 RGB [H, W, 3] (for image loggers)."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str] | None, *, title: str,
                     order: str = "cluster") -> Figure:
    """The row-normalised confusion matrix, sized and labelled for the class count."""
    num_classes = confusion.shape[0]
    names = class_names_or_ids(class_names, num_classes)
    perm = confusion_order(confusion, order)
    rates = row_rates(confusion.astype(np.float64))[np.ix_(perm, perm)]

    side = 5.0 + 0.065 * num_classes  # inches of matrix: ~6 in for 10 classes, ~11 for 99, ~24 for 288
    cell_pt = side * 72 / num_classes
    font = float(np.clip(0.72 * cell_pt, 3.0, 9.0))
    name_limit = 48 if num_classes <= 150 else 40
    labels = [f"{c} {short_name(names[c], name_limit)}" if class_names is not None else str(c) for c in perm]
    label_in = max(len(s) for s in labels) * font * 0.55 / 72  # rough width of the longest tick label
    names_on_x = num_classes <= 30  # beyond that, ids on x; the row names say which is which
    x_label_in = label_in if names_on_x else len(str(num_classes - 1)) * font * 0.6 / 72
    fig = Figure(figsize=(side + label_in + 1.6, side + x_label_in + 1.2), layout="constrained")
    ax = fig.add_subplot()

    # Zero cells are left transparent over a white face so that any confusion stands out;
    # rows of classes without clips get a grey band.
    shown = np.ma.masked_where(~(rates > 0), rates)
    ax.set_facecolor("white")
    for r in np.flatnonzero(np.isnan(rates[:, 0])):
        ax.axhspan(r - 0.5, r + 0.5, color="0.82", lw=0, zorder=0)
    image = ax.imshow(shown, cmap=_colormap(), norm=PowerNorm(0.5, vmin=0.0, vmax=1.0),
                      interpolation="nearest", aspect="equal", zorder=1)
    ticks = np.arange(num_classes)
    ax.set_yticks(ticks, labels, fontsize=font)
    ax.set_xticks(ticks, labels if names_on_x else [str(c) for c in perm], fontsize=font, rotation=90)
    ax.tick_params(length=0 if num_classes > 30 else 2, pad=1)
    ax.set_ylabel("true class", fontsize=9)
    ax.set_xlabel("predicted class", fontsize=9)
    ax.set_title(title, fontsize=10, loc="left")
    if num_classes > 30:  # faint guides every 10 cells help follow a row across a big matrix
        for edge in np.arange(10, num_classes, 10) - 0.5:
            ax.axhline(edge, color="0.88", lw=0.3, zorder=0.5)
            ax.axvline(edge, color="0.88", lw=0.3, zorder=0.5)
    if num_classes <= 20:  # small matrices: print the percentages
        for r in range(num_classes):
            for c in range(num_classes):
                value = rates[r, c]
                if np.isfinite(value) and value >= 0.005:
                    ax.text(c, r, f"{100 * value:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if value > 0.45 else "black")
    bar = fig.colorbar(image, ax=ax, shrink=min(0.6, 6.0 / side + 0.2), pad=0.01)
    bar.set_ticks([0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
    bar.set_ticklabels(["0", "1%", "5%", "10%", "25%", "50%", "75%", "100%"])
    bar.ax.tick_params(labelsize=8)
    bar.set_label("share of the true class's clips (square-root scale); white = none, grey row = class has no clips",
                  fontsize=8)
    return fig


def _colormap():
    return colormaps["magma_r"].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))


def _fmt(x: float) -> str:
    return "" if not math.isfinite(x) else format(float(x), ".10g")


def per_class_csv(metrics: EvalMetrics, names: Sequence[str]) -> str:
    """CSV text: class_id,name,precision,recall,support,predicted_count (recall blank for classes without clips)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class_id", "name", "precision", "recall", "support", "predicted_count"])
    for c in range(metrics.num_classes):
        writer.writerow([c, names[c], _fmt(metrics.precision[c]), _fmt(metrics.recall[c]),
                         int(metrics.support[c]), int(metrics.predicted_count[c])])
    return out.getvalue()


def confusion_pairs_csv(metrics: EvalMetrics, names: Sequence[str]) -> str:
    """CSV text of every non-zero off-diagonal cell, largest count first; rate = count / support of the true class."""
    confusion = metrics.confusion
    true_ids, pred_ids = np.nonzero(confusion * (1 - np.eye(metrics.num_classes, dtype=confusion.dtype)))
    counts = confusion[true_ids, pred_ids]
    order = np.lexsort((pred_ids, true_ids, -counts))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["true_id", "true_name", "pred_id", "pred_name", "count", "rate"])
    for k in order:
        t, p = int(true_ids[k]), int(pred_ids[k])
        writer.writerow([t, names[t], p, names[p], int(counts[k]), _fmt(counts[k] / metrics.support[t])])
    return out.getvalue()


def write_report(out_dir: str | Path, metrics: EvalMetrics, class_names: Sequence[str] | None, *,
                 model: str, views: Any, protocol: str, checkpoint: str | Path | None,
                 extra: dict | None = None, order: str = "cluster", top_pairs: int = 20) -> dict:
    """Write report.json, per_class.csv, confusion_pairs.csv and confusion.png into out_dir.

    model: "teacher" or "student"; views: e.g. "5x3" or {"temporal": 5, "spatial": 3};
    protocol: a label such as "multi-view" or "reference-single-view"; extra: more
    JSON-ready keys for report.json (they may not overwrite the computed ones).
    Returns the report dict as written.
    """
    out_dir = Path(out_dir)
    names = class_names_or_ids(class_names, metrics.num_classes)
    report: dict[str, Any] = {
        "model": model,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "protocol": protocol,
        "views": views,
        **metrics.summary(names, top_pairs),
        "confusion_order": order,
        "files": {"per_class": PER_CLASS_CSV, "confusion_pairs": CONFUSION_PAIRS_CSV,
                  "confusion_png": CONFUSION_PNG},
    }
    clashes = sorted(set(extra or {}) & set(report))
    if clashes:
        raise ValueError(f"extra report keys would overwrite computed ones: {clashes}")
    report.update(extra or {})
    report = json_safe(report)

    atomic_write_text(out_dir / PER_CLASS_CSV, per_class_csv(metrics, names))
    atomic_write_text(out_dir / CONFUSION_PAIRS_CSV, confusion_pairs_csv(metrics, names))
    title = (f"{model}: top-1 {_pct(metrics.top1)}, mean class acc {_pct(metrics.mean_class_acc)}\n"
             f"{metrics.num_clips} clips, {metrics.num_classes} classes, views {_views_text(views)}, "
             f"{protocol}; rows normalised, {order} order")
    plot_confusion(metrics, class_names, out_dir / CONFUSION_PNG, title=title, order=order)
    # report.json last: its presence means the other files are complete.
    atomic_write_text(out_dir / REPORT_JSON, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.2f}%"


def _views_text(views: Any) -> str:
    if isinstance(views, dict):
        return "x".join(str(v) for v in views.values())
    return str(views)
