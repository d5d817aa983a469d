"""`sefar bench data`: how fast the loader delivers clips from a store on this device.

The number that matters is clips/s of K frames at the training size with the trainer's
batch shape; it must stay well above what the training step consumes. Without a store a
small synthetic one (smooth random frames at a typical prepared size, 256 x 340) is
written to a temporary folder first, so the benchmark runs anywhere.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sefar_fast.data.loader import ClipLoader
from sefar_fast.data.store import ClipData, ClipStore


def synthetic_store(root, *, clips: int = 32, frames: int = 16, size=(256, 340), seed: int = 0) -> ClipStore:
    """A store of smooth random clips (JPEG sizes like real video frames, unlike noise)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def make(i):
        phase = rng.uniform(0, 2 * np.pi, (frames, 3))
        freq = rng.uniform(0.01, 0.08, 2)
        wave = np.sin(xx * freq[0] + yy * freq[1])
        data = 128 + 100 * np.sin(wave[None, :, :, None] * 3 + phase[:, None, None, :])
        return ClipData(f"bench{i:04d}", i % 4, "train", data.astype(np.uint8))

    return ClipStore.write(root, (make(i) for i in range(clips)), ["a", "b", "c", "d"])


def bench_data(store_root=None, *, device="cpu", batches: int = 20, batch_size: int = 32, elements=(2, 2, 4),
               frame_size=(224, 224), views: int = 1, backend: str = "auto", workers: int = 2, prefetch: int = 4,
               num_threads: int | None = None, warmup: int = 2) -> dict:
    """Time `batches` batches from the loader (after `warmup` batches). Returns a dict with
    clips_per_s, frames_per_s, seconds, batches, batch_size, frames_per_clip, views, frame_size,
    backend, device, store."""
    device = torch.device(device)
    tmp = None
    if store_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="sefar-bench-")
        store = synthetic_store(Path(tmp.name) / "store")
    else:
        store = ClipStore.open(store_root)
    try:
        loader = ClipLoader(store, store.indices(), elements=list(elements), batch_size=batch_size,
                            frame_size=tuple(frame_size), views=views, shuffle=True, drop_last=False, seed=0,
                            device=device, backend=backend, workers=workers, prefetch=prefetch,
                            num_threads=num_threads)
        clips = 0
        it, t0, timed = None, 0.0, 0
        for step in range(warmup + batches):
            if step == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            try:
                batch = next(it) if it is not None else None
            except StopIteration:
                batch = None
            if batch is None:  # start (or wrap to) the next epoch
                it = iter(loader)
                batch = next(it)
            if step >= warmup:
                clips += batch["frames"].shape[0]
                timed += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        loader.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    k = sum(elements)
    return {
        "clips_per_s": clips / seconds,
        "frames_per_s": clips * k * views / seconds,
        "seconds": seconds,
        "batches": timed,
        "batch_size": batch_size,
        "frames_per_clip": k,
        "views": views,
        "frame_size": list(frame_size),
        "backend": loader.backend,
        "device": str(device),
        "store": str(store_root) if store_root is not None else "synthetic",
    }


def check_dali_gpu(device="cuda", *, batch_size: int = 8, frame_size=(224, 224), elements=(2, 2, 4)) -> dict:
    """Decode the same batch with DALI on `device` (nvJPEG, "mixed") and with PIL on the host and compare.

    Returns max_abs_diff, mean_abs_diff, same_shape and ok (mean difference under 2 grey levels: the
    decoders' IDCT and chroma upsampling differ slightly, the frames and crops must not).
    """
    with tempfile.TemporaryDirectory(prefix="sefar-check-") as tmp:
        store = synthetic_store(Path(tmp) / "store", clips=batch_size, frames=16)
        outs = {}
        for backend, dev in (("dali", device), ("pil", "cpu")):
            loader = ClipLoader(store, store.indices(), elements=list(elements), batch_size=batch_size,
                                frame_size=tuple(frame_size), views=2, shuffle=True, seed=1, device=dev,
                                backend=backend)
            outs[backend] = next(iter(loader))["frames"].cpu()
            loader.close()
    a, b = outs["dali"].int(), outs["pil"].int()
    same = a.shape == b.shape
    diff = (a - b).abs() if same else torch.tensor([255])
    return {"same_shape": same, "max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.float().mean()),
            "ok": bool(same and diff.float().mean() < 2.0), "device": str(device)}
