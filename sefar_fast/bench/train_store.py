"""A synthetic prepared clip store for timing `sefar train` end to end (bench/gpu_check.sh).

Frames are smooth moving patterns at a typical prepared size (256 x 340, like
`sefar prepare --short-side 256` of 4:3 video), so their JPEGs cost what real
frames cost to decode; the content is meaningless, the measurement is how long
the GPU waits for the loader. The store carries `train` (labeled), `unlabel` and
`val` splits, so a run uses them as they are.

    python -m sefar_fast.bench.train_store /tmp/store [--labeled 160 --unlabeled 96 --val 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sefar_fast.data.store import ClipData, ClipStore

CLASSES = ["class-a", "class-b", "class-c", "class-d"]


def _clip(rng: np.random.Generator, frames: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T, H, W, 3]: a drifting sinusoidal pattern with a per-channel phase."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    freq = rng.uniform(0.01, 0.06, 2).astype(np.float32)
    drift = rng.uniform(-3, 3, 2).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
    out = np.empty((frames, h, w, 3), dtype=np.uint8)
    for t in range(frames):
        wave = np.sin((xx + drift[0] * t) * freq[0] + (yy + drift[1] * t) * freq[1])
        out[t] = (128 + 100 * np.sin(3 * wave[..., None] + phase)).astype(np.uint8)
    return out


def write_train_store(root, *, labeled: int = 160, unlabeled: int = 96, val: int = 16, frames: int = 8,
                      size: tuple[int, int] = (256, 340), seed: int = 0) -> ClipStore:
    """Write (or replace) the store at `root`: `labeled` train clips, `unlabeled` unlabel clips, `val` val clips."""
    rng = np.random.default_rng(seed)
    plan = [("train", labeled), ("unlabel", unlabeled), ("val", val)]

    def clips():
        i = 0
        for split, count in plan:
            for _ in range(count):
                label = i % len(CLASSES)
                yield ClipData(f"{split}-{i:05d}", label, split, _clip(rng, frames, size))
                i += 1

    return ClipStore.write(Path(root), clips(), CLASSES)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sefar_fast.bench.train_store", description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--labeled", type=int, default=160)
    p.add_argument("--unlabeled", type=int, default=96)
    p.add_argument("--val", type=int, default=16)
    p.add_argument("--frames", type=int, default=8)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    store = write_train_store(a.root, labeled=a.labeled, unlabeled=a.unlabeled, val=a.val, frames=a.frames)
    print(f"{a.root}: {len(store.records)} clips, splits {store.splits()}")


if __name__ == "__main__":
    main()
