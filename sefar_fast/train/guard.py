"""Numerical-fault guard: an optimizer + EMA update that really does nothing when it must not happen.

A non-finite loss or gradient must not reach the weights, and finding one must not
cost a host synchronisation per step. So the decision stays on the device:

    ok = loss finite  and  every gradient finite          (a 0-dim bool tensor)
    snapshot = copies of the tensors the update writes    (student, optimizer state, teacher)
    optimizer.step(); teacher.update(...)                 (run as usual, NaN in -> NaN out)
    ok = ok and every updated student weight finite
    each written tensor <- torch.where(ok, new, snapshot)

Zeroing the gradients would not be enough: SGD with momentum and weight decay (or
AdamW) still moves the weights and its state on a zero gradient, and the EMA would
still pull the teacher towards the student. Selecting against a snapshot is exact
for any optimizer: a skipped step leaves every tensor bit for bit as it was.
Optimizer state created by the first step (momentum buffers, Adam moments) has no
snapshot; it is reset to zeros, which is exactly the state those optimizers start
from (SGD: buf = 0*m + grad equals its first-step buf = grad).

Cost: one transient copy of the student, its optimizer state and the teacher
(about 1 GB for ViT-B with SGD), and two more elementwise passes over them: a few
milliseconds on a GPU against a step of hundreds. The flag is read back by the host
only at the logging interval (`--on-nan stop`) or before a checkpoint.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch


def all_finite(tensors: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    """0-dim bool on `device`: no NaN or inf in any tensor (one fused norm, no host sync)."""
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return torch.ones((), dtype=torch.bool, device=device)
    norms = torch._foreach_norm(tensors)  # a non-finite entry makes its norm non-finite
    return torch.isfinite(torch.stack([n.float() for n in norms]).sum())


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[tuple[dict, str]]:
    """(state dict, key) of every tensor in the optimizer's per-parameter state."""
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            out += [(state, k) for k, v in state.items() if torch.is_tensor(v)]
    return out


def guarded_update(ok: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                   others: list[torch.Tensor], update: Callable[[], None]) -> torch.Tensor:
    """Run `update()` (optimizer step + EMA) and keep its effect only where `ok` holds.

    params: the student's parameters (also checked for finiteness after the update);
    others: further tensors `update` writes in place (the teacher's state). Returns the
    final flag (a 0-dim bool on the device).
    """
    with torch.no_grad():
        written = list(params) + list(others)
        before = torch._foreach_mul(written, 1.0) if written else []  # exact copies (x*1 == x, NaN too)
        state_before = {(id(s), k): s[k].clone() for s, k in optimizer_tensors(optimizer)}
        update()
        ok = ok & all_finite(params, ok.device)
        for new, old in zip(written, before):
            new.copy_(torch.where(ok, new, old))
        for state, key in optimizer_tensors(optimizer):
            old = state_before.get((id(state), key))
            value = state[key]
            if old is None:  # created by this step: a skipped step leaves the optimizer's initial zeros
                old = torch.zeros_like(value)
            # (AdamW keeps `step` on the host unless capturable: the trainer makes it capturable on CUDA.)
            cond = ok if value.device == ok.device else ok.to(value.device)
            value.copy_(torch.where(cond, value, old))
    return ok
