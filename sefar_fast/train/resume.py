"""Which run folder a `sefar train` writes, and whether it continues a run there.

    sefar train --out runs/a ...          new run; or, when runs/a holds an unfinished run with the
                                          same settings, continue it (--no-resume refuses instead)
    sefar train --resume-from runs/a      continue runs/a with its own settings (a .state file works too)

A run folder is recognised by its config.yaml. Refused, with one line each: a folder
of other files, a finished run, a run with other settings (continuing it would
silently train something else), and a run whose global batch layout changed.
Settings that do not change what is trained (device, logging, checkpoint cadence,
evaluation, where the data lives) may differ on resume, and so may accum_steps as long
as processes x accum_steps stays the same (the shards of a global batch, see
`train.loop`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from sefar_fast.config import (
    Config,
    apply,
    apply_override,
    config_from_dict,
    load_yaml_file,
    set_value,
    validate,
)
from sefar_fast.errors import SefarError
from sefar_fast.io import is_temporary
from sefar_fast.lock import LOCK_NAME

# Keys that may differ between a run and its continuation.
MAY_CHANGE_ON_RESUME = {
    "run.out", "run.device", "run.compile", "run.log_every", "run.keep", "run.ckpt_every_steps", "run.loggers",
    "data.root", "data.store", "data.backend", "eval.batch_size", "eval.every", "eval.views", "eval.protocol",
    "eval.headline", "optim.accum_steps",
}
# Keys added after runs were written without them, with the value that reproduces what those runs did.
ADDED_KEYS = {"optim": {"global_batch": 0}, "eval": {"headline": "teacher"}}
# Files a run writes; cleared when a run starts afresh in a folder that never reached a checkpoint.
RUN_FILES = ("config.yaml", "metrics.jsonl", "split.json", "summary.csv", "last.state", "prev.state")


@dataclass
class RunPlan:
    run_dir: Path
    resuming: bool


def run_dir_of(resume_from: str | Path) -> Path:
    """The run folder named by --resume-from (a folder or its last.state), checked to be resumable."""
    path = Path(resume_from)
    run_dir = path.parent if path.suffix == ".state" else path
    if not run_dir.is_dir():
        raise SefarError(f"--resume-from {path}: no such run folder")
    if not (run_dir / "config.yaml").is_file():
        raise SefarError(f"--resume-from {path}: not a sefar run folder (it has no config.yaml)")
    if (run_dir / "finished").is_file():
        raise SefarError(f"--resume-from {path}: that run has finished; nothing to resume "
                         f"(evaluate it with 'sefar eval {run_dir / 'best.safetensors'}')")
    if not (run_dir / "last.safetensors").is_file():
        raise SefarError(f"--resume-from {path}: the run stopped before its first checkpoint; start it again "
                         f"with 'sefar train --out {run_dir} ...'")
    return run_dir


def load_run_config(run_dir: Path) -> Config:
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SefarError(f"{run_dir / 'config.yaml'} is unreadable ({type(e).__name__}); "
                         "the run cannot be continued") from None
    data = data or {}
    for section, keys in ADDED_KEYS.items():
        if isinstance(data.get(section), dict):
            for key, value in keys.items():
                data[section].setdefault(key, value)
    return config_from_dict(data)


def resume_config(resume_from: str | Path, *, data: str | None, config_file: str | None,
                  flags: dict, overrides: list[str]) -> Config:
    """--resume-from: the run's saved settings, with whatever the command line changes on top."""
    run_dir = run_dir_of(resume_from)
    cfg = load_run_config(run_dir)
    if data is not None:
        cfg.data.name = data
    if config_file:
        apply(cfg, load_yaml_file(config_file), source=str(config_file))
    for key, value in flags.items():
        if value is not None:
            set_value(cfg, key, value)
    for text in overrides:
        apply_override(cfg, text)
    out = flags.get("run.out")
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise SefarError(f"--out {out} and --resume-from {resume_from} name different runs; give one of them")
    cfg.run.out = str(run_dir)
    validate(cfg)
    return cfg


