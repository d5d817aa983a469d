"""Time the Triton kernels against their torch references; write the numbers as JSON.

    python bench/kernels_bench.py bench/results/kernels-h100.json            # CUDA, training sizes
    python bench/kernels_bench.py /tmp/smoke.json --device cpu                # interpreter smoke run, tiny sizes

For each kernel: median time of many runs after a warm-up (CUDA events on the GPU) of
the kernel alone (parameters already uploaded) and of the whole call (upload + launch),
the bytes it must move, the achieved GB/s of the kernel, that as a fraction of the
device's copy bandwidth (a large device-to-device copy timed in the same run: bytes
read + bytes written over its time), and the speedup of the call over the torch
reference; plus the largest difference between the two outputs. Bytes moved count what any implementation must
move: the outputs once, and the source pixels inside each view's sampled span once
per distinct source frame (a frame shown twice by a perturbation is read once).

The temporal attention kernel runs on the student rows of a step (labeled + 2 x unlabeled
clips, every token slot of every frame), with ViT-S and ViT-B widths.

The regulation kernel is also put against a ViT-S training step of the same batch
(student forward + backward on [labeled; strong; mixed], teacher forward on the weak
views, bf16 autocast), unless --no-step (--step runs it on the CPU too, slowly).

Targets (H100): view builders >= 70% of copy bandwidth and >= 3x the reference;
regulation < 2% of the step. On --device cpu the kernels run in the Triton
interpreter: the numbers only show that every code path runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="JSON file to write")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--batch", type=int, help="unlabeled clips per step (default 24; cpu 2)")
    ap.add_argument("--labeled", type=int, help="labeled clips per step, for the step timing (default 8; cpu 1)")
    ap.add_argument("--elements", default="2,2,4")
    ap.add_argument("--frame", help="H0,W0 of decoded frames (default 256,340; cpu 20,26)")
    ap.add_argument("--crop", type=int, help="view side S (default 224; cpu 16)")
    ap.add_argument("--patch", type=int, help="patch side (default 16; cpu 8)")
    ap.add_argument("--classes", type=int, help="classes C (default 99; cpu 5)")
    ap.add_argument("--samples", type=int, default=10, help="MC-dropout samples U")
    ap.add_argument("--runs", type=int, help="timed runs per measurement (default 100; cpu 2)")
    ap.add_argument("--warmup", type=int, help="untimed runs first (default 10; cpu 1)")
    ap.add_argument("--step", action=argparse.BooleanOptionalAction, default=None,
                    help="time a ViT-S training step for the regulation's share (default: on CUDA only)")
    args = ap.parse_args(argv)
    gpu = args.device == "cuda"
    defaults = dict(batch=(24, 2), labeled=(8, 1), frame=("256,340", "20,26"), crop=(224, 16), patch=(16, 8),
                    classes=(99, 5), runs=(100, 2), warmup=(10, 1))
    for key, (on_gpu, on_cpu) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, on_gpu if gpu else on_cpu)
    if args.step is None:
        args.step = gpu
    args.elements = [int(v) for v in args.elements.split(",")]
    args.frame = tuple(int(v) for v in args.frame.split(","))
    return args


class Timer:
    """Median seconds per call of a callable: CUDA events on the GPU, perf_counter on the CPU.

    `timer(fn)` runs `inner` calls between two events without synchronising, so a call whose
    host work outlasts its GPU work is timed by the host work (what a step pays without graphs).
    `timer.graphed(fn)` captures `inner` calls in a CUDA graph and times its replays: the GPU
    work alone, launch overhead removed (the kernel's own bandwidth).
    """

    def __init__(self, torch, device, runs, warmup, inner=10):
        self.torch, self.cuda = torch, device.type == "cuda"
        self.runs, self.warmup, self.inner = runs, warmup, inner if device.type == "cuda" else 1

    def __call__(self, fn) -> float:
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.runs):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(self.inner):
                    fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3 / self.inner)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def graphed(self, fn) -> float:
        if not self.cuda:
            return self(fn)
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compile and warm up outside the capture
            for _ in range(max(self.warmup, 1)):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(self.inner):
                fn()
        inner, self.inner = self.inner, 1
        try:
            return self(graph.replay) / inner
        finally:
            self.inner = inner


def copy_bandwidth(torch, device, timer) -> float:
    """Bytes/s of a large device copy (read + write), the roofline the view kernels are held to."""
    n = (1 << 30) if device.type == "cuda" else (1 << 22)
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(7)
    dst = torch.empty_like(src)
    seconds = timer.graphed(lambda: dst.copy_(src))
    return 2 * n / seconds


def source_bytes(torch, frames, params) -> int:
    """Source bytes inside each view's sampled span, once per distinct source frame of a clip."""
    from sefar_fast.ops.views import _axis_taps

    b, k, h0, w0, _ = frames.shape
    box = params.box.float().cpu()
    y_lo, y_hi, _ = _axis_taps(box[:, 0], box[:, 2], params.out_size, h0)
    x_lo, x_hi, _ = _axis_taps(box[:, 1], box[:, 3], params.out_size, w0)
    rows = (y_hi.max(1).values - y_lo.min(1).values + 1).tolist()
    cols = (x_hi.max(1).values - x_lo.min(1).values + 1).tolist()
    order = params.order.cpu() if params.order is not None else torch.arange(k).expand(b, k)
    distinct = [len(set(order[i].tolist())) for i in range(b)]
    return int(sum(r * c * 3 * n for r, c, n in zip(rows, cols, distinct)))


def record(seconds_kernel, seconds_call, seconds_ref, nbytes, copy_bps, max_err) -> dict:
    """The kernel alone (parameters already on the device) sets GB/s and bw_fraction; the whole
    call (parameter upload + launch, what a training step pays) sets the speedup over the reference."""
    achieved = nbytes / seconds_kernel
    return dict(ms_kernel=seconds_kernel * 1e3, ms_call=seconds_call * 1e3, ms_torch=seconds_ref * 1e3,
                bytes_moved=nbytes, gbps=achieved / 1e9, bw_fraction=achieved / copy_bps,
                call_bw_fraction=nbytes / seconds_call / copy_bps, speedup=seconds_ref / seconds_call,
                kernel_speedup=seconds_ref / seconds_kernel, max_abs_diff=max_err)


def bench_views(torch, np, args, device, timer, copy_bps, dtype) -> dict:
    from sefar_fast.kernels.views import (
        build_strong_mixed_triton,
        build_views_triton,
        prepare_strong_mixed,
        prepare_views,
    )
    from sefar_fast.ops import views as ref
    from sefar_fast.ops.mixing import draw_mix

    rng = np.random.default_rng(0)
    b, k = args.batch, sum(args.elements)
    h0, w0 = args.frame
    s = args.crop
    mean, std = [0.45] * 3, [0.225] * 3
    frames = torch.randint(0, 256, (b, k, h0, w0, 3), dtype=torch.uint8, device=device)
    out = {}

    weak = ref.draw_view_params(b, args.elements, (h0, w0), s, "weak", rng, ref_short=min(h0, w0))
    weak_dev = weak.to(device)
    y = torch.empty((b, k, 3, s, s), dtype=dtype, device=device)
    launch = prepare_views(frames, weak, mean, std)
    t_kernel = timer.graphed(lambda: launch(y))
    t_call = timer(lambda: build_views_triton(frames, weak, mean, std, y))  # host params, as in a step
    t_ref = timer(lambda: ref.build_views(frames, weak_dev, mean, std, dtype))
    err = (y.float() - ref.build_views(frames, weak_dev, mean, std, dtype).float()).abs().max().item()
    nbytes = y.numel() * y.element_size() + source_bytes(torch, frames, weak)
    out["views"] = record(t_kernel, t_call, t_ref, nbytes, copy_bps, err)

    strong = ref.draw_view_params(b, args.elements, (h0, w0), s, "strong", rng, ref_short=min(h0, w0))
    plan = draw_mix(b, args.elements, (s // args.patch,) * 2, rng)
    strong_dev = strong.to(device)
    clean_dev = replace(strong_dev, channel_scale=torch.ones_like(strong_dev.channel_scale))
    masks, partner = plan.masks.to(device), plan.partner.to(device)
    x_s = torch.empty((b, k, 3, s, s), dtype=dtype, device=device)
    x_m = torch.empty_like(x_s)

    def call():  # host parameters, as the training step passes them (one pinned upload)
        build_strong_mixed_triton(frames, strong, mean, std, plan.masks, plan.partner, args.elements, args.patch,
                                  x_s, x_m)

    launch_mixed = prepare_strong_mixed(frames, strong, mean, std, plan.masks, plan.partner, args.elements,
                                        args.patch)

    def reference():  # the training step's torch path: clean strong view, channel drop, mix
        clean = ref.build_views(frames, clean_dev, mean, std, dtype)
        dropped = clean * strong_dev.channel_scale.to(dtype)[:, None, :, None, None]
        return dropped, ref.mix_views(dropped, clean, masks, partner, args.elements, args.patch)

    t_kernel = timer.graphed(lambda: launch_mixed(x_s, x_m))
    t_call = timer(call)
    t_ref = timer(reference)
    want_s, want_m = reference()
    err = max((x_s.float() - want_s.float()).abs().max().item(), (x_m.float() - want_m.float()).abs().max().item())
    nbytes = 2 * x_s.numel() * x_s.element_size() + source_bytes(torch, frames, strong)
    out["strong_mixed"] = record(t_kernel, t_call, t_ref, nbytes, copy_bps, err)
    return out


def bench_regulation(torch, args, device, timer, copy_bps) -> dict:
    from sefar_fast.kernels.regulation import regulate_head_triton
    from sefar_fast.ops.regulation import regulate

    g = torch.Generator(device=device).manual_seed(0)
    b, c, d, u = args.batch, args.classes, 256, args.samples
    feat = torch.randn(b, d, device=device, generator=g)
    weight = torch.randn(c, d, device=device, generator=g) / 16
    bias = torch.randn(c, device=device, generator=g)

    def reference():  # the training step's torch path: U masks, head logits, softmax, regulate
        keep = (torch.rand((u, b, d), generator=g, device=device) >= 0.5).float() / 0.5
        probs = torch.softmax((feat[None] * keep) @ weight.T + bias, dim=-1)
        return regulate(probs)

    t_kernel = timer.graphed(lambda: regulate_head_triton(feat, weight, bias, 1234, u))
    t_call = timer(lambda: regulate_head_triton(feat, weight, bias, 1234, u))
    t_ref = timer(reference)
    reg, masks = regulate_head_triton(feat, weight, bias, 1234, u, return_masks=True)
    want = regulate(torch.softmax((feat[None] * masks) @ weight.T + bias, dim=-1))
    err = max((reg.eta - want.eta).abs().max().item(), (reg.mean - want.mean).abs().max().item())
    nbytes = 4 * (feat.numel() + weight.numel() + bias.numel() + 2 * b * c + 6 * b)
    return record(t_kernel, t_call, t_ref, nbytes, copy_bps, err)


def bench_element_attention(torch, args, device, timer, copy_bps, dtype) -> dict:
    """Temporal attention within each element (`kernels.attention`) on a step's student rows
    (labeled + strong + mixed), ViT-S and ViT-B heads, against the torch path (SDPA with the
    block-diagonal mask): the forward, and forward + backward (what training pays)."""
    from sefar_fast.kernels.attention import element_attention_backward, element_attention_triton
    from sefar_fast.ops.attention import element_attention

    # A tenth of the runs: the torch path's forward + backward at ViT-B width takes milliseconds.
    timer = Timer(torch, device, runs=max(2, timer.runs // 10), warmup=max(1, timer.warmup // 3))
    rows, k = args.labeled + 2 * args.batch, sum(args.elements)
    slots = (args.crop // args.patch) ** 2 + 1
    element = torch.repeat_interleave(torch.arange(len(args.elements), device=device),
                                      torch.tensor(args.elements, device=device))
    widths = {"vit_s": (6, 384), "vit_b": (12, 768)} if device.type == "cuda" else {"tiny": (2, 32)}
    out = {}
    for name, (heads, d) in widths.items():
        g = torch.Generator(device=device).manual_seed(0)
        qkv = torch.randn(rows, k, slots, 3 * d, generator=g, device=device).to(dtype)
        grad = torch.randn(rows, k, slots, d, generator=g, device=device).to(dtype)
        x = qkv.clone().requires_grad_(True)
        tokens = rows * k * slots * qkv.element_size()

        t_kernel = timer.graphed(lambda: element_attention_triton(qkv, element, heads))
        t_ref = timer(lambda: element_attention(qkv, element, heads))
        err = (element_attention_triton(qkv, element, heads).float()
               - element_attention(qkv, element, heads).float()).abs().max().item()
        # reads q, k, v, writes the output
        out[f"element_attention_{name}"] = record(t_kernel, t_kernel, t_ref, 4 * d * tokens, copy_bps, err)

        def kernel_train():
            return torch.autograd.grad(element_attention_triton(x, element, heads), x, grad)[0]

        def reference_train():
            return torch.autograd.grad(element_attention(x, element, heads), x, grad)[0]

        t_kernel = timer.graphed(lambda: (element_attention_triton(qkv, element, heads),
                                          element_attention_backward(grad, qkv, element, heads)))
        t_call, t_ref = timer(kernel_train), timer(reference_train)
        err = (kernel_train().float() - reference_train().float()).abs().max().item()
        # forward as above; backward reads q, k, v and the output's gradient, writes dq, dk, dv
        out[f"element_attention_train_{name}"] = record(t_kernel, t_call, t_ref, 11 * d * tokens, copy_bps, err)
    return out


def step_seconds(torch, args, device, timer) -> float:
    """One ViT-S training step of this batch: student fwd+bwd on [labeled; strong; mixed], teacher fwd."""
    from sefar_fast.models import build_model

    s, k = args.crop, sum(args.elements)
    net = build_model("vit-s", args.classes, args.elements, img_size=s, patch_size=args.patch, device=device)
    teacher = build_model("vit-s", args.classes, args.elements, img_size=s, patch_size=args.patch, device=device)
    teacher.enable_mc_dropout()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    student_x = torch.randn(args.labeled + 2 * args.batch, k, 3, s, s, device=device, dtype=dtype)
    teacher_x = torch.randn(args.batch, k, 3, s, s, device=device, dtype=dtype)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            with torch.no_grad():
                teacher.features(teacher_x)
            loss = net(student_x).float().logsumexp(-1).mean()
        loss.backward()

    return Timer(torch, device, runs=max(3, timer.runs // 10), warmup=3, inner=1)(step)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import numpy as np
    import torch
    import triton

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu for a smoke run", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    timer = Timer(torch, device, args.runs, args.warmup)
    copy_bps = copy_bandwidth(torch, device, timer)
    kernels = bench_views(torch, np, args, device, timer, copy_bps, dtype)
    kernels["regulation"] = bench_regulation(torch, args, device, timer, copy_bps)
    kernels.update(bench_element_attention(torch, args, device, timer, copy_bps, dtype))
    result = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        interpreter=device.type == "cpu", torch=torch.__version__, triton=triton.__version__,
        config=dict(batch=args.batch, elements=args.elements, frame=list(args.frame), crop=args.crop,
                    patch=args.patch, classes=args.classes, samples=args.samples, runs=args.runs,
                    warmup=args.warmup, dtype=str(dtype).removeprefix("torch.")),
        copy_gbps=copy_bps / 1e9, kernels=kernels,
    )
    if args.step:
        step = step_seconds(torch, args, device, timer)
        result["vit_s_step_ms"] = step * 1e3
        result["regulation_fraction_of_step"] = kernels["regulation"]["ms_call"] / 1e3 / step
    targets = dict(views_bw_fraction=0.70, views_speedup=3.0, regulation_fraction_of_step=0.02)
    met = {}
    if device.type == "cuda":
        for name in ("views", "strong_mixed"):
            met[f"{name}_bw_fraction"] = kernels[name]["bw_fraction"] >= targets["views_bw_fraction"]
            met[f"{name}_speedup"] = kernels[name]["speedup"] >= targets["views_speedup"]
        if "regulation_fraction_of_step" in result:
            met["regulation_fraction_of_step"] = result["regulation_fraction_of_step"] < 0.02
    result["targets"], result["targets_met"] = targets, met
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
