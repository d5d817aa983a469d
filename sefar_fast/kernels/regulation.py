"""Triton kernel: Monte-Carlo head dropout + Adaptive Regulation in one launch.

Input: the teacher's fused feature [B, D] (float32), the head's classifier weight
[C, D] and bias [C]. One program per sample b:

1. draws the U keep masks of that sample in registers (Philox keyed by
   (seed, u, b, feature), bit-identical to `kernels.philox.head_keep_masks`) and
   forms the U dropped features X [U, D];
2. pass 1 over C in blocks: logits = X W^T + bias (fp32 IEEE dot), online softmax
   statistics per sample u (running max m_u and sum of exponentials l_u);
3. pass 2 over C in blocks: probabilities exp(logit - m_u) / l_u, their mean and
   unbiased std over u (two-pass, in registers; U = 1 gives std 0), written to
   mean/std [B, C]; a running first-index argmax of the mean keeps p*, its class
   and sigma*;
4. tau1, tau2, eta by the formulas of `train.regulation` (modes adaptive /
   threshold / none).

Nothing of size U x B x C reaches device memory; per sample the kernel reads W
twice (from L2 after the first program) and writes 2C + 6 values.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from sefar_fast.kernels.philox import UNIFORM_BITS, check_seed
from sefar_fast.train.regulation import EPSILON, REGULATIONS, SIGMA_SCALE, Regulation

MIN_DOT = 16  # tl.dot needs every dimension >= 16


@triton.jit
def _head_logits(x, w_ptr, bias_ptr, c, D: tl.constexpr, C):
    """logits [BLOCK_U, BLOCK_C] of the dropped features x [BLOCK_U, D] for classes c; -inf past C."""
    d = tl.arange(0, D)
    valid = c < C
    w = tl.load(w_ptr + c[:, None] * D + d[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=valid, other=0.0).to(tl.float32)
    logits = tl.dot(x, tl.trans(w), input_precision="ieee") + bias[None, :]
    return tl.where(valid[None, :], logits, float("-inf"))


@triton.jit
def _regulate_kernel(
    feat_ptr, w_ptr, bias_ptr, mean_ptr, std_ptr, label_ptr, stats_ptr, masks_ptr,
    seed, B, C, U, p_drop, keep_scale, threshold,
    D: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_C: tl.constexpr, MODE: tl.constexpr,
    WRITE_MASKS: tl.constexpr, UNIFORM_SHIFT: tl.constexpr, UNIFORM_STEP: tl.constexpr,
):
    b = tl.program_id(0)
    u = tl.arange(0, BLOCK_U)
    d = tl.arange(0, D)
    row_ok = u < U

    # Keep masks: counter (feature, b, u, 0), first Philox word -> 24-bit uniform.
    zero = tl.zeros([BLOCK_U, D], dtype=tl.int32)
    words, _, _, _ = tl.philox(seed, d[None, :] + zero, b + zero, u[:, None] + zero, zero)
    uniform = (words >> UNIFORM_SHIFT).to(tl.float32) * UNIFORM_STEP
    keep = tl.where(uniform >= p_drop, keep_scale, 0.0)
    if WRITE_MASKS:
        offs = (u[:, None] * B + b).to(tl.int64) * D + d[None, :]
        tl.store(masks_ptr + offs, keep, mask=row_ok[:, None])
    feat = tl.load(feat_ptr + b.to(tl.int64) * D + d)
    x = feat[None, :] * keep

    # Pass 1: per-sample softmax normalisers (online over class blocks).
    m = tl.full([BLOCK_U], float("-inf"), dtype=tl.float32)
    l = tl.zeros([BLOCK_U], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        logits = _head_logits(x, w_ptr, bias_ptr, c0 + tl.arange(0, BLOCK_C), D, C)
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), axis=1)
        m = m_new

    # Pass 2: probabilities, their mean and unbiased std over u, running argmax of the mean.
    inv_u = 1.0 / U.to(tl.float32)
    inv_dof = 1.0 / tl.maximum(U - 1, 1).to(tl.float32)
    best_p = -1.0
    best_c = 0
    best_sigma = 0.0
    row_base = b.to(tl.int64) * C
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        valid = c < C
        logits = _head_logits(x, w_ptr, bias_ptr, c, D, C)
        probs = tl.exp(logits - m[:, None]) / l[:, None]
        probs = tl.where(row_ok[:, None], probs, 0.0)
        mean = tl.sum(probs, axis=0) * inv_u
        dev = tl.where(row_ok[:, None], probs - mean[None, :], 0.0)
        std = tl.sqrt(tl.sum(dev * dev, axis=0) * inv_dof)
        tl.store(mean_ptr + row_base + c, mean, mask=valid)
        tl.store(std_ptr + row_base + c, std, mask=valid)
        block_mean = tl.where(valid, mean, -1.0)
        block_p = tl.max(block_mean, axis=0)
        block_c = tl.argmax(block_mean, axis=0, tie_break_left=True)
        block_sigma = tl.sum(tl.where(c == c0 + block_c, std, 0.0), axis=0)
        better = block_p > best_p  # strict: an earlier block wins ties, like a first-index argmax
        best_c = tl.where(better, c0 + block_c, best_c)
        best_sigma = tl.where(better, block_sigma, best_sigma)
        best_p = tl.where(better, block_p, best_p)

    tau1 = 2.0 / (1.0 + tl.exp(-(tl.exp(best_p) - 2.718281828459045)))
    tau2 = 2.0 * (1.0 / (1.0 + tl.exp(-1.0 / (20.0 * best_sigma + 1e-9))) - 0.5)
    if MODE == 0:
        eta = tau1 * tau2
    elif MODE == 1:
        eta = tl.where(best_p >= threshold, 1.0, 0.0)
    else:
        eta = 1.0
    tl.store(label_ptr + b, best_c.to(tl.int64))
    tl.store(stats_ptr + 0 * B + b, best_p)
    tl.store(stats_ptr + 1 * B + b, best_sigma)
    tl.store(stats_ptr + 2 * B + b, tau1)
    tl.store(stats_ptr + 3 * B + b, tau2)
    tl.store(stats_ptr + 4 * B + b, eta)


def regulate_head_triton(
    feat: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    seed: int,
    samples: int,
    *,
    p: float = 0.5,
    mode: str = "adaptive",
    threshold: float = 0.95,
    return_masks: bool = False,
):
    """`Regulation` of U head-dropout samples (see the module docstring); with `return_masks`
    also the keep masks [U, B, D] the kernel drew (a test aid: an extra write of U*B*D floats)."""
    assert SIGMA_SCALE == 20.0 and EPSILON == 1e-9, "constants are written into the kernel"
    b, d = feat.shape
    c = weight.shape[0]
    dev = feat.device
    feat = feat.detach().float().contiguous()
    weight = weight.detach().contiguous()
    bias = torch.zeros(c, device=dev) if bias is None else bias.detach().contiguous()
    mean = torch.empty((b, c), device=dev, dtype=torch.float32)
    std = torch.empty((b, c), device=dev, dtype=torch.float32)
    label = torch.empty(b, device=dev, dtype=torch.int64)
    stats = torch.empty((5, b), device=dev, dtype=torch.float32)
    masks = torch.empty((samples, b, d), device=dev, dtype=torch.float32) if return_masks else stats
    block_u = max(MIN_DOT, triton.next_power_of_2(samples))
    block_c = max(MIN_DOT, min(64, triton.next_power_of_2(c)))
    _regulate_kernel[(b,)](
        feat, weight, bias, mean, std, label, stats, masks,
        check_seed(seed), b, c, samples, float(p), 1.0 / (1.0 - p), float(threshold),
        D=d, BLOCK_U=block_u, BLOCK_C=block_c, MODE=REGULATIONS.index(mode), WRITE_MASKS=return_masks,
        UNIFORM_SHIFT=32 - UNIFORM_BITS, UNIFORM_STEP=2.0**-UNIFORM_BITS, num_warps=4,
    )
    p_star, sigma_star, tau1, tau2, eta = stats.unbind(0)
    reg = Regulation(label, p_star, sigma_star, tau1, tau2, eta, mean, std)
    return (reg, masks) if return_masks else reg


assert math.isclose(math.e, 2.718281828459045)
