"""Decoded frames kept in memory, for clip stores small enough (the built-in synth data on a CPU).

A loader decodes the JPEG frames of every batch it makes. On a CPU that decoding runs on the
same cores as the training step and slows every step down (on a 2-core machine a SeFAR step of
the synth preset took 393-423 ms with it and 331 ms without), and a run draws each frame of a small set many times over: the
unlabeled pool once per pass, the val clips at every validation. A `FrameCache` decodes each
frame of the store (resized to the run's frame size) the first time a batch asks for it and
hands out copies after that. A frame's decoded values do not depend on the batch it was decoded
in, so batches are bit-identical with and without the cache (tests/test_frame_cache.py).

One cache serves every loader of a run over the same store and frame size (labeled,
unlabeled, validation); the trainer makes it when the whole store's frames fit in
`data.frame_cache_mb` and the run is on the CPU (on a GPU, DALI decodes there and the host
has nothing to save).
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch


class FrameCache:
    """Every frame of `records` as uint8 [H0, W0, 3], filled on first use (`take`)."""

    def __init__(self, records: Sequence, frame_size: tuple[int, int]):
        counts = np.array([r.num_frames for r in records], np.int64)
        self.first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # position of each record's frame 0
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        # np.empty leaves the pages untouched: memory grows with the frames actually decoded.
        self.frames = np.empty((int(counts.sum()), *self.frame_size, 3), np.uint8)
        self.ready = np.zeros(len(self.frames), bool)
        self._fill = threading.Lock()  # producer threads of several loaders share the cache

    @staticmethod
    def nbytes(records: Sequence, frame_size: Sequence[int]) -> int:
        """Memory the cache of `records` takes once every frame is in."""
        return sum(r.num_frames for r in records) * int(frame_size[0]) * int(frame_size[1]) * 3

    @classmethod
    def fitting(cls, store, frame_size: Sequence[int], limit_mb: float, device) -> FrameCache | None:
        """A cache for a run on `device` over `store` when it has one: on the CPU, for a clip store
        (not a direct video source) whose frames all fit in `limit_mb` MB (> 0)."""
        if torch.device(device).type != "cpu" or hasattr(store, "frame_decoder") or limit_mb <= 0:
            return None
        if cls.nbytes(store.records, frame_size) > limit_mb * 2**20:
            return None
        return cls(store.records, tuple(frame_size))

    def fill(self, decode, chunk: int = 1024, progress=None) -> None:
        """Decode every frame not held yet, `chunk` at a time (decode as in `take`); progress(n) after each chunk.
        A run on a CPU does this before its first step: the frames are then decoded once, while nothing
        else runs, instead of in the background of every step."""
        todo = np.flatnonzero(~self.ready)
        for start in range(0, len(todo), chunk):
            pos = todo[start:start + chunk]
            self._decode_into(pos, decode)
            if progress is not None:
                progress(len(pos))

    def take(self, records: np.ndarray, frame_ids: np.ndarray, decode) -> np.ndarray:
        """Frames uint8 [B * N, H0, W0, 3] of records [B] at frame_ids [B, N] (row-major).

        decode(records [M], frame_ids [M]) -> uint8 [M, H0, W0, 3] decodes the frames not held yet."""
        pos = (self.first[np.asarray(records, np.int64)][:, None] + np.asarray(frame_ids, np.int64)).reshape(-1)
        missing = np.unique(pos[~self.ready[pos]])
        if len(missing):
            self._decode_into(missing, decode)
        return self.frames[pos]

    def _decode_into(self, pos: np.ndarray, decode) -> None:
        record = np.searchsorted(self.first, pos, side="right") - 1
        frames = np.asarray(decode(record, pos - self.first[record]))
        with self._fill:
            self.frames[pos] = frames
            self.ready[pos] = True
