"""The closing table of bench/gpu_check.sh: every part's status and the measured numbers against the targets.

    python -m sefar_fast.bench.summary OUT STEM

reads, in OUT: logs/parts.tsv (part, status, seconds: one line per part, written by
the script), STEM-bench-vit-s.json, STEM-bench-vit-b.json, STEM-model-vit-b-sdpa.json and
STEM-memory-vit-b.json (`sefar bench`),
STEM-dali-check.json, STEM-video-check.json, STEM-kernels.json (bench/kernels_bench.py),
STEM-train.json and logs/train-metrics.jsonl (the short
`sefar train`, whose `data_wait` fields say how long the GPU waited for data).
Whatever is missing shows as missing; nothing here fails.

Targets (DESIGN.md, "Performance"; H100, 8 labeled + 24 unlabeled, compiled): the fast
iteration at least 12x the reference-style one (TF32 off) for vit-b and 10x for vit-s, at
most 1.3x its own student training step, the update in at most 20 host operations with no
host sync, the student step at 30% of the measured bf16 matmul peak for vit-b and 20% for
vit-s, the GPU waiting for data under 5% of `sefar train`, vit-b at 8 + 24 within 80 GB
(40 GB with activation checkpointing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

SPEEDUP_TARGET = {"vit-b": 12.0, "vit-s": 10.0}
MFU_TARGET = {"vit-b": 0.30, "vit-s": 0.20}
OVERHEAD_RATIO_TARGET = 1.3
UPDATE_OPS_TARGET = 20
DATA_WAIT_TARGET = 0.05
MEMORY_TARGET_GB = {"train_fast_gib": 80.0, "train_fast_checkpoint_gib": 40.0}  # vit-b, 8 + 24


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "SHORT")


def _wait_fraction(train: dict | None, metrics: Path) -> tuple[str, float] | None:
    """(how it was taken, fraction) of step time the GPU waited for data in the short `sefar train`.

    The trainer logs `data_wait` per logging interval and per epoch. The first interval holds
    torch.compile and the loader's start, so the steady state is the mean over the later
    intervals; with a single interval (or none logged) the epoch's value is all there is."""
    steps, epochs = [], []
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            value = rec.get("data_wait")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                (steps if rec.get("kind") == "step" else epochs).append(float(value))
    if len(steps) >= 2:
        return f"steady state, mean of {len(steps) - 1} logging intervals after the first", sum(steps[1:]) / (
            len(steps) - 1)
    if epochs:
        return "whole epoch, compile included", epochs[-1]
    last = (train or {}).get("last")
    if isinstance(last, dict) and isinstance(last.get("data_wait"), (int, float)):
        return "whole epoch, compile included", float(last["data_wait"])
    return None


def _kernel_rows(rec: dict | None) -> list[tuple[str, str, str, str]]:
    """The kernel benchmark (bench/kernels_bench.py): speed and bandwidth against targets, max |diff|."""
    if not rec:
        return []
    rows = []
    targets, met = rec.get("targets") or {}, rec.get("targets_met") or {}
    for name, kern in (rec.get("kernels") or {}).items():
        if name == "regulation" or not isinstance(kern, dict) or "speedup" not in kern:
            continue
        # every views kernel is held to the views targets; targets_met names them per kernel
        rows.append((f"{name} kernel: speedup, copy-bandwidth fraction",
                     f"{kern['speedup']:.1f}x, {100 * kern['bw_fraction']:.0f}% (max |diff| {kern['max_abs_diff']:.3g})",
                     f">= {targets.get('views_speedup', 0):.0f}x, {100 * targets.get('views_bw_fraction', 0):.0f}%",
                     _verdict(bool(met.get(f"{name}_speedup")) and bool(met.get(f"{name}_bw_fraction")))))
    reg = (rec.get("kernels") or {}).get("regulation")
    if isinstance(reg, dict) and "regulation_fraction_of_step" in rec:
        rows.append(("regulation kernel: share of a vit-s step",
                     f"{100 * rec['regulation_fraction_of_step']:.2f}% (max |diff| {reg.get('max_abs_diff', float('nan')):.3g})",
                     f"< {100 * targets.get('regulation_fraction_of_step', 0):.0f}%",
                     _verdict(bool(met.get("regulation_fraction_of_step")))))
    return rows


