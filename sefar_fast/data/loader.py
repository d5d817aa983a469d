"""Batches of uint8 clips from a clip store, deterministic, resumable and sharded by rank.

Everything random is drawn on the host from explicit generators keyed by
(seed, epoch[, sample position]), so a batch's content depends only on those numbers:
the same on every run, after a resume, and whatever the number of producer threads.

- Order: a permutation of `indices` from (seed, epoch) when `shuffle`, else as given.
- Ranks: the order is cut to (drop_last) or padded by wrapping around to (not drop_last)
  a multiple of `world_size`; rank r takes positions r, r + world_size, ... so every rank
  gets the same number of samples. With padding a few clips appear twice in an epoch;
  `index` in each batch lets evaluation count each clip once.
- Frames: `sampling.sample_frames(num_frames, elements, rng)` with a generator from
  (seed, epoch, global position) for `temporal="random"`; segment centres for
  `temporal="centre"`; or a caller's `frame_fn(num_frames) -> int64 [K]` (multi-view
  evaluation). View 2 (strong) re-draws frames in the same segments from the same generator.
- Decoding: `pipeline.make_decoder` (DALI graph or PIL), run by `workers` producer threads
  that keep `prefetch` batches in flight. On CUDA each producer thread works on its own
  stream (uploads from pinned memory, never on the default stream) and hands the batch over
  with an event the consumer's stream waits on: the training thread never waits for a copy.
- Sources: a `ClipStore` (JPEG frames read with `read_jpeg`), or any object with the same
  `records` (clip_id, label, num_frames, height, width) that instead offers
  `frame_decoder(backend, frame_size, device, max_clips, num_threads)` -> an object with
  `decode_clips(records, frame_ids [B, N]) -> uint8 [B*N, H0, W0, 3]` and `close()`:
  `direct.VideoSource` reads clips straight from video files that way (no store).

A batch is a dict: `frames` uint8 [B, V, K, H0, W0, 3] on `device`, `labels` int64 [B]
(-1 for unknown), `index` int64 [B] (store record indices).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from sefar_fast.data.frame_cache import FrameCache
from sefar_fast.data.pipeline import cover_box, make_decoder, resolve_backend
from sefar_fast.data.sampling import sample_frames
from sefar_fast.data.store import ClipStore
from sefar_fast.errors import SefarError

SHUFFLE_STREAM, FRAMES_STREAM = 0, 1  # keep the permutation and the frame draws independent


def drops_last(clips: int, batch_size: int, world_size: int) -> bool:
    """Whether a loader over `clips` drops its last partial batch: yes when every rank gets a full one."""
    return clips >= batch_size * world_size


def samples_per_rank(clips: int, world_size: int, drop_last: bool) -> int:
    """Clips each rank takes of `clips`: the remainder dropped, or padded up to a multiple of the ranks."""
    return clips // world_size if drop_last else -(-clips // world_size)


def batches_per_rank(clips: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Batches each rank takes from `clips` clips (the loader's length, and a trainer epoch's steps)."""
    per_rank = samples_per_rank(clips, world_size, drop_last)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


