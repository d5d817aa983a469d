"""Run the method comparison and ablations on the built-in synth data; print the table for docs/results.md.

    python bench/synth_results.py --seeds 0 1 2 --jobs 2 --out runs/r300 -- --epochs 300 \
        method.warmup_epochs=80 method.unlabeled_ratio=1 eval.every=20     # everything (hours on a laptop CPU)
    python bench/synth_results.py --rows sefar supervised --seeds 0       # a subset
    python bench/synth_results.py --table-only --out runs/results          # rebuild the table from finished runs

Each row is one `sefar train` command (printed in the table, so any number can be
reproduced by hand); each (row, seed) run writes its result JSON, and finished
runs are skipped, so the script can be stopped and started again. `--jobs N` runs
N at a time, each with cores / N threads. The table
reports the final-epoch top-1 of the model the run reports (teacher for
semi-supervised methods, student otherwise) with mean and std over seeds, the
final student's top-1 (the same model for supervised rows), and the best
epoch's top-1 for reference (val is the only held-out split of synth, so
"best" is selected on it and is optimistic).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sefar_fast.config import build_config

# (row name, group, extra arguments). Every row trains at the run's label rate (the preset's 5%, or --label-rate in
# the common arguments) unless it says otherwise.
ROWS = [
    ("supervised", "methods", ["--method", "supervised"]),
    # 100% labels: 1/rate times the steps per epoch, so rate times the epochs (EQUAL_STEPS, rounded up)
    # gives at least the other rows' step count
    ("supervised 100%", "methods", ["--method", "supervised", "--label-rate", "1.0", "optim.epochs=EQUAL_STEPS"]),
    ("fixmatch (Table 3 baseline)", "methods", ["--method", "fixmatch"]),
    ("sefar", "methods", ["--method", "sefar"]),
    ("+ Dual-Ele (warp, threshold)", "table3", ["perturb=warp", "regulation=threshold"]),
    ("+ Mod-Perturb (threshold)", "table3", ["regulation=threshold"]),
    ("perturb none (spatial only)", "table4", ["perturb=none"]),
    ("perturb t-drop", "table4", ["perturb=t-drop"]),
    ("perturb all-shuffle", "table4", ["perturb=all-shuffle"]),
    ("perturb local-shuffle", "table4", ["perturb=local-shuffle"]),
    ("perturb warp", "table4", ["perturb=warp"]),
    ("perturb t-half", "table4", ["perturb=t-half"]),
    ("perturb all-reverse", "table4", ["perturb=all-reverse"]),
]
SHORT = {"supervised": "supervised", "supervised100": "supervised 100%", "fixmatch": "fixmatch (Table 3 baseline)",
         "sefar": "sefar"}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def labeled_schedule(common: list[str]) -> tuple[int, float]:
    """The other rows' (epochs, label rate), resolved the way `sefar train` does: preset, --config file,
    --epochs / --label-rate, then key=value."""
    cli = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # only the options that can set the epochs
    cli.add_argument("-d", "--data", default="synth")
    cli.add_argument("-c", "--config")
    cli.add_argument("--epochs", type=int)
    cli.add_argument("--label-rate", type=float)
    known, rest = cli.parse_known_args(common)
    overrides = [a for a in rest if "=" in a and not a.startswith("-")]
    cfg = build_config(known.data, known.config, {"optim.epochs": known.epochs, "data.label_rate": known.label_rate},
                       overrides)
    return cfg.optim.epochs, cfg.data.label_rate


def equal_steps(extra: list[str], common: list[str]) -> list[str]:
    """Replace EQUAL_STEPS with the other rows' epochs times their label rate, rounded up: 1/rate times
    the labeled clips per epoch, so at least the same steps (50 epochs at 5%: 3 epochs, 720 steps against 600).

    It becomes an `optim.epochs=N` override, placed after the common arguments: overrides apply
    after flags and in order, so it wins over both `--epochs` and an `epochs=` in `common`.
    """
    if not any("EQUAL_STEPS" in a for a in extra):
        return extra
    epochs, rate = labeled_schedule(common)
    epochs = str(max(1, math.ceil(epochs * rate - 1e-9)))
    return [a.replace("EQUAL_STEPS", epochs) for a in extra]


def command(extra: list[str], seed: int, out: Path, common: list[str]) -> list[str]:
    return ["sefar", "train", "--seed", str(seed), "--out", str(out), "--json", str(out / "result.json"),
            *common, *equal_steps(extra, common)]


def run_rows(rows, seeds, out_root: Path, common: list[str], jobs: int = 1) -> None:
    """Run every unfinished (row, seed), `jobs` at a time; each job gets cores // jobs threads."""
    todo = [command(extra, seed, out_root / slug(name) / f"seed{seed}", common)
            for name, _, extra in rows for seed in seeds
            if not (out_root / slug(name) / f"seed{seed}" / "result.json").is_file()]
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} if jobs > 1 else None

    def launch(cmd: list[str]) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd)}", flush=True)
        # this interpreter's package, so no `sefar` script need be on PATH (the GPU machine has none)
        subprocess.run([sys.executable, "-m", "sefar_fast", *cmd[1:]], check=True, stdout=subprocess.DEVNULL, env=env)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(launch, cmd) for cmd in todo]:
            future.result()


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def table(rows, out_root: Path, common: list[str]) -> str:
    lines = ["| row | group | seeds | final top-1 % (mean ± std) | final student top-1 % | best-epoch top-1 % "
             "| command (add --seed N) |",
             "|---|---|---|---|---|---|---|"]
    for name, group, extra in rows:
        finals, students, bests = [], [], []
        for res in sorted((out_root / slug(name)).glob("seed*/result.json")):
            r = json.loads(res.read_text())
            finals.append(r["last"]["val_top1"])
            students.append(r["last"]["val_top1_student"])
            bests.append(r["best_val_top1"])
        cmd = " ".join(["sefar train", *common, *equal_steps(extra, common)])
        lines.append(f"| {name} | {group} | {len(finals)} | {_fmt(finals)} | {_fmt(students)} | {_fmt(bests)} "
                     f"| `{cmd}` |")
    return "\n".join(lines)


