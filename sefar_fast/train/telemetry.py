"""How busy the device is kept: time spent waiting for data, and an optional profiler trace.

`DataWaitMeter` measures, on the host, the time blocked in `next(loader)` against
the wall time of the steps. It adds no synchronisation: the host runs ahead of the
device until something blocks it (a full queue, the loss read-back at the logging
interval), so over a logging interval the host's wall time tracks the device's, and
time the host spent blocked on the loader is time the device had nothing queued.
The fraction is reported per logging interval and per epoch (`data_wait`).

`StepProfiler` (`sefar train --profile`) records a few optimizer steps with
torch.profiler (CPU, and CUDA when on a GPU) after one warm-up step and writes a
Chrome trace, `<run>/profile/trace-rank<r>.json` (open it in Perfetto or chrome://tracing).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


class DataWaitMeter:
    def __init__(self):
        now = time.perf_counter()
        self.start = self.interval_start = now
        self.wait = self.interval_wait = 0.0

    @contextmanager
    def waiting(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.wait += dt
            self.interval_wait += dt

    def interval_fraction(self) -> float:
        """Fraction of the wall time since the last call spent waiting for data; starts a new interval."""
        now = time.perf_counter()
        frac = self.interval_wait / max(now - self.interval_start, 1e-9)
        self.interval_start, self.interval_wait = now, 0.0
        return frac

    def total_fraction(self) -> float:
        return self.wait / max(time.perf_counter() - self.start, 1e-9)


class StepProfiler:
    """Profiles optimizer steps warmup+1 .. warmup+steps of this process, then writes the trace."""

    def __init__(self, out_dir: Path, rank: int, device: torch.device, *, warmup: int = 1, steps: int = 3):
        self.path = Path(out_dir) / f"trace-rank{rank}.json"
        self.device, self.warmup, self.steps = device, warmup, steps
        self.seen = 0
        self.prof = None
        self.written: Path | None = None

    def step_done(self) -> None:
        """Call after every optimizer step."""
        if self.written is not None:
            return
        self.seen += 1
        if self.seen == self.warmup:

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            self.prof = profile(activities=acts, record_shapes=True)
            self.prof.__enter__()
        elif self.prof is not None and self.seen >= self.warmup + self.steps:
            self.finish()

    def finish(self) -> Path | None:
        """Stop and write the trace (also at the end of an epoch shorter than the profiled steps)."""
        if self.prof is None or self.written is not None:
            return self.written
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.prof.__exit__(None, None, None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.prof.export_chrome_trace(str(self.path))
        self.prof, self.written = None, self.path
        return self.path