class ClipLoader:
    """Iterate batches of clips from `store` records `indices`; see the module docstring.
    `store` is a ClipStore or a source with `frame_decoder` (direct.VideoSource)."""

    def __init__(self, store: ClipStore, indices: Sequence[int], *, elements: Sequence[int], batch_size: int,
                 frame_size: tuple[int, int] = (64, 64), views: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, device="cpu", rank: int = 0, world_size: int = 1,
                 temporal: str = "random", frame_fn: Callable[[int], np.ndarray] | None = None,
                 backend: str = "auto", workers: int = 1, prefetch: int = 2, num_threads: int | None = None,
                 frame_cache: FrameCache | None = None):
        self.store = store
        self._direct = hasattr(store, "frame_decoder")  # decodes clips itself instead of handing out JPEGs
        self.indices = np.asarray(list(indices), np.int64)
        self.elements = [int(e) for e in elements]
        self.num_frames = sum(self.elements)
        self.batch_size = int(batch_size)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.views = int(views)
        self.shuffle, self.drop_last, self.seed = bool(shuffle), bool(drop_last), int(seed)
        self.device = torch.device(device)
        self.rank, self.world_size = int(rank), int(world_size)
        self.temporal, self.frame_fn = temporal, frame_fn
        # Decoded frames kept in memory (`data.frame_cache`, made by `FrameCache.fitting`): CPU, clip store.
        self.frame_cache = frame_cache
        if frame_cache is not None and (self.device.type != "cpu" or self._direct
                                        or frame_cache.frame_size != self.frame_size):
            raise ValueError(f"a frame cache of {frame_cache.frame_size} serves a CPU loader of a clip store at that "
                             f"frame size, not a {self.device.type} loader of {type(store).__name__} at {self.frame_size}")
        self.backend = resolve_backend(backend, self.device)
        self.workers, self.prefetch = max(1, int(workers)), max(1, int(prefetch))
        self.num_threads = num_threads or min(8, os.cpu_count() or 1)
        self._order_cache = None
        self._check_args()
        self.epoch, self.position = 0, 0
        self._local = threading.local()
        self._decoders: list = []
        self._pool: ThreadPoolExecutor | None = None
        self._sample_frames = None

    def _check_args(self) -> None:
        if len(self.indices) == 0:
            raise SefarError("the loader was given no clips; check the split names and the list files")
        if self.views not in (1, 2):
            raise SefarError(f"views must be 1 or 2, got {self.views}")
        if self.temporal not in ("random", "centre"):
            raise SefarError(f"temporal must be 'random' or 'centre', got {self.temporal!r}")
        if not 0 <= self.rank < self.world_size:
            raise SefarError(f"rank {self.rank} is outside world size {self.world_size}")
        if self.batch_size < 1 or min(self.elements, default=0) < 1:
            raise SefarError(f"batch_size and elements must be positive, got {self.batch_size} and {self.elements}")
        if len(self) == 0:
            raise SefarError(
                f"{len(self.indices)} clips make no full batch of {self.batch_size} on each of {self.world_size} "
                f"ranks; lower the batch size or set drop_last=False"
            )

    # ---- epoch bookkeeping -----------------------------------------------------------------------------------------
    def samples_per_rank(self) -> int:
        return samples_per_rank(len(self.indices), self.world_size, self.drop_last)

    def __len__(self) -> int:
        return batches_per_rank(len(self.indices), self.batch_size, self.world_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (order and frame draws). A different epoch starts at its first batch;
        the current one keeps its position, so a resumed loader continues where it stopped."""
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Positions into `indices` for the whole epoch (all ranks), cut or padded to a multiple of world_size."""
        cached = self._order_cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        n = len(self.indices)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, SHUFFLE_STREAM]).permutation(n)
        else:
            order = np.arange(n)
        total = self.samples_per_rank() * self.world_size
        order = np.resize(order, total)  # np.resize repeats from the start when padding
        self._order_cache = (epoch, order)
        return order

    def rank_positions(self, epoch: int) -> np.ndarray:
        """Global epoch positions this rank takes, in its order."""
        return np.arange(self.rank, self.samples_per_rank() * self.world_size, self.world_size)

    # ---- what one batch holds --------------------------------------------------------------------------------------
    def frame_indices(self, record: int, epoch: int, global_position: int) -> np.ndarray:
        """Frame indices int64 [V, K] for one sample."""
        num_frames = self.store.records[record].num_frames
        if self.frame_fn is not None:
            one = np.asarray(self.frame_fn(num_frames), np.int64)
            views = [one] * self.views
        else:
            if self._sample_frames is None:

                self._sample_frames = sample_frames
            if self.temporal == "centre":
                views = [np.asarray(self._sample_frames(num_frames, self.elements, None), np.int64)] * self.views
            else:
                rng = np.random.default_rng([self.seed, epoch, FRAMES_STREAM, int(global_position)])
                views = [np.asarray(self._sample_frames(num_frames, self.elements, rng), np.int64)
                         for _ in range(self.views)]
        out = np.stack(views)
        if out.shape[1] != self.num_frames or out.min() < 0 or out.max() >= num_frames:
            raise SefarError(
                f"clip {self.store.records[record].clip_id!r}: frame indices {out.tolist()} do not fit "
                f"{num_frames} frames and elements {self.elements}"
            )
        return out

    def plan_batch(self, epoch: int, batch: int) -> dict:
        """Host-side description of one batch: records, frame indices, labels (no decoding)."""
        order = self.epoch_order(epoch)
        positions = self.rank_positions(epoch)[batch * self.batch_size:(batch + 1) * self.batch_size]
        records = self.indices[order[positions]]
        frames = np.stack([self.frame_indices(int(r), epoch, int(p)) for r, p in zip(records, positions)])
        labels = np.array([self.store.records[int(r)].label for r in records], np.int64)
        return {"records": records, "frames": frames, "labels": labels}

    # ---- decoding --------------------------------------------------------------------------------------------------
    def _decoder(self):
        dec = getattr(self._local, "decoder", None)
        if dec is None:
            if self._direct:
                dec = self.store.frame_decoder(self.backend, self.frame_size, self.device, self.batch_size,
                                               self.num_threads)
            else:
                max_frames = self.batch_size * self.views * self.num_frames
                dec = make_decoder(self.backend, self.frame_size, self.device, max_frames, self.num_threads)
            self._local.decoder = dec
            self._decoders.append(dec)
        return dec

    def _produce(self, epoch: int, batch: int) -> dict:
        if self.device.type != "cuda":
            return self._make_batch(epoch, batch)
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            out = self._make_batch(epoch, batch)
            out["ready"] = torch.cuda.Event()
            out["ready"].record(stream)
        return out

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(array)
        if self.device.type == "cuda":
            return host.pin_memory().to(self.device, non_blocking=True)
        return host

    def _make_batch(self, epoch: int, batch: int) -> dict:
        plan = self.plan_batch(epoch, batch)
        h0, w0 = self.frame_size
        b = len(plan["records"])
        if self._direct:  # a source that decodes whole clips itself (direct video)
            frames = self._decoder().decode_clips(plan["records"], plan["frames"].reshape(b, -1))
        elif self.frame_cache is not None:
            frames = torch.from_numpy(self.frame_cache.take(plan["records"], plan["frames"].reshape(b, -1),
                                                            self._decode_frames))
        else:
            frames = self._decode_frames(np.repeat(plan["records"], self.views * self.num_frames),
                                         plan["frames"].reshape(-1))
        return {
            "frames": frames.view(b, self.views, self.num_frames, h0, w0, 3),
            "labels": self._upload(plan["labels"]),
            "index": self._upload(plan["records"].copy()),
        }

    def _decode_frames(self, records: np.ndarray, frame_ids: np.ndarray) -> torch.Tensor:
        return decode_frames(self.store, self._decoder(), self.frame_size, records, frame_ids)

    def __iter__(self) -> Iterator[dict]:
        if self.position >= len(self):  # the last pass finished: go on with the next epoch
            self.epoch, self.position = self.epoch + 1, 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sefar-loader")
        epoch, total = self.epoch, len(self)
        pending: deque = deque()
        next_batch = self.position
        try:
            while self.position < total:
                while next_batch < total and len(pending) < self.prefetch:
                    pending.append(self._pool.submit(self._produce, epoch, next_batch))
                    next_batch += 1
                out = pending.popleft().result()
                ready = out.pop("ready", None)
                if ready is not None:  # made on a producer's stream: the consumer's stream waits (on the device)
                    consumer = torch.cuda.current_stream(self.device)
                    consumer.wait_event(ready)
                    for t in out.values():
                        t.record_stream(consumer)  # and the allocator keeps the memory until it is used
                self.position += 1
                yield out
        finally:
            for f in pending:
                f.cancel()

    def close(self) -> None:
        """Stop the producer threads and release the decoders."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for dec in self._decoders:
            dec.close()
        self._decoders = []
        self._local = threading.local()


def decode_frames(store: ClipStore, decoder, frame_size: tuple[int, int], records: np.ndarray,
                  frame_ids: np.ndarray) -> torch.Tensor:
    """Frames uint8 [M, H0, W0, 3] of store records [M] at frame_ids [M], each frame's cover box resized
    to `frame_size` by `decoder` (`pipeline.make_decoder`), on the decoder's device."""
    h0, w0 = frame_size
    jpegs, boxes = [], []
    for r, f in zip(np.asarray(records).tolist(), np.asarray(frame_ids).tolist()):
        rec = store.records[r]
        jpegs.append(store.read_jpeg(r, f))
        boxes.append(cover_box(rec.height, rec.width, h0, w0))
    return decoder.decode(jpegs, np.asarray(boxes, np.float32))


def fill_frame_cache(cache: FrameCache, store: ClipStore, backend: str = "auto", progress=None,
                     chunk: int = 1024) -> None:
    """Decode every frame of `store` into `cache` (on the CPU) now; progress(n) after each chunk."""
    decoder = make_decoder(backend, cache.frame_size, torch.device("cpu"), chunk, min(8, os.cpu_count() or 1))
    try:
        cache.fill(lambda records, frame_ids: decode_frames(store, decoder, cache.frame_size, records, frame_ids),
                   chunk=chunk, progress=progress)
    finally:
        decoder.close()
