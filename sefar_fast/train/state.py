"""The training state a run owns, and what its `.state` file holds.

`TrainState` is everything that changes while a run trains: the student and its
optimizer, the EMA teacher (from the end of the supervised warm-up), the progress
counters with the epoch history, and the loaders' positions.

The weights go to the paired .safetensors (`train.checkpoints`). `capture` returns
everything else an exact continuation needs: optimizer state, progress, the loaders'
positions, the epoch's running sums (so a resumed epoch logs the means the
uninterrupted one would have), the batch layout (shards of the global batch; resuming
with another layout is refused, `train.resume.check_batch_layout`), how much of
metrics.jsonl belongs to the checkpoint, and the RNG states (torch, CUDA, numpy,
python; per-step randomness is re-derived from counters anyway, see `train.shards`).
`restore` puts a checkpoint pair back.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sefar_fast.checkpoint import Checkpoint
from sefar_fast.errors import SefarError
from sefar_fast.train.ema import EmaTeacher

STATE_FORMAT = 2


@dataclass
class Progress:
    """Where the run stands."""

    epoch: int = 0  # next epoch to run
    step: int = 0  # optimizer steps done in the current epoch
    global_step: int = 0  # optimizer steps done in the whole run
    best: float = -1.0
    best_epoch: int = -1
    finished: bool = False
    history: list[dict] = field(default_factory=list)


class TrainState:
    """The student, its optimizer, the teacher once it exists, progress and loader positions."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, teacher_dtype: torch.dtype | None = None):
        self.model = model
        self.optimizer = optimizer
        self.teacher_dtype = teacher_dtype  # of the teacher's forward copy (train.ema); None: its own weights
        self.teacher: EmaTeacher | None = None
        self.progress = Progress()
        self.loader_positions: dict[str, dict] = {}  # loader name -> ClipLoader.state_dict()
        self.epoch_sums: dict[str, float] | None = None  # running sums of a checkpoint taken mid-epoch

    def start_teacher(self) -> EmaTeacher:
        """The EMA teacher; created as a copy of the student the first time it is asked for."""
        if self.teacher is None:
            self.teacher = EmaTeacher.create(self.model, self.teacher_dtype)
        return self.teacher

    def end_epoch(self, metrics: dict, *, last: bool) -> bool:
        """Count the epoch `metrics` describes as done; True when its val_top1 is the best so far."""
        p = self.progress
        p.epoch += 1
        p.step = 0
        score = metrics.get("val_top1")
        best = score is not None and score > p.best
        if best:
            p.best, p.best_epoch = score, metrics["epoch"]
        p.history.append(metrics)
        p.finished = last
        return best

    def weights(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """(student, teacher or None) state dicts for the .safetensors file."""
        return self.model.state_dict(), self.teacher.state_dict() if self.teacher is not None else None

    def capture(self, *, sums: dict[str, float] | None, layout: dict, metrics_bytes: int) -> dict[str, Any]:
        """What the .state file holds (module docstring); `sums` are the epoch's running sums mid-epoch."""
        return {
            "format": STATE_FORMAT,
            "progress": asdict(self.progress),
            "optimizer": self.optimizer.state_dict(),
            "loaders": dict(self.loader_positions),
            "acc": sums,
            "layout": layout,
            "metrics_bytes": metrics_bytes,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }

    def restore(self, weights: Checkpoint, state: dict[str, Any], *, state_path: Path, num_classes: int) -> None:
        """Load a checkpoint pair (weights and the state captured with them)."""
        if state.get("format") != STATE_FORMAT:
            raise SefarError(f"{state_path} was written by another sefar version (state format "
                             f"{state.get('format')}, this one reads {STATE_FORMAT}); it cannot be resumed")
        if len(weights.class_names) != num_classes:
            raise SefarError(f"{weights.path} has {len(weights.class_names)} classes but the data has "
                             f"{num_classes}; resume with the run's own data")
        self.model.load_state_dict(weights.student)
        if weights.teacher is not None:
            self.start_teacher().load_state_dict(weights.teacher)
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        self.epoch_sums = state.get("acc")
        self.loader_positions = dict(state.get("loaders", {}))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
