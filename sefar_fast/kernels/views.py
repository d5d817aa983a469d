"""Triton kernels: the view builder, and the fused strong + tube-mixed view builder.

Both reproduce `ops.views.build_views` exactly as written there: output pixel
(i, j) of frame k samples input frame ``order[b, k]`` at
``y0 + (i + 0.5) * h / S - 0.5`` (and the same for columns, read right to left when
flipped), clamped to the frame, bilinear with ``a * (1 - w) + b * w`` lerps (rows
first), then ``(x / 255 - mean) / std`` times the (sample, channel) scale, float32
arithmetic, one cast to the output dtype at the store.

Launch grid: one program per (b * K + k, row block), row blocks of a frame adjacent
(they share source rows in the cache), flattened to one axis. A program holds a
[BLOCK_R, BLOCK_S] tile (BLOCK_S = S rounded up to a power of two: whole output rows,
so stores are contiguous runs of S values) and loops over the 3 channels; the
bilinear taps are computed once per row and once per column. The uint8 source is
read through the cache (the 4 taps of neighbouring pixels overlap) and every output
value is written once.

The fused kernel writes, from the strong frames of the batch, the channel-dropped
strong view and the tube-mixed view in the same pass, reading each source byte
once. Mixed clip b shows its own dropped pixel where the tube mask of frame k's
element is set and its partner's clean pixel elsewhere. As the partners form a
permutation, the program of sample b writes its dropped pixel to strong[b] and
(under the mask) to mixed[b], and its clean pixel (off the mask) to mixed[b'] for
the one b' with partner[b'] = b: every mixed value is written exactly once and no
program samples another sample's frames.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
import triton
import triton.language as tl

from sefar_fast.ops.views import ViewParams

TILE = 512  # output values per channel per program: 4 per thread at 4 warps (sm_90: 56 and 76 registers, no spills)


@triton.jit
def _axis_taps(start, length, idx, S, size):
    """Bilinear taps along one axis for output positions idx: (lo, hi, hi weight)."""
    pos = start + (idx.to(tl.float32) + 0.5) * (length / S) - 0.5
    pos = tl.minimum(tl.maximum(pos, 0.0), (size - 1) * 1.0)
    lo_f = tl.floor(pos)
    weight = pos - lo_f
    lo = lo_f.to(tl.int32)
    hi = tl.minimum(lo + 1, size - 1)
    return lo, hi, weight


@triton.jit
def _view_taps(box_ptr, flip_ptr, b, rows, cols, S, H0, W0):
    """Row and column taps of sample b's view for output rows `rows` and columns `cols`."""
    y0 = tl.load(box_ptr + b * 4 + 0)
    x0 = tl.load(box_ptr + b * 4 + 1)
    h = tl.load(box_ptr + b * 4 + 2)
    w = tl.load(box_ptr + b * 4 + 3)
    flip = tl.load(flip_ptr + b) != 0
    src_cols = tl.where(flip, S - 1 - cols, cols)
    y_lo, y_hi, wy = _axis_taps(y0, h, rows, S, H0)
    x_lo, x_hi, wx = _axis_taps(x0, w, src_cols, S, W0)
    return y_lo, y_hi, wy, x_lo, x_hi, wx


@triton.jit
def _bilinear(frame_ptr, y_lo, y_hi, wy, x_lo, x_hi, wx, W0, c, mask):
    """Channel c of the bilinear samples [R, S] (float32, 0..255) of one uint8 HWC frame."""
    top = y_lo[:, None] * W0
    bottom = y_hi[:, None] * W0
    left = x_lo[None, :]
    right = x_hi[None, :]
    tl_ = tl.load(frame_ptr + (top + left) * 3 + c, mask=mask, other=0).to(tl.float32)
    bl_ = tl.load(frame_ptr + (bottom + left) * 3 + c, mask=mask, other=0).to(tl.float32)
    tr_ = tl.load(frame_ptr + (top + right) * 3 + c, mask=mask, other=0).to(tl.float32)
    br_ = tl.load(frame_ptr + (bottom + right) * 3 + c, mask=mask, other=0).to(tl.float32)
    wy2 = wy[:, None]
    wx2 = wx[None, :]
    col_lo = tl_ * (1 - wy2) + bl_ * wy2
    col_hi = tr_ * (1 - wy2) + br_ * wy2
    return col_lo * (1 - wx2) + col_hi * wx2


@triton.jit
def _frame_ptr(frames_ptr, order_ptr, b, k, K, H0, W0, stride_b):
    """Pointer to input frame order[b, k] of sample b (int64 offsets: big batches exceed 2**31 bytes).
    Samples are `stride_b` bytes apart, so a view like loader_frames[:, v] needs no copy."""
    src = tl.load(order_ptr + b * K + k)
    return frames_ptr + b.to(tl.int64) * stride_b + src.to(tl.int64) * H0 * W0 * 3


