"""Training and evaluation views: host-side parameter drawing and the torch reference builder.

A *view* of a batch of decoded clips (uint8 ``[B, K, H0, W0, 3]``) is fully described
by a `ViewParams`: one square crop box per sample in source pixels, a horizontal
flip per sample, a frame order per sample (the temporal perturbation) and a keep
scale per (sample, channel) plane (channel dropout). All randomness is drawn here on
the host from one ``numpy.random.Generator``; `build_views` is then a pure function,
simple enough for a Triton kernel to reproduce.

Geometry. The released code resizes each frame's short side to s ~ U[256, 320] and
takes a random ``out_size`` crop. With stored frames whose short side plays the role
of ``ref_short`` (256), that is the zoom z = s / ref_short, and the crop covers
``out_size / z = out_size * ref_short / s`` source pixels: a box of that side at a
uniformly random (real-valued) position. The box never exceeds the frame's short
side (it is clamped to it when frames are stored smaller than the crop). Evaluation
boxes are the full short side, placed at the start / centre / end of the long side.

Resampling is bilinear with ``align_corners=False`` semantics, written out
explicitly (not grid_sample) so a kernel can copy it: output pixel i samples the
source at ``y0 + (i + 0.5) * h / S - 0.5``, clamped to [0, H0 - 1] (border
replication), interpolating between floor and floor + 1. No antialiasing, like the
released code's bilinear resize.

Perturbations (strong view frame orders). The paper's perturbations from earlier work act on
the video: on its K sampled frames f_1 .. f_K in time order (the slots of
`ops.elements.time_order`, interleaved across the elements), and the elements are then
read from the perturbed video, so frames move between elements. Only the paper's own
moderate perturbation acts inside the elements. On a sequence of n frames:

    reverse        time reversed
    shuffle        a uniformly random permutation (may be the identity)
    local-shuffle  a random offset o in {0, 1} (o = 0 when n = 2); swap every adjacent pair
                   (o + 2m, o + 2m + 1): each frame moves by at most one place and the order
                   always changes when n >= 2
    warp           temporal warping (SVFormer): positions take sorted(n draws with replacement
                   from 0..n-1), redrawn while that is the identity: a monotone resampling where
                   some frames repeat (slowed) and others are skipped (sped up)
    t-drop         slow: every frame after the first is dropped with probability 1/2 and
                   replaced by the last kept frame; if none was dropped, one random frame after
                   the first is. Monotone, always changes the sequence when n >= 2
    t-half         swap the halves: positions take [n//2, ..., n-1, 0, ..., n//2 - 1]

    mod            reverse inside every fine element; the context keeps its order (SeFAR)
    none           identity (spatial augmentation only)
    all-reverse, all-shuffle, local-shuffle, warp, t-drop, t-half
                   that operation on the whole video (the paper's Table 4 rows)
    element-reverse, element-shuffle, element-local-shuffle, element-warp, element-t-drop,
    element-t-half that operation inside every element, the context included (the layout
                   "grouped by element" keeps every frame in its element)

warp and t-drop are resamplings (repeats, no longer permutations); the others permute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from sefar_fast.errors import SefarError
from sefar_fast.ops.elements import time_order

SEQUENCE_OPS = ("reverse", "shuffle", "local-shuffle", "warp", "t-drop", "t-half")
VIDEO_PERTURBS = {f"all-{op}" if op in ("reverse", "shuffle") else op: op for op in SEQUENCE_OPS}
ELEMENT_PERTURBS = {f"element-{op}": op for op in SEQUENCE_OPS}
PERTURBS = ("mod", "none", *VIDEO_PERTURBS, *ELEMENT_PERTURBS)
KINDS = ("weak", "strong")


@dataclass
class ViewParams:
    """Everything random about one view of a batch (CPU tensors unless moved).

    box            float32 [B, 4]  (y0, x0, h, w) crop box in source pixels (h == w)
    flip           bool    [B]     mirror left-right after cropping
    order          int64   [B, K]  output frame k shows input slot order[b, k]; None = identity
    channel_scale  float32 [B, 3]  per (sample, channel) plane: 1, 0 (dropped) or 1/(1-p) (kept)
    out_size       int             output side S
    """

    box: torch.Tensor
    flip: torch.Tensor
    order: torch.Tensor | None
    channel_scale: torch.Tensor
    out_size: int

    def to(self, device) -> "ViewParams":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return ViewParams(move(self.box), move(self.flip), move(self.order), move(self.channel_scale), self.out_size)


# ----------------------------------------------------------------------------- frame orders


def _element_ranges(elements: Sequence[int]) -> list[tuple[int, int]]:
    starts = np.cumsum([0, *elements[:-1]])
    return [(int(s), int(n)) for s, n in zip(starts, elements)]


def _local_shuffle(n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.arange(n)
    offset = int(rng.integers(0, 2)) if n >= 3 else 0
    for i in range(offset, n - 1, 2):
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _warp(n: int, rng: np.random.Generator) -> np.ndarray:
    identity = np.arange(n)
    while True:
        out = np.sort(rng.integers(0, n, size=n))
        if n < 2 or not np.array_equal(out, identity):
            return out


def _t_drop(n: int, rng: np.random.Generator) -> np.ndarray:
    dropped = rng.random(n) < 0.5
    dropped[0] = False
    if n >= 2 and not dropped.any():
        dropped[int(rng.integers(1, n))] = True
    out = np.arange(n)
    for i in range(1, n):
        if dropped[i]:
            out[i] = out[i - 1]
    return out


def sequence_order(op: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (0..n-1) that operation `op` (one of SEQUENCE_OPS) shows, in output order."""
    if op == "reverse":
        return np.arange(n)[::-1].copy()
    if op == "shuffle":
        return rng.permutation(n)
    if op == "local-shuffle":
        return _local_shuffle(n, rng)
    if op == "warp":
        return _warp(n, rng)
    if op == "t-drop":
        return _t_drop(n, rng)
    if op == "t-half":
        return np.roll(np.arange(n), -(n // 2))
    raise ValueError(f"unknown sequence operation {op!r}")


def frame_orders(batch: int, elements: Sequence[int], perturb: str, rng: np.random.Generator) -> np.ndarray:
    """Frame order int64 [B, K] of a strong view: output position k shows input position order[b, k].

    Video perturbations reorder the K frames in time order (`time_order`) and put them back in
    the same layout; element perturbations and mod reorder each element's frames among themselves."""
    if perturb not in PERTURBS:
        raise SefarError(f"perturb={perturb!r} is not one of {', '.join(PERTURBS)}")
    k = sum(elements)
    rows = np.tile(np.arange(k), (batch, 1))
    if perturb in VIDEO_PERTURBS:
        in_time = time_order(elements)
        rank = np.argsort(in_time)  # time rank of each position
        for b in range(batch):
            rows[b] = in_time[sequence_order(VIDEO_PERTURBS[perturb], k, rng)[rank]]
        return rows
    ranges = _element_ranges(elements)
    if perturb == "mod":
        ranges = ranges[:-1]  # the fine elements; the context keeps its order
    elif perturb == "none":
        ranges = []
    op = ELEMENT_PERTURBS.get(perturb, "reverse")
    for b in range(batch):
        for start, n in ranges:
            rows[b, start : start + n] = start + sequence_order(op, n, rng)
    return rows


# ----------------------------------------------------------------------------- parameter drawing


def _train_boxes(batch, frame_hw, out_size, rng, scale_range, ref_short) -> np.ndarray:
    h0, w0 = frame_hw
    lo, hi = scale_range
    s = rng.uniform(lo, hi, size=batch)
    side = np.minimum(out_size * ref_short / s, min(h0, w0))
    y0 = rng.uniform(0.0, 1.0, size=batch) * (h0 - side)
    x0 = rng.uniform(0.0, 1.0, size=batch) * (w0 - side)
    return np.stack([y0, x0, side, side], axis=1)


def draw_view_params(
    batch: int,
    elements: Sequence[int],
    frame_hw: tuple[int, int],
    out_size: int,
    kind: str,
    rng: np.random.Generator,
    *,
    scale_range: tuple[float, float] = (256, 320),
    ref_short: float = 256,
    flip: bool | None = None,
    perturb: str = "mod",
    channel_drop: float = 0.2,
) -> ViewParams:
    """Draw a training view: `kind` "weak" (identity order, no channel drop) or "strong".

    flip=None means the kind's default: no flip for weak views (the unlabeled
    teacher input), flips for strong views; pass flip=True for labeled weak views.
    For "strong" views `perturb` sets the frame order and `channel_drop` = p zeroes
    whole (sample, channel) planes with probability p, survivors scaled by 1/(1-p).
    Draw order on `rng`: scale, y, x, flip, frame orders, channel keep.
    """
    if kind not in KINDS:
        raise SefarError(f"view kind {kind!r} is not one of {', '.join(KINDS)}")
    if not 0.0 <= channel_drop < 1.0:
        raise SefarError(f"channel_drop={channel_drop} must be in [0, 1)")
    if scale_range[0] <= 0 or scale_range[1] < scale_range[0]:
        raise SefarError(f"scale_range={list(scale_range)} must be two positive sizes, low <= high")
    strong = kind == "strong"
    flip = strong if flip is None else flip
    box = _train_boxes(batch, frame_hw, out_size, rng, scale_range, ref_short)
    flips = rng.random(batch) < 0.5 if flip else np.zeros(batch, dtype=bool)
    k = sum(elements)
    order = frame_orders(batch, elements, perturb, rng) if strong else np.tile(np.arange(k), (batch, 1))
    if strong and channel_drop > 0:
        scale = (rng.random((batch, 3)) >= channel_drop) / (1.0 - channel_drop)
    else:
        scale = np.ones((batch, 3))
    return ViewParams(
        box=torch.from_numpy(box.astype(np.float32)),
        flip=torch.from_numpy(flips),
        order=torch.from_numpy(order),
        channel_scale=torch.from_numpy(scale.astype(np.float32)),
        out_size=int(out_size),
    )


def eval_view_params(batch: int, frame_hw: tuple[int, int], out_size: int, s_index: int, s_views: int) -> ViewParams:
    """Deterministic spatial view `s_index` of `s_views`: the short side scaled to `out_size`, the
    square crop at the start / centre / end of the long side (left, centre, right for landscape
    frames; views spread evenly when s_views > 3); one view is the centre crop. No flip,
    identity order, no channel drop.
    """
    if not 0 <= s_index < s_views:
        raise SefarError(f"spatial view index {s_index} is outside 0..{s_views - 1}")
    h0, w0 = frame_hw
    side = float(min(h0, w0))
    slack = float(max(h0, w0)) - side
    offset = slack * s_index / (s_views - 1) if s_views > 1 else slack / 2
    y0, x0 = (offset, 0.0) if h0 > w0 else (0.0, offset)
    box = torch.tensor([[y0, x0, side, side]], dtype=torch.float32).repeat(batch, 1)
    return ViewParams(box, torch.zeros(batch, dtype=torch.bool), None, torch.ones(batch, 3), int(out_size))


# ----------------------------------------------------------------------------- the builder


def _axis_taps(start: torch.Tensor, length: torch.Tensor, out_size: int, size: int):
    """Bilinear taps along one axis: (lo index, hi index, hi weight), each [B, out_size]."""
    i = torch.arange(out_size, device=start.device, dtype=torch.float32)
    pos = start[:, None] + (i[None, :] + 0.5) * (length[:, None] / out_size) - 0.5
    pos = pos.clamp(0.0, size - 1)
    lo = pos.floor()
    weight = pos - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=size - 1)
    return lo, hi, weight


def build_views(
    frames_u8: torch.Tensor,
    params: ViewParams,
    mean: Sequence[float],
    std: Sequence[float],
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Views float [B, K, 3, S, S] of uint8 frames [B, K, H0, W0, 3], on the frames' device.

    Steps (each output value): take input frame ``order[b, k]``, sample the crop box
    bilinearly at S x S (S = params.out_size; mirrored when `flip`) with lerps written
    ``a * (1 - w) + b * w``, rows first then columns; then ``(x / 255 - mean) / std``
    and multiply by the channel scale. Arithmetic in float32, cast to `out_dtype` last.
    """
    return drop_channels(normalized_views(frames_u8, params, mean, std), params).to(out_dtype)


def drop_channels(views: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """Views [B, K, 3, S, S] times the channel scale of `params` (channel dropout)."""
    return views * params.channel_scale.to(views.device, torch.float32)[:, None, :, None, None]


def normalized_views(
    frames_u8: torch.Tensor, params: ViewParams, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """`build_views` before the channel scale: float32 [B, K, 3, S, S].

    The four bilinear corners of every output pixel are gathered from channel-first uint8
    planes, so every float operation runs on [B, K, 3, S, S]-shaped tensors with the pixels
    last (about twice as fast on a CPU as interpolating channels-last rows); each value is
    computed by the same operations in the same order as the docstring of `build_views` says.
    """
    if frames_u8.dtype != torch.uint8 or frames_u8.dim() != 5 or frames_u8.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [B, K, H, W, 3], got {frames_u8.dtype} {tuple(frames_u8.shape)}")
    b, k, h0, w0, _ = frames_u8.shape
    dev = frames_u8.device
    size = params.out_size
    box = params.box.to(dev, torch.float32)
    flip = params.flip.to(dev).bool()
    order = params.order.to(dev).long() if params.order is not None else torch.arange(k, device=dev).expand(b, k)

    y_lo, y_hi, wy = _axis_taps(box[:, 0], box[:, 2], size, h0)
    x_lo, x_hi, wx = _axis_taps(box[:, 1], box[:, 3], size, w0)
    # A flipped view reads its columns right to left.
    x_lo, x_hi, wx = (torch.where(flip[:, None], t.flip(1), t) for t in (x_lo, x_hi, wx))

    # Source rows y_lo and y_hi of every (clip, frame, channel) plane, then columns x_lo and x_hi of those.
    planes = frames_u8.permute(0, 1, 4, 2, 3).reshape(b * k * 3 * h0, w0)
    plane = ((torch.arange(b, device=dev)[:, None] * k + order)[:, :, None] * 3 + torch.arange(3, device=dev))
    row_index = plane[..., None] * h0 + torch.cat([y_lo, y_hi], 1)[:, None, None, :]  # [B, K, 3, 2S]
    rows = planes.index_select(0, row_index.reshape(-1)).view(b, k, 3, 2 * size, w0)
    cols = torch.cat([x_lo, x_hi], 1)[:, None, None, None, :].expand(b, k, 3, 2 * size, 2 * size)
    corners = rows.gather(4, cols).float()  # [B, K, 3, (lo, hi) rows, (lo, hi) columns]

    wy_ = wy[:, None, None, :, None]
    wx_ = wx[:, None, None, None, :]
    rows = corners[:, :, :, :size] * (1 - wy_) + corners[:, :, :, size:] * wy_  # [B, K, 3, S, 2S]
    pix = rows[..., :size] * (1 - wx_) + rows[..., size:] * wx_  # [B, K, 3, S, S]

    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=dev)[:, None, None]
    std_t = torch.as_tensor(std, dtype=torch.float32, device=dev)[:, None, None]
    return (pix / 255.0 - mean_t) / std_t


# ----------------------------------------------------------------------------- tube mixing


def mix_views(
    strong_dropped: torch.Tensor,
    strong_clean: torch.Tensor,
    tube_mask: torch.Tensor,
    partner: torch.Tensor,
    elements: Sequence[int],
    patch: int,
) -> torch.Tensor:
    """Tube-mixed clips [B, K, 3, S, S].

    Where element e's mask ``tube_mask[e]`` ([Hp, Wp] bool, one value per patch) is
    True a sample keeps its own channel-dropped strong view; elsewhere it shows its
    partner's clean strong view, ``strong_clean[partner[b]]``. The mask is repeated over
    the element's frames (a tube) and over the patch's pixels, so mixing whole patches
    here equals mixing tokens after a patch embedding.
    """
    b, k, c, s, s2 = strong_dropped.shape
    n_el, hp, wp = tube_mask.shape
    if n_el != len(elements) or sum(elements) != k:
        raise ValueError(f"{n_el} tube masks / elements {list(elements)} do not match K={k}")
    if hp * patch != s or wp * patch != s2:
        raise SefarError(f"crop size {s}x{s2} is not the patch grid {hp}x{wp} times patch {patch}")
    dev = strong_dropped.device
    counts = torch.tensor(list(elements), device=dev)
    per_frame = torch.repeat_interleave(tube_mask.to(dev).bool(), counts, dim=0)  # [K, Hp, Wp]
    pixel_mask = per_frame.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)  # [K, S, S]
    partner_view = strong_clean[partner.to(dev).long()]
    return torch.where(pixel_mask[None, :, None], strong_dropped, partner_view)
