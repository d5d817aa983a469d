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
    "Start with sefar train (built-in synthetic data, runs on a laptop CPU), then "
    "sefar eval runs/<run>/best.safetensors. Every command has --help with examples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: wraps at any width, never cuts an option name
)
data_app = typer.Typer(help="Built-in data and dataset inspection.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
config_app = typer.Typer(help="Show the resolved config, or every config key.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(config_app, name="config")

_STATE = {"debug": False}


def examples(*commands: str, then: str = "") -> str:
    """An epilog: the commands kept as written (click's \\b marker), then an optional paragraph."""
    lines = "\n".join("  " + line for cmd in commands for line in cmd.split("\n"))
    return f"Examples:\n\n\b\n{lines}" + (f"\n\n{then}" if then else "")
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
    short_help="Train: SeFAR by default, or --method supervised / fixmatch.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
    epilog=examples(
        "sefar train",
        "sefar train --method supervised --label-rate 1.0 --epochs 3",
        "sefar train --data gym99 --root /data/gym \\\n"
        "    --pretrained timm:vit_small_patch16_224.augreg_in21k_ft_in1k",
        "# the authors' 5% split of FineGym gym99:\nsefar train --data gym99:lists=SeFAR/dataset/finegym/all99_5 \\\n"
        "    --root /data/gym --label-rate 0.05",
        "# a Table 4 / Fig. 4 ablation (any config key as key=value):\n"
        "sefar train perturb=all-reverse regulation=threshold",
        "sefar train --dry-run       # what a run would use; nothing written",
        "torchrun --nproc_per_node 8 -m sefar_fast train --data gym99 \\\n    --root /data/gym",
        then="Method switches, the paper's ablations, batch and lr rules, data sources, stopping and resuming: "
             "docs/training.md. Every config key: sefar config keys."),
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
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="ViT weights: timm:NAME.TAG or "
                                             "hf:OWNER/REPO[/FILE] (Hugging Face hub, cached; needs sefar-fast[hub]), "
                                             "synth:vit-pico (packaged; the synth preset's default), a "
                                             ".pth/.bin/.pth.tar/.npz/.safetensors file, or none (from scratch)."),
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
    logger: Optional[list[str]] = typer.Option(None, "--logger", metavar="NAME", help="Also send the metrics to tensorboard "
                                               "(RUN/tensorboard) or wandb; repeat for both (run.loggers)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve and count everything (config, clips, batch, "
                                 "steps, model size, FLOPs, peak memory), print it and exit without training."),
):
    """Train a model: SeFAR semi-supervised by default, or --method supervised / fixmatch.

    Free key=value arguments override any config key (dotted or bare when unique),
    e.g. perturb=none, method.elements=[2,4], optim.lr=0.01.
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
        "run.keep": keep, "run.ckpt_every_steps": ckpt_every_steps, "run.loggers": logger or None,
    }
    if resume_from is not None:  # the run's own settings, with what this command line changes on top
        from sefar_fast.train.resume import resume_config

        given = getattr(ctx.get_parameter_source("data"), "name", "") == "COMMANDLINE"
        cfg = resume_config(resume_from, data=data if given else None, config_file=str(config) if config else None,
                            flags=flags, overrides=list(ctx.args))
    else:
        cfg = build_config(data, str(config) if config else None, flags, list(ctx.args))
    check_json_target(json_out)
    if dry_run:
        from sefar_fast.console import results_table
        from sefar_fast.distributed import cleanup
        from sefar_fast.train.dry_run import plan_summary, summary_rows
        from sefar_fast.train.loop import Trainer

        trainer = Trainer(cfg, resume=resume, resume_from=resume_from, on_nan=on_nan, strict=strict)
        try:
            summary = plan_summary(trainer)
        finally:  # under torchrun the trainer joined the process group: leave it as a run does
            cleanup(trainer.dist)
        if trainer.dist.is_main:  # one table and one JSON, not one per rank
            console.print(results_table(f"dry run: {trainer.title} (nothing written)", summary_rows(summary), "left"))
            write_json(json_out, summary)
        return
    result = run_training(cfg, resume=resume, resume_from=resume_from, on_nan=on_nan, profile=profile,
                          strict=strict)
    write_json(json_out, result)


# ----------------------------------------------------------------------------- eval
@app.command("eval", short_help="Score a checkpoint: top-1/5, per-class report, confusion.", epilog=examples(
    "sefar eval runs/synth-sefar/best.safetensors",
    "sefar eval best.safetensors --data gym99 --root /data/gym --views 5x3",
    "# one random view of the student, as the released code tests:\nsefar eval best.safetensors --protocol reference",
    "# also Gym-QA multiple-choice accuracy:\nsefar eval best.safetensors --qa all99_5/val.json"))
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


# ----------------------------------------------------------------------------- config
@config_app.command("show", short_help="Print the config sefar train would use (YAML).", context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
                    epilog=examples(
                        "sefar config show", "sefar config show --data gym99 optim.lr=0.01 elements=[2,4]",
                        "sefar config show --config my.yaml > resolved.yaml"))
def config_show(
    ctx: typer.Context,
    data: str = typer.Option("synth", "--data", "-d", help="Preset or source spec, as for sefar train."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with config sections."),
):
    """Print the config sefar train would use (YAML), with key=value overrides applied."""
    from sefar_fast.config import build_config

    sys.stdout.write(build_config(data, str(config) if config else None, {}, list(ctx.args)).to_yaml())


@config_app.command("keys", short_help="Every config key with its type, default and help.", epilog=examples("sefar config keys | grep method."))
def config_keys():
    """List every config key with its type, default and what it does."""
    from sefar_fast.configs.keys import config_keys as keys

    for key, kind, default, text in keys():
        sys.stdout.write(f"{key}  ({kind}, default {default!r})\n    {text}\n")


# ----------------------------------------------------------------------------- pretrain-synth
@app.command("pretrain-synth", short_help="Pretrain a ViT backbone for the built-in synth data.",
             epilog=examples(
                 "sefar pretrain-synth --out synth-vit-pico.safetensors",
                 "sefar train --pretrained synth-vit-pico.safetensors  # not the packaged",
                 then="The packaged synth:vit-pico (the synth preset's default --pretrained) was made by "
                      "the first command; its metadata holds the command, seed and commit (docs/results.md)."))
def pretrain_synth_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Backbone file to write (.safetensors, timm ViT layout)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="ViT size (default vit-pico, the synth preset's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the pose clips, the init and the batches."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Frames per step."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak AdamW learning rate (linear warm-up, cosine decay)."),
    clips: Optional[int] = typer.Option(None, "--clips", help="Fresh synth clips to draw frames from (a twentieth "
                                        "more are held out to measure the point error)."),
    frames_per_clip: Optional[int] = typer.Option(None, "--frames-per-clip", help="Random frames taken from each "
                                                  "clip."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Processes rendering the clips "
                                          "(default: all cores)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the summary as JSON ('-' for stdout)."),
):
    """Pretrain a ViT backbone for the built-in synth data on single frames (the figure's body points, no
    classes, no time): the synth data's counterpart of ImageNet weights, read by `--pretrained FILE`."""
    from sefar_fast.train.pretrain import PretrainSettings, pretrain_synth

    given = {"arch": arch, "seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "clips": clips,
             "frames_per_clip": frames_per_clip, "workers": workers or os.cpu_count() or 1}
    settings = PretrainSettings(**{k: v for k, v in given.items() if v is not None})  # the rest: its defaults
    summary = pretrain_synth(out, settings, command=" ".join(["sefar", *sys.argv[1:]]))
    console.print(f"[green]backbone[/] {summary['out']}: held-out point error "
                  f"{summary['held_out_point_error_px']:.2f} px on {summary['crop']} px crops")
    write_json(json_out, summary)


