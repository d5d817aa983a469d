"""EMA teacher: an exponential moving average of the student's weights.

The teacher is created from the student when the supervised warm-up ends and updated
after every optimizer step with fused foreach ops (one kernel launch per op for all
tensors, no per-parameter Python loop on the device). Floating buffers are averaged
like parameters; other buffers (counters, masks) are copied.

The released code applied decay 0.9999 once per micro-batch of one labeled clip,
so its teacher's speed depended on the batch size. We keep that time constant per
labeled clip seen: a step over n labeled clips (the whole effective batch, all
processes and accumulation steps together) uses decay 0.9999 ** n (`decay_for`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_for(labeled_clips_per_step: int, base: float = 0.9999) -> float:
    """Decay of one optimizer step that consumed `labeled_clips_per_step` labeled clips."""
    if labeled_clips_per_step < 1:
        raise ValueError(f"labeled_clips_per_step={labeled_clips_per_step} must be at least 1")
    return base**labeled_clips_per_step


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


class EmaTeacher:
    """Holds `module`, a frozen eval-mode copy of the student, and averages the student into it."""

    def __init__(self, module: nn.Module):
        self.module = module

    @classmethod
    def create(cls, student: nn.Module) -> "EmaTeacher":
        teacher = copy.deepcopy(unwrap(student))
        teacher.eval()
        teacher.requires_grad_(False)
        return cls(teacher)

    def _pairs(self, student: nn.Module):
        """(teacher, student) tensors to average, and to copy, matched by name.

        Rebuilt per update (cheap next to a step) so moved or reloaded modules never go stale.
        """
        student = unwrap(student)
        s_params = dict(student.named_parameters())
        s_bufs = dict(student.named_buffers())
        avg_t, avg_s, copy_t, copy_s = [], [], [], []
        for name, p in self.module.named_parameters():
            avg_t.append(p)
            avg_s.append(s_params[name])
        for name, b in self.module.named_buffers():
            (avg_t if b.is_floating_point() else copy_t).append(b)
            (avg_s if b.is_floating_point() else copy_s).append(s_bufs[name])
        return avg_t, [s.detach() for s in avg_s], copy_t, copy_s

    @torch.no_grad()
    def update(self, student: nn.Module, decay: float) -> None:
        """teacher <- decay * teacher + (1 - decay) * student, for parameters and floating buffers."""
        avg_t, avg_s, copy_t, copy_s = self._pairs(student)
        if avg_t:
            torch._foreach_mul_(avg_t, decay)
            torch._foreach_add_(avg_t, avg_s, alpha=1.0 - decay)
        for t, s in zip(copy_t, copy_s):
            t.copy_(s)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
