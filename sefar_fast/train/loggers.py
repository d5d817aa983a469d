"""Experiment trackers fed from a run's records: TensorBoard and Weights & Biases (`--logger`).

    sefar train --logger tensorboard                   # <run>/tensorboard; tensorboard --logdir runs
    sefar train --logger wandb                         # `wandb login` first, or WANDB_MODE=offline
    sefar train --logger tensorboard --logger wandb    # both

Each tracker gets exactly what metrics.jsonl gets (`train.report.Reporter.record`), as
scalars at the run's global optimizer step:

    step records    train/<key>   loss, loss terms, lr, eta_mean, pseudo_acc, data_wait, skipped steps
    epoch records   epoch/<key>   the epoch's means, lr, xi, data_wait; val/<key> for val_* keys
    evaluations     val/confusion_<model>   the row-normalised confusion matrix as an image

A resumed run continues the same tracker run: TensorBoard's writer purges the events after
the checkpoint's step (written before the interruption, then trained again), and the
W&B run keeps its id in the run folder (`wandb-id`) and resumes it.

TensorBoard and W&B are optional extras: `pip install "sefar-fast[tensorboard]"` / `"[wandb]"`.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write_text

TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb-id"


def numbers(record: dict) -> dict[str, float]:
    """The numeric fields of a record (no flags, names or counters of where it stands)."""
    skip = {"kind", "epoch", "step", "global_step"}
    return {k: float(v) for k, v in record.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}


def split_record(record: dict) -> dict[str, dict[str, float]]:
    """{prefix: scalars}: train/ for step records; epoch/ and val/ for epoch records."""
    values = numbers(record)
    if record.get("kind") == "step":
        return {"train": values}
    return {"val": {k[len("val_"):]: v for k, v in values.items() if k.startswith("val_")},
            "epoch": {k: v for k, v in values.items() if not k.startswith("val_")}}


class TensorBoardLogger:
    def __init__(self, run_dir: Path, resume_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SefarError("--logger tensorboard needs TensorBoard: pip install \"sefar-fast[tensorboard]\"") from None
        # Events after the checkpoint's step were written before an interruption and are trained again
        # now: TensorBoard hides the old ones from purge_step on (the checkpoint's own step stays).
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, rgb, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, run_dir: Path, config: dict, resume_step: int | None):
        try:
            import wandb
        except ImportError:
            raise SefarError("--logger wandb needs Weights & Biases: pip install \"sefar-fast[wandb]\"") from None
        self.wandb = wandb
        id_file = Path(run_dir) / WANDB_ID_FILE
        if resume_step is not None and id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = uuid.uuid4().hex[:12]
            atomic_write_text(id_file, run_id + "\n")
        try:
            self.run = wandb.init(project="sefar", name=Path(run_dir).name, id=run_id, dir=str(run_dir),
                                  config=config, resume="allow")
        except Exception as e:  # noqa: BLE001 - wandb raises many kinds (no login, no network, bad key)
            raise SefarError(f"--logger wandb could not start a run ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); run `wandb login`, or set "
                             "WANDB_MODE=offline and `wandb sync` later") from None

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if values:
            self.run.log({f"{prefix}/{k}": v for k, v in values.items()}, step=step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        self.run.log({tag: self.wandb.Image(rgb)}, step=step)

    def close(self) -> None:
        self.run.finish()


def open_loggers(names, run_dir: Path, config: dict, resume_step: int | None) -> list:
    """The trackers named (run.loggers, validated against config.LOGGERS; "none": none)."""
    out = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            out.append(TensorBoardLogger(run_dir, resume_step))
        elif name == "wandb":
            out.append(WandbLogger(run_dir, config, resume_step))
    return out
