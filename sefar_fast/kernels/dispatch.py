"""Dispatchers: the Triton kernels on CUDA, the torch references everywhere else.

``SEFAR_KERNELS`` picks the implementation for every call:

    auto (default)  Triton for CUDA tensors when triton imports, torch otherwise
    torch           always the torch reference
    triton          always Triton: CUDA tensors, or CPU tensors under TRITON_INTERPRET=1

Both paths take and return the same things, so callers never branch. The torch
path of `regulate_head` draws its masks with `kernels.philox.head_keep_masks`, the
stream the kernel draws in registers, so a seed means the same masks on either path.
Triton (and with it the kernel modules) is imported only when a Triton path runs.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Sequence

import numpy as np
import torch

from sefar_fast.errors import SefarError
from sefar_fast.kernels.philox import check_seed, head_keep_masks
from sefar_fast.ops import attention as ref_attention
from sefar_fast.ops import views as ref_views
from sefar_fast.ops.regulation import REGULATIONS, Regulation, regulate

ENV = "SEFAR_KERNELS"
CHOICES = ("auto", "torch", "triton")
MAX_TRITON_SAMPLES = 32  # the kernel keeps all U dropped features of a sample in registers
# The temporal attention kernel keeps a block of every frame's keys and values in registers.
MAX_TRITON_FRAMES = 16
MAX_TRITON_HEAD_DIM = 128


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def kernel_backend(device: torch.device | str) -> str:
    """"triton" or "torch" for tensors on `device`, following ``SEFAR_KERNELS`` (module docstring)."""
    device = torch.device(device)
    raw = os.environ.get(ENV, "auto")
    choice = raw.strip().lower() or "auto"
    if choice not in CHOICES:
        raise SefarError(f"{ENV}={raw!r} is not one of {', '.join(CHOICES)}")
    if choice == "torch":
        return "torch"
    has_triton = _has_triton()
    if choice == "triton":
        if not has_triton:
            raise SefarError(f"{ENV}=triton but triton is not installed: pip install triton, or unset {ENV}")
        if device.type != "cuda" and not _interpreting():
            raise SefarError(f"{ENV}=triton needs CUDA tensors (or TRITON_INTERPRET=1 for {device.type} tensors)")
        return "triton"
    return "triton" if device.type == "cuda" and has_triton else "torch"


@functools.lru_cache(maxsize=1)
def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def _default_dtype(device: torch.device, out_dtype: torch.dtype | None) -> torch.dtype:
    if out_dtype is not None:
        return out_dtype
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _check_frames(frames_u8: torch.Tensor) -> None:
    if frames_u8.dtype != torch.uint8 or frames_u8.dim() != 5 or frames_u8.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [B, K, H, W, 3], got {frames_u8.dtype} {tuple(frames_u8.shape)}")


def _output(out: torch.Tensor | None, shape: tuple, dtype: torch.dtype, device, name: str) -> torch.Tensor:
    """A fresh output, or the caller's (e.g. a slice of the student's input batch), checked."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(out.shape) != shape or not out.is_contiguous() or out.device != torch.device(device):
        raise ValueError(f"{name} must be a contiguous {list(shape)} tensor on {device}, "
                         f"got {tuple(out.shape)} on {out.device}")
    return out