def per_seed_table(rows, out_root: Path, seeds: list[int]) -> str:
    """Final top-1 % of each (row, seed): the reported model (teacher for semi-supervised rows), and the
    student in brackets where it is another model."""
    lines = ["| row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for name, _, _ in rows:
        cells, finals = [], []
        for seed in seeds:
            res = out_root / slug(name) / f"seed{seed}" / "result.json"
            if not res.is_file():
                cells.append("-")
                continue
            last = json.loads(res.read_text())["last"]
            finals.append(last["val_top1"])
            student = "" if last.get("val_model") == "student" else f" ({100 * last['val_top1_student']:.1f})"
            cells.append(f"{100 * last['val_top1']:.1f}{student}")
        mean = f"{100 * statistics.mean(finals):.1f}" if finals else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="*", help="row names or short names (supervised, supervised100, fixmatch, sefar)")
    ap.add_argument("--groups", nargs="*", help="methods, table3, table4")
    ap.add_argument("--out", type=Path, default=Path("runs/results"))
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets cores/jobs threads)")
    ap.add_argument("--per-seed", action="store_true", help="also print each seed's final top-1 per row")
    ap.add_argument("common", nargs="*", help="extra arguments for every run, e.g. epochs=20")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs {args.jobs} must be at least 1")
    rows = ROWS
    if args.rows:
        # in the order asked, so the longest runs can be started first
        by_name = {r[0]: r for r in rows}
        unknown = [r for r in args.rows if SHORT.get(r, r) not in by_name]
        if unknown:
            ap.error(f"unknown row {unknown[0]!r}: use a short name ({', '.join(SHORT)}) or a row name of ROWS")
        rows = [by_name[SHORT.get(r, r)] for r in args.rows]
    if args.groups:
        rows = [r for r in rows if r[1] in set(args.groups)]
    if not args.table_only:
        run_rows(rows, args.seeds, args.out, args.common, args.jobs)
    sys.stdout.write(table(rows, args.out, args.common) + "\n")
    if args.per_seed:
        sys.stdout.write("\n" + per_seed_table(rows, args.out, args.seeds) + "\n")


if __name__ == "__main__":
    main()
