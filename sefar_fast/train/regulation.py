"""Adaptive Regulation: per-sample loss weights from the spread of U Monte-Carlo teacher predictions.

The teacher predicts each weak unlabeled clip U times with dropout on. From the U
softmax vectors (mean mu, unbiased std sigma over U):

    yhat = argmax mu,  p* = max mu,  sigma* = sigma[yhat]
    tau1 = 2 * sigmoid(exp(p*) - e)                  confident mean -> large
    tau2 = 2 * (sigmoid(1 / (20 * sigma* + 1e-9)) - 0.5)   unstable prediction -> small
    eta  = tau1 * tau2                               (no gradient)

These are the released code's constants (the paper prints eq. 7 without the factors
2). With U = 1 the spread is undefined; we take sigma = 0 (tau2 = 1), so eta = tau1.
`regulation="threshold"` gives the FixMatch-style weight 1[p* >= threshold] and
`"none"` weight 1, for the paper's ablations.

Only the head's Dropout(0.5) has p > 0 in the network, so the U teacher passes share
one backbone and fusion feature: `mc_head_probs` samples U dropout masks on that
256-d vector instead of rerunning the network (`full` mode reruns it with the very
same masks, see `mc_full_probs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from sefar_fast.errors import SefarError

REGULATIONS = ("adaptive", "threshold", "none")
SIGMA_SCALE = 20.0  # beta in the paper
EPSILON = 1e-9


@dataclass
class Regulation:
    """Per-sample teacher statistics and loss weights, all detached, float32.

    pseudo_label int64 [B]; p_star, sigma_star, tau1, tau2, eta float [B]; mean, std float [B, C].
    """

    pseudo_label: torch.Tensor
    p_star: torch.Tensor
    sigma_star: torch.Tensor
    tau1: torch.Tensor
    tau2: torch.Tensor
    eta: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


@torch.no_grad()
def regulate(probs: torch.Tensor, mode: str = "adaptive", threshold: float = 0.95) -> Regulation:
    """Statistics and weights from teacher probabilities [U, B, C] (see the module docstring)."""
    if probs.dim() != 3:
        raise ValueError(f"probs must be [U, B, C], got shape {tuple(probs.shape)}")
    if mode not in REGULATIONS:
        raise SefarError(f"regulation={mode!r} is not one of {', '.join(REGULATIONS)}")
    probs = probs.detach().float()
    mean = probs.mean(dim=0)
    std = probs.std(dim=0, correction=1) if probs.shape[0] > 1 else torch.zeros_like(mean)
    p_star, pseudo_label = mean.max(dim=1)
    sigma_star = std.gather(1, pseudo_label[:, None])[:, 0]
    tau1 = 2.0 * torch.sigmoid(torch.exp(p_star) - math.e)
    tau2 = 2.0 * (torch.sigmoid(1.0 / (SIGMA_SCALE * sigma_star + EPSILON)) - 0.5)
    if mode == "adaptive":
        eta = tau1 * tau2
    elif mode == "threshold":
        eta = (p_star >= threshold).float()
    else:
        eta = torch.ones_like(p_star)
    return Regulation(pseudo_label, p_star, sigma_star, tau1, tau2, eta, mean, std)


def head_dropout_masks(
    samples: int, batch: int, dim: int, generator: torch.Generator, p: float = 0.5, device=None, dtype=torch.float32
) -> torch.Tensor:
    """U dropout keep masks [U, B, D]: 0 where dropped (probability p), 1/(1-p) where kept.

    Drawn as ``torch.rand(U, B, D, generator) >= p``; `generator` must live on `device`.
    """
    if not 0.0 <= p < 1.0:
        raise SefarError(f"head dropout p={p} must be in [0, 1)")
    keep = torch.rand((samples, batch, dim), generator=generator, device=device) >= p
    return keep.to(dtype) / (1.0 - p)


@torch.no_grad()
def mc_head_probs(
    head_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    feat: torch.Tensor,
    samples: int,
    generator: torch.Generator,
    p: float = 0.5,
) -> torch.Tensor:
    """Softmax probabilities [U, B, C] of U dropout samples of the head on one fused feature [B, D].

    `head_fn(feat, keep_mask)` is the model's head (``net.head_logits``): it multiplies
    the feature by `keep_mask` in place of its Dropout and applies the classifier.
    All U samples go through the head as one batch of U*B rows.
    """
    b, d = feat.shape
    masks = head_dropout_masks(samples, b, d, generator, p, device=feat.device, dtype=feat.dtype)
    logits = head_fn(feat.expand(samples, b, d).reshape(samples * b, d), masks.reshape(samples * b, d))
    return torch.softmax(logits.float(), dim=-1).reshape(samples, b, -1)


@torch.no_grad()
def mc_full_probs(
    features_fn: Callable[[], torch.Tensor],
    head_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    samples: int,
    generator: torch.Generator,
    p: float = 0.5,
) -> torch.Tensor:
    """`teacher_mc: full`: rerun `features_fn()` ([B, D]) for each of U samples, with the same
    masks (same generator draws) as `mc_head_probs`, so both modes agree exactly when the
    features are deterministic."""
    feat = features_fn()
    b, d = feat.shape
    masks = head_dropout_masks(samples, b, d, generator, p, device=feat.device, dtype=feat.dtype)
    out = []
    for u in range(samples):
        feat_u = feat if u == 0 else features_fn()
        out.append(torch.softmax(head_fn(feat_u, masks[u]).float(), dim=-1))
    return torch.stack(out)
