"""The four measurements of `sefar bench`; each returns a flat dict of plainly named fields.

    data       clips/s and frames/s of the loader on a synthetic clip store
    model      student-only train and inference clips/s at 8 frames, achieved TFLOP/s, MFU
    iteration  one SeFAR iteration, reference style against the fast trainer step, same batch
    memory     peak memory of the iteration and training settings

The fast path is the trainer's own `train.step.TrainStep` (micro_step + optimizer_step,
including the fused EMA); the reference style is `bench.reference.ReferenceStep`.
Both start from the same weights and run on the same batch. The model and
iteration sections share one student and one TrainStep (`Shared`), so the
compiled forward is built once: its student batch, labeled + 2 x unlabeled rows,
is the model section's batch. FLOPs come from the analytic
`models.sizes.count_flops` (forward, per clip; a training step counts 3x forward).
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sefar_fast.bench.env import card_name
from sefar_fast.bench.overhead import count_ops, top_kernels
from sefar_fast.bench.reference import ReferenceStep
from sefar_fast.bench.timing import datasheet_tflops, matmul_peak_tflops, peak_memory_gib, synchronize, tf32, time_calls
from sefar_fast.bench.workload import BenchSettings, bench_config, build_student, reference_copy, sgd, synthetic_batches
from sefar_fast.data.bench import bench_data, synthetic_store
from sefar_fast.distributed import DistInfo
from sefar_fast.models.sizes import count_flops
from sefar_fast.train.ema import EmaTeacher
from sefar_fast.train.step import TrainStep

XI = 1.0  # the semi-supervised weight at the end of the ramp: every loss term counts


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _step_rng(seed: int):
    """A fresh numpy Generator per call, as the trainer derives one per step."""
    counter = iter(range(1 << 62))
    return lambda: np.random.default_rng([seed, 7, next(counter)])


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


class Shared:
    """The student and the trainer step (compiled when the settings say so) of one benchmark run."""

    def __init__(self, s: BenchSettings):
        self.s, self.cfg = s, bench_config(s)
        self.student = build_student(self.cfg, s)
        self.make_step = lambda compile: TrainStep(self.cfg, self.student, s.device, s.amp, compile, DistInfo())
        self.fast_step = self.make_step(s.compile)
        self.compiled = s.compile
        self.compile_error: str | None = None

    def compile_failed(self, e: BaseException) -> None:
        """Carry on eagerly (and say so) when torch.compile cannot build the step on this machine."""
        self.compile_error, self.compiled = _error(e), False
        self.fast_step = self.make_step(False)


# ----------------------------------------------------------------------------- data
def data_section(s: BenchSettings) -> dict:
    with tempfile.TemporaryDirectory(prefix="sefar-bench-") as tmp:
        root = Path(tmp) / "store"
        synthetic_store(root, clips=s.data_clips, frames=16, size=tuple(s.data_source_size), seed=s.seed)
        res = bench_data(root, device=s.device, batches=s.data_batches, batch_size=s.data_batch_size,
                         elements=s.elements, frame_size=tuple(s.frame_size), views=1, warmup=1,
                         direct_codecs=("h264", "vp9"))
    h, w = s.data_source_size
    res["store"] = f"synthetic: {s.data_clips} clips of 16 frames at {h}x{w}"
    return res


# ----------------------------------------------------------------------------- model
def _train_fn(forward, x, y, optimizer, amp: bool, device: torch.device):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = forward(x)
        F.cross_entropy(logits.float(), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _student_rows(s: BenchSettings, cfg, dtype_of_views: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Ready-made student input [model_batch, K, 3, S, S] (in the fast step's view dtype) and labels."""
    gen = torch.Generator(device=s.device).manual_seed(s.seed + 1)
    x = torch.randn(s.model_batch, sum(s.elements), 3, s.crop, s.crop, generator=gen, device=s.device)
    y = torch.randint(0, s.num_classes, (s.model_batch,), generator=gen, device=s.device)
    return (x.to(torch.bfloat16) if s.amp and dtype_of_views else x), y