@triton.jit
def _program_block(K, S, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """This program's output frame (b, k) and its block of BLOCK_R rows x all S columns."""
    row_blocks = tl.cdiv(S, BLOCK_R)
    bk = tl.program_id(0) // row_blocks
    rows = (tl.program_id(0) % row_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_S)
    inside = (rows[:, None] < S) & (cols[None, :] < S)
    return bk, bk // K, bk % K, rows, cols, inside


@triton.jit
def _views_kernel(
    frames_ptr, box_ptr, flip_ptr, order_ptr, scale_ptr, norm_ptr, out_ptr,
    K, H0, W0, S, stride_b,
    BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
):
    bk, b, k, rows, cols, inside = _program_block(K, S, BLOCK_R, BLOCK_S)
    y_lo, y_hi, wy, x_lo, x_hi, wx = _view_taps(box_ptr, flip_ptr, b, rows, cols, S, H0, W0)
    frame = _frame_ptr(frames_ptr, order_ptr, b, k, K, H0, W0, stride_b)
    out_offs = rows[:, None] * S + cols[None, :]
    for c in tl.static_range(3):
        pix = _bilinear(frame, y_lo, y_hi, wy, x_lo, x_hi, wx, W0, c, inside)
        value = (pix / 255.0 - tl.load(norm_ptr + c)) / tl.load(norm_ptr + 3 + c)
        value = value * tl.load(scale_ptr + b * 3 + c)
        plane = out_ptr + (bk.to(tl.int64) * 3 + c) * S * S
        tl.store(plane + out_offs, value.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _strong_mixed_kernel(
    frames_ptr, box_ptr, flip_ptr, order_ptr, scale_ptr, norm_ptr, inverse_ptr, frame_el_ptr, tube_ptr,
    strong_ptr, mixed_ptr,
    K, H0, W0, S, stride_b, PATCH, HP, WP,
    BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
):
    bk, b, k, rows, cols, inside = _program_block(K, S, BLOCK_R, BLOCK_S)
    y_lo, y_hi, wy, x_lo, x_hi, wx = _view_taps(box_ptr, flip_ptr, b, rows, cols, S, H0, W0)
    frame = _frame_ptr(frames_ptr, order_ptr, b, k, K, H0, W0, stride_b)
    # Frame k's element tube: set -> mixed[b] shows b's own dropped pixel; clear -> it shows its
    # partner's clean pixel, so this clean pixel of b goes to mixed[inverse[b]] (partner[inverse[b]] == b).
    el = tl.load(frame_el_ptr + k)
    tube = tl.load(tube_ptr + el * HP * WP + (rows[:, None] // PATCH) * WP + cols[None, :] // PATCH,
                   mask=inside, other=0)
    own = inside & (tube != 0)
    lent = inside & (tube == 0)
    borrower = tl.load(inverse_ptr + b)

    out_offs = rows[:, None] * S + cols[None, :]
    for c in tl.static_range(3):
        pix = _bilinear(frame, y_lo, y_hi, wy, x_lo, x_hi, wx, W0, c, inside)
        clean = (pix / 255.0 - tl.load(norm_ptr + c)) / tl.load(norm_ptr + 3 + c)
        strong = clean * tl.load(scale_ptr + b * 3 + c)
        plane = (bk.to(tl.int64) * 3 + c) * S * S
        tl.store(strong_ptr + plane + out_offs, strong.to(strong_ptr.dtype.element_ty), mask=inside)
        tl.store(mixed_ptr + plane + out_offs, strong.to(mixed_ptr.dtype.element_ty), mask=own)
        lent_plane = ((borrower * K + k).to(tl.int64) * 3 + c) * S * S
        tl.store(mixed_ptr + lent_plane + out_offs, clean.to(mixed_ptr.dtype.element_ty), mask=lent)


def _blocks(size: int) -> tuple[int, int]:
    block_s = triton.next_power_of_2(size)
    return max(1, min(TILE // block_s, triton.next_power_of_2(size))), block_s


def _upload(dev: torch.device, parts: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """Small per-call tensors on `dev` as flat `dtype` arrays. Host tensors bound for CUDA go as one
    pinned buffer in one asynchronous copy, so building views never waits for the GPU."""
    if dev.type == "cuda" and all(p.device.type == "cpu" for p in parts):
        host = torch.cat([p.reshape(-1).to(dtype) for p in parts]).pin_memory()
        return list(host.to(dev, non_blocking=True).split([p.numel() for p in parts]))
    return [p.reshape(-1).to(dev, dtype).contiguous() for p in parts]


@functools.lru_cache(maxsize=64)
def _constant(device: torch.device, dtype: torch.dtype, values: tuple) -> torch.Tensor:
    """A small constant of a run (normalisation, element of each frame) on `device`, uploaded once."""
    return torch.tensor(values, dtype=dtype).to(device)


def _view_tensors(frames: torch.Tensor, params: ViewParams, mean, std, extra_ints=()):
    """(box, scale) float32, norm (mean then std, float32) and (flip, order, *extra_ints) int32 on the
    frames' device. Parameters already there in those dtypes (`train.draws`) are used as they are."""
    b, k = frames.shape[:2]
    order = params.order if params.order is not None else torch.arange(k, device=frames.device).expand(b, k)
    floats = _upload(frames.device, [params.box, params.channel_scale], torch.float32)
    norm = _constant(frames.device, torch.float32, (*map(float, mean), *map(float, std)))
    ints = _upload(frames.device, [params.flip, order, *extra_ints], torch.int32)
    return (*floats, norm), ints


def dense_samples(frames_u8: torch.Tensor) -> torch.Tensor:
    """`frames_u8` itself when each sample's [K, H0, W0, 3] block is contiguous (any sample stride,
    e.g. loader_frames[:, v]), else a contiguous copy."""
    k, h0, w0, c = frames_u8.shape[1:]
    if frames_u8.stride()[1:] == (h0 * w0 * c, w0 * c, c, 1):
        return frames_u8
    return frames_u8.contiguous()


def prepare_views(frames_u8: torch.Tensor, params: ViewParams, mean: Sequence[float],
                  std: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Upload the view parameters; return ``launch(out)`` that runs the view kernel into `out`.
    `frames_u8` must satisfy `dense_samples`."""
    b, k, h0, w0, _ = frames_u8.shape
    size = params.out_size
    (box, scale, norm), (flip, order) = _view_tensors(frames_u8, params, mean, std)
    block_r, block_s = _blocks(size)
    grid = (triton.cdiv(size, block_r) * b * k,)

    def launch(out: torch.Tensor) -> torch.Tensor:
        _views_kernel[grid](frames_u8, box, flip, order, scale, norm, out, k, h0, w0, size, frames_u8.stride(0),
                            BLOCK_R=block_r, BLOCK_S=block_s, num_warps=4)
        return out

    return launch


def build_views_triton(frames_u8: torch.Tensor, params: ViewParams, mean: Sequence[float], std: Sequence[float],
                       out: torch.Tensor) -> torch.Tensor:
    """Write the views of `frames_u8` [B, K, H0, W0, 3] into the contiguous `out` [B, K, 3, S, S]."""
    return prepare_views(dense_samples(frames_u8), params, mean, std)(out)


def prepare_strong_mixed(frames_u8: torch.Tensor, params: ViewParams, mean: Sequence[float], std: Sequence[float],
                         tube_mask: torch.Tensor, partner: torch.Tensor, elements: Sequence[int],
                         patch: int) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Upload the parameters; return ``launch(out_strong, out_mixed)`` that runs the fused kernel
    (`frames_u8` must satisfy `dense_samples`).

    `partner` must be a permutation of 0..B-1 (each sample lends its clean view to exactly one
    other): the kernel writes sample b's clean pixels into the mixed view of partner^-1(b)."""
    b, k, h0, w0, _ = frames_u8.shape
    size = params.out_size
    frame_el = _constant(frames_u8.device, torch.int32, tuple(e for e, n in enumerate(elements) for _ in range(n)))
    partner = partner.long()
    inverse = torch.empty_like(partner).index_copy_(0, partner, torch.arange(b, device=partner.device))
    (box, scale, norm), (flip, order, inverse, frame_el, tube) = _view_tensors(
        frames_u8, params, mean, std, extra_ints=(inverse, frame_el, tube_mask))
    hp, wp = tube_mask.shape[1:]
    block_r, block_s = _blocks(size)
    grid = (triton.cdiv(size, block_r) * b * k,)

    def launch(out_strong: torch.Tensor, out_mixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _strong_mixed_kernel[grid](frames_u8, box, flip, order, scale, norm, inverse, frame_el, tube,
                                   out_strong, out_mixed, k, h0, w0, size, frames_u8.stride(0), patch, hp, wp,
                                   BLOCK_R=block_r, BLOCK_S=block_s, num_warps=4)
        return out_strong, out_mixed

    return launch


def build_strong_mixed_triton(frames_u8: torch.Tensor, params: ViewParams, mean: Sequence[float],
                              std: Sequence[float], tube_mask: torch.Tensor, partner: torch.Tensor,
                              elements: Sequence[int], patch: int, out_strong: torch.Tensor,
                              out_mixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write the dropped strong views and the tube-mixed views into `out_strong`, `out_mixed`
    (see `prepare_strong_mixed`)."""
    return prepare_strong_mixed(dense_samples(frames_u8), params, mean, std, tube_mask, partner, elements, patch)(
        out_strong, out_mixed)