def chosen_dir(cfg: Config, resume_from: str | Path | None, default_dir: Path) -> Path:
    """The run folder a command names: --resume-from's, else --out, else the default."""
    if resume_from is not None:
        return run_dir_of(resume_from)
    return Path(cfg.run.out) if cfg.run.out else default_dir


def plan_run(cfg: Config, resume: bool | None, resume_from: str | Path | None, default_dir: Path) -> RunPlan:
    """Decide the run folder and whether to continue the run in it (nothing is written here)."""
    if resume_from is not None:
        if resume is False:
            raise SefarError("--resume-from and --no-resume contradict each other; give one of them")
        return RunPlan(run_dir_of(resume_from), True)
    run_dir = Path(cfg.run.out) if cfg.run.out else default_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise SefarError(f"--out {run_dir} is a file; give a folder for the run")
    if run_dir.is_dir() and any(p.name != LOCK_NAME and not is_temporary(p) for p in run_dir.iterdir()):
        if not (run_dir / "config.yaml").is_file():
            raise SefarError(f"output folder {run_dir} holds files that are not a sefar run; choose another --out")
        if (run_dir / "finished").is_file():
            raise SefarError(f"output folder {run_dir} holds a finished run; choose another --out")
        if (run_dir / "last.safetensors").is_file():
            if resume is False:
                raise SefarError(f"output folder {run_dir} holds an unfinished run and --no-resume was given; "
                                 f"choose another --out, or drop --no-resume to continue it")
            return RunPlan(run_dir, True)
    if resume:
        raise SefarError(f"--resume: {run_dir} holds no unfinished run to continue")
    return RunPlan(run_dir, False)


def config_changes(saved: Config, new: Config) -> list[str]:
    """'key: saved -> new' for every setting that differs and may not change on resume."""
    a, b = _flat(saved.to_dict()), _flat(new.to_dict())
    return [f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
            if k not in MAY_CHANGE_ON_RESUME and a.get(k) != b.get(k)]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_run(run_dir: Path, cfg: Config, explicit: bool) -> None:
    """A continued run must train what it was training; SefarError listing what differs.

    explicit: the run was named by --resume-from (else found in --out)."""
    changes = config_changes(load_run_config(run_dir), cfg)
    if not changes:
        return
    listed = "; ".join(changes[:3]) + (f" (and {len(changes) - 3} more)" if len(changes) > 3 else "")
    if explicit:
        raise SefarError(f"--resume-from {run_dir}: a resumed run keeps its settings, but these differ ({listed}); "
                         "drop those options, or start a new run with another --out")
    raise SefarError(f"{run_dir} holds an unfinished run with other settings ({listed}); continue it with "
                     f"'sefar train --resume-from {run_dir}', or choose another --out")


def check_batch_layout(state: dict, cfg: Config, world_size: int, run_dir: Path) -> None:
    """Positions and random draws are per shard of the global batch: its layout must not change."""
    saved = state.get("layout", {})
    now = {"batch_size": cfg.optim.batch_size, "shards": world_size * cfg.optim.accum_steps}
    if saved and saved != now:
        raise SefarError(
            f"{run_dir} was trained with batch {saved['batch_size']} x {saved['shards']} shards "
            f"(processes x accum_steps) and would continue with {now['batch_size']} x {now['shards']}; "
            f"keep processes x optim.accum_steps = {saved['shards']} to continue it")


def clear_unfinished(run_dir: Path) -> None:
    """A run folder that never reached a checkpoint: remove its files so a new run starts clean."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def resume_command(run_dir: Path, world_size: int, local_world_size: int) -> str:
    """The command line that continues this run."""
    target = shlex.quote(str(run_dir))
    if world_size <= 1:
        return f"sefar train --resume-from {target}"
    nodes = max(1, world_size // max(local_world_size, 1))
    node_args = f"--nnodes {nodes} (and your rendezvous options) " if nodes > 1 else ""
    return f"torchrun --nproc_per_node {local_world_size} {node_args}-m sefar_fast train --resume-from {target}"
