"""The `sefar` command line (Typer + rich).

    sefar train                                   # built-in synthetic data, tiny model, laptop CPU
    sefar train --data gym99 --root /data/gym --pretrained timm:vit_small_patch16_224.augreg_in21k_ft_in1k
    sefar eval runs/<run>/best.safetensors
    sefar bench --quick

Each command is a thin shell over a library function; a `SefarError` becomes one
red line and exit status 2 (the traceback only with --debug). The commands import
their library (and with it torch) when they run, so `sefar --help` answers at once:
the one place in the package where imports sit inside functions on purpose.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

try:
    from typer._click import exceptions as click_errors  # typer >= 0.2x ships its own click
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_errors

from sefar_fast import __version__
from sefar_fast.console import console, err_console, is_main_process
from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write_text, ensure_writable

app = typer.Typer(
    name="sefar",
    help="Semi-supervised fine-grained action recognition (SeFAR), fast.\n\n"
    "Start with `sefar train` (built-in synthetic data, runs on a laptop CPU), then "
    "`sefar eval runs/<run>/best.safetensors`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
data_app = typer.Typer(help="Built-in data and dataset inspection.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_STATE = {"debug": False}
INTERRUPTED = 128 + 2  # the exit status of a process stopped by SIGINT (Ctrl-C)


class Method(str, Enum):
    sefar = "sefar"
    supervised = "supervised"
    fixmatch = "fixmatch"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _version(value: bool):
    if value:
        console.print(f"sefar {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    _STATE["debug"] = debug


def check_json_target(path: Optional[Path]) -> None:
    """--json PATH: refuse a path that cannot be written before the command computes what goes there."""
    if path is None or str(path) == "-" or not is_main_process():
        return
    if path.is_dir():
        raise SefarError(f"--json {path} is a folder; give a file name, or '-' for stdout")
    ensure_writable(path.parent, "choose another --json path, or '-' for stdout")


def write_json(path: Optional[Path], payload: dict) -> None:
    """Write a machine-readable result (`--json PATH`; `-` for stdout)."""
    if path is None or not is_main_process():
        return
    text = json.dumps(payload, indent=2, default=float)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
        return
    atomic_write_text(path, text + "\n")


# ----------------------------------------------------------------------------- train
@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
    epilog="Examples:\n\n"
    "    sefar train\n\n"
    "    sefar train --method supervised --label-rate 1.0 --epochs 6   # 10x the steps per epoch\n\n"
    "    sefar train --data gym99 --root /data/gym --pretrained timm:vit_small_patch16_224.augreg_in21k_ft_in1k\n\n"
    "    sefar train --data gym99:lists=SeFAR/dataset/finegym/all99_5 --root /data/gym   # the authors' 5% split\n\n"
    "    sefar train perturb=all-reverse regulation=threshold      # Table 4 / Fig. 4 ablations\n\n"
    "    torchrun --nproc_per_node 8 -m sefar_fast train --data gym99 --root /data/finegym\n\n"
    "Method switches (key=value; every one is also a config key):\n\n"
    "- `method.elements=[2,2,4]` dual-level elements (last = context); `[8]` = one 8-frame element (no Dual-Ele)\n"
    "- `method.perturb=mod|none|all-reverse|all-shuffle|local-shuffle|warp|t-drop|t-half` strong-view temporal "
    "perturbation (mod = reverse inside fine elements only; paper Table 4)\n"
    "- `method.regulation=adaptive|threshold|none`, `method.threshold=0.95` pseudo-label weighting (Ada-Reg)\n"
    "- `method.teacher_mc=head|full`, `method.mc_samples=10` teacher MC-dropout predictions\n"
    "- `method.mix=true|false`, `method.mix_alpha=10`, `method.mix_loss=mse|soft-ce` tube mixing; "
    "`method.channel_drop=0.2` strong-view channel dropout\n"
    "- `method.w_un=2 method.w_mix=2` loss weights; `method.warmup_epochs=5` supervised warm-up\n"
    "- `method.unlabeled_ratio=3` unlabeled clips per labeled clip; `method.ema_decay=0.9999` per labeled clip\n"
    "- `optim.global_batch=64` labeled clips per optimizer step, by automatic accumulation (0: off); "
    "`optim.accum_steps=N` fixed accumulation instead; `optim.lr=0.005` for an effective labeled batch of 64\n"
    "- `eval.headline=student|teacher` the model whose val top-1 picks best.safetensors (both are reported); "
    "`eval.protocol=multiview|reference` deterministic TxS views or one random view per clip (the released code)\n"
    "- `model.pos_embed_std=0.5 model.time_embed_std=0.5` embedding init for training from scratch (synth "
    "preset; timm's 0.02 and 0 under --pretrained unless set)\n\n"
    "Table 3 rows: baseline = `--method fixmatch`; +Dual-Ele = `elements=[2,2,4] perturb=warp regulation=threshold`; "
    "+Mod-Perturb = `regulation=threshold`; full SeFAR = defaults.\n\n"
    "Batch sizes and learning rate: `--batch-size` is labeled clips per process per accumulation micro-step; "
    "one optimizer step takes a global batch of batch_size x optim.accum_steps x processes labeled clips "
    "(x method.unlabeled_ratio unlabeled). By default (the paper's protocol) accum_steps is chosen so that the "
    "global batch is `optim.global_batch` (64), or the nearest to it; the synth preset turns that off. "
    "`optim.lr` is the rate for a global batch of `optim.ref_batch` (64) "
    "and is scaled linearly with the global batch; the EMA decay is 0.9999 per labeled clip of the global batch. "
    "Processes and accumulation are interchangeable: 2 GPUs x accum 1 trains like 1 GPU x accum 2.\n\n"
    "Data: `lists:DIR` reads the released code's list folders as shipped (train.csv, unlabel.csv, val.csv; "
    "test.csv = val.csv read once) and mmaction2's video and rawframe lists; each clip is found under --root by "
    "its path or its name. Class names come from `classes.txt` in the list folder or its parent: one name per "
    "line in label order (FineGym category lines work too); without it, class_0, class_1, ... "
    "`gym99` / `gym288` read FineGym's own annotation files or mmaction2's data/gym layout; `gym99:lists=DIR` "
    "takes the authors' split. `sefar data info --data SPEC --root R` shows the counts without decoding.\n\n"
    "Stopping and resuming: Ctrl-C (SIGINT) or SIGTERM finishes the step, writes last.* and prints the resume "
    "command (a second signal exits at once); rerunning the same command with the same --out continues an "
    "unfinished run exactly (or `--resume-from RUN`); `--on-nan stop|skip` decides what a non-finite loss does.",
)
def train(
    ctx: typer.Context,
    data: str = typer.Option("synth", "--data", "-d", help="Preset (synth, gym99, gym288, gym-new, finediving, "
                             "ucf101, hmdb51, ssv2) or a source: store:DIR, lists:DIR (class names from its "
                             "classes.txt), rawframes:DIR, gym99:lists=DIR, folder:DIR, video:SPEC (no prepare)."),
    root: Optional[str] = typer.Option(None, "--root", help="Folder holding the dataset's videos/frames."),
    label_rate: Optional[float] = typer.Option(None, "--label-rate", help="Fraction of training clips with labels, in (0, 1]."),
    method: Optional[Method] = typer.Option(None, "--method", help="sefar (default), supervised, or fixmatch (paper baseline)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="vit-t, vit-s, vit-b, vit-pico (CPU), vit-test."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs; one epoch = one pass over the labeled clips."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Labeled clips per step per process."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Run folder (default runs/DATA-METHOD-TIME)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for model init, sampling and augmentation."),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help="Seed of the labeled/unlabeled split."),
    device: Optional[Device] = typer.Option(None, "--device", help="auto (CUDA when available), cpu or cuda."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with config sections."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="ImageNet ViT weights: timm:NAME.TAG or "
                                             "hf:OWNER/REPO[/FILE] (Hugging Face hub, cached; needs sefar-fast[hub]), "
                                             "or a .pth/.bin/.pth.tar/.npz/.safetensors file."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the step (default on CUDA)."),
    checkpoint_activations: Optional[bool] = typer.Option(None, "--checkpoint-activations/--no-checkpoint-activations",
                                                          help="Recompute activations in backward to save memory."),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue an unfinished run in --out "
                                          "(default: yes when --out holds one)."),
    resume_from: Optional[Path] = typer.Option(None, "--resume-from", help="A run folder or .state file to continue "
                                               "with its own settings."),
    keep: Optional[int] = typer.Option(None, "--keep", help="Epoch checkpoints (epoch-NNN.safetensors) to keep "
                                       "besides last and best (run.keep, default 1)."),
    ckpt_every_steps: Optional[int] = typer.Option(None, "--ckpt-every-steps", help="Also write last.* every N "
                                                   "optimizer steps (run.ckpt_every_steps; 0 = epoch ends only)."),
    on_nan: str = typer.Option("skip", "--on-nan", help="Non-finite loss or gradient: skip the step (weights "
                               "untouched, counted in the logs) or stop with the step number."),
    profile: bool = typer.Option(False, "--profile", help="Write a torch profiler trace of a few steps to "
                                 "<run>/profile/."),
    strict: bool = typer.Option(False, "--strict", help="Refuse data with clips the source could not read "
                                "(default: leave them out, list them in <run>/split.json and warn)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the final metrics as JSON ('-' for stdout)."),
):
    """Train a model: SeFAR semi-supervised by default, or --method supervised / fixmatch.

    Free `key=value` arguments override any config key (dotted or bare when unique),
    e.g. `perturb=none`, `method.elements=[2,4]`, `optim.lr=0.01`.
    """
    from sefar_fast.config import build_config
    from sefar_fast.train.loop import train as run_training

    if on_nan not in ("skip", "stop"):
        raise SefarError(f"--on-nan '{on_nan}' must be skip or stop")
    flags = {
        "data.root": root, "data.label_rate": label_rate, "data.split_seed": split_seed,
        "method.name": method.value if method else None, "model.arch": arch, "optim.epochs": epochs,
        "optim.batch_size": batch_size, "run.out": out, "run.seed": seed,
        "run.device": device.value if device else None, "model.pretrained": pretrained,
        "run.compile": compile, "model.checkpoint_activations": checkpoint_activations,
        "run.keep": keep, "run.ckpt_every_steps": ckpt_every_steps,
    }
    if resume_from is not None:  # the run's own settings, with what this command line changes on top
        from sefar_fast.train.resume import resume_config

        given = getattr(ctx.get_parameter_source("data"), "name", "") == "COMMANDLINE"
        cfg = resume_config(resume_from, data=data if given else None, config_file=str(config) if config else None,
                            flags=flags, overrides=list(ctx.args))
    else:
        cfg = build_config(data, str(config) if config else None, flags, list(ctx.args))
    check_json_target(json_out)
    result = run_training(cfg, resume=resume, resume_from=resume_from, on_nan=on_nan, profile=profile,
                          strict=strict)
    write_json(json_out, result)


# ----------------------------------------------------------------------------- eval
@app.command("eval", epilog="Examples:\n\n"
             "    sefar eval runs/synth-sefar/best.safetensors\n\n"
             "    sefar eval best.safetensors --data gym99 --root /data/finegym --views 5x3\n\n"
             "    sefar eval best.safetensors --protocol reference     # one random view of the student\n\n"
             "    sefar eval best.safetensors --qa all99_5/val.json     # Gym-QA multiple-choice accuracy")
def eval_cmd(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint written by sefar train."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data to score (default: the checkpoint's)."),
    root: Optional[str] = typer.Option(None, "--root", help="Folder holding the dataset's videos/frames."),
    split: str = typer.Option("val", "--split", help="Split to score: val (= test), train (labeled) or unlabeled."),
    views: Optional[str] = typer.Option(None, "--views", help="Temporal x spatial views, e.g. 5x3 (default: the checkpoint's)."),
    protocol: str = typer.Option("multiview", "--protocol", help="multiview (deterministic TxS views) or reference "
                                 "(one random view of the student, as the authors' code)."),
    model: str = typer.Option("both", "--model", help="teacher, student or both."),
    device: Optional[Device] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default: RUN/eval/)."),
    qa: Optional[Path] = typer.Option(None, "--qa", help="Gym-QA json: also score multiple-choice accuracy."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random view of --protocol reference."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON ('-' for stdout)."),
):
    """Score a checkpoint: top-1, top-5, mean class accuracy, per-class report, confusion matrix.

    Writes <run>/eval/<model>/ (report.json, per_class.csv, confusion.png, confusion_pairs.csv) for the
    teacher and the student; --protocol reference writes <run>/eval/student-reference/.
    """
    from sefar_fast.eval.evaluate import evaluate_checkpoint

    check_json_target(json_out)

    result = evaluate_checkpoint(
        checkpoint, data=data, root=root, split=split, views=views, protocol=protocol, which=model,
        device=device.value if device else None, out=out, qa=qa, seed=seed, show=str(json_out) != "-",
    )
    write_json(json_out, result)


# ----------------------------------------------------------------------------- data
@data_app.command("synth", epilog="Example:\n\n    sefar data synth --seed 0 --clips-per-class 120")
def data_synth(
    seed: int = typer.Option(0, "--seed", help="Seed of the generated set."),
    clips_per_class: int = typer.Option(120, "--clips-per-class", help="Clips per class."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where to keep it (default $SEFAR_CACHE or ~/.cache/sefar)."),
):
    """Generate (or find) the built-in synthetic fine-grained gymnastics set and print where it is."""
    from sefar_fast.data.datasets import synth_store

    root = synth_store(seed=seed, clips_per_class=clips_per_class, cache_dir=cache_dir)
    from sefar_fast.data.store import ClipStore

    store = ClipStore.open(root)
    console.print(f"[green]synth[/] {len(store.records)} clips, {len(store.class_names)} classes at {root}")


@data_app.command("info", context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
                  epilog="Examples:\n\n"
                  "    sefar data info --data lists:SeFAR/dataset/finegym/all99_5 --root /data/gym\n\n"
                  "    sefar data info --data gym99 --root /data/gym            # FineGym's files or mmaction2's\n\n"
                  "    sefar data info --data gym99 --root /data/gym data.split_seed=1   # any config key=value")
def data_info(
    ctx: typer.Context,
    data: str = typer.Option("synth", "--data", "-d", help="Preset or source spec (as for sefar train)."),
    root: Optional[str] = typer.Option(None, "--root", help="Folder holding the dataset."),
    label_rate: Optional[float] = typer.Option(None, "--label-rate", help="Label rate for the split counts "
                                               "(default: the preset's, e.g. 0.05 for gym99)."),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help="Seed of the labeled/unlabeled split."),
):
    """Show a dataset's classes and split sizes as sefar train will read them, from the list and annotation
    files alone (nothing is decoded), with how many clip files are missing under --root."""
    from sefar_fast.config import build_config
    from sefar_fast.data.info import source_info

    cfg = build_config(data, None, {"data.root": root, "data.label_rate": label_rate,
                                    "data.split_seed": split_seed}, list(ctx.args))
    info = source_info(cfg)
    console.print(info.table())
    for note in info.notes:
        console.print(f"note: {escape(note)}")


# ----------------------------------------------------------------------------- placeholders filled by later modules
@app.command(epilog="Examples:\n\n"
             "    sefar prepare gym99:lists=SeFAR/dataset/finegym/all99_5 --root /data/gym --out /data/gym99-5\n\n"
             "    sefar prepare lists:/data/ucf101/annotations --root /data/ucf101 --out /data/ucf-store\n\n"
             "    sefar prepare folder:/data/mydataset --out /data/my-store --short-side 256 --fps 15")
def prepare(
    source: str = typer.Argument(..., help="lists:DIR (class names from its classes.txt), rawframes:DIR, "
                                 "folder:DIR, a preset name such as gym99 (with --root), or gym99:lists=DIR."),
    out: Path = typer.Option(..., "--out", "-o", help="Clip store folder to write."),
    root: Optional[str] = typer.Option(None, "--root", help="Folder holding the videos/frames."),
    short_side: int = typer.Option(256, "--short-side", help="Resize frames so the short side is this."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Keep frames at this rate (default: all frames)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Parallel decoders (default: all cores)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any clip could not be read."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the summary as JSON."),
):
    """Decode every clip once into a JPEG clip store (resumable; reports unreadable clips)."""
    from sefar_fast.data.datasets import prepare_source

    check_json_target(json_out)

    summary = prepare_source(source, out, root=root, short_side=short_side, fps=fps, workers=workers)
    write_json(json_out, summary)
    failed = summary.get("failed") or []
    console.print(f"[green]store[/] {summary['store']}: {summary['clips']} clips ({summary['written']} decoded now, "
                  f"{summary['skipped']} already there), {len(failed)} unreadable")
    for f in failed[:50]:
        err_console.print(f"[yellow]unreadable[/] {f['path']}: {f['error']}")
    if len(failed) > 50:
        err_console.print(f"... and {len(failed) - 50} more: see {summary['store']}/prepare-report.json")
    if strict and failed:
        raise typer.Exit(1)


@app.command(epilog="Examples:\n\n    sefar bench --quick\n\n    sefar bench overhead          # host ops per phase and host syncs of one iteration\n\n"
             "    sefar bench iteration --arch vit-b --batch 8 --device cuda --json vitb.json")
def bench(
    section: Optional[list[str]] = typer.Argument(None, help="Sections: data, model, iteration, overhead, memory (default all)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Model size (default vit-test on CPU, vit-s on CUDA)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Labeled clips per iteration (default 2 CPU / 8 CUDA)."),
    device: Optional[Device] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    quick: bool = typer.Option(False, "--quick", help="Few repetitions (CPU: under 3 minutes)."),
    unlabeled: Optional[int] = typer.Option(None, "--unlabeled", help="Unlabeled clips per iteration (default 3 x --batch, the paper's ratio)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the fast path (default on CUDA)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default 1 on CPU: steadier timings)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the records as JSON."),
):
    """Throughput and memory: reference-style iteration against the fast one, model MFU, data loading."""
    from sefar_fast.bench.runner import run_bench

    check_json_target(json_out)

    extra = {"threads": threads} if threads is not None else {}
    result = run_bench(sections=section or None, arch=arch, batch=batch, device=device.value if device else None,
                       quick=quick, unlabeled=unlabeled, compile=compile, **extra)
    write_json(json_out, result)


@app.command(epilog="Example:\n\n    sefar predict runs/synth-sefar/best.safetensors clip1.mp4 clip2.webm --top-k 5")
def predict(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint."),
    videos: list[Path] = typer.Argument(..., help="Video files (any codec FFmpeg reads)."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Classes to show per video."),
    model: str = typer.Option("teacher", "--model", help="teacher (when present) or student."),
    views: Optional[str] = typer.Option(None, "--views", help="Temporal x spatial views, e.g. 5x3 "
                                        "(default: the checkpoint's)."),
    device: Optional[Device] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write predictions as JSON ('-' for stdout)."),
):
    """Classify video files: top-k class names with probabilities.

    Every video that can be read gets its result; each one that cannot is reported in one line after
    them, and the command then exits with status 2 (`--json` lists them under "failed").
    """
    from sefar_fast.eval.predict import predict_videos

    check_json_target(json_out)

    result = predict_videos(checkpoint, videos, top_k=top_k, which=model, device=device.value if device else None,
                            views=views, show=str(json_out) != "-")
    write_json(json_out, result)
    if result["failed"]:  # each was reported under the results of the others
        raise typer.Exit(2)


@app.command(epilog="Example:\n\n    sefar extract best.safetensors --data synth --split val --out feats.safetensors")
def extract(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .safetensors with features and clip ids."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data (default: the checkpoint's)."),
    root: Optional[str] = typer.Option(None, "--root", help="Folder holding the dataset."),
    split: str = typer.Option("val", "--split", help="Split (val, test, train, unlabeled)."),
    model: str = typer.Option("teacher", "--model", help="teacher (when present) or student."),
    views: Optional[str] = typer.Option(None, "--views", help="Temporal x spatial views averaged per clip "
                                        "(default: the checkpoint's)."),
    device: Optional[Device] = typer.Option(None, "--device", help="auto, cpu or cuda."),
):
    """Export per-clip features (fused 256-d and per-element CLS, averaged over the eval views) with clip ids.

    Tensors: fused [N,256], element_<i> [N,D], probs [N,C], labels [N]; metadata: clip_ids, class_names,
    checkpoint (JSON). Read back with `sefar_fast.eval.extract.load_features`.
    """
    from sefar_fast.eval.extract import extract_features

    extract_features(checkpoint, out, data=data, root=root, split=split, which=model,
                     device=device.value if device else None, views=views)


@app.command(epilog="Example:\n\n    sefar report runs/synth-sefar")
def report(run: Path = typer.Argument(..., help="A run folder holding metrics.jsonl.")):
    """Draw training curves (loss, eta, pseudo-label accuracy, val accuracy) to <run>/curves.png."""
    from sefar_fast.eval.curves import plot_curves

    if not (run / "metrics.jsonl").is_file():
        raise SefarError(f"{run} holds no metrics.jsonl; pass a run folder written by sefar train")
    path = plot_curves(run / "metrics.jsonl", run / "curves.png")
    console.print(f"curves written to {path}")


def main() -> None:
    """Entry point of the `sefar` console script: every failure the user can act on is one line.

    SefarError and command-line usage errors exit 2; a training run stopped by a signal
    exits 128 + signal number (130 SIGINT, 143 SIGTERM) after printing how to resume."""
    from sefar_fast.train.signals import Interrupted

    rank = os.environ.get("RANK", "0")
    where = "" if rank == "0" else escape(f"[rank {rank}] ")  # under torchrun every rank reports
    try:
        code = app(standalone_mode=False, prog_name="sefar")
    except SefarError as e:
        if _STATE["debug"]:
            raise
        err_console.print(f"[bold red]{where}error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(2)
    except click_errors.UsageError as e:
        command = e.ctx.command_path if e.ctx is not None else "sefar"
        err_console.print(f"[bold red]error:[/] {escape(e.format_message())} (see '{command} --help')",
                          soft_wrap=True)
        sys.exit(2)
    except click_errors.ClickException as e:
        err_console.print(f"[bold red]error:[/] {escape(e.format_message())}", soft_wrap=True)
        sys.exit(e.exit_code)
    except Interrupted as e:
        if rank == "0":
            err_console.print(f"[yellow]{escape(str(e))}[/]", soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except OSError as e:  # the file system refused something no check above foresaw: still one line
        if _STATE["debug"]:
            raise
        where = f"{e.filename}: " if e.filename else ""
        err_console.print(f"[bold red]error:[/] {escape(where)}{escape(e.strerror or str(e))}; check that the path "
                          "exists and is writable (space, permissions)", soft_wrap=True)
        sys.exit(2)
    if code == INTERRUPTED and rank == "0":  # Ctrl-C outside training (typer turns it into this status)
        err_console.print("[yellow]interrupted: nothing was left half-written; run the same command again[/]",
                          soft_wrap=True)
    if isinstance(code, int) and code:
        sys.exit(code)
