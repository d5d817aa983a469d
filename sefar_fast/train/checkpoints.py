"""A run folder's checkpoints, written so that a crash at any moment leaves a pair to resume from.

    last.safetensors + last.state   the newest checkpoint: an epoch end, every run.ckpt_every_steps
                                    optimizer steps, or a signal (then mid-epoch)
    prev.state                      the state of the weights before them (kept while a new pair is written)
    best.safetensors                best validation top-1 so far
    epoch-NNN.safetensors           the last run.keep epoch ends

Weights and state are two files (the state holds the optimizer, counters, loader
positions and RNG states; not the weights again), paired by a random
`checkpoint_id` stored in both. Each file is replaced atomically, in this order:

    1. rename last.state -> prev.state       (prev.state now pairs with last.safetensors)
    2. write the new last.state              (an orphan until step 3)
    3. write the new last.safetensors        (now pairs with last.state)

Whenever the process dies, last.safetensors pairs with last.state or with prev.state:
`load_latest` takes whichever matches and renames it to last.state, which restores
the invariant "last.state pairs with last.safetensors" before the next write.
best and epoch-NNN are hard links to (or copies of) last.safetensors, made after it.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

from sefar_fast.checkpoint import Checkpoint, load_state, load_weights, read_metadata, save_state, save_weights
from sefar_fast.errors import SefarError
from sefar_fast.io import link_or_copy

EPOCH_FILE = re.compile(r"^epoch-(\d+)\.safetensors$")


class RunCheckpoints:
    """Reads and writes the checkpoints of one run folder (writes only from rank 0)."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.last = self.dir / "last.safetensors"
        self.last_state = self.dir / "last.state"
        self.prev_state = self.dir / "prev.state"
        self.best = self.dir / "best.safetensors"

    def exists(self) -> bool:
        return self.last.is_file()

    def save(self, student: dict, teacher: dict | None, meta: dict[str, Any], state: dict[str, Any], *,
             epoch_end: int | None = None, best: bool = False, keep: int = 1) -> str:
        """Write a new pair; then best / epoch-NNN links and the keep policy. Returns the checkpoint id."""
        ckpt_id = uuid.uuid4().hex
        if self.last_state.is_file():
            os.replace(self.last_state, self.prev_state)
        save_state(self.last_state, {**state, "checkpoint_id": ckpt_id})
        save_weights(self.last, student, teacher, {**meta, "checkpoint_id": ckpt_id})
        if best:
            link_or_copy(self.last, self.best)
        if epoch_end is not None and keep > 0:
            link_or_copy(self.last, self.dir / f"epoch-{epoch_end:03d}.safetensors")
            self._apply_keep(keep)
        return ckpt_id

    def _apply_keep(self, keep: int) -> None:
        """Delete all but the newest `keep` epoch-NNN files."""
        epochs = sorted((int(m.group(1)), p) for p in self.dir.iterdir() if (m := EPOCH_FILE.match(p.name)))
        for _, path in epochs[:-keep]:
            path.unlink(missing_ok=True)

    def checkpoint_id(self) -> str | None:
        """The id in last.safetensors (None if absent)."""
        return read_metadata(self.last).get("checkpoint_id") if self.last.is_file() else None

    def load_latest(self) -> tuple[Checkpoint, dict[str, Any]]:
        """last.safetensors and the state that pairs with it (see the module docstring)."""
        try:
            weights = load_weights(self.last)
        except SefarError as e:  # "checkpoint X is corrupt (...); use another checkpoint": say which one
            raise SefarError(f"{str(e).removesuffix('; use another checkpoint')}; {self._other_pair()}") from None
        wanted = weights.meta.get("checkpoint_id")
        problems = []
        for candidate in (self.last_state, self.prev_state):
            if not candidate.is_file():
                continue
            try:
                state = load_state(candidate)
            except SefarError as e:
                problems.append(str(e))
                continue
            if state.get("checkpoint_id") == wanted:
                if candidate != self.last_state:
                    os.replace(candidate, self.last_state)
                return weights, state
        why = f" ({'; '.join(problems)})" if problems else ""
        raise SefarError(f"{self.dir}: no training state pairs with {self.last.name}{why}; the run cannot be "
                         f"resumed exactly: evaluate {self.last} or start a new run with another --out")

    def _other_pair(self) -> str:
        """What is left to continue from when last.safetensors cannot be read (for its error message)."""
        states = {}
        for path in (self.last_state, self.prev_state):
            try:
                states[load_state(path).get("checkpoint_id")] = path
            except SefarError:
                pass
        epochs = sorted((p for p in self.dir.iterdir() if EPOCH_FILE.match(p.name)), reverse=True)
        readable = []
        for path in [*epochs, self.best]:
            try:
                meta = read_metadata(path)
            except SefarError:
                continue
            readable.append(path)
            if meta.get("checkpoint_id") in states:
                return (f"{path.name} still pairs with {states[meta['checkpoint_id']].name}: copy it over "
                        f"{self.last.name} (cp {path} {self.last}) to continue exactly from its step "
                        f"{meta.get('global_step')}, or evaluate it")
        if readable:
            return f"no other checkpoint pairs with a training state: evaluate {readable[0]} or start a new run"
        return "no other checkpoint of the run can be read: start a new run"

    def clean_temporaries(self) -> None:
        """Remove half-written temporaries left by a process killed mid-write."""
        for p in self.dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)