# ----------------------------------------------------------------------------- data
@data_app.command("synth", short_help="Generate (or find) the built-in synthetic data.", epilog=examples("sefar data synth --seed 0 --clips-per-class 240"))
def data_synth(
    seed: int = typer.Option(0, "--seed", help="Seed of the generated set."),
    clips_per_class: Optional[int] = typer.Option(None, "--clips-per-class", help="Clips per class (default 240, the synth preset's: 192 train, 48 val)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where to keep it (default $SEFAR_CACHE or ~/.cache/sefar)."),
):
    """Generate (or find) the built-in synthetic fine-grained gymnastics set and print where it is."""
    from sefar_fast.data.datasets import synth_store
    from sefar_fast.data.synth import DEFAULT_CLIPS_PER_CLASS

    if clips_per_class is None:
        clips_per_class = DEFAULT_CLIPS_PER_CLASS
    root = synth_store(seed=seed, clips_per_class=clips_per_class, cache_dir=cache_dir)
    from sefar_fast.data.store import ClipStore

    store = ClipStore.open(root)
    console.print(f"[green]synth[/] {len(store.records)} clips, {len(store.class_names)} classes at {root}")


@data_app.command("info", short_help="Classes and split sizes, from the lists alone.", context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
                  epilog=examples(
                      "sefar data info --data lists:SeFAR/dataset/finegym/all99_5 \\\n    --root /data/gym",
                      "# FineGym's own files, or mmaction2's layout:\nsefar data info --data gym99 --root /data/gym",
                      "# any config key=value:\nsefar data info --data gym99 --root /data/gym data.split_seed=1"))
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
@app.command(short_help="Decode every clip once into a JPEG clip store.", epilog=examples(
    "sefar prepare gym99:lists=SeFAR/dataset/finegym/all99_5 \\\n    --root /data/gym --out /data/gym99-5",
    "sefar prepare lists:/data/ucf101/annotations --root /data/ucf101 \\\n    --out /data/ucf-store",
    "sefar prepare folder:/data/mydataset --out /data/my-store \\\n    --short-side 256 --fps 15"))
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