def model_section(s: BenchSettings, shared: Shared) -> dict:
    """Student-only training and inference steps on ready-made clips [N, K, 3, S, S]."""
    dev, cfg, model = s.device, shared.cfg, shared.student
    n, k = s.model_batch, sum(s.elements)
    x32, y = _student_rows(s, cfg, dtype_of_views=False)
    x = x32.to(torch.bfloat16) if s.amp else x32  # the dtype the fast step's views come in
    flops = count_flops(s.arch, s.crop, s.elements, patch_size=cfg.model.patch_size, num_classes=s.num_classes)
    out: dict = {"batch": n, "frames_per_clip": k, "forward_gflop_per_clip": flops / 1e9,
                 "precision": "bf16 autocast" if s.amp else "fp32", "attention": "sdpa"}
    out.update(matmul_peak_tflops(dev, torch.bfloat16 if s.amp else torch.float32))

    def timed(fn):
        t = time_calls(fn, dev, warmup=s.warmup, repeats=s.repeats)
        return t, n / (t["median_ms"] * 1e-3)

    opt = sgd(cfg, model, fused=True)
    if shared.compiled:
        try:  # the trainer step's own compiled forward: the iteration section reuses the graph
            t, rate = timed(_train_fn(shared.fast_step.forward, x, y, opt, s.amp, dev))
            out["compile_s"] = max(t["first_ms"] - t["median_ms"], 0.0) / 1e3
        except Exception as e:  # noqa: BLE001 - no compiler on this machine: measure eagerly, say why
            shared.compile_failed(e)
    eager_t, eager_rate = timed(_train_fn(model, x, y, opt, s.amp, dev))
    if shared.compiled:
        out["eager_train_clips_per_s"] = eager_rate
    else:
        t, rate = eager_t, eager_rate
    out["compiled"] = shared.compiled
    if shared.compile_error:
        out["compile_error"] = shared.compile_error
    out["train_ms"], out["train_clips_per_s"] = t["median_ms"], rate

    model.eval()
    with torch.no_grad():
        def infer():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=s.amp):
                model(x)

        _, out["infer_clips_per_s"] = timed(infer)
    model.train()
    out["infer_compiled"] = False  # `sefar eval` runs the model eagerly
    del opt
    _free(dev)

    ref = reference_copy(model)
    _, out["reference_train_clips_per_s"] = timed(_train_fn(ref, x32, y, sgd(cfg, ref), False, dev))
    del ref
    _free(dev)

    out["tflops"] = 3 * flops * out["train_clips_per_s"] / 1e12
    out["mfu"] = out["tflops"] / out["peak_tflops"]
    sheet = datasheet_tflops(card_name(dev), torch.bfloat16 if s.amp else torch.float32)
    out["datasheet_tflops"] = sheet
    out["mfu_datasheet"] = out["tflops"] / sheet if sheet else None
    out["infer_tflops"] = flops * out["infer_clips_per_s"] / 1e12
    out["reference_tflops"] = 3 * flops * out["reference_train_clips_per_s"] / 1e12
    return out


# ----------------------------------------------------------------------------- iteration
class _Paths:
    """Teacher and optimizer of the fast path, and a reference-style copy of student, teacher and optimizer."""

    def __init__(self, s: BenchSettings, cfg, student):
        self.s = s
        self.ref_student = reference_copy(student)
        self.teacher = EmaTeacher.create(student)
        self.ref_teacher = EmaTeacher.create(self.ref_student)
        self.opt = sgd(cfg, student, fused=True)
        self.ref_opt = sgd(cfg, self.ref_student)
        self.ref = ReferenceStep(cfg, self.ref_student, s.device)

    def fast_fn(self, step, lab, unl):
        acc = step.new_accumulator()
        rng = _step_rng(self.s.seed)

        def run():
            step.micro_step(lab, unl, self.teacher, XI, rng(), acc)
            step.optimizer_step(self.opt, self.teacher, acc)

        return run

    def ref_fn(self, lab, unl):
        rng = _step_rng(self.s.seed)

        def run():
            self.ref.micro_step(lab, unl, self.ref_teacher, XI, rng())
            self.ref.optimizer_step(self.ref_opt, self.ref_teacher)

        return run


