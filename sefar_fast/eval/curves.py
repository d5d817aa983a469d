"""Training curves from a run's metrics.jsonl, drawn to curves.png.

metrics.jsonl holds one JSON object per line; the epoch summaries carry
"kind": "epoch" and any of epoch, loss, loss_sup, loss_un, loss_mix, eta_mean,
pseudo_acc, val_top1_student, val_top1_teacher, lr. A run may not log every
series (no validation yet, a supervised-only run, an old run), so each missing
series is simply left out and an empty panel says so. Epochs logged with xi == 0 (the
supervised warm-up) get a grey band, since the losses jump when the semi-supervised terms
switch on; accuracies and the pseudo-label weight are drawn on a fixed 0-100% axis.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from sefar_fast.errors import SefarError
from sefar_fast.eval.reports import save_figure

# (panel title, y label, [(key, legend label)])
PANELS = [
    ("losses", "loss", [("loss", "total"), ("loss_sup", "supervised"), ("loss_un", "unlabeled (pseudo-label)"),
                        ("loss_mix", "mixing")]),
    ("pseudo-labels", "share", [("eta_mean", "mean weight η"), ("pseudo_acc", "pseudo-label accuracy")]),
    ("validation", "top-1 accuracy", [("val_top1_student", "student"), ("val_top1_teacher", "teacher")]),
    ("learning rate", "lr", [("lr", "lr")]),
]
# Panels of values in [0, 1]: drawn on a fixed 0-100% axis, so a change of a few points does not
# fill the panel and look like a collapse.
UNIT_PANELS = ("pseudo-labels", "validation")


def warmup_epochs(records: list[dict]) -> list[float]:
    """Epochs logged with xi == 0 (the supervised warm-up: the semi-supervised loss is off)."""
    return [float(r["epoch"]) for r in records
            if r.get("xi") == 0 and isinstance(r.get("epoch"), (int, float)) and not isinstance(r["epoch"], bool)]


def read_epoch_records(path: str | Path) -> list[dict]:
    """The "kind": "epoch" records of a metrics.jsonl, in file order; SefarError on a missing file or bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SefarError(f"{path} does not exist; point at a run folder's metrics.jsonl")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # a run killed mid-write leaves a partial last line; skip it
                break
            raise SefarError(f"{path} line {number} is not JSON ({e.msg}); fix or delete that line")
        if isinstance(record, dict) and record.get("kind") == "epoch":
            records.append(record)
    return records


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of the records that hold a finite number under key; records without an
    epoch number are placed by their position."""
    xs, ys = [], []
    for position, record in enumerate(records):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            epoch = record.get("epoch", position)
            xs.append(epoch if isinstance(epoch, (int, float)) else position)
            ys.append(float(value))
    return np.asarray(xs, np.float64), np.asarray(ys, np.float64)


def curve_series(records: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every panel series that has at least one point: key -> (epochs, values)."""
    found = {}
    for _, _, keys in PANELS:
        for key, _ in keys:
            xs, ys = _series(records, key)
            if len(xs):
                found[key] = (xs, ys)
    return found


def plot_curves(metrics_path: str | Path, out_path: str | Path | None = None, *, title: str | None = None) -> Path:
    """Draw curves.png (next to metrics.jsonl unless out_path is given) and return its path."""
    metrics_path = Path(metrics_path)
    out_path = Path(out_path) if out_path is not None else metrics_path.with_name("curves.png")
    records = read_epoch_records(metrics_path)
    series = curve_series(records)

    warm = warmup_epochs(records)
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (panel, ylabel, keys) in zip(axes, PANELS):
        drawn = []
        if warm:  # grey band: the loss jumps when the semi-supervised terms switch on after it
            ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="0.92", lw=0, zorder=0,
                       label="supervised warm-up" if panel == "losses" else None)
        for key, label in keys:
            if key in series:
                xs, ys = series[key]
                ax.plot(xs, ys, marker="o" if len(xs) < 40 else None, ms=3, lw=1.4, label=label,
                        drawstyle="steps-post" if key == "lr" else "default")  # lr changes at epoch starts
                drawn.append(ys)
        ax.set_title(panel, fontsize=10, loc="left")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax in axes[2:]:
            ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if panel in UNIT_PANELS:
            ax.set_ylim(-0.02, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        if drawn:
            ax.legend(fontsize=8)
            if ylabel == "lr" and all(np.all(ys > 0) for ys in drawn):
                ax.set_yscale("log")  # step decays (x0.1, x0.01) read best on a log axis
        else:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="0.5")
    fig.suptitle(title or f"{metrics_path.parent.name}: {len(records)} epochs", fontsize=11)
    return save_figure(fig, out_path, dpi=120)
