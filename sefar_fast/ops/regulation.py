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
one backbone and fusion feature: the trainer samples U dropout masks on that 256-d
vector instead of rerunning the network (`kernels.regulate_head`; `teacher_mc=full`
reruns it with the very same masks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
