"""Triton kernels: temporal attention within each temporal element, forward and backward.

What they compute is `ops.attention.element_attention`: qkv [B, K, L, 3D] (the temporal qkv
Linear's output, K frames of L token slots) -> out [B, K, L, D], for every (clip, slot, head)
softmax attention over the K frames, a frame seeing only the frames of its own element.

Those sequences are 2 to 8 frames long, thousands of them per block: the slowest case for
flash-attention kernels (a 64-row tile per sequence, mostly padding) and for SDPA's batched
matmuls. Here one program takes one head of BLOCK_L slots of one clip and holds the keys and
values of all K frames in registers, [BLOCK_L, K, head_dim]; for each query frame it forms the
K scores with a broadcast product (no tensor cores: K is far below their 16-row minimum),
masks the other elements' frames, and writes the output row. q, k and v are read where the
Linear wrote them and the output is written in the layout the projection reads, so nothing is
transposed. The backward program recomputes the probabilities (K x K per slot costs less than
storing them) and writes dq, dk, dv into one dqkv [B, K, L, 3D], the gradient of the qkv Linear's
output. Accumulation is in float32 for any input dtype.

`element_attention_triton` is a torch custom op (`sefar::element_attention`) with its backward
registered, so autograd, torch.compile (one opaque node, no graph break) and CUDA graphs
treat it like any other operator.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

# Elements of a register tile [BLOCK_L, K_PAD, HEAD_PAD] and warps per program. The forward holds
# two tiles (k, v), the backward four (k, v, dk, dv), besides the broadcast products. Sized for
# no spills at moderate register counts: ptxas -v for sm_90 (K = 8, head_dim 64, bf16) gives 64
# registers for the forward and 96 for the backward; doubling either tile costs 35 to 70 more
# registers per thread, so fewer programs fit on an SM (the backward spills at four times its tile).
FORWARD = dict(tile=2048, num_warps=8)
BACKWARD = dict(tile=512, num_warps=4)


@triton.jit
def _tile_offsets(b, slot_block, h, L, K: tl.constexpr, D: tl.constexpr, HD: tl.constexpr,
                  K_PAD: tl.constexpr, HD_PAD: tl.constexpr, BLOCK_L: tl.constexpr):
    """Token rows [BLOCK_L, K_PAD] of (clip b, frame, slot), head-dim columns, and the masks."""
    slot = slot_block * BLOCK_L + tl.arange(0, BLOCK_L)
    frame = tl.arange(0, K_PAD)
    col = h * HD + tl.arange(0, HD_PAD)
    slot_ok = slot < L
    col_ok = tl.arange(0, HD_PAD) < HD
    rows = (b * K + frame[None, :]).to(tl.int64) * L + slot[:, None]
    tile_ok = (slot_ok[:, None] & (frame < K)[None, :])[:, :, None] & col_ok[None, None, :]
    return slot, frame, col, slot_ok, col_ok, rows, tile_ok


@triton.jit
def _probabilities(q, k, element, element_i):
    """softmax over frames of q . k (q already scaled) [BLOCK_L, K_PAD], 0 outside element_i."""
    s = tl.sum(q[:, None, :] * k, axis=2)
    s = tl.where((element == element_i)[None, :], s, float("-inf"))
    p = tl.exp(s - tl.max(s, axis=1)[:, None])
    return p / tl.sum(p, axis=1)[:, None]


@triton.jit
def _forward_kernel(qkv_ptr, element_ptr, out_ptr, L, scale,
                    K: tl.constexpr, D: tl.constexpr, HD: tl.constexpr,
                    K_PAD: tl.constexpr, HD_PAD: tl.constexpr, BLOCK_L: tl.constexpr):
    b, slot_block, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot, frame, col, slot_ok, col_ok, rows, tile_ok = _tile_offsets(b, slot_block, h, L, K, D, HD, K_PAD,
                                                                     HD_PAD, BLOCK_L)
    element = tl.load(element_ptr + frame, mask=frame < K, other=-1)  # padding frames match no query
    kv = qkv_ptr + rows[:, :, None] * (3 * D) + col[None, None, :]
    k = tl.load(kv + D, mask=tile_ok, other=0.0).to(tl.float32)
    v = tl.load(kv + 2 * D, mask=tile_ok, other=0.0).to(tl.float32)
    row_ok = slot_ok[:, None] & col_ok[None, :]
    for i in tl.static_range(K):
        row = (b * K + i).to(tl.int64) * L + slot
        q = tl.load(qkv_ptr + row[:, None] * (3 * D) + col[None, :], mask=row_ok, other=0.0).to(tl.float32)
        p = _probabilities(q * scale, k, element, tl.load(element_ptr + i))
        out = tl.sum(p[:, :, None] * v, axis=1)
        tl.store(out_ptr + row[:, None] * D + col[None, :], out.to(out_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _backward_kernel(qkv_ptr, element_ptr, grad_ptr, dqkv_ptr, L, scale,
                     K: tl.constexpr, D: tl.constexpr, HD: tl.constexpr,
                     K_PAD: tl.constexpr, HD_PAD: tl.constexpr, BLOCK_L: tl.constexpr):
    b, slot_block, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot, frame, col, slot_ok, col_ok, rows, tile_ok = _tile_offsets(b, slot_block, h, L, K, D, HD, K_PAD,
                                                                     HD_PAD, BLOCK_L)
    element = tl.load(element_ptr + frame, mask=frame < K, other=-1)
    kv = qkv_ptr + rows[:, :, None] * (3 * D) + col[None, None, :]
    k = tl.load(kv + D, mask=tile_ok, other=0.0).to(tl.float32)
    v = tl.load(kv + 2 * D, mask=tile_ok, other=0.0).to(tl.float32)
    dk = tl.zeros([BLOCK_L, K_PAD, HD_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_L, K_PAD, HD_PAD], dtype=tl.float32)
    row_ok = slot_ok[:, None] & col_ok[None, :]
    for i in tl.static_range(K):
        row = (b * K + i).to(tl.int64) * L + slot
        q = tl.load(qkv_ptr + row[:, None] * (3 * D) + col[None, :], mask=row_ok, other=0.0).to(tl.float32) * scale
        g = tl.load(grad_ptr + row[:, None] * D + col[None, :], mask=row_ok, other=0.0).to(tl.float32)
        p = _probabilities(q, k, element, tl.load(element_ptr + i))
        dv += p[:, :, None] * g[:, None, :]
        dp = tl.sum(g[:, None, :] * v, axis=2)
        ds = p * (dp - tl.sum(p * dp, axis=1)[:, None])  # softmax backward: p (dp - sum_j p dp)
        dq = tl.sum(ds[:, :, None] * k, axis=1) * scale
        dk += ds[:, :, None] * q[:, None, :]
        tl.store(dqkv_ptr + row[:, None] * (3 * D) + col[None, :], dq.to(dqkv_ptr.dtype.element_ty), mask=row_ok)
    dkv = dqkv_ptr + rows[:, :, None] * (3 * D) + col[None, None, :]
    tl.store(dkv + D, dk.to(dqkv_ptr.dtype.element_ty), mask=tile_ok)
    tl.store(dkv + 2 * D, dv.to(dqkv_ptr.dtype.element_ty), mask=tile_ok)


def launch_config(frames: int, head_dim: int, tile: int) -> dict:
    """Compile-time sizes: frames and head_dim padded to powers of two, slots per program."""
    k_pad, hd_pad = triton.next_power_of_2(frames), triton.next_power_of_2(head_dim)
    return dict(K_PAD=k_pad, HD_PAD=hd_pad, BLOCK_L=max(1, tile // (k_pad * hd_pad)))


def _launch(kernel, config: dict, qkv: torch.Tensor, element: torch.Tensor, heads: int, *tensors) -> None:
    b, k, slots, three_d = qkv.shape
    d = three_d // 3
    sizes = launch_config(k, d // heads, config["tile"])
    grid = (b, triton.cdiv(slots, sizes["BLOCK_L"]), heads)
    kernel[grid](qkv, element, *tensors, slots, 1.0 / math.sqrt(d // heads), K=k, D=d, HD=d // heads,
                 num_warps=config["num_warps"], **sizes)


@torch.library.custom_op("sefar::element_attention", mutates_args=())
def element_attention_triton(qkv: torch.Tensor, element: torch.Tensor, heads: int) -> torch.Tensor:
    """`ops.attention.element_attention(qkv, element, heads)` by the Triton kernel (module docstring)."""
    qkv = qkv.contiguous()
    out = qkv.new_empty(qkv.shape[:-1] + (qkv.shape[-1] // 3,))
    _launch(_forward_kernel, FORWARD, qkv, element.contiguous(), heads, out)
    return out


@element_attention_triton.register_fake
def _(qkv: torch.Tensor, element: torch.Tensor, heads: int) -> torch.Tensor:
    return qkv.new_empty(qkv.shape[:-1] + (qkv.shape[-1] // 3,))


@torch.library.custom_op("sefar::element_attention_backward", mutates_args=())
def element_attention_backward(grad: torch.Tensor, qkv: torch.Tensor, element: torch.Tensor,
                               heads: int) -> torch.Tensor:
    """The gradient of `element_attention_triton` with respect to qkv, [B, K, L, 3D]."""
    qkv = qkv.contiguous()
    dqkv = torch.empty_like(qkv)
    _launch(_backward_kernel, BACKWARD, qkv, element.contiguous(), heads, grad.contiguous(), dqkv)
    return dqkv


@element_attention_backward.register_fake
def _(grad: torch.Tensor, qkv: torch.Tensor, element: torch.Tensor, heads: int) -> torch.Tensor:
    return torch.empty_like(qkv)


def _setup_context(ctx, inputs, output) -> None:
    qkv, element, heads = inputs
    ctx.save_for_backward(qkv, element)
    ctx.heads = heads


def _backward(ctx, grad):
    qkv, element = ctx.saved_tensors
    return element_attention_backward(grad, qkv, element, ctx.heads), None, None


element_attention_triton.register_autograd(_backward, setup_context=_setup_context)