@app.command(short_help="Throughput, MFU, host overhead and memory.", epilog=examples(
    "sefar bench --quick",
    "# host operations per phase, host syncs of one iteration:\nsefar bench overhead",
    "sefar bench iteration --arch vit-b --batch 8 --device cuda --json vitb.json"))
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


@app.command(short_help="Classify video files: top-k classes.", epilog=examples("sefar predict runs/synth-sefar/best.safetensors clip1.mp4 clip2.webm \\\n    --top-k 5"))
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
    them, and the command then exits with status 2 (--json lists them under "failed").
    """
    from sefar_fast.eval.predict import predict_videos

    check_json_target(json_out)

    result = predict_videos(checkpoint, videos, top_k=top_k, which=model, device=device.value if device else None,
                            views=views, show=str(json_out) != "-")
    write_json(json_out, result)
    if result["failed"]:  # each was reported under the results of the others
        raise typer.Exit(2)


@app.command(short_help="Export per-clip features with clip ids.", epilog=examples("sefar extract best.safetensors --data synth --split val \\\n    --out feats.safetensors"))
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
    checkpoint (JSON). Read back with sefar_fast.eval.extract.load_features.
    """
    from sefar_fast.eval.extract import extract_features

    extract_features(checkpoint, out, data=data, root=root, split=split, which=model,
                     device=device.value if device else None, views=views)


@app.command(short_help="Export the network as ONNX or TorchScript.", epilog=examples(
    "sefar export runs/synth-sefar/best.safetensors",
    "sefar export best.safetensors --format torchscript --model student \\\n    --out student.pt",
    then="Running the file on a video's views: docs/export.md."))
def export(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint written by sefar train."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    model: str = typer.Option("teacher", "--model", help="teacher (when present) or student."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default: next to the "
                                       "checkpoint, NAME-MODEL.onnx or .pt)."),
):
    """Export a checkpoint's network as a one-clip inference graph (ONNX or TorchScript).

    Input: clip, float [1, K, 3, S, S], one normalised view with its frames grouped by element;
    output: logits [1, C]. The file also holds class names, elements, crop and normalisation.
    """
    from sefar_fast.eval.export import export_model

    result = export_model(checkpoint, fmt=format, which=model, out=out)
    console.print(f"[green]exported[/] {result['model']} as {result['format']} "
                  f"(input {result['input_shape']}, {result['classes']} classes) -> {result['out']}")


@app.command(short_help="Draw a run's training curves.", epilog=examples("sefar report runs/synth-sefar"))
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