def summary_rows(out: Path, stem: str) -> list[tuple[str, str, str, str]]:
    """(check, measured, target, verdict) rows."""
    out = Path(out)
    rows: list[tuple[str, str, str, str]] = []
    parts = out / "logs" / "parts.tsv"
    if parts.is_file():
        for line in parts.read_text().splitlines():
            name, status, seconds = (line.split("\t") + ["", "", ""])[:3]
            rows.append((f"part {name}", f"{status} ({seconds} s)", "ok", _verdict(status == "ok")))
    for arch in ("vit-s", "vit-b"):
        rec = _load(out / f"{stem}-bench-{arch}.json")
        if rec is None:
            rows.append((f"{arch} bench", "missing", "", "-"))
            continue
        it, model, mem = rec.get("iteration") or {}, rec.get("model") or {}, rec.get("memory") or {}
        mem = (_load(out / f"{stem}-memory-{arch}.json") or {}).get("memory") or mem  # its own run, when made
        if "speedup" in it:
            shape = f"{it['labeled']}+{it['unlabeled']}"
            rows.append((f"{arch} iteration speedup ({shape}, {'compiled' if it.get('compiled') else 'eager'})",
                         f"{it['speedup']:.1f}x ({it['reference_ms']:.0f} -> {it['fast_ms']:.1f} ms)",
                         f">= {SPEEDUP_TARGET[arch]:.0f}x", _verdict(it["speedup"] >= SPEEDUP_TARGET[arch])))
            if "speedup_tf32" in it:
                rows.append((f"{arch} iteration speedup over a TF32 reference",
                             f"{it['speedup_tf32']:.1f}x ({it['reference_tf32_ms']:.0f} ms)", "", "-"))
            if "overhead_ratio" in it:
                rows.append((f"{arch} iteration / its student step", f"{it['overhead_ratio']:.2f}x "
                             f"({it['student_step_ms']:.1f} ms)", f"<= {OVERHEAD_RATIO_TARGET}x",
                             _verdict(it["overhead_ratio"] <= OVERHEAD_RATIO_TARGET)))
        else:
            rows.append((f"{arch} iteration", it.get("error", "missing")[:80], "", "-"))
        over = rec.get("overhead") or {}
        if "ops" in over:
            ops = over["ops"]
            rows.append((f"{arch} host ops per phase (views/teacher/student/update), host syncs",
                         f"{ops['views']}/{ops['teacher']}/{ops['student']}/{ops['update']}, {over['host_syncs']}",
                         f"update <= {UPDATE_OPS_TARGET}, 0 syncs",
                         _verdict(ops["update"] <= UPDATE_OPS_TARGET and over["host_syncs"] == 0)))
        if "mfu" in model:
            sheet = (f", datasheet {100 * model['mfu_datasheet']:.1f}%" if model.get("mfu_datasheet") else "")
            rows.append((f"{arch} student train step MFU", f"{100 * model['mfu']:.1f}% ({model['tflops']:.0f} of "
                         f"{model['peak_tflops']:.0f} TFLOP/s, {model['train_clips_per_s']:.0f} clips/s{sheet})",
                         f">= {100 * MFU_TARGET[arch]:.0f}%", _verdict(model["mfu"] >= MFU_TARGET[arch])))
        else:
            rows.append((f"{arch} model", model.get("error", "missing")[:80], "", "-"))
        shape = f"{mem.get('train_labeled')}+{mem.get('train_unlabeled')}"
        for key, label in (("train_fast_gib", ""), ("train_fast_checkpoint_gib", ", checkpointing")):
            if key not in mem:
                continue
            value = mem[key]
            target = MEMORY_TARGET_GB[key] if arch == "vit-b" and shape == "8+24" else None
            shown = mem.get(key.replace("_gib", "_error")) if value is None else f"{value * 2**30 / 1e9:.1f} GB"
            ok = None if target is None or value is None else value * 2**30 / 1e9 <= target
            rows.append((f"{arch} peak memory {shape}{label}", str(shown), f"<= {target:.0f} GB" if target else "",
                         _verdict(ok)))
    sdpa = (_load(out / f"{stem}-model-vit-b-sdpa.json") or {}).get("model") or {}
    if "mfu" in sdpa:  # the same step with the torch attention path: what the temporal kernel adds
        rows.append(("vit-b student step MFU, torch attention path (SEFAR_KERNELS=torch)",
                     f"{100 * sdpa['mfu']:.1f}% ({sdpa['train_clips_per_s']:.0f} clips/s)", "", "-"))
    dali = _load(out / f"{stem}-dali-check.json")
    if dali is not None:
        rows.append(("DALI GPU decode vs host", f"mean |diff| {dali.get('mean_abs_diff', float('nan')):.2f}, "
                     f"max {dali.get('max_abs_diff')}", "mean < 2", _verdict(bool(dali.get("ok")))))
    video = _load(out / f"{stem}-video-check.json")
    if video is not None:
        check = video.get("check") or {}
        diffs = ", ".join(f"{codec} {check[codec]['mean_abs_diff']:.2f}" for codec in ("h264", "vp9")
                          if isinstance(check.get(codec), dict) and "mean_abs_diff" in check[codec])
        rows.append(("direct video NVDEC vs PyAV", f"mean |diff| {diffs or 'missing'}", "mean < 3, all by DALI",
                     _verdict(bool(check.get("ok")))))
    rows.extend(_kernel_rows(_load(out / f"{stem}-kernels.json")))
    train = _load(out / f"{stem}-train.json")
    wait = _wait_fraction(train, out / "logs" / "train-metrics.jsonl")
    if wait is not None:
        how, value = wait
        rows.append((f"sefar train GPU waiting for data ({how})", f"{100 * value:.1f}%",
                     f"< {100 * DATA_WAIT_TARGET:.0f}%", _verdict(value < DATA_WAIT_TARGET)))
    elif train is not None:
        rows.append(("sefar train GPU waiting for data", "not reported by sefar train",
                     f"< {100 * DATA_WAIT_TARGET:.0f}%", "-"))
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m sefar_fast.bench.summary OUT STEM")
    table = Table(title=f"GPU check {argv[1]}", show_header=True, header_style="bold")
    for col in ("check", "measured", "target", "verdict"):
        table.add_column(col)
    for row in summary_rows(Path(argv[0]), argv[1]):
        style = "red" if row[3] == "SHORT" else None
        table.add_row(*row, style=style)
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
