"""Single synth frames with the figure's pose: the data a synth backbone is pretrained on.

Real data starts from ImageNet weights: a backbone that already sees objects and shapes in
single images, and knows nothing of the action classes. This module gives the built-in data
the same kind of start: single frames of the synth generator, each with its 16 body points
(`synth.figure_points`) as the target, so a ViT learns where the figure is, how it is
oriented and how its limbs are bent, one frame at a time.

What keeps the fine-grained classes out of it:
- the clips are drawn from their own random stream (`POSE_STREAM`), never from the data set's
  (seed, label, index) stream, so no frame of a training or validation clip is seen;
- a frame's target is its own pose, nothing about the clip: no class, no order, no neighbour
  frame. Every class pair that differs only by time direction shares its single frames exactly
  (`synth.reverse_params`), so no single-frame target can tell the two apart.

Frames travel as the trainer sees them: rendered at the store's size, JPEG-encoded as the
store does, decoded and resized to the preset's frame size as the loader does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from sefar_fast.data.pipeline import cover_box, resize_box_pil
from sefar_fast.data.store import encode_jpeg
from sefar_fast.data.synth import MOVES, SYNTH_VERSION, figure_points, render, synth_params
from sefar_fast.data.workers import ordered_map
from sefar_fast.errors import SefarError

POSE_STREAM = 0x5053  # "PS": a random stream of its own, apart from the data set's (seed, label, index) clips
STORE_SIZE = 64  # frames are rendered at the size `ensure_synth` stores them


@dataclass
class PoseFrames:
    """frames uint8 [N, H, W, 3] at the loader's frame size; points float32 [N, 16, 3]: x, y in that
    frame's pixels (continuous, pixel i spans [i, i + 1)) and depth in world units."""

    frames: np.ndarray
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


def _pose_clip(job: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Frames [F, H, W, 3] and points [F, 16, 3] of pose clip `index`."""
    seed, index, frames_per_clip, h, w = job
    rng = np.random.default_rng([SYNTH_VERSION, POSE_STREAM, seed, index])
    params = synth_params(int(rng.integers(len(MOVES))), rng, STORE_SIZE)
    take = np.sort(rng.choice(params.num_frames, size=min(frames_per_clip, params.num_frames), replace=False))
    box = cover_box(STORE_SIZE, STORE_SIZE, h, w)  # the loader's resize of a stored frame
    rendered = render(params)
    frames = np.stack([resize_box_pil(encode_jpeg(rendered[t]), box, h, w) for t in take])
    points = figure_points(params)[take]
    points[..., 0] = (points[..., 0] - box[1]) * (w / (box[3] - box[1]))
    points[..., 1] = (points[..., 1] - box[0]) * (h / (box[2] - box[0]))
    return frames, points.astype(np.float32)


def pose_frames(seed: int, clips: int, frames_per_clip: int, frame_size: tuple[int, int], *, first_clip: int = 0,
                workers: int = 1, progress: Callable[[int, int], None] | None = None) -> PoseFrames:
    """`frames_per_clip` distinct random frames of each pose clip first_clip .. first_clip + clips - 1
    (fresh synth clips of random classes).

    Deterministic in the arguments, whatever `workers`. `progress(done, total)` after each clip."""
    if clips < 1 or frames_per_clip < 1:
        raise SefarError(f"pose frames: clips={clips} and frames_per_clip={frames_per_clip} must be at least 1")
    h, w = (int(v) for v in frame_size)
    jobs = [(seed, first_clip + i, frames_per_clip, h, w) for i in range(clips)]
    frames, points = [], []
    for done, (f, p) in enumerate(ordered_map(_pose_clip, jobs, workers), 1):
        frames.append(f)
        points.append(p)
        if progress is not None:
            progress(done, clips)
    return PoseFrames(np.concatenate(frames), np.concatenate(points))
