"""The trainer: epochs, evaluation, checkpoints, logging, resume.

    sefar train                                    # synth data, SeFAR, laptop CPU
    sefar train --data store:/data/gym99-store --arch vit-s --pretrained vit_s16.npz
    torchrun --nproc_per_node 8 -m sefar_fast train --data store:/data/gym99-store

One epoch is one pass over the labeled clips (as the paper). The first
`method.warmup_epochs` epochs are supervised; the EMA teacher is created from the
student when they end, and the semi-supervised loss ramps in with xi. The
arithmetic of one step lives in `train.step`; this module only drives it.
Per-step randomness is derived from (seed, step, rank), so a resumed run draws
exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sefar_fast.checkpoint import load_state, load_weights, save_state, save_weights
from sefar_fast.cli.progress import console, progress_bar, results_table
from sefar_fast.config import Config, eval_views
from sefar_fast.errors import SefarError
from sefar_fast.train.distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed

STATE_FORMAT = 1


@dataclass
class Progress:
    """Where the run stands; saved in the .state file."""

    epoch: int = 0  # next epoch to run
    step: int = 0  # micro-steps done in the current epoch
    global_step: int = 0  # micro-steps done in the whole run
    best: float = -1.0
    best_epoch: int = -1
    finished: bool = False
    unlabeled_cycle: int = 0
    unlabeled_pos: int = 0
    history: list[dict] = field(default_factory=list)


def default_run_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = cfg.data.name.replace(":", "-").replace("/", "_")
    return Path("runs") / f"{name}-{cfg.method.name}-{stamp}"


def model_from_config(cfg: Config, num_classes: int):
    from sefar_fast.models import build_model

    return build_model(
        cfg.model.arch, num_classes, cfg.method.elements,
        img_size=cfg.data.crop, patch_size=cfg.model.patch_size, drop_path=cfg.model.drop_path,
        head_dropout=cfg.model.head_dropout, attn=cfg.model.attn,
    )


class Trainer:
    def __init__(self, cfg: Config, *, resume: bool | None, resume_from: Path | None, on_nan: str, profile: bool):
        self.cfg, self.on_nan, self.profile = cfg, on_nan, profile
        self.dist, self.device = init_distributed(cfg.run.device)
        on_cuda = self.device.type == "cuda"
        self.amp = cfg.run.amp if cfg.run.amp is not None else on_cuda
        self.compile = cfg.run.compile if cfg.run.compile is not None else on_cuda
        self.run_dir = self._run_dir(resume, resume_from)
        self.state_path = self.run_dir / "last.state"

    # ------------------------------------------------------------------ setup
    def _run_dir(self, resume: bool | None, resume_from: Path | None) -> Path:
        cfg = self.cfg
        if resume_from is not None:
            path = Path(resume_from)
            run_dir = path.parent if path.suffix == ".state" else path
            if not (run_dir / "last.state").is_file():
                raise SefarError(f"{resume_from} holds no last.state to resume from")
            self.resume_state = run_dir / "last.state"
            cfg.run.out = str(run_dir)
            return run_dir
        run_dir = Path(cfg.run.out) if cfg.run.out else default_run_dir(cfg)
        self.resume_state = None
        state = run_dir / "last.state"
        if run_dir.exists() and any(run_dir.iterdir()):
            if not (run_dir / "config.yaml").is_file():
                raise SefarError(f"output folder {run_dir} holds files that are not a sefar run; choose another --out")
            if state.is_file() and not (run_dir / "finished").is_file() and resume is not False:
                self.resume_state = state
            elif (run_dir / "finished").is_file() and not resume:
                raise SefarError(f"output folder {run_dir} holds a finished run; choose another --out")
            elif resume is False:
                raise SefarError(f"output folder {run_dir} holds an unfinished run and --no-resume was given; "
                                 "choose another --out")
        cfg.run.out = str(run_dir)
        return run_dir

    def setup(self) -> None:
        from sefar_fast.data.datasets import open_dataset

        cfg = self.cfg
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        self.data = open_dataset(cfg, self.run_dir if self.dist.is_main else None)
        self.class_names = self.data.class_names
        torch.manual_seed(cfg.run.seed)
        self.model = model_from_config(cfg, self.data.num_classes).to(self.device)
        if cfg.model.pretrained:
            from sefar_fast.models import load_pretrained

            load_pretrained(self.model, cfg.model.pretrained)
        if cfg.model.checkpoint_activations:
            self.model.set_grad_checkpointing(True)
        self.optimizer = self._optimizer()
        self.teacher = None
        self.progress = Progress()
        if self.resume_state is not None:
            self._load_resume()
        if self.dist.is_main:
            (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
        from sefar_fast.train.step import make_step

        self.step_fn = make_step(cfg, self.model, self.device, self.amp, self.compile, self.dist)
        self._loaders()

    def _optimizer(self):
        cfg = self.cfg.optim
        return torch.optim.SGD(self.model.parameters(), lr=self.base_lr(), momentum=cfg.momentum,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)

    @property
    def global_batch(self) -> int:
        o = self.cfg.optim
        return o.batch_size * o.accum_steps * self.dist.world_size

    def base_lr(self) -> float:
        return self.cfg.optim.lr * self.global_batch / self.cfg.optim.ref_batch

    def _loaders(self) -> None:
        from sefar_fast.data.loader import ClipLoader

        cfg, d = self.cfg, self.cfg.data
        common = dict(elements=cfg.method.elements, frame_size=tuple(d.frame_size), device=self.device,
                      rank=self.dist.rank, world_size=self.dist.world_size, backend=d.backend)
        self.labeled = ClipLoader(self.data.store, self.data.labeled, batch_size=cfg.optim.batch_size, views=1,
                                  shuffle=True, drop_last=len(self.data.labeled) >= cfg.optim.batch_size * self.dist.world_size,
                                  seed=cfg.run.seed, **common)
        self.unlabeled = None
        if cfg.method.name != "supervised" and self.data.unlabeled:
            bu = cfg.optim.batch_size * cfg.method.unlabeled_ratio
            self.unlabeled = ClipLoader(self.data.store, self.data.unlabeled, batch_size=bu, views=2, shuffle=True,
                                        drop_last=len(self.data.unlabeled) >= bu * self.dist.world_size,
                                        seed=cfg.run.seed + 1, **common)
        if len(self.labeled) == 0:
            raise SefarError(f"{len(self.data.labeled)} labeled clips are fewer than one batch of "
                             f"{cfg.optim.batch_size}; lower --batch-size")

    # ------------------------------------------------------------------ resume
    def _state_dict(self) -> dict[str, Any]:
        import random

        return {
            "format": STATE_FORMAT,
            "progress": self.progress.__dict__,
            "optimizer": self.optimizer.state_dict(),
            "student": self.model.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "step_fn": self.step_fn.state_dict(),
        }

    def _load_resume(self) -> None:
        import random

        from sefar_fast.train.ema import EmaTeacher

        st = load_state(self.resume_state)
        saved_cfg = (self.run_dir / "config.yaml")
        if saved_cfg.is_file():
            import yaml

            from sefar_fast.config import config_from_dict

            self.cfg = config_from_dict(yaml.safe_load(saved_cfg.read_text()))
            self.cfg.run.out = str(self.run_dir)
        self.model.load_state_dict(st["student"])
        self.optimizer.load_state_dict(st["optimizer"])
        if st["teacher"] is not None:
            self.teacher = EmaTeacher.create(self.model)
            self.teacher.load_state_dict(st["teacher"])
        self.progress = Progress(**st["progress"])
        self._resume_step_state = st.get("step_fn")
        torch.set_rng_state(st["rng"]["torch"])
        np.random.set_state(st["rng"]["numpy"])
        random.setstate(st["rng"]["python"])
        if st["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["rng"]["cuda"])
        if self.dist.is_main:
            console.print(f"[yellow]resuming[/] {self.run_dir} at epoch {self.progress.epoch + 1}, "
                          f"step {self.progress.step}")

    # ------------------------------------------------------------------ checkpoints
    def _meta(self, metrics: dict) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "class_names": self.class_names, "epoch": self.progress.epoch,
                "metrics": metrics, "sefar_version": __import__("sefar_fast").__version__}

    def save(self, metrics: dict, best: bool) -> None:
        if not self.dist.is_main:
            return
        student = self.model.state_dict()
        teacher = self.teacher.state_dict() if self.teacher is not None else None
        save_weights(self.run_dir / "last.safetensors", student, teacher, self._meta(metrics))
        if best:
            save_weights(self.run_dir / "best.safetensors", student, teacher, self._meta(metrics))
        save_state(self.state_path, self._state_dict())

    # ------------------------------------------------------------------ logging
    def log(self, record: dict) -> None:
        if self.dist.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ run
    def lr_at(self, epoch_float: float) -> float:
        from sefar_fast.train.schedule import lr_at

        o = self.cfg.optim
        return lr_at(epoch_float, self.base_lr(), [f * o.epochs for f in o.milestones], o.lr_factors)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.setup()
        if getattr(self, "_resume_step_state", None):
            self.step_fn.load_state_dict(self._resume_step_state)
        n_steps = len(self.labeled)
        if self.dist.is_main:
            console.print(
                f"[bold]sefar[/] {cfg.method.name} on {cfg.data.name}: {len(self.data.labeled)} labeled, "
                f"{len(self.data.unlabeled)} unlabeled, {len(self.data.val)} val clips, {self.data.num_classes} "
                f"classes; {cfg.model.arch}, elements {cfg.method.elements}, {cfg.optim.epochs} epochs x {n_steps} "
                f"steps, device {self.device}{' bf16' if self.amp else ''} -> {self.run_dir}"
            )
        last_metrics: dict[str, Any] = {}
        while self.progress.epoch < cfg.optim.epochs:
            epoch = self.progress.epoch
            train_stats = self.train_epoch(epoch)
            metrics = {"epoch": epoch + 1, **train_stats}
            is_last = epoch + 1 == cfg.optim.epochs
            if (epoch + 1) % cfg.eval.every == 0 or is_last:
                metrics.update(self.validate())
            self.progress.epoch += 1
            self.progress.step = 0
            primary = metrics.get("val_top1")
            best = primary is not None and primary > self.progress.best
            if best:
                self.progress.best, self.progress.best_epoch = primary, epoch + 1
            self.progress.history.append(metrics)
            self.progress.finished = is_last
            self.log({"kind": "epoch", **metrics})
            self.save(metrics, best)
            last_metrics = metrics
            if self.dist.is_main:
                self._print_epoch(metrics)
        return self.finish(last_metrics)

    def _print_epoch(self, m: dict) -> None:
        parts = [f"epoch {m['epoch']}/{self.cfg.optim.epochs}", f"loss {m['loss']:.4f}"]
        for k in ("val_top1_student", "val_top1_teacher", "pseudo_acc", "eta_mean"):
            if k in m and m[k] is not None:
                parts.append(f"{k} {m[k]:.4f}" if "eta" in k else f"{k} {100 * m[k]:.2f}%")
        console.print("  ".join(parts))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        from sefar_fast.train.schedule import xi as xi_at

        ssl = cfg.method.name != "supervised" and epoch >= cfg.method.warmup_epochs and self.unlabeled is not None
        if ssl and self.teacher is None:
            from sefar_fast.train.ema import EmaTeacher

            self.teacher = EmaTeacher.create(self.model)
        xi = xi_at(epoch, cfg.method.warmup_epochs, cfg.optim.epochs) if ssl else 0.0
        self.labeled.set_epoch(epoch)
        self.labeled.load_state_dict({"epoch": epoch, "position": self.progress.step})
        lab_iter = iter(self.labeled)
        self._unl_it = self._unlabeled_iter() if ssl else None
        n = len(self.labeled)
        acc = self.step_fn.new_accumulator()
        self.model.train()
        accum = cfg.optim.accum_steps
        desc = f"epoch {epoch + 1}/{cfg.optim.epochs} {'ssl' if ssl else 'sup'}"
        profiler = self._profiler() if self.profile and epoch == self.progress.epoch else None
        with progress_bar(desc, n) as bar:
            bar.advance(self.progress.step)
            for step in range(self.progress.step, n):
                lab = next(lab_iter)
                unl = self._next_unlabeled() if ssl else None
                lr = self.lr_at(epoch + step / n)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                rng = np.random.default_rng([cfg.run.seed, 7, self.progress.global_step, self.dist.rank])
                self.step_fn.micro_step(lab, unl, self.teacher, xi, rng, acc, scale=1.0 / accum)
                self.progress.step = step + 1
                self.progress.global_step += 1
                if (step + 1) % accum == 0 or step + 1 == n:
                    self.step_fn.optimizer_step(self.optimizer, self.teacher, acc, self.on_nan)
                if profiler is not None:
                    profiler.step()
                    if step >= 5:
                        profiler.stop()
                        profiler = None
                if (step + 1) % cfg.run.log_every == 0 or step + 1 == n:
                    stats = self.step_fn.read(acc)
                    self.log({"kind": "step", "epoch": epoch + 1, "step": step + 1, "lr": lr, **stats})
                    bar.advance(1, loss=stats["loss"], lr=lr)
                else:
                    bar.advance(1)
        stats = self.step_fn.read(acc, reduce=lambda t: all_reduce_sum(t, self.dist))
        stats["lr"] = lr
        stats["xi"] = xi
        return stats

    def _unlabeled_iter(self):
        u = self.unlabeled
        u.set_epoch(self.progress.unlabeled_cycle)
        u.load_state_dict({"epoch": self.progress.unlabeled_cycle, "position": self.progress.unlabeled_pos})
        return iter(u)

    def _next_unlabeled(self):
        """Next unlabeled batch; the unlabeled pool is cycled independently of the labeled epochs."""
        try:
            batch = next(self._unl_it)
        except StopIteration:
            self.progress.unlabeled_cycle += 1
            self.progress.unlabeled_pos = 0
            self._unl_it = self._unlabeled_iter()
            batch = next(self._unl_it)
        self.progress.unlabeled_pos += 1
        return batch

    def _profiler(self):
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        prof = profile(activities=acts, schedule=schedule(wait=1, warmup=1, active=3),
                       on_trace_ready=tensorboard_trace_handler(str(self.run_dir / "profile")))
        prof.start()
        return prof

    def validate(self) -> dict[str, float]:
        from sefar_fast.eval.evaluate import evaluate_model

        cfg = self.cfg
        out: dict[str, float] = {}
        models = [("student", self.model)] + ([("teacher", self.teacher.module)] if self.teacher else [])
        for name, model in models:
            res = evaluate_model(model, self.data, self.data.val, cfg, self.device, views=eval_views(cfg),
                                 amp=self.amp, desc=f"val {name}", dist=self.dist)
            out[f"val_top1_{name}"] = res["top1"]
            out[f"val_top5_{name}"] = res["top5"]
            out[f"val_mca_{name}"] = res["mean_class_acc"]
        primary = "teacher" if self.teacher is not None else "student"
        out["val_top1"] = out[f"val_top1_{primary}"]
        out["val_model"] = primary
        return out

    def finish(self, last: dict) -> dict[str, Any]:
        cfg = self.cfg
        result = {
            "run": str(self.run_dir), "method": cfg.method.name, "data": cfg.data.name, "arch": cfg.model.arch,
            "epochs": cfg.optim.epochs, "best_val_top1": self.progress.best, "best_epoch": self.progress.best_epoch,
            "best_checkpoint": str(self.run_dir / "best.safetensors"), "last": last,
        }
        if self.dist.is_main:
            (self.run_dir / "finished").write_text(json.dumps(result, indent=2, default=float) + "\n")
            self._write_summary()
            rows = [(k, f"{100 * v:.2f}%" if k.startswith(("val_top", "val_mca", "pseudo")) else
                     (f"{v:.4g}" if isinstance(v, float) else str(v))) for k, v in last.items()]
            rows += [("best val top-1", f"{100 * self.progress.best:.2f}% (epoch {self.progress.best_epoch})"),
                     ("best checkpoint", str(self.run_dir / "best.safetensors"))]
            console.print(results_table(f"sefar {cfg.method.name} on {cfg.data.name}", rows))
        cleanup(self.dist)
        return result

    def _write_summary(self) -> None:
        keys: list[str] = []
        for h in self.progress.history:
            keys += [k for k in h if k not in keys]
        lines = [",".join(keys)]
        for h in self.progress.history:
            lines.append(",".join("" if h.get(k) is None else str(h.get(k)) for k in keys))
        (self.run_dir / "summary.csv").write_text("\n".join(lines) + "\n")


def train(cfg: Config, *, resume=None, resume_from=None, on_nan="skip", profile=False) -> dict[str, Any]:
    return Trainer(cfg, resume=resume, resume_from=resume_from, on_nan=on_nan, profile=profile).run()
