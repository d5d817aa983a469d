"""Which frames of a clip each temporal element sees (pure functions, host side).

SeFAR splits a clip into K = sum(elements) TSN segments ("slots") and gives each
temporal element a subset of them (`ops.elements.element_slots`: for ``[2, 2, 4]`` the
context takes slots {0, 2, 4, 6}, fine element 1 takes {1, 5} and fine element 0 takes
{3, 7}). Each slot then yields one frame: uniformly random inside its segment when
training, a fixed in-segment position at evaluation.

Short clips (fewer than K frames) follow the released code's fallbacks, with one
repair: it gave up on clips shorter than the context element; we repeat frames.

    num_frames L >= K          S = K slots, segment length r = L / S
    ctx <= L < K               S = L slots (r = 1); elements that find too few free
                               slots fall back to one slot per 1/n of the clip
                               (these may coincide with other elements' slots)
    1 <= L < ctx               S = ctx slots over "virtual" sub-frame segments:
                               slot k shows frame floor(k * L / S) (frames repeat)
    L < 1                      SefarError

Frame indices come back grouped by element in config order, time-ordered inside
each element, which is the clip layout every other module expects.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sefar_fast.errors import SefarError
from sefar_fast.ops.elements import check_elements, element_slots


def num_slots_for(num_frames: int, elements: Sequence[int]) -> int:
    """How many segments a clip of `num_frames` frames is cut into (see the module docstring)."""
    elems = check_elements(elements)
    if num_frames < 1:
        raise SefarError(f"a clip has {num_frames} frames; every clip needs at least 1 (re-run `sefar prepare`)")
    k = sum(elems)
    return k if num_frames >= k else max(elems[-1], num_frames)


def _segment_bounds(num_frames: int, num_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame of every segment. Python's round (half to even), as the released code."""
    r = num_frames / num_slots
    lo = np.array([round(k * r) for k in range(num_slots)], dtype=np.int64)
    hi = np.array([round((k + 1) * r) - 1 for k in range(num_slots)], dtype=np.int64)
    return lo, np.maximum(hi, lo)  # r >= 1 makes every segment non-empty; max() only guards the invariant


def _frames_from_slots(
    num_frames: int, num_slots: int, slots: np.ndarray, rng: np.random.Generator | None, position: float
) -> np.ndarray:
    if num_frames < num_slots:  # shorter than the context element: repeat frames evenly
        return (slots * num_frames) // num_slots
    lo, hi = _segment_bounds(num_frames, num_slots)
    lo, hi = lo[slots], hi[slots]
    if rng is not None:
        return rng.integers(lo, hi + 1)
    width = hi - lo + 1
    return lo + np.floor(position * width).astype(np.int64)


def _flat_slots(num_frames: int, elements: Sequence[int], rng: np.random.Generator | None) -> tuple[int, np.ndarray]:
    num_slots = num_slots_for(num_frames, elements)
    per_element = element_slots(elements, num_slots, rng)
    return num_slots, np.fromiter((s for el in per_element for s in el), dtype=np.int64)


def sample_frames(num_frames: int, elements: Sequence[int], rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices int64 [K] for one clip, grouped by element in config order.

    With `rng` (training) each slot draws a uniform frame of its segment
    [round(k*r), round((k+1)*r) - 1]; without it (eval) each slot takes its segment
    centre, frame lo + floor(width / 2), the same as ``eval_frames(..., 0, 1)``.
    """
    num_slots, slots = _flat_slots(num_frames, elements, rng)
    return _frames_from_slots(num_frames, num_slots, slots, rng, 0.5)


def eval_frames(num_frames: int, elements: Sequence[int], t_index: int, t_views: int) -> np.ndarray:
    """Deterministic frame indices int64 [K] for temporal view `t_index` of `t_views`.

    View t takes, in every segment, the frame at relative position (t + 0.5) / T:
    lo + floor((t + 0.5) / T * width). The T views are spread evenly through each
    segment; T = 1 gives the segment centres. Fallback slots of very short clips
    are the same in every view.
    """
    if not 0 <= t_index < t_views:
        raise SefarError(f"temporal view index {t_index} is outside 0..{t_views - 1}")
    num_slots, slots = _flat_slots(num_frames, elements, None)
    return _frames_from_slots(num_frames, num_slots, slots, None, (t_index + 0.5) / t_views)
