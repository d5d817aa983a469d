"""torch.compile for the training step (the student's forward, and the teacher's features).

Three things on top of a bare `torch.compile(net)`:

- static shapes (`dynamic=False`): each phase of a run has one batch shape (the warm-up's
  labeled rows, the semi-supervised [labeled; strong; mixed] rows), so a phase compiles once
  and keeps a graph specialised to its shapes; dynamo's default would turn the second shape
  into one dynamic-shape graph for both, slower and unable to use CUDA graphs.
- inductor's memory-coalescing analysis is switched off. torch 2.11 (cu130) stops with a
  bare `AssertionError` in `tiling_utils._solve_simple_expr` on this project's step (an
  index with modular arithmetic it cannot solve); without the analysis the step compiles
  (synth SeFAR step on an H200, 2026-11-28: 8.6 it/s compiled, 2.3 to 2.5 eagerly). The
  analysis only chooses how generated kernels tile their loops, not what they compute.
- `CompiledForward(..., on_fallback=warn)` carries on eagerly when the compiler itself
  fails (`BackendCompilerFailed` at the first call, or `torch.compile` refusing outright),
  saying so once, instead of ending a run at its first
  step. Errors of the model's own code are raised as they are.
"""

from __future__ import annotations

from typing import Callable

import torch


def configure_inductor() -> None:
    """Settings the step needs from inductor, where this torch has them (see the module doc)."""
    import torch._inductor.config as inductor_config  # slow to import: only when compiling

    triton_cfg = getattr(inductor_config, "triton", None)
    if hasattr(triton_cfg, "coalesce_tiling_analysis"):
        triton_cfg.coalesce_tiling_analysis = False


class CompiledForward:
    """`net` (a module or a function) compiled; calls go eagerly to `net` once the compiler has
    failed, when `on_fallback` is given (it gets one line saying why). Without it a compiler
    failure is raised."""

    def __init__(self, net: Callable, on_fallback: Callable[[str], None] | None = None):
        configure_inductor()
        self.net = net
        self.on_fallback = on_fallback
        self.error: str | None = None  # why the step runs eagerly, once the compiler failed
        try:
            self.compiled = torch.compile(net, dynamic=False)
        except RuntimeError as e:  # torch.compile itself refuses (e.g. a Python its dynamo does not support)
            self._fall_back(e)

    def __call__(self, *args, **kwargs):
        if self.error is None:
            try:
                return self.compiled(*args, **kwargs)
            except torch._dynamo.exc.BackendCompilerFailed as e:
                self._fall_back(e)
        return self.net(*args, **kwargs)

    def _fall_back(self, e: Exception) -> None:
        if self.on_fallback is None:
            raise e
        first_line = (str(e).strip().splitlines() or [""])[0]
        self.error = f"{type(e).__name__}: {first_line}"[:200]
        self.on_fallback(f"torch.compile could not build the training step ({self.error}); "
                         "training eagerly (slower, same results); pass --no-compile to skip compiling")