def iteration_section(s: BenchSettings, shared: Shared) -> dict:
    cfg = shared.cfg
    paths = _Paths(s, cfg, shared.student)
    lab, unl = synthetic_batches(s, s.labeled, s.unlabeled, seed=s.seed)
    u = cfg.method.mc_samples
    out: dict = {
        "labeled": s.labeled, "unlabeled": s.unlabeled, "mc_samples": u,
        "reference_style": f"fp32, manual attention, 3 student forwards, {u} full teacher forwards, per-entry EMA",
    }
    ref = time_calls(paths.ref_fn(lab, unl), s.device, warmup=1, repeats=max(2, s.repeats // 2))
    out["reference_ms"] = ref["median_ms"]
    if s.device.type == "cuda":  # the authors' torch multiplies float32 matrices in TF32 on Ampere and later
        with tf32(True):
            out["reference_tf32_ms"] = time_calls(paths.ref_fn(lab, unl), s.device, warmup=1,
                                                  repeats=max(2, s.repeats // 2))["median_ms"]

    def time_fast(step):
        return time_calls(paths.fast_fn(step, lab, unl), s.device, warmup=s.warmup, repeats=s.repeats)

    fast = None
    if shared.compiled:
        try:
            fast = time_fast(shared.fast_step)
            out["fast_compile_s"] = max(fast["first_ms"] - fast["median_ms"], 0.0) / 1e3
        except Exception as e:  # noqa: BLE001 - see Shared.compile_failed
            shared.compile_failed(e)
    eager = time_fast(shared.make_step(False)) if s.compile or fast is None else None
    if fast is None:
        fast = eager
    out["compiled"] = shared.compiled
    if shared.compile_error:
        out["compile_error"] = shared.compile_error
    precision = "bf16 autocast" if s.amp else "fp32"
    out["fast_style"] = (f"{precision}, SDPA, one student forward, teacher backbone once + {u} head-dropout masks, "
                         f"fused EMA{', torch.compile' if shared.compiled else ''}")
    out["fast_ms"] = fast["median_ms"]
    out["speedup"] = out["reference_ms"] / out["fast_ms"]
    if "reference_tf32_ms" in out:
        out["speedup_tf32"] = out["reference_tf32_ms"] / out["fast_ms"]
    # The student's own training step on the same rows (ready-made views, no teacher): the floor.
    step = shared.fast_step if shared.compiled else shared.make_step(False)
    x, y = _student_rows(s, shared.cfg)
    student = time_calls(_train_fn(step.forward, x, y, paths.opt, s.amp, s.device), s.device,
                         warmup=s.warmup, repeats=s.repeats)
    out["student_rows"] = x.shape[0]
    out["student_step_ms"] = student["median_ms"]
    out["overhead_ratio"] = out["fast_ms"] / out["student_step_ms"]
    if shared.compiled and eager is not None:
        out["fast_eager_ms"] = eager["median_ms"]
        out["speedup_eager"] = out["reference_ms"] / out["fast_eager_ms"]
    out["reference_times_ms"], out["fast_times_ms"] = ref["times_ms"], fast["times_ms"]
    # Clips the loader must deliver per second to keep the fast step fed (an unlabeled clip has 2 views).
    out["clip_views_per_s"] = (s.labeled + 2 * s.unlabeled) / (out["fast_ms"] * 1e-3)
    return out


# ----------------------------------------------------------------------------- overhead
def overhead_section(s: BenchSettings, shared: Shared) -> dict:
    """Host operations per phase and host syncs of one fast iteration (`bench.overhead`), after one warm-up
    iteration; on CUDA also the device time of the busiest kernels, to say what holds the step back."""
    paths = _Paths(s, shared.cfg, shared.student)
    lab, unl = synthetic_batches(s, s.labeled, s.unlabeled, seed=s.seed)
    step = shared.fast_step if shared.compiled else shared.make_step(False)
    run = paths.fast_fn(step, lab, unl)
    run()  # optimizer state, compiled graphs
    synchronize(s.device)
    out = {"labeled": s.labeled, "unlabeled": s.unlabeled, "compiled": shared.compiled,
           "targets": {"update_ops": 20, "host_syncs": 0}}
    out.update(count_ops(run, s.device))
    if s.device.type == "cuda":
        out["top_kernels"] = top_kernels(run, s.device)
    return out


# ----------------------------------------------------------------------------- memory
def _memory_of(s: BenchSettings, labeled: int, unlabeled: int, path: str, checkpoint: bool = False) -> float | str:
    """Peak GiB of one steady-state iteration with only this setting's tensors alive on the device."""
    _free(s.device)
    shared = paths = None
    try:
        s_eager = BenchSettings(**{**s.__dict__, "compile": False})
        shared = Shared(s_eager)
        if checkpoint:
            shared.student.set_grad_checkpointing(True)
        paths = _Paths(s_eager, shared.cfg, shared.student)
        lab, unl = synthetic_batches(s, labeled, unlabeled, seed=s.seed)
        run = paths.ref_fn(lab, unl) if path == "reference" else paths.fast_fn(shared.fast_step, lab, unl)
        run()  # allocates the optimizer state: the measured call is a steady-state one
        synchronize(s.device)
        return peak_memory_gib(run, s.device)
    except torch.cuda.OutOfMemoryError:
        return "out of memory"
    finally:
        del shared, paths
        _free(s.device)


def memory_section(s: BenchSettings) -> dict:
    """Peak memory of the iteration comparison (both paths) and of the training setting (3 unlabeled per
    labeled clip), the latter also with activation checkpointing. Eager (compile changes little).
    CUDA only: on the CPU every value is null (see `bench.timing`)."""
    names = {
        "iteration_reference_gib": (s.labeled, s.unlabeled, "reference", False),
        "iteration_fast_gib": (s.labeled, s.unlabeled, "fast", False),
        "train_fast_gib": (s.labeled, s.train_unlabeled, "fast", False),
        "train_fast_checkpoint_gib": (s.labeled, s.train_unlabeled, "fast", True),
    }
    out: dict = {"kind": None, "unit": "GiB", "compiled": False,
                 "iteration_labeled": s.labeled, "iteration_unlabeled": s.unlabeled,
                 "train_labeled": s.labeled, "train_unlabeled": s.train_unlabeled}
    if s.device.type != "cuda":
        out.update({name: None for name in names})
        out["note"] = "not measured on the CPU: torch keeps no CPU allocator statistics"
        return out
    out["kind"] = "cuda_max_allocated"
    torch._dynamo.reset()  # compiled graphs of the other sections may hold device tensors
    _free(s.device)
    out["other_allocated_gib"] = torch.cuda.memory_allocated(s.device) / 2**30  # not part of any setting
    for name, (lab, unl, path, ckpt) in names.items():
        value = _memory_of(s, lab, unl, path, ckpt)
        if isinstance(value, str):
            out[name], out[name.replace("_gib", "_error")] = None, value
        else:
            out[name] = value
    return out
