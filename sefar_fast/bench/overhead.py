"""`sefar bench overhead`: what the host does for one SeFAR iteration, phase by phase.

For one semi-supervised micro-step plus its optimizer step (after a warm-up iteration, so
the optimizer state exists and compiled graphs are built), on the bench's synthetic batch:

    ops.views / ops.teacher / ops.student / ops.update
        aten operations the host dispatches in each phase of `train.step.TrainStep` (its
        `record_function` ranges). Operations issued by other operations are not counted, and
        a compiled graph counts as one, so the numbers are what Python asks of the device
        (each is at least a kernel launch); the backward's operations, issued by autograd's
        engine, are not counted.
    host_syncs
        reads of device values on the host during the iteration: `.item()`, `.tolist()`,
        `.cpu()`, `bool(t)`, `nonzero`, ... (`HostReads`, on any device), plus the synchronising
        CUDA calls torch reports in its sync debug mode on a GPU.
    host_ms.<phase>
        host time spent in each phase (CPU wall time of the range).

Targets (DESIGN.md): update at most 20 ops, host_syncs 0.
"""

from __future__ import annotations

import warnings

import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile

PHASES = ("views", "teacher", "student", "update")
PHASE_PREFIX = "sefar."
# Ranges inside which the operations are issued by a compiled graph, not by Python.
COMPILED_REGIONS = ("Torch-Compiled Region", "CompiledFunction", "CompiledFunctionBackward")

# Tensor methods and torch functions that make the host wait for a device value.
HOST_READS = frozenset({"item", "tolist", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero",
                        "argwhere", "equal", "unique", "unique_consecutive", "masked_select", "allclose"})


class HostReads(TorchFunctionMode):
    """Counts (by name) the calls that read a tensor's value back to the host while active."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}
        self.seen = 0  # every torch call while active (so a test can tell the counter was on)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        self.seen += 1
        if name in HOST_READS:
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))

    @property
    def count(self) -> int:
        return sum(self.calls.values())


def _phase_of(event) -> str | None:
    while event is not None:
        if event.name.startswith(PHASE_PREFIX):
            return event.name[len(PHASE_PREFIX):]
        event = event.cpu_parent
    return None


def _issued_by_python(event) -> bool:
    """An aten op whose caller is Python: no aten op, compiled graph or autograd engine (backward) above it."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(("aten::", "autograd::engine")) or parent.name in COMPILED_REGIONS:
            return False
        parent = parent.cpu_parent
    return True


def count_ops(run, device: torch.device) -> dict:
    """Run `run()` once under the profiler and the host-read counter; ops and host time per phase."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    reads = HostReads()
    sync_warnings: list = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with profile(activities=acts) as prof, reads:
                run()
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        sync_warnings = [w for w in caught if "synchroniz" in str(w.message).lower()]
    ops = dict.fromkeys(PHASES, 0)
    host_ms = dict.fromkeys(PHASES, 0.0)
    other = 0
    for ev in prof.events():
        if ev.name.startswith(PHASE_PREFIX) and ev.name[len(PHASE_PREFIX):] in host_ms:
            host_ms[ev.name[len(PHASE_PREFIX):]] += ev.cpu_time_total / 1e3
            continue
        counted = ev.name.startswith("aten::") or ev.name in COMPILED_REGIONS[:1]
        if not counted or not _issued_by_python(ev):
            continue
        phase = _phase_of(ev)
        if phase in ops:
            ops[phase] += 1
        else:
            other += 1
    return {"ops": {**ops, "outside_phases": other}, "host_ms": host_ms,
            "host_syncs": reads.count + len(sync_warnings), "host_reads": reads.calls,
            "cuda_sync_warnings": len(sync_warnings)}


def top_kernels(run, device: torch.device, top: int = 12) -> list[dict]:
    """The device operations that take the most time in one `run()` (self CUDA time), busiest first."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize(device)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total, reverse=True)[:top]
    total = sum(e.self_device_time_total for e in prof.key_averages()) or 1.0
    return [{"name": e.key[:120], "device_ms": e.self_device_time_total / 1e3,
             "share": e.self_device_time_total / total, "calls": e.count} for e in rows]
