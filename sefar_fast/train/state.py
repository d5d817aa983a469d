"""What a run's `.state` file holds, and putting it back.

The weights live in the paired .safetensors (`train.checkpoints`); the state holds
everything else an exact continuation needs: optimizer state, the progress
counters and epoch history, the loaders' positions, the epoch's running sums (so
the epoch's logged means come out as if uninterrupted), the batch layout (shards
of the global batch: resuming with another layout is refused), how much of
metrics.jsonl belongs to the checkpoint, and the RNG states (torch, CUDA, numpy,
python; per-step randomness is re-derived from counters anyway, see `train.shards`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from sefar_fast.errors import SefarError

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


def capture(trainer, acc: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    loaders = {"labeled": trainer.labeled.state_dict()}
    if trainer.unlabeled is not None:
        loaders["unlabeled"] = trainer.unlabeled.state_dict()
    metrics = trainer.run_dir / "metrics.jsonl"
    sums = dict(zip(acc, torch.stack(list(acc.values())).tolist())) if acc else None  # one sync
    return {
        "format": STATE_FORMAT,
        "progress": asdict(trainer.progress),
        "optimizer": trainer.optimizer.state_dict(),
        "loaders": loaders,
        "acc": sums,
        "layout": {"batch_size": trainer.cfg.optim.batch_size, "shards": trainer.shards},
        "metrics_bytes": metrics.stat().st_size if metrics.is_file() else 0,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "step_fn": trainer.step_fn.state_dict(),
    }


def restore(trainer, weights, state: dict[str, Any]) -> None:
    """Load a checkpoint pair into a set-up trainer (model, optimizer built; loaders not yet)."""
    from sefar_fast.train.ema import EmaTeacher
    from sefar_fast.train.resume import check_batch_layout

    path = trainer.files.last_state
    if state.get("format") != STATE_FORMAT:
        raise SefarError(f"{path} was written by another sefar version (state format {state.get('format')}, "
                         f"this one reads {STATE_FORMAT}); it cannot be resumed")
    check_batch_layout(state, trainer.cfg, trainer.dist.world_size, trainer.run_dir)
    if len(weights.class_names) != trainer.data.num_classes:
        raise SefarError(f"{trainer.files.last} has {len(weights.class_names)} classes but the data has "
                         f"{trainer.data.num_classes}; resume with the run's own data")
    trainer.model.load_state_dict(weights.student)
    if weights.teacher is not None:
        trainer.teacher = EmaTeacher.create(trainer.model)
        trainer.teacher.load_state_dict(weights.teacher)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.progress = Progress(**state["progress"])
    trainer.acc_values = state.get("acc")
    trainer.loader_states = state.get("loaders", {})
    trainer.step_state = state.get("step_fn")
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    metrics = trainer.run_dir / "metrics.jsonl"
    if trainer.dist.is_main and metrics.is_file():  # drop records written after the checkpoint
        with open(metrics, "r+b") as f:
            f.truncate(min(state.get("metrics_bytes", 0), metrics.stat().st_size))
