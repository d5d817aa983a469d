"""Which results are bit-identical: one short `sefar train` run under changed conditions, compared.

    python bench/determinism.py --out runs/determinism                       # about 6 runs of a minute each
    python bench/determinism.py --out runs/determinism -- --epochs 4 method.warmup_epochs=2

Every variant runs the same command (the synth preset, shortened; arguments after `--` are added)
in a fresh folder; the first is the reference. A variant is "bit-identical" when every tensor of
its final weights (last.safetensors) equals the reference's bit for bit; otherwise the table gives
the largest weight difference, the first step whose logged loss differs and both final top-1s.
The variants:
  - again: the same command, the same environment (run-to-run on one machine);
  - threads 2: OMP_NUM_THREADS=2 (the trainer's default on a 2-core machine; the reference is at 1);
  - ATEN_CPU_CAPABILITY=default: torch's scalar kernels instead of the machine's vector ones
    (a machine of another CPU generation picks other kernels, e.g. AVX-512 against AVX2);
  - jobs: two runs at once (what `bench/synth_results.py --jobs 2` does), each at 1 thread.
The result JSON (--json) records the machine's CPU, its vector capability and torch's version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load_file

BASE = ["--epochs", "4", "method.warmup_epochs=2", "eval.every=4", "run.log_every=1", "--seed", "0"]
VARIANTS = {  # name -> environment changes
    "reference": {"OMP_NUM_THREADS": "1"},
    "again": {"OMP_NUM_THREADS": "1"},
    "threads 2": {"OMP_NUM_THREADS": "2"},
    "ATEN_CPU_CAPABILITY=default": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"},
}
PAIR = ("jobs: run A of two at once", "jobs: run B of two at once")


def train(out: Path, env_changes: dict[str, str], common: list[str]) -> float:
    """Run one variant into `out` (skipped when it finished before); return its wall time in seconds."""
    if (out / "result.json").is_file():
        return json.loads((out / "wall.json").read_text())["wall_s"]
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "sefar_fast", "train", "--out", str(out), "--json", str(out / "result.json"),
           *BASE, *common]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, **env_changes})
    wall = time.perf_counter() - start
    (out / "wall.json").write_text(json.dumps({"wall_s": wall}))
    return wall


def step_losses(run: Path) -> list[tuple[int, float]]:
    records = (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    return [(r["global_step"], r["loss"]) for r in records if r["kind"] == "step"]


def compare(ref: Path, run: Path) -> dict:
    a, b = load_file(str(ref / "last.safetensors")), load_file(str(run / "last.safetensors"))
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    diff = 0.0 if same else max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    first = next((s for (s, x), (_, y) in zip(step_losses(ref), step_losses(run)) if x != y), None)
    top1 = json.loads((run / "result.json").read_text())["last"]["val_top1"]
    return {"bit_identical": same, "max_weight_diff": diff, "first_differing_step": first, "final_top1": top1}


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return names[0] if names else platform.processor() or platform.machine()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/determinism"))
    ap.add_argument("--json", type=Path, help="write the comparison as JSON")
    ap.add_argument("common", nargs="*", help="extra arguments for every run, e.g. --epochs 6")
    args = ap.parse_args(argv)
    walls = {name: train(args.out / f"v{i}", env, args.common) for i, (name, env) in enumerate(VARIANTS.items())}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(train, args.out / f"pair{i}", {"OMP_NUM_THREADS": "1"}, args.common)
                   for i, name in enumerate(PAIR)}
        walls |= {name: f.result() for name, f in futures.items()}
    folders = {name: args.out / f"v{i}" for i, name in enumerate(VARIANTS)}
    folders |= {name: args.out / f"pair{i}" for i, name in enumerate(PAIR)}
    ref = folders["reference"]
    rows = {name: {**compare(ref, run), "wall_s": round(walls[name], 1)} for name, run in folders.items()}
    lines = ["| variant | bit-identical weights | largest weight difference | first step whose loss differs "
             "| final top-1 % |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {'yes' if r['bit_identical'] else 'no'} | {r['max_weight_diff']:.3g} "
                     f"| {r['first_differing_step'] or '-'} | {100 * r['final_top1']:.1f} |")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        machine = {"cpu": cpu_name(), "cores": os.cpu_count(),
                   "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}
        command = " ".join(["sefar train", *BASE, *args.common])
        args.json.write_text(json.dumps({"command": command, "machine": machine, "variants": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