def build_views(
    frames_u8: torch.Tensor,
    params: ref_views.ViewParams,
    mean: Sequence[float],
    std: Sequence[float],
    out_dtype: torch.dtype | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Views [B, K, 3, S, S] of uint8 frames [B, K, H0, W0, 3] (`ops.views.build_views`).

    out_dtype None: bfloat16 on CUDA, float32 elsewhere; `out` (contiguous, right shape)
    receives the result instead of a new tensor, and fixes the dtype.
    """
    _check_frames(frames_u8)
    b, k = frames_u8.shape[:2]
    dev = frames_u8.device
    shape = (b, k, 3, params.out_size, params.out_size)
    dtype = out.dtype if out is not None else _default_dtype(dev, out_dtype)
    result = _output(out, shape, dtype, dev, "out")
    if kernel_backend(dev) == "torch":
        return result.copy_(ref_views.build_views(frames_u8, params, mean, std, dtype))
    from sefar_fast.kernels.views import build_views_triton

    return build_views_triton(frames_u8, params, mean, std, result)


def build_strong_mixed(
    frames_u8: torch.Tensor,
    params: ref_views.ViewParams,
    mean: Sequence[float],
    std: Sequence[float],
    tube_mask: torch.Tensor,
    partner: torch.Tensor,
    elements: Sequence[int],
    patch: int,
    out_dtype: torch.dtype | None = None,
    *,
    out_strong: torch.Tensor | None = None,
    out_mixed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(strong, mixed), each [B, K, 3, S, S], from the strong frames in one pass.

    strong = build_views(frames, params) (channel-dropped by params.channel_scale);
    mixed = ops.views.mix_views(strong, clean, tube_mask, partner, elements, patch) with
    clean the same views before channel dropout. tube_mask bool [n_el, S/patch, S/patch];
    partner int [B], a permutation of 0..B-1 (checked when it is a CPU tensor; a device tensor is
    trusted, so the check never reads the device). out_dtype / out_* as in `build_views`.
    """
    _check_frames(frames_u8)
    b, k = frames_u8.shape[:2]
    dev = frames_u8.device
    size = params.out_size
    n_el, hp, wp = tube_mask.shape
    if n_el != len(elements) or sum(elements) != k:
        raise ValueError(f"{n_el} tube masks / elements {list(elements)} do not match K={k}")
    if hp * patch != size or wp * patch != size:
        raise SefarError(f"crop size {size}x{size} is not the patch grid {hp}x{wp} times patch {patch}")
    if tuple(partner.shape) != (b,):
        raise ValueError(f"partner must be [B={b}], got {tuple(partner.shape)}")
    if partner.device.type == "cpu" and not np.array_equal(np.sort(partner.numpy()), np.arange(b)):
        raise ValueError(f"partner must be a permutation of 0..{b - 1}, got {partner.numpy().tolist()}")
    shape = (b, k, 3, size, size)
    dtype = _default_dtype(dev, out_dtype)
    strong = _output(out_strong, shape, out_strong.dtype if out_strong is not None else dtype, dev, "out_strong")
    mixed = _output(out_mixed, shape, out_mixed.dtype if out_mixed is not None else dtype, dev, "out_mixed")
    if kernel_backend(dev) == "torch":
        # One pass over the frames: the clean views, and the strong ones from them (x 1 is exact).
        clean = ref_views.normalized_views(frames_u8, params, mean, std)
        strong.copy_(ref_views.drop_channels(clean, params))
        mixed.copy_(ref_views.mix_views(strong.to(mixed.dtype), clean.to(mixed.dtype), tube_mask, partner,
                                        elements, patch))
        return strong, mixed
    from sefar_fast.kernels.views import build_strong_mixed_triton

    return build_strong_mixed_triton(frames_u8, params, mean, std, tube_mask, partner, elements,
                                     patch, strong, mixed)


def regulate_head(
    feat: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    seed: int,
    samples: int,
    *,
    p: float = 0.5,
    mode: str = "adaptive",
    threshold: float = 0.95,
) -> Regulation:
    """Adaptive Regulation of U head-dropout samples of the classifier ``Linear(D -> C)``.

    feat [B, D] is the teacher's fused feature (before the head dropout), weight [C, D] and
    bias [C] the classifier's. Sample u of clip b uses the keep mask
    ``head_keep_masks(seed, U, B, D, p)[u, b]``; probabilities are softmaxes of
    ``(feat * mask) @ weight.T + bias`` in float32, then `ops.regulation.regulate`.
    The Triton path never stores the U x B x C probabilities; it needs D a power of two >= 16
    and U <= 32 (the torch path serves other shapes).
    """
    if feat.dim() != 2 or weight.dim() != 2 or weight.shape[1] != feat.shape[1]:
        raise ValueError(f"feat [B, D] and weight [C, D] expected, got {tuple(feat.shape)} and {tuple(weight.shape)}")
    if mode not in REGULATIONS:
        raise SefarError(f"regulation={mode!r} is not one of {', '.join(REGULATIONS)}")
    if samples < 1:
        raise SefarError(f"mc_samples {samples} must be at least 1")
    if not 0.0 <= p < 1.0:
        raise SefarError(f"head dropout p={p} must be in [0, 1)")
    seed = check_seed(seed)
    b, d = feat.shape
    kernel_fits = d >= 16 and d & (d - 1) == 0 and samples <= MAX_TRITON_SAMPLES
    if kernel_backend(feat.device) == "triton" and kernel_fits:
        from sefar_fast.kernels.regulation import regulate_head_triton

        return regulate_head_triton(feat, weight, bias, seed, samples, p=p, mode=mode, threshold=threshold)
    with torch.no_grad():
        masks = head_keep_masks(seed, samples, b, d, p, device=feat.device)
        logits = (feat.detach().float()[None] * masks) @ weight.detach().float().T
        if bias is not None:
            logits = logits + bias.detach().float()
        return regulate(torch.softmax(logits, dim=-1), mode=mode, threshold=threshold)


@torch.compiler.assume_constant_result
def _traced_backend(device_type: str) -> str:
    """`kernel_backend`, taken as a constant when torch.compile traces a model that calls
    `element_attention` (tracing into the cached triton lookup would warn at every compile)."""
    return kernel_backend(device_type)


def element_attention(qkv: torch.Tensor, element: torch.Tensor, heads: int) -> torch.Tensor:
    """Temporal attention within each element, `ops.attention.element_attention` (SDPA path).

    qkv [B, K, L, 3D], element int64 [K] (the element of each frame) -> [B, K, L, D], with its
    gradient. The Triton kernel takes clips of up to 16 frames and heads of up to 128 channels
    (the torch path serves other shapes). A model reaches it through
    `TimeSformer.set_temporal_kernel` (or `model_from_config(..., temporal_kernel=...)`).
    """
    k, head_dim = qkv.shape[1], qkv.shape[-1] // 3 // heads
    fits = k <= MAX_TRITON_FRAMES and head_dim <= MAX_TRITON_HEAD_DIM
    if fits and _traced_backend(qkv.device.type) == "triton":
        from sefar_fast.kernels.attention import element_attention_triton

        return element_attention_triton(qkv, element, heads)
    return ref_attention.element_attention(qkv, element, heads)
