"""The optimizer step and the EMA, decided on the device: a non-finite value skips both, exactly.

A non-finite loss or gradient must not reach the weights, and finding one must not cost a
host synchronisation. The decision is a flag on the device, `found` (0. or 1.), which the
fused optimizer kernels read themselves (the contract torch's GradScaler uses):

    found  = 1 if a micro-step's loss was non-finite (set by `flag_bad_loss`)
    found |= any gradient non-finite              one foreach check (all-reduced under DDP)
    optimizer.step()                              fused SGD / AdamW: a no-op kernel when found == 1
    diverged = any weight non-finite afterwards   an update that overflowed (finite gradients, huge lr)
    w = 1 - decay if found == 0 else 0
    teacher <- lerp(teacher, student, w)          one foreach lerp; w = 0 leaves it bit for bit
    teacher's bf16 copy <- teacher                one foreach copy (EmaTeacher.update)

Nothing is snapshotted and no Python loop runs over the tensors. A skipped step leaves the
student, the optimizer state and the teacher bit for bit as they were: the fused kernels
return before writing, AdamW takes its step count back (`step += 1 - found`), and the SGD
momentum buffers exist from the start as zeros (`make_optimizer`), so a skipped first step
leaves exactly the state a fresh optimizer has, and a first real step on zero buffers equals
torch's first step (buf = 0 * momentum + grad = grad).

An overflowed update cannot be undone without a snapshot; it is counted (`diverged`) and the
trainer stops at its next read of the counts, before it writes anything, naming the last good
checkpoint.
About 16 device operations per step for SGD, 18 for AdamW (`sefar bench overhead`).
"""

from __future__ import annotations

from typing import Iterable

import torch

from sefar_fast.distributed import DistInfo, all_reduce_sum


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float,
                   momentum: float = 0.9, nesterov: bool = True) -> torch.optim.Optimizer:
    """A fused SGD (Nesterov momentum) or AdamW whose steps `Update` can skip on the device."""
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                          fused=True)
    if momentum:  # zero buffers from the start: a skipped first step then leaves the initial state exactly
        for p in params:
            opt.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return opt


class Update:
    """One optimizer step + EMA per call, skipped on the device; see the module docstring.

    `found` is the flag (0-dim float32, 0. or 1.) that micro-steps raise for a non-finite loss;
    `acc` receives the counts (opt_steps, skipped, first_skipped, diverged) that the trainer
    reads back at its logging interval.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, found: torch.Tensor,
                 dist: DistInfo, ema_decay: float):
        if not optimizer.defaults.get("fused"):
            raise ValueError("the update needs a fused optimizer (train.update.make_optimizer): only its kernels "
                             "skip a step on the device")
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = optimizer
        self.dist = dist
        self.found = found
        device = found.device
        self.diverged = torch.zeros((), dtype=torch.float32, device=device)
        self.one = torch.ones((), dtype=torch.float32, device=device)
        self.ema_weight = torch.full((), 1.0 - ema_decay, dtype=torch.float32, device=device)
        self.no_weight = torch.zeros((), dtype=torch.float32, device=device)
        optimizer.found_inf = found  # read by the fused kernels at every step()

    @torch.no_grad()
    def step(self, teacher, acc: dict[str, torch.Tensor]) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found, self.one)  # x * 1 is exact
        if self.dist.enabled:  # gradients agree after the all-reduce; a loss may be non-finite on one rank only
            all_reduce_sum(self.found, self.dist)
            self.found.clamp_(max=1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if teacher is not None:  # weight 0: the teacher stays as it is, bit for bit
            teacher.lerp(self.model, torch.where(self.found > 0, self.no_weight, self.ema_weight))
        self.diverged.zero_()
        torch._amp_foreach_non_finite_check_and_unscale_(self.params, self.diverged, self.one)
        acc["opt_steps"] += 1
        acc["skipped"] += self.found
        acc["first_skipped"] = torch.where(acc["first_skipped"] == 0, self.found * acc["opt_steps"],
                                           acc["first_skipped"])
        acc["diverged"] += self.diverged
        self.found.zero_()
