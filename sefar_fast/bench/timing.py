"""Timing, matmul peak and peak memory, the same way for every section.

Timing: `warmup` untimed calls (the first one also pays for torch.compile, so its
duration is kept separately as `first_ms`), then `repeats` timed calls and their
median. On CUDA each call is bracketed by CUDA events on the current stream and
read after one synchronisation at the end, so the host never waits inside the
timed region; a call that is host-bound still shows its full length, because
the GPU idles between the events. On the CPU, perf_counter around each call.

Peak: the throughput of a large square matmul in the compute dtype of the fast
path (bf16 on CUDA, fp32 on the CPU), measured in the same run, is the ceiling
that model FLOP utilisation (MFU) is reported against.

Memory: `torch.cuda.max_memory_allocated` after a reset (absolute peak: weights,
optimizer state, teacher and activations). Torch keeps no allocator statistics on
the CPU, and the resident set size barely moves from one step to the next (the
C allocator keeps freed memory), so memory is measured on CUDA only.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, *, warmup: int = 2, repeats: int = 5) -> dict:
    """Median duration of `fn()` in ms after `warmup` calls; also the first call and every timed call."""
    warmup = max(int(warmup), 1)
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup - 1):
        fn()
    synchronize(device)
    times: list[float] = []
    wall0 = time.perf_counter()
    if device.type == "cuda":
        events = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in events]
    else:
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    wall_ms = (time.perf_counter() - wall0) * 1e3 / max(repeats, 1)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times,
            "first_ms": first_ms, "wall_ms": wall_ms, "repeats": repeats, "warmup": warmup}


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, *, size: int | None = None,
                       repeats: int = 10) -> dict:
    """Achieved TFLOP/s of a `size`^3 matmul in `dtype` (default 8192 on CUDA, 1024 on the CPU)."""
    size = size or (8192 if device.type == "cuda" else 1024)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen).to(dtype)
    b = torch.randn(size, size, device=device, generator=gen).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    timing = time_calls(lambda: torch.matmul(a, b, out=out), device, warmup=3, repeats=repeats)
    flops = 2.0 * size**3
    return {"peak_tflops": flops / (timing["median_ms"] * 1e-3) / 1e12, "peak_dtype": str(dtype).replace("torch.", ""),
            "peak_matmul_size": size}


def peak_memory_gib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak CUDA memory allocated during one call of `fn()`, in GiB: everything alive counts
    (weights, optimizer state, teacher, activations)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, by a distinctive part of the
# card's name; the first match wins, so specific names come before general ones.
DATASHEET_BF16_TFLOPS = (
    ("H100 NVL", 835.0), ("H100 PCIe", 756.5), ("H100", 989.4),
    ("H200 NVL", 835.0), ("H200", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10", 125.0),
    ("RTX 4090", 165.2), ("RTX 6000 Ada", 364.2),
)


def datasheet_tflops(card: str, dtype: torch.dtype) -> float | None:
    """The datasheet's dense peak for `card` in `dtype` (bf16 only), or None when it is not listed."""
    if dtype != torch.bfloat16:
        return None
    return next((peak for name, peak in DATASHEET_BF16_TFLOPS if name in card), None)


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """float32 matmuls and convolutions in TF32 (or not) inside the block, as before it afterwards."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
