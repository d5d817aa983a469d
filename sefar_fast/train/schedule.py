"""Learning-rate and unsupervised-weight schedules (pure functions of the epoch).

Learning rate: SGD lr 0.005 for an effective labeled batch of 64 (the released
code's 64 labeled + 192 unlabeled per optimizer step), scaled linearly with the
effective labeled batch; step decays x0.1 at epoch 25 and x0.01 at epoch 28 of 30,
set every iteration from the fractional epoch (epoch 25.0 is already decayed).
An optional linear warm-up (`warmup` epochs, none by default) multiplies the rate by
epoch / warmup before that, so the first step has lr 0, as in transformers' and torchtune's
warm-up schedules (the usual remedy for transformers trained from scratch with AdamW; on the
synth data it did not shorten the start, docs/results.md).
Shorter or longer runs keep the decays at the same fractions of the run
(`optim.milestones`): `milestone_epochs(epochs, fractions)` = [epochs * f for f in
fractions], fractional epochs, not rounded (the synth preset's 52 epochs at
[0.9, 0.97] decay during epochs 47 and 51, 1-based).

Unsupervised weight: xi(e) = sin(pi/2 * (e + 1 - W) / (E - W)) for 0-based epoch
e >= W (W warm-up epochs, E epochs), 0 during the warm-up; it reaches 1 at the last
epoch (capped at 1 beyond it).
"""

from __future__ import annotations

import math
from typing import Sequence

DEFAULT_MILESTONE_FRACTIONS = (25 / 30, 28 / 30)
DEFAULT_LR_FACTORS = (0.1, 0.01)


def scaled_lr(base_lr: float, effective_labeled_batch: int, ref_batch: int = 64) -> float:
    """Linear scaling: base_lr is the rate for `ref_batch` labeled clips per optimizer step."""
    return base_lr * effective_labeled_batch / ref_batch


def milestone_epochs(epochs: int, fractions: Sequence[float] = DEFAULT_MILESTONE_FRACTIONS) -> list[float]:
    """The (fractional) epochs at which the lr decays: [25.0, 28.0] for 30 epochs at the default fractions."""
    return [epochs * f for f in fractions]


def lr_at(
    epoch: float, lr: float, milestones: Sequence[float], factors: Sequence[float] = DEFAULT_LR_FACTORS,
    warmup: float = 0.0,
) -> float:
    """lr times factors[i - 1] once `epoch` (fractional) has reached milestone i (milestones ascending),
    times epoch / warmup while `epoch` < `warmup`."""
    if len(milestones) != len(factors):
        raise ValueError(f"{len(milestones)} milestones but {len(factors)} factors")
    passed = sum(1 for m in milestones if epoch >= m)
    ramp = epoch / warmup if epoch < warmup else 1.0
    return lr * ramp * (factors[passed - 1] if passed else 1.0)


def xi(epoch: int, warmup_epochs: int, epochs: int) -> float:
    """Weight of the unsupervised losses in (0-based) epoch `epoch`."""
    if epoch < warmup_epochs:
        return 0.0
    if epochs <= warmup_epochs:
        return 1.0
    ratio = min((epoch + 1 - warmup_epochs) / (epochs - warmup_epochs), 1.0)
    return math.sin(math.pi / 2 * ratio)
