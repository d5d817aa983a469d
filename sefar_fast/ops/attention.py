"""Attention as the backbone computes it: plain multi-head attention, and temporal attention
restricted to the frames of one temporal element (the reference of `kernels.element_attention`).

The backbone keeps every clip's tokens as one tensor [B, K, L, D]: K frames (the elements'
frames in config order), L = 1 + N slots per frame (slot 0 is the cls token of the frame's
element, slots 1..N its patches). Temporal attention runs, for every clip and slot, over the K
frames, each frame seeing only the frames of its own element: a block-diagonal mask over
frames. `element[f]` is the index of frame f's element, so frames f and g attend to each other
when element[f] == element[g]. A masked key gets weight exactly 0, so this equals running each
element on its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
              manual: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v over the last two axes of [..., S, d]; mask bool [S, S], True = attend.

    manual: the reference code's way, the score matrix materialised; otherwise SDPA (same numbers)."""
    if not manual:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def same_element(element: torch.Tensor) -> torch.Tensor:
    """bool [K, K]: frame f may attend to frame g (both in one element)."""
    return element[:, None] == element[None, :]


def element_attention(qkv: torch.Tensor, element: torch.Tensor, heads: int, *, manual: bool = False) -> torch.Tensor:
    """Temporal attention of the token layout: qkv [B, K, L, 3D] (q, k, v of D each, heads of D/heads)
    -> [B, K, L, D], for each (clip, slot) over the frames of one element (module docstring)."""
    b, k, length, three_d = qkv.shape
    d = three_d // 3
    q, key, v = qkv.view(b, k, length, 3, heads, d // heads).permute(3, 0, 2, 4, 1, 5).unbind(0)  # [B, L, H, K, hd]
    out = attention(q, key, v, same_element(element), manual=manual)
    return out.permute(0, 3, 1, 2, 4).reshape(b, k, length, d)
