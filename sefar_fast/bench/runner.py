"""`sefar bench`: run the sections, print one rich table, return the JSON record.

    sefar bench --quick                                   # CPU: vit-test, under 3 minutes on 2 cores
    sefar bench --arch vit-b --device cuda --json r.json  # one GPU: 8 frames at 224 x 224
    python -m sefar_fast.bench.runner --unlabeled 24 --no-compile iteration   # every knob

The record holds the card, driver and versions (`bench.env`), the settings, and
one dict per section with plainly named fields: `iteration.reference_ms`,
`iteration.fast_ms`, `iteration.speedup`, `model.train_clips_per_s`,
`model.tflops`, `model.mfu`, `model.peak_tflops`, `memory.train_fast_gib`,
`data.clips_per_s`, ... A section that fails records `{"error": ...}` and the
others still run, so one broken part never hides the rest of a GPU session.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import torch
from rich.table import Table

from sefar_fast.bench import sections as bench_sections
from sefar_fast.bench.env import environment
from sefar_fast.bench.workload import SECTIONS, default_settings, resolve_device
from sefar_fast.console import console, err_console
from sefar_fast.errors import SefarError

SCHEMA = "sefar-bench/1"


def run_bench(sections: list[str] | None = None, arch: str | None = None, batch: int | None = None,
              device: str | None = None, quick: bool = False, *, unlabeled: int | None = None,
              compile: bool | None = None, show: bool = True, **overrides) -> dict:
    """Run the benchmark sections (default all) and return the record; `overrides` set
    `workload.BenchSettings` fields (crop, repeats, data_batches, ...; tests use them to stay small)."""
    chosen = list(sections) if sections else list(SECTIONS)
    unknown = [x for x in chosen if x not in SECTIONS]
    if unknown:
        raise SefarError(f"unknown bench section {unknown[0]!r}: choose from {', '.join(SECTIONS)}")
    chosen = [x for x in SECTIONS if x in chosen]  # a fixed order: memory last, on a clean device
    dev = resolve_device(device)
    s = default_settings(dev, arch=arch, batch=batch, unlabeled=unlabeled, quick=quick, compile=compile, **overrides)
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        record = _run(s, chosen, show)
    finally:
        torch.set_num_threads(threads)
    if show:

        console.print(bench_table(record))
    return record


def _run(s, chosen: list[str], show: bool) -> dict:
    record: dict = {"schema": SCHEMA, **environment(s.device), "sections": chosen, "settings": s.record()}
    t_start = time.perf_counter()
    shared = None  # the model and iteration sections share one student and one compiled step

    def with_shared(section):
        def run():
            nonlocal shared
            shared = shared or bench_sections.Shared(s)
            return section(s, shared)

        return run

    runners = {
        "data": lambda: bench_sections.data_section(s),
        "model": with_shared(bench_sections.model_section),
        "iteration": with_shared(bench_sections.iteration_section),
        "overhead": with_shared(bench_sections.overhead_section),
        "memory": lambda: bench_sections.memory_section(s),
    }
    for name in chosen:
        if name == "memory":
            shared = None  # memory measures each setting alone on the device
        record[name] = _run_section(name, runners[name], show)
    _derived(record)
    record["seconds"] = time.perf_counter() - t_start
    return record


def _run_section(name: str, fn, show: bool) -> dict:
    if show:
        err_console.print(f"[dim]bench: {name} ...[/]")
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - recorded, the other sections still run
        if show:
            err_console.print(f"[red]bench {name} failed:[/] {type(e).__name__}: {e}")
            err_console.print(traceback.format_exc(), markup=False, highlight=False)
        out = {"error": f"{type(e).__name__}: {e}"}
    bench_sections._free(torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    out["seconds"] = time.perf_counter() - t0
    return out


def _derived(record: dict) -> None:
    """Fields that combine sections: can the loader keep up with the fast step?"""
    data, it = record.get("data"), record.get("iteration")
    if data and it and "clips_per_s" in data and "clip_views_per_s" in it:
        data["step_needs_clips_per_s"] = it["clip_views_per_s"]
        data["headroom"] = data["clips_per_s"] / it["clip_views_per_s"]


# ----------------------------------------------------------------------------- the table
def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ms":
        return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"
    if kind == "x":
        return f"{value:.1f}x"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "s":
        return f"{value:.1f} s"
    if kind == "gib":
        return f"{value:.2f} GiB" if value >= 0.01 else f"{value * 1024:.1f} MiB"
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


def table_rows(record: dict) -> list[tuple[str, str, str]]:
    """(section, what, value) rows of a record, for the screen and for summaries."""
    rows: list[tuple[str, str, str]] = []
    for name in record["sections"]:
        sec = record.get(name) or {}
        if "error" in sec:
            rows.append((name, "failed", sec["error"][:120]))
            continue
        add = lambda what, key, kind="": rows.append((name, what, _fmt(sec.get(key), kind)))  # noqa: E731
        if name == "data":
            add(f"loader clips/s ({sec.get('backend')}, batch {sec.get('batch_size')})", "clips_per_s")
            add("loader frames/s", "frames_per_s")
            for codec, d in (sec.get("direct_video") or {}).items():
                rows.append((name, f"direct video {codec} clips/s (no store)", _fmt(d.get("clips_per_s"), "")))
            if "headroom" in sec:
                add("fast step needs clip-views/s", "step_needs_clips_per_s")
                add("loader headroom over the fast step", "headroom", "x")
        elif name == "model":
            fast = f"{sec.get('precision')}, SDPA{', compiled' if sec.get('compiled') else ''}"
            add(f"train clips/s, {fast} (batch {sec.get('batch')})", "train_clips_per_s")
            if "eager_train_clips_per_s" in sec:
                add(f"train clips/s, {sec.get('precision')}, SDPA, eager", "eager_train_clips_per_s")
            add("train clips/s, reference style (fp32, manual attention)", "reference_train_clips_per_s")
            add("inference clips/s (eager)", "infer_clips_per_s")
            add("achieved TFLOP/s (train, fast)", "tflops")
            add(f"matmul peak TFLOP/s ({sec.get('peak_dtype')}, same run)", "peak_tflops")
            add("MFU (train, fast)", "mfu", "pct")
            if sec.get("datasheet_tflops"):
                add("MFU against the datasheet peak", "mfu_datasheet", "pct")
            if "compile_s" in sec:
                add("compile time (not in the timings)", "compile_s", "s")
            if "compile_error" in sec:
                rows.append((name, "torch.compile failed, measured eagerly", sec["compile_error"][:120]))
        elif name == "iteration":
            shape = f"{sec.get('labeled')}+{sec.get('unlabeled')} clips, U={sec.get('mc_samples')}"
            add(f"reference style ({shape})", "reference_ms", "ms")
            add("fast (trainer step)", "fast_ms", "ms")
            add("speedup", "speedup", "x")
            if "reference_tf32_ms" in sec:
                add("reference style with TF32 matmuls", "reference_tf32_ms", "ms")
                add("speedup over the TF32 reference", "speedup_tf32", "x")
            add(f"student training step alone ({sec.get('student_rows')} rows)", "student_step_ms", "ms")
            add("iteration / student step (overhead ratio)", "overhead_ratio", "x")
            if "fast_eager_ms" in sec:
                add("fast, eager (no compile)", "fast_eager_ms", "ms")
                add("speedup, eager", "speedup_eager", "x")
                if (sec.get("fast_compile_s") or 0) >= 0.5:  # ~0 when the model section built the graph
                    add("compile time (not in the timings)", "fast_compile_s", "s")
        elif name == "overhead":
            ops = sec.get("ops") or {}
            for phase in ("views", "teacher", "student", "update"):
                rows.append((name, f"host ops, {phase} ({_fmt((sec.get('host_ms') or {}).get(phase), 'ms')} host)",
                             str(ops.get(phase, "-"))))
            add("host syncs in one iteration", "host_syncs")
            for kern in (sec.get("top_kernels") or [])[:5]:
                rows.append((name, f"device time: {kern['name'][:60]}", f"{100 * kern['share']:.1f}%"))
        elif name == "memory":
            it = f"{sec.get('iteration_labeled')}+{sec.get('iteration_unlabeled')}"
            tr = f"{sec.get('train_labeled')}+{sec.get('train_unlabeled')}"
            for key, what in (("iteration_reference_gib", f"reference style, {it}"),
                              ("iteration_fast_gib", f"fast, {it}"), ("train_fast_gib", f"fast, {tr}"),
                              ("train_fast_checkpoint_gib", f"fast, {tr}, activation checkpointing")):
                err = sec.get(key.replace("_gib", "_error"))
                if sec.get("kind"):
                    rows.append((name, f"peak {what}", err or _fmt(sec.get(key), "gib")))
            if sec.get("note"):
                rows.append((name, sec["note"], ""))
    return rows


def bench_table(record: dict):
    st = record["settings"]
    k = sum(st["elements"])
    flags = ("bf16" if st["amp"] else "fp32") + (", compile" if st["compile"] else "")
    table = Table(title=f"sefar bench: {st['arch']} at {k}x{st['crop']}x{st['crop']}, {record['card']} ({flags})",
                  show_header=True, header_style="bold")
    table.add_column("section")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    last = None
    for section, what, value in table_rows(record):
        table.add_row(section if section != last else "", what, value)
        last = section
    return table


# ----------------------------------------------------------------------------- python -m
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sefar_fast.bench.runner", description=__doc__.splitlines()[0])
    p.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default all)")
    p.add_argument("--arch")
    p.add_argument("--batch", type=int, help="labeled clips per iteration")
    p.add_argument("--unlabeled", type=int, help="unlabeled clips per iteration (default: 3 x labeled)")
    p.add_argument("--device")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--threads", type=int, help="torch CPU threads during the run")
    p.add_argument("--json", help="write the record here ('-' for stdout)")
    a = p.parse_args(argv)
    try:
        record = run_bench(a.sections or None, a.arch, a.batch, a.device, a.quick, unlabeled=a.unlabeled,
                           compile=a.compile, threads=a.threads)
    except SefarError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if a.json:
        text = json.dumps(record, indent=2, default=float)
        if a.json == "-":
            print(text)
        else:
            with open(a.json, "w") as f:
                f.write(text + "\n")


if __name__ == "__main__":
    main()
