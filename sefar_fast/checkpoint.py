"""Checkpoints: safetensors weights with metadata, plus a resumable training state.

`<name>.safetensors` holds the student (`student.*`) and, once it exists, the EMA
teacher (`teacher.*`), with metadata (resolved config, class names, epoch,
metrics) as JSON strings, so `sefar eval` rebuilds the model from the file alone.
`<name>.state` (torch.save) holds what exact resume needs besides the weights:
optimizer, step counters, RNG states, loader positions. The trainer pairs the two
through a `checkpoint_id` in both (`train.checkpoints`).

Every file is written to a temporary name in the same folder, flushed to disk and
renamed over the target, so a crash at any moment leaves the previous good file.

Test hook: SEFAR_TEST_HANG_IN_WRITE=<file name>:<n> makes the n-th write of that file
in this process stop after the temporary is complete but before the rename: it
creates `<target>.hang` and sleeps, so a test can kill the process mid-write.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sefar_fast.errors import SefarError

FORMAT = "sefar-checkpoint-1"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _hang_for_tests(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_WRITES: dict[str, int] = {}


def _hang_for_tests(path: Path) -> None:
    spec = os.environ.get("SEFAR_TEST_HANG_IN_WRITE")
    if not spec:
        return
    name, _, nth = spec.rpartition(":")
    if path.name != name:
        return
    _WRITES[name] = _WRITES.get(name, 0) + 1
    if _WRITES[name] == int(nth):
        Path(f"{path}.hang").write_text(str(os.getpid()))
        while True:
            time.sleep(60)


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Make `dst` hold `src`'s bytes, atomically: a hard link when the file system allows, else a copy.

    A hard link costs no I/O; it stays valid because checkpoints are only ever replaced by
    rename, never rewritten in place."""
    src, dst = Path(src), Path(dst)
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(dst.parent)


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
        from safetensors import safe_open

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
    from safetensors import safe_open

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
