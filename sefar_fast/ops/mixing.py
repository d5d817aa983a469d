"""Tube mixing of unlabeled clips (SVFormer's TubeTokenMix, one mask per temporal element).

Per step: lambda ~ Beta(alpha, alpha) (alpha = 10); for each element a random set of
exactly round(lambda * P) of the P = Hp * Wp patch positions (independent patterns,
same count) marks where a sample keeps its own strong view; the mask is a "tube",
the same for every frame of the element and every sample. Everywhere else the sample
shows its partner's, with **one** partner permutation per step for all elements (the
released code drew one per element but built targets from the last one).

Targets and weights mix with the *realised* own fraction lam = round(lambda * P) / P
(the same for every element, as they share the grid), not the drawn lambda, so a
target describes exactly the pixels the student sees:

    y_mix = lam * mu + (1 - lam) * mu[partner],   eta' = lam * eta + (1 - lam) * eta[partner]

Python's round (half to even) is used; ties need lambda * P to be exactly x.5, which a
continuous draw hits with probability 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class MixPlan:
    """One step's mixing draw. masks bool [n_el, Hp, Wp] (True = own view), partner int64 [B]."""

    lam_drawn: float
    lam: float
    masks: torch.Tensor
    partner: torch.Tensor


def kept_patches(lam: float, grid: tuple[int, int]) -> int:
    """Number of own patches per element: round(lam * P)."""
    return int(round(lam * grid[0] * grid[1]))


def tube_masks(elements: Sequence[int], grid: tuple[int, int], lam: float, rng: np.random.Generator) -> torch.Tensor:
    """bool [n_el, Hp, Wp]: per element, exactly round(lam * Hp * Wp) True patches at random places."""
    hp, wp = grid
    count = kept_patches(lam, grid)
    masks = np.zeros((len(elements), hp * wp), dtype=bool)
    for e in range(len(elements)):
        masks[e, rng.permutation(hp * wp)[:count]] = True
    return torch.from_numpy(masks.reshape(len(elements), hp, wp))


def draw_mix(
    batch: int, elements: Sequence[int], grid: tuple[int, int], rng: np.random.Generator, alpha: float = 10.0
) -> MixPlan:
    """Draw lambda ~ Beta(alpha, alpha), the element tube masks and one partner permutation (in that order)."""
    lam_drawn = float(rng.beta(alpha, alpha))
    masks = tube_masks(elements, grid, lam_drawn, rng)
    partner = torch.from_numpy(rng.permutation(batch).astype(np.int64))
    lam = kept_patches(lam_drawn, grid) / (grid[0] * grid[1])
    return MixPlan(lam_drawn, lam, masks, partner)


def mix_targets(
    mu: torch.Tensor, eta: torch.Tensor, lam: float, partner: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_mix [B, C], eta_mix [B]) from teacher means mu [B, C] and weights eta [B]; pass the realised lam."""
    partner = partner.to(mu.device).long()
    y_mix = lam * mu + (1.0 - lam) * mu[partner]
    eta_mix = lam * eta + (1.0 - lam) * eta[partner]
    return y_mix, eta_mix
