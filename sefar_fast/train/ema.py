"""EMA teacher: an exponential moving average of the student's weights.

The teacher is created from the student when the supervised warm-up ends and updated
after every optimizer step with one foreach lerp over all its floating tensors (no
per-tensor Python loop): teacher <- teacher + (1 - decay) * (student - teacher). The
weight may be a 0-dim device tensor, so the trainer can make an update a no-op (weight 0)
without reading anything back to the host (`train.update`). Floating buffers are
averaged like parameters; other buffers (counters, masks) are copied.

The released code applied decay 0.9999 once per micro-batch of one labeled clip, so its
teacher's speed depended on the batch size. We keep that time constant per labeled clip
seen: a step over n labeled clips (the whole effective batch, all processes and
accumulation steps together) uses decay 0.9999 ** n (`decay_for`).

bf16 forward copy (`forward_dtype=torch.bfloat16`, on CUDA with autocast): the weights
autocast would cast at every teacher forward (those of Linear and Conv layers) are kept as
a bf16 copy, refreshed by one foreach copy after each update; `forward_module` shares
everything else with `module`. Its outputs under autocast are bit for bit those of
`module` (the same round-to-nearest cast, done once per update instead of once per
forward). `module` stays float32: it is what checkpoints and evaluation see.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

CAST_BY_AUTOCAST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


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

    def __init__(self, module: nn.Module, forward_dtype: torch.dtype | None = None):
        self.module = module
        self.forward_module = module
        self._lowp: list[torch.Tensor] = []  # forward_module's cast copies ...
        self._master: list[torch.Tensor] = []  # ... of these float32 tensors of `module`
        if forward_dtype is not None:
            self._make_forward_copy(forward_dtype)
        self._pairs_of: nn.Module | None = None
        self._pairs: tuple = ()

    @classmethod
    def create(cls, student: nn.Module, forward_dtype: torch.dtype | None = None) -> "EmaTeacher":
        teacher = copy.deepcopy(unwrap(student))
        teacher.eval()
        teacher.requires_grad_(False)
        return cls(teacher, forward_dtype)

    def _make_forward_copy(self, dtype: torch.dtype) -> None:
        """forward_module: `module` with the weights autocast casts replaced by `dtype` copies."""
        memo = {id(t): t for t in list(self.module.parameters()) + list(self.module.buffers())}
        self.forward_module = copy.deepcopy(self.module, memo)  # shares every tensor with `module` ...
        for (_, mod), (_, fwd) in zip(self.module.named_modules(), self.forward_module.named_modules()):
            if isinstance(mod, CAST_BY_AUTOCAST):  # ... except these, replaced by cast copies
                for name, p in list(mod.named_parameters(recurse=False)):
                    lowp = p.detach().to(dtype)
                    setattr(fwd, name, nn.Parameter(lowp, requires_grad=False))
                    self._master.append(p)
                    self._lowp.append(getattr(fwd, name))

    def _bind(self, student: nn.Module):
        """(teacher, student) tensors to average, and to copy, matched by name; kept while the student is."""
        student = unwrap(student)
        if self._pairs_of is not student:
            s_params = dict(student.named_parameters())
            s_bufs = dict(student.named_buffers())
            avg_t, avg_s, copy_t, copy_s = [], [], [], []
            for name, p in self.module.named_parameters():
                avg_t.append(p)
                avg_s.append(s_params[name].detach())
            for name, b in self.module.named_buffers():
                (avg_t if b.is_floating_point() else copy_t).append(b)
                (avg_s if b.is_floating_point() else copy_s).append(s_bufs[name])
            self._pairs_of, self._pairs = student, (avg_t, avg_s, copy_t, copy_s)
        return self._pairs

    def update(self, student: nn.Module, decay: float) -> None:
        """teacher <- teacher + (1 - decay) * (student - teacher)."""
        self.lerp(student, 1.0 - decay)

    @torch.no_grad()
    def lerp(self, student: nn.Module, weight: float | torch.Tensor) -> None:
        """teacher <- teacher + weight * (student - teacher); `weight` a float or a 0-dim tensor on the
        teacher's device, so a step can decide it without the host (0: no change, bit for bit, as long
        as the student is finite)."""
        avg_t, avg_s, copy_t, copy_s = self._bind(student)
        if avg_t:
            torch._foreach_lerp_(avg_t, avg_s, [weight] * len(avg_t) if torch.is_tensor(weight) else weight)
        for t, s in zip(copy_t, copy_s):
            t.copy_(s)
        self.refresh_forward_copy()

    @torch.no_grad()
    def refresh_forward_copy(self) -> None:
        if self._lowp:
            torch._foreach_copy_(self._lowp, self._master)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
        self.refresh_forward_copy()
