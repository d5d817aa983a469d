"""What a training run tells, and where: the console, metrics.jsonl, summary.csv, `finished`, curves.png.

Only rank 0 reports; on the other ranks every method does nothing, so the trainer
calls them without checking its rank.

    metrics.jsonl   one JSON object per line: {"kind": "step", ...} every run.log_every optimizer
                    steps and at the end of an epoch, {"kind": "epoch", ...} per epoch. A resumed
                    run first cuts the file back to what its checkpoint had seen (`truncate`).
    summary.csv     the epoch records as a table, written when the run finishes
    finished        the run's result (JSON); its presence marks the run as complete
    curves.png      losses, pseudo-labels, validation accuracy and lr per epoch (`eval.curves`)

Trackers (`--logger tensorboard|wandb`, `train.loggers`) receive every record metrics.jsonl
receives, and the validation confusion matrices as images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sefar_fast.console import console, err_console, results_table
from sefar_fast.io import atomic_write_text, write_error
from sefar_fast.train.loggers import open_loggers, split_record

METRICS = "metrics.jsonl"
SUMMARY = "summary.csv"
FINISHED = "finished"
CURVES = "curves.png"

# Epoch-line fields printed as percentages (the others as plain numbers).
PERCENT_KEYS = ("val_top", "val_mca", "pseudo", "data_wait")


class Reporter:
    def __init__(self, run_dir: Path, enabled: bool):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.metrics = self.run_dir / METRICS
        self.loggers: list = []

    def open_loggers(self, names, config: dict, resume_step: int | None) -> None:
        """Start the trackers (`train.loggers`); resume_step: the global step a resumed run continues from."""
        if self.enabled:
            self.loggers = open_loggers(names, self.run_dir, config, resume_step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []

    # ------------------------------------------------------------------ console
    def say(self, text: str) -> None:
        if self.enabled:
            console.print(text)

    def warn(self, text: str) -> None:
        if self.enabled:
            err_console.print(f"[yellow]warning:[/] {text}", soft_wrap=True)

    def epoch(self, m: dict, epochs: int) -> None:
        """One console line per epoch: loss, validation, pseudo-labels, data wait."""
        parts = [f"epoch {m['epoch']}/{epochs}", f"loss {m['loss']:.4f}"]
        for k in ("val_top1_student", "val_top1_teacher", "pseudo_acc", "eta_mean", "data_wait"):
            if m.get(k) is not None:
                parts.append(f"{k} {m[k]:.4f}" if k == "eta_mean" else f"{k} {100 * m[k]:.2f}%")
        if m.get("skipped_steps"):
            parts.append(f"skipped_steps {m['skipped_steps']}")
        self.say("  ".join(parts))

    # ------------------------------------------------------------------ metrics.jsonl
    def record(self, record: dict) -> None:
        """One record (`kind` step or epoch, with its `global_step`) to metrics.jsonl and the trackers."""
        if not self.enabled:
            return
        try:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise write_error(self.metrics, e) from None
        parts = split_record(record)
        for logger in self.loggers:
            for prefix, values in parts.items():
                logger.scalars(prefix, values, record["global_step"])

    def confusion(self, model: str, confusion: np.ndarray, class_names, step: int) -> None:
        """A validation confusion matrix, as an image for the trackers (none: nothing is drawn)."""
        if not (self.enabled and self.loggers):
            return
        from sefar_fast.eval.reports import confusion_figure, figure_rgb  # matplotlib: only with trackers

        rgb = figure_rgb(confusion_figure(confusion, class_names, title=f"{model}, step {step}"), dpi=60)
        for logger in self.loggers:
            logger.image(f"val/confusion_{model}", rgb, step)

    def metrics_bytes(self) -> int:
        """How much of metrics.jsonl exists now (stored with a checkpoint)."""
        return self.metrics.stat().st_size if self.metrics.is_file() else 0

    def truncate(self, size: int) -> None:
        """Drop the records written after a checkpoint that held `size` bytes of metrics.jsonl."""
        if self.enabled and self.metrics.is_file():
            with open(self.metrics, "r+b") as f:
                f.truncate(min(size, self.metrics.stat().st_size))

    # ------------------------------------------------------------------ the end
    def finish(self, result: dict[str, Any], history: list[dict], rows: list[tuple[str, str]], title: str) -> None:
        """Write `finished`, summary.csv and curves.png; print the results table (last epoch + `rows`)."""
        if not self.enabled:
            return
        from sefar_fast.eval.curves import plot_curves  # matplotlib: only when a run ends

        atomic_write_text(self.run_dir / FINISHED, json.dumps(result, indent=2, default=float) + "\n")
        atomic_write_text(self.run_dir / SUMMARY, summary_csv(history))
        curves = plot_curves(self.metrics, self.run_dir / CURVES, title=title)
        last = history[-1] if history else {}
        table = [(k, f"{100 * v:.2f}%" if k.startswith(PERCENT_KEYS) else (f"{v:.4g}" if isinstance(v, float)
                                                                           else str(v))) for k, v in last.items()]
        console.print(results_table(title, table + rows + [("curves", str(curves))]))


def summary_csv(history: list[dict]) -> str:
    """The epoch records as CSV: one column per key in order of first appearance, empty where absent."""
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    lines = [",".join(keys)]
    for h in history:
        lines.append(",".join("" if h.get(k) is None else str(h.get(k)) for k in keys))
    return "\n".join(lines) + "\n"
