"""Triton kernel: Monte-Carlo head dropout + Adaptive Regulation in one launch.

Input: the teacher's fused feature [B, D] (float32), the head's classifier weight
[C, D] and bias [C]. One program per sample b:

1. draws the U keep masks of that sample (Philox keyed by (seed, u, b, feature),
   bit-identical to `kernels.philox.head_keep_masks`) and writes the U dropped
   features X [U, D] to its own scratch rows (U x B x D floats in all, L2-resident),
   from which the dots stream D in chunks (whole rows per thread would spill);
2. pass 1 over C in blocks: logits = X W^T + bias (fp32 IEEE dot), online softmax
   statistics per sample u (running max m_u and sum of exponentials l_u), logits
   recomputed in pass 2 rather than stored;
3. pass 2 over C in blocks: probabilities exp(logit - m_u) / l_u, their mean and
   unbiased std over u (two-pass, in registers; U = 1 gives std 0), written to
   mean/std [B, C]; a running first-index argmax of the mean keeps p*, its class
   and sigma*;
4. tau1, tau2, eta by the formulas of `ops.regulation` (modes adaptive /
   threshold / none).

Nothing of size U x B x C reaches device memory; per sample the kernel reads W
twice (from L2 after the first program) and writes 2C + 6 values.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sefar_fast.kernels.philox import UNIFORM_BITS, check_seed
from sefar_fast.ops.regulation import EPSILON, REGULATIONS, SIGMA_SCALE, Regulation

MIN_DOT = 16  # tl.dot needs every dimension >= 16
NUM_WARPS = 8  # with BLOCK_U = 16, BLOCK_C = 32: about 90 registers, no spills (sm_90)


@triton.jit
def _head_logits(x_ptr, w_ptr, bias_ptr, c, C, D: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_D: tl.constexpr):
    """logits [BLOCK_U, BLOCK_C] of the dropped features x [BLOCK_U, D] (at x_ptr) for classes c; -inf past C.

    The contraction runs over D in BLOCK_D chunks (fp32 IEEE dots), so no thread holds whole rows."""
    u = tl.arange(0, BLOCK_U)
    valid = c < C
    acc = tl.zeros([BLOCK_U, c.shape[0]], dtype=tl.float32)
    for d0 in tl.static_range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(x_ptr + u[:, None] * D + d[None, :])
        w = tl.load(w_ptr + c[:, None] * D + d[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
        acc = tl.dot(x, tl.trans(w), acc, input_precision="ieee")
    bias = tl.load(bias_ptr + c, mask=valid, other=0.0).to(tl.float32)
    return tl.where(valid[None, :], acc + bias[None, :], float("-inf"))


# The MC seed changes every step. Triton specialises integer arguments on divisibility by 16,
# so without this a seed that happens to be a multiple of 16 builds the kernel a second time,
# a one-off stall of about 2.5 s (seen as one slow repetition in `sefar bench` on the H200).
@triton.jit(do_not_specialize=["seed"])
def _regulate_kernel(
    feat_ptr, w_ptr, bias_ptr, mean_ptr, std_ptr, label_ptr, stats_ptr, masks_ptr, scratch_ptr,
    seed, B, U, inv_u, inv_dof, p_drop, keep_scale, threshold,
    # C is a compile-time constant (one build per class count, i.e. per model) because the
    # class loops `range(0, C, BLOCK_C)` over a runtime C break Triton 3.6's interpreter
    # under numpy 2 (a 1-element array has no __index__), seen on the H200 machine 2026-11-28.
    C: tl.constexpr, D: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
    MODE: tl.constexpr,
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
    # The dropped features go through this program's scratch rows (L1/L2-resident) so the
    # dots below can stream them in chunks.
    x_ptr = scratch_ptr + b.to(tl.int64) * BLOCK_U * D
    tl.store(x_ptr + u[:, None] * D + d[None, :], feat[None, :] * keep)
    tl.debug_barrier()

    # Pass 1: per-sample softmax normalisers (online over class blocks).
    m = tl.full([BLOCK_U], float("-inf"), dtype=tl.float32)
    l = tl.zeros([BLOCK_U], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        logits = _head_logits(x_ptr, w_ptr, bias_ptr, c0 + tl.arange(0, BLOCK_C), C, D, BLOCK_U, BLOCK_D)
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), axis=1)
        m = m_new

    # Pass 2: probabilities, their mean and unbiased std over u, running argmax of the mean.
    best_p = tl.full([], -1.0, tl.float32)
    best_c = tl.full([], 0, tl.int32)
    best_sigma = tl.full([], 0.0, tl.float32)
    row_base = b.to(tl.int64) * C
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        valid = c < C
        logits = _head_logits(x_ptr, w_ptr, bias_ptr, c, C, D, BLOCK_U, BLOCK_D)
        probs = tl.exp(logits - m[:, None]) / l[:, None]
        probs = tl.where(row_ok[:, None], probs, 0.0)
        mean = tl.sum(probs, axis=0) * inv_u
        dev = tl.where(row_ok[:, None], probs - mean[None, :], 0.0)
        std = tl.sqrt_rn(tl.sum(dev * dev, axis=0) * inv_dof)
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
        eta = tau1 * 0.0 + 1.0
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
    also the keep masks [U, B, D] the kernel drew (a test aid: an extra write of U*B*D floats).
    Needs D a power of two >= 16 (the fused feature is 256)."""
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
    block_c = max(MIN_DOT, min(32, triton.next_power_of_2(c)))
    scratch = torch.empty((b, block_u, d), device=dev, dtype=torch.float32)
    _regulate_kernel[(b,)](
        feat, weight, bias, mean, std, label, stats, masks, scratch,
        check_seed(seed), b, samples, 1.0 / samples, 1.0 / max(samples - 1, 1),  # 1/U, 1/(U-1) (U = 1: std 0)
        float(p), 1.0 / (1.0 - p), float(threshold),
        C=c, D=d, BLOCK_U=block_u, BLOCK_C=block_c, BLOCK_D=min(d, 64), MODE=REGULATIONS.index(mode),
        WRITE_MASKS=return_masks, UNIFORM_SHIFT=32 - UNIFORM_BITS, UNIFORM_STEP=2.0**-UNIFORM_BITS,
        num_warps=NUM_WARPS,
    )
    p_star, sigma_star, tau1, tau2, eta = stats.unbind(0)
    reg = Regulation(label, p_star, sigma_star, tau1, tau2, eta, mean, std)
    return (reg, masks) if return_masks else reg

