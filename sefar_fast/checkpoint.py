"""Checkpoints: safetensors weights with metadata, plus a resumable training state.

`<name>.safetensors` holds the student (`student.*`) and, once it exists, the EMA
teacher (`teacher.*`), with metadata (resolved config, class names, epoch,
metrics) as JSON strings, so `sefar eval` rebuilds the model from the file alone.
`<name>.state` holds what exact resume needs besides the weights: optimizer, step
counters, RNG states, loader positions. It is a safetensors file too: the tensors and
numpy arrays as tensors, the rest as a JSON tree in its metadata, so reading a run
folder from elsewhere runs no code (a pickle would). The trainer pairs the two
through a `checkpoint_id` in both (`train.checkpoints`).

Every file is written atomically (`sefar_fast.io.atomic_write`), so a crash at any
moment leaves the previous good file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write

FORMAT = "sefar-checkpoint-1"
STATE_FORMAT = "sefar-state-1"


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
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.safetensors"))
        example = path / ("best.safetensors" if "best.safetensors" in inside else (inside or ["best.safetensors"])[0])
        raise SefarError(f"checkpoint {path} is a folder; give a checkpoint file in it, e.g. {example}")
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
    """Write a training state (nested dicts, lists, tuples, numbers, strings, tensors, numpy arrays)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = json.dumps(_encode(state, tensors))
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": STATE_FORMAT, "state": tree}))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by `save_state`. Nothing in the file is executed: JSON and raw tensors only."""
    path = Path(path)
    if not path.is_file():
        raise SefarError(f"training state {path} does not exist; cannot resume from it")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"no '{STATE_FORMAT}' metadata")
        return _decode(json.loads(meta["state"]), load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, IndexError) as e:
        if _is_pickle(path):
            raise SefarError(f"training state {path} is a pickle written by an older sefar; it is not read, because "
                             "a pickle can run code") from None
        raise SefarError(f"training state {path} is corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                         ) from None


def _is_pickle(path: Path) -> bool:
    """torch.save's zip container or a bare pickle (protocol 2+ starts with 0x80)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


# A state is a tree of JSON values; what JSON cannot say is an object tagged with TAG: tensors and
# numpy arrays (their bytes stored as tensors of the file, by name), numpy scalars, tuples (python's
# and numpy's RNG states are tuples) and dicts with keys other than strings (optimizer states).
TAG = "__sefar__"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = obj.detach().cpu().clone()  # its own storage: safetensors refuses shared memory
        return {TAG: "tensor", "name": name}
    if isinstance(obj, np.ndarray):
        name = str(len(tensors))
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj).reshape(-1).view(np.uint8).copy())
        return {TAG: "ndarray", "name": name, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {TAG: "scalar", "dtype": obj.dtype.str, "value": obj.item()}
    if isinstance(obj, tuple):
        return {TAG: "tuple", "items": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and TAG not in obj:
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {TAG: "dict", "items": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"a training state cannot hold a {type(obj).__name__}")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    tag = obj.get(TAG)
    if tag is None:
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if tag == "tensor":
        return tensors[obj["name"]]
    if tag in ("ndarray", "scalar"):
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in "biufc":  # plain numbers only (no object arrays)
            raise ValueError(f"numpy dtype {obj['dtype']!r} is not a plain number type")
        if tag == "scalar":
            return dtype.type(obj["value"])
        raw = tensors[obj["name"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=dtype).reshape(obj["shape"]).copy()
    if tag == "tuple":
        return tuple(_decode(v, tensors) for v in obj["items"])
    if tag == "dict":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["items"]}
    raise ValueError(f"unknown entry {tag!r}")
