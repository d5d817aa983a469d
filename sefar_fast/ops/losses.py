"""The SeFAR losses.

    L     = L_sup + xi * (w_un * L_un + w_mix * L_mix)            (w_un = w_mix = 2)
    L_sup = mean_b CE(student(labeled weak), label)
    L_un  = mean_b eta_b * CE(student(strong)_b, yhat_b)          hard pseudo-label yhat
    L_mix = mean_b eta'_b * mean_c (logit_mix_bc - y_mix_bc)^2    mix_loss = "mse" (released code)
          | mean_b eta'_b * -sum_c y_mix_bc * log_softmax(logit_mix)_bc     mix_loss = "soft-ce"

"mse" compares raw logits with probability targets, as the released code (inherited
from SVFormer) does; "soft-ce" is the principled alternative. Means are over the
batch (including samples whose weight is 0). Everything is computed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sefar_fast.errors import SefarError

MIX_LOSSES = ("mse", "soft-ce")


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


def unlabeled_loss(logits: torch.Tensor, pseudo_label: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    return (eta.float() * F.cross_entropy(logits.float(), pseudo_label, reduction="none")).mean()


def mix_loss(logits: torch.Tensor, y_mix: torch.Tensor, eta_mix: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    logits, y_mix = logits.float(), y_mix.float()
    if kind == "mse":
        per_sample = ((logits - y_mix) ** 2).mean(dim=1)
    elif kind == "soft-ce":
        per_sample = -(y_mix * F.log_softmax(logits, dim=1)).sum(dim=1)
    else:
        raise SefarError(f"mix_loss={kind!r} is not one of {', '.join(MIX_LOSSES)}")
    return (eta_mix.float() * per_sample).mean()


@dataclass
class LossTerms:
    total: torch.Tensor
    sup: torch.Tensor
    un: torch.Tensor
    mix: torch.Tensor


def combine(
    sup: torch.Tensor, un: torch.Tensor, mix: torch.Tensor, xi: float, w_un: float = 2.0, w_mix: float = 2.0
) -> LossTerms:
    """total = sup + xi * (w_un * un + w_mix * mix); the terms are kept for logging."""
    return LossTerms(sup + xi * (w_un * un + w_mix * mix), sup, un, mix)
