"""Checkpoints: safetensors weights with metadata, plus a resumable training state.

`<name>.safetensors` holds the student (`student.*`) and, once it exists, the EMA
teacher (`teacher.*`), with metadata (resolved config, class names, epoch,
metrics) as JSON strings, so `sefar eval` rebuilds the model from the file alone.
`<name>.state` (torch.save) holds what exact resume needs besides the weights:
optimizer, step counters, RNG states, loader positions. The trainer pairs the two
through a `checkpoint_id` in both (`train.checkpoints`).

Every file is written atomically (`sefar_fast.io.atomic_write`), so a crash at any
moment leaves the previous good file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write

FORMAT = "sefar-checkpoint-1"


def save_weights(
    path: str | Path,
    student: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor] | None,
    meta: dict[str, Any],
) -> None:
    tensors = {f"student.{k}": v.detach().contiguous().cpu() for k, v in student.items()}
    if teacher is not None:
        tensors.update({f"teacher.{k}": v.detach().contiguous().cpu() for k, v in teacher.items()})
    metadata = {"format": FORMAT}
    metadata.update({k: json.dumps(v) for k, v in meta.items()})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


class Checkpoint:
    """A loaded checkpoint: student / teacher state dicts and decoded metadata."""

    def __init__(self, path: Path, student: dict, teacher: dict | None, meta: dict[str, Any]):
        self.path, self.student, self.teacher, self.meta = path, student, teacher, meta

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]


def load_weights(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise SefarError(f"checkpoint {path} does not exist (look in runs/<run>/ for best.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SefarError(f"checkpoint {path} is corrupt or not a safetensors file ({e}); use another checkpoint") from None
    if raw_meta.get("format") != FORMAT:
        raise SefarError(f"checkpoint {path} was not written by sefar (no '{FORMAT}' metadata)")
    try:
        meta = {k: json.loads(v) for k, v in raw_meta.items() if k != "format"}
    except json.JSONDecodeError:
        raise SefarError(f"checkpoint {path} has unreadable metadata; use another checkpoint") from None
    student = {k[8:]: v for k, v in tensors.items() if k.startswith("student.")}
    teacher = {k[8:]: v for k, v in tensors.items() if k.startswith("teacher.")} or None
    if not student or "config" not in meta:
        raise SefarError(f"checkpoint {path} holds no student weights or config; use another checkpoint")
    return Checkpoint(path, student, teacher, meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a sefar checkpoint, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise SefarError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        if raw.get("format") != FORMAT:
            raise SefarError(f"checkpoint {path} was not written by sefar (no '{FORMAT}' metadata)")
        return {k: json.loads(v) for k, v in raw.items() if k != "format"}
    except (SafetensorError, OSError, ValueError) as e:
        raise SefarError(f"checkpoint {path} is corrupt or not a safetensors file ({e}); use another checkpoint") from None


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SefarError(f"training state {path} does not exist; cannot resume from it")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a damaged pickle/zip
        raise SefarError(f"training state {path} is corrupt ({type(e).__name__}); resume from an earlier run") from None
