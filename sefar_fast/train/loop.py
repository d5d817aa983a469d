"""The trainer: epochs, evaluation, checkpoints, logging, resume, interruption.

    sefar train                                    # synth data, SeFAR, laptop CPU
    sefar train --data store:/data/gym99-store --arch vit-s --pretrained vit_s16.npz
    torchrun --nproc_per_node 8 -m sefar_fast train --data store:/data/gym99-store

One epoch is one pass over the labeled clips (as the paper). The first
`method.warmup_epochs` epochs are supervised; the EMA teacher is created from the
student when they end, and the semi-supervised loss ramps in with xi. The
arithmetic of one step lives in `train.step`; this module only drives it.

One optimizer step takes a global batch of batch_size x accum_steps x world_size
labeled clips, split into shards whose clips and random draws do not depend on how
they are spread over processes and accumulation steps (`train.shards`).

Exact resume. Nothing random depends on history: loader content depends on
(seed, epoch, position), step draws on (seed, step, shard). A checkpoint therefore
needs weights, optimizer state, the step counters and the loader positions
(`train.state`, written as a consistent pair by `train.checkpoints`). A resumed run
continues bit for bit as the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from sefar_fast.cli.progress import console, err_console, progress_bar, results_table
from sefar_fast.config import Config, eval_views
from sefar_fast.errors import SefarError
from sefar_fast.train import resume as resume_rules
from sefar_fast.train.checkpoints import RunCheckpoints
from sefar_fast.train.distributed import any_rank, barrier, broadcast_object, cleanup, init_distributed
from sefar_fast.train.shards import seed_shard, shard_id, shard_of
from sefar_fast.train.signals import Interrupted, StopRequest, signal_self_for_tests
from sefar_fast.train.state import Progress, capture, restore


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
        pos_embed_std=cfg.model.pos_embed_std, time_embed_std=cfg.model.time_embed_std,
    )


class Trainer:
    def __init__(self, cfg: Config, *, resume: bool | None = None, resume_from: Path | None = None,
                 on_nan: str = "skip", profile: bool = False):
        from sefar_fast.train.checks import preflight

        if on_nan not in ("skip", "stop"):
            raise SefarError(f"--on-nan '{on_nan}' must be skip or stop")
        self.cfg, self.on_nan, self.profile = cfg, on_nan, profile
        preflight(cfg)
        self.dist, self.device = init_distributed(cfg.run.device)
        on_cuda = self.device.type == "cuda"
        if not on_cuda and "OMP_NUM_THREADS" not in os.environ:
            # The loader decodes on its own threads; leave it a core, or OpenMP threads spin-wait on
            # each other and a step takes several times longer (measured: 10x on 2 cores).
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
        self.amp = cfg.run.amp if cfg.run.amp is not None else on_cuda
        self.compile = cfg.run.compile if cfg.run.compile is not None else on_cuda
        plan = self._plan(resume, resume_from)
        self.run_dir, self.resuming = plan.run_dir, plan.resuming
        cfg.run.out = str(self.run_dir)
        self.files = RunCheckpoints(self.run_dir)
        self.shards = self.dist.world_size * cfg.optim.accum_steps

    def _plan(self, resume, resume_from) -> resume_rules.RunPlan:
        """Rank 0 decides (folder, resume or not); every rank gets the same answer or the same error."""
        answer = None
        if self.dist.is_main:
            try:
                plan = resume_rules.plan_run(self.cfg, resume, resume_from, default_run_dir(self.cfg))
                if plan.resuming:
                    resume_rules.check_same_run(plan.run_dir, self.cfg, explicit=resume_from is not None)
                answer = (plan, None)
            except SefarError as e:
                answer = (None, str(e))
        plan, error = broadcast_object(answer, self.dist)
        if error is not None:
            raise SefarError(error)
        return plan

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        from sefar_fast.data.datasets import open_dataset
        from sefar_fast.train.checks import check_data

        cfg = self.cfg
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.files.clean_temporaries()
            if not self.resuming:  # written first, so a start that fails below leaves a recognisable run folder
                resume_rules.clear_unfinished(self.run_dir)
                self._write_config()
        barrier(self.dist)
        self.data = open_dataset(cfg, self.run_dir if self.dist.is_main else None)
        self.class_names = self.data.class_names
        check_data(cfg, self.data, self._warn)
        torch.manual_seed(cfg.run.seed)
        self.model = model_from_config(cfg, self.data.num_classes).to(self.device)
        if cfg.model.pretrained and not self.resuming:
            from sefar_fast.models import load_pretrained

            report = load_pretrained(self.model, cfg.model.pretrained)
            if self.dist.is_main:
                console.print(f"pretrained: {report.summary()}")
        if cfg.model.checkpoint_activations:
            self.model.set_grad_checkpointing(True)
        self.optimizer = self._optimizer()
        self.teacher = None
        self.progress = Progress()
        self.acc_values: dict[str, float] | None = None  # running sums of a checkpoint taken mid-epoch
        self.loader_states: dict = {}
        self.step_state: dict | None = None
        self.saved_at: int | None = None
        if self.resuming:
            self._load_resume()
            if self.dist.is_main:  # only once the run was accepted: a refused resume leaves the folder as it was
                self._write_config()
        from sefar_fast.train.step import make_step

        self.step_fn = make_step(cfg, self.model, self.device, self.amp, self.compile, self.dist,
                                 on_compile_fallback=self._warn)
        self._loaders()

    def _write_config(self) -> None:
        from sefar_fast.checkpoint import atomic_write

        atomic_write(self.run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(self.cfg.to_yaml()))

    def _warn(self, text: str) -> None:
        if self.dist.is_main:
            err_console.print(f"[yellow]warning:[/] {text}", soft_wrap=True)

    def _optimizer(self):
        cfg = self.cfg.optim
        if cfg.name == "adamw":
            # capturable keeps Adam's step count on the device, so the NaN guard never syncs for it
            return torch.optim.AdamW(self.model.parameters(), lr=self.base_lr(), weight_decay=cfg.weight_decay,
                                     capturable=self.device.type == "cuda")
        return torch.optim.SGD(self.model.parameters(), lr=self.base_lr(), momentum=cfg.momentum,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)

    @property
    def global_batch(self) -> int:
        return self.cfg.optim.batch_size * self.shards

    def base_lr(self) -> float:
        return self.cfg.optim.lr * self.global_batch / self.cfg.optim.ref_batch

    def _loaders(self) -> None:
        from sefar_fast.data.loader import ClipLoader

        cfg, d, w = self.cfg, self.cfg.data, self.dist.world_size
        a = cfg.optim.accum_steps
        common = dict(elements=cfg.method.elements, frame_size=tuple(d.frame_size), device=self.device,
                      rank=self.dist.rank, world_size=w, backend=d.backend)
        b = cfg.optim.batch_size * a  # a process's micro-batches, taken together (see the module docstring)
        self.labeled = ClipLoader(self.data.store, self.data.labeled, batch_size=b, views=1, shuffle=True,
                                  drop_last=len(self.data.labeled) >= b * w, seed=cfg.run.seed, **common)
        self.unlabeled = None
        if cfg.method.name != "supervised" and self.data.unlabeled:
            bu = b * cfg.method.unlabeled_ratio
            self.unlabeled = ClipLoader(self.data.store, self.data.unlabeled, batch_size=bu, views=2, shuffle=True,
                                        drop_last=len(self.data.unlabeled) >= bu * w, seed=cfg.run.seed + 1,
                                        **common)
        for name, loader in (("labeled", self.labeled), ("unlabeled", self.unlabeled)):
            if loader is not None and name in self.loader_states:
                loader.load_state_dict(self.loader_states[name])

    def close(self) -> None:
        for loader in (getattr(self, "labeled", None), getattr(self, "unlabeled", None)):
            if loader is not None:
                loader.close()

    # ------------------------------------------------------------------ resume
    def _load_resume(self) -> None:
        if not self.files.exists():
            raise SefarError(f"rank {self.dist.rank} cannot read {self.files.last}; resuming a multi-node run "
                             "needs the run folder on a shared file system")
        barrier(self.dist)
        if self.dist.is_main:  # may rename prev.state -> last.state: the other ranks read after it
            weights, state = self.files.load_latest()
        barrier(self.dist)
        if not self.dist.is_main:
            weights, state = self.files.load_latest()
        restore(self, weights, state)
        self.saved_at = self.progress.global_step
        if self.dist.is_main:
            console.print(f"[yellow]resuming[/] {self.run_dir} at epoch {self.progress.epoch + 1}, "
                          f"step {self.progress.step} (global step {self.progress.global_step})")

    # ------------------------------------------------------------------ checkpoints
    def _meta(self, metrics: dict) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "class_names": self.class_names, "epoch": self.progress.epoch,
                "global_step": self.progress.global_step, "metrics": metrics,
                "sefar_version": __import__("sefar_fast").__version__}

    def save(self, acc: dict[str, torch.Tensor] | None, metrics: dict, *, epoch_end: int | None = None,
             best: bool = False) -> None:
        """Write last.* (and best / epoch-NNN); refuses, under --on-nan stop, once a step was skipped."""
        if acc is not None:
            self._check_nan_stop(self.step_fn.read(acc))
        if self.dist.is_main:
            teacher = self.teacher.state_dict() if self.teacher is not None else None
            self.files.save(self.model.state_dict(), teacher, self._meta(metrics), capture(self, acc),
                            epoch_end=epoch_end, best=best, keep=self.cfg.run.keep)
        barrier(self.dist)
        self.saved_at = self.progress.global_step

    # ------------------------------------------------------------------ logging
    def log(self, record: dict) -> None:
        if self.dist.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _check_nan_stop(self, stats: dict) -> None:
        skipped = stats.get("skipped_steps", 0)
        if not skipped:
            return
        epoch_start = self.progress.global_step - self.progress.step
        first = epoch_start + stats["first_skipped"]
        if self.on_nan == "stop":
            saved = self.saved_at
            last = (f"the last good checkpoint is {self.files.last} (step {saved})" if saved is not None
                    else "no checkpoint was written before it")
            raise SefarError(
                f"non-finite loss or gradient at step {first} (epoch {self.progress.epoch + 1}); stopped by "
                f"--on-nan stop without applying it; {last}")
        if skipped > self._skipped_reported:
            self._warn(f"skipped {skipped} optimizer step(s) with a non-finite loss or gradient this epoch "
                       f"(first: step {first}); the weights were left unchanged")
            self._skipped_reported = skipped

    # ------------------------------------------------------------------ run
    def lr_at(self, epoch_float: float) -> float:
        from sefar_fast.train.schedule import lr_at

        o = self.cfg.optim
        return lr_at(epoch_float, self.base_lr(), [f * o.epochs for f in o.milestones], o.lr_factors,
                     o.lr_warmup_epochs)

    def run(self) -> dict[str, Any]:
        try:
            self.setup()
            if self.step_state:
                self.step_fn.load_state_dict(self.step_state)
            self._announce()
            with StopRequest(announce=self.dist.is_main) as stop:
                self.stop = stop
                self._train()
            return self.finish()
        finally:
            self.close()
            cleanup(self.dist)

    def _announce(self) -> None:
        if not self.dist.is_main:
            return
        cfg = self.cfg
        console.print(
            f"[bold]sefar[/] {cfg.method.name} on {cfg.data.name}: {len(self.data.labeled)} labeled, "
            f"{len(self.data.unlabeled)} unlabeled, {len(self.data.val)} val clips, {self.data.num_classes} "
            f"classes; {cfg.model.arch}, elements {cfg.method.elements}, {cfg.optim.epochs} epochs x "
            f"{len(self.labeled)} steps of {self.global_batch} labeled clips ({self.dist.world_size} process(es) x "
            f"{cfg.optim.accum_steps} accumulation x {cfg.optim.batch_size}), device {self.device}"
            f"{' bf16' if self.amp else ''} -> {self.run_dir}"
        )

    def _train(self) -> None:
        cfg = self.cfg
        self.profiler = None
        if self.profile:
            from sefar_fast.train.telemetry import StepProfiler

            self.profiler = StepProfiler(self.run_dir / "profile", self.dist.rank, self.device)
        while self.progress.epoch < cfg.optim.epochs:
            epoch = self.progress.epoch
            train_stats = self.train_epoch(epoch)
            if train_stats is None:
                self.save(self._acc, {})
                self._interrupted()
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
            self.save(None, metrics, epoch_end=epoch + 1, best=best)
            if self.dist.is_main:
                self._print_epoch(metrics)
            if not is_last and self._stop_requested():
                self._interrupted()

    def _stop_requested(self) -> bool:
        return any_rank(self.stop.requested, self.dist)

    def _interrupted(self) -> None:
        import signal

        p = self.progress
        signum = self.stop.signum or signal.SIGINT  # a rank that saw no signal stops with its peers
        cmd = resume_rules.resume_command(self.run_dir, self.dist.world_size,
                                          int(os.environ.get("LOCAL_WORLD_SIZE", self.dist.world_size)))
        where = f"epoch {p.epoch + 1}, step {p.step}/{len(self.labeled)}" if p.step else f"the end of epoch {p.epoch}"
        raise Interrupted(signum, f"interrupted at {where} (global step {p.global_step}); checkpoint written to "
                                  f"{self.files.last}; resume with: {cmd}")

    def _print_epoch(self, m: dict) -> None:
        parts = [f"epoch {m['epoch']}/{self.cfg.optim.epochs}", f"loss {m['loss']:.4f}"]
        for k in ("val_top1_student", "val_top1_teacher", "pseudo_acc", "eta_mean", "data_wait"):
            if k in m and m[k] is not None:
                parts.append(f"{k} {m[k]:.4f}" if k == "eta_mean" else f"{k} {100 * m[k]:.2f}%")
        if m.get("skipped_steps"):
            parts.append(f"skipped_steps {m['skipped_steps']}")
        console.print("  ".join(parts))

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """Train the rest of `epoch`; its stats, or None when a stop signal ended it early."""
        from sefar_fast.train.schedule import xi as xi_at
        from sefar_fast.train.telemetry import DataWaitMeter

        cfg, p = self.cfg, self.progress
        ssl = cfg.method.name != "supervised" and epoch >= cfg.method.warmup_epochs and self.unlabeled is not None
        if ssl and self.teacher is None:
            from sefar_fast.train.ema import EmaTeacher

            self.teacher = EmaTeacher.create(self.model)
        xi = xi_at(epoch, cfg.method.warmup_epochs, cfg.optim.epochs) if ssl else 0.0
        n = len(self.labeled)
        self.labeled.load_state_dict({"epoch": epoch, "position": p.step})
        lab_iter = iter(self.labeled)
        self._unl_iter = iter(self.unlabeled) if ssl else None
        acc = self._acc = self.step_fn.new_accumulator()
        if self.acc_values:  # resumed inside this epoch: its running sums so far
            for k, v in self.acc_values.items():
                acc[k].fill_(v)
            self.acc_values = None
        self._skipped_reported = 0
        self.model.train()
        meter = DataWaitMeter()
        lr = self.lr_at(epoch + p.step / n)
        with progress_bar(f"epoch {epoch + 1}/{cfg.optim.epochs} {'ssl' if ssl else 'sup'}", n) as bar:
            bar.advance(p.step)
            for step in range(p.step, n):
                with meter.waiting():
                    lab = next(lab_iter)
                    unl = self._next_unlabeled() if ssl else None
                lr = self.lr_at(epoch + step / n)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                self._global_step(lab, unl, xi, acc)
                p.step, p.global_step = step + 1, p.global_step + 1
                if self.profiler is not None:
                    self.profiler.step_done()
                signal_self_for_tests(p.global_step)
                if p.step % cfg.run.log_every == 0 or p.step == n:
                    stats = self.step_fn.read(acc)
                    self._check_nan_stop(stats)
                    self.log({"kind": "step", "epoch": epoch + 1, "step": p.step, "global_step": p.global_step,
                              "lr": lr, "data_wait": meter.interval_fraction(), **stats})
                    bar.advance(1, loss=stats["loss"], lr=lr)
                else:
                    bar.advance(1)
                if self._stop_requested():
                    return None
                every = cfg.run.ckpt_every_steps
                if every and p.global_step % every == 0 and p.step < n:
                    self.save(acc, {})
        if self.profiler is not None:
            self.profiler.finish()
        stats = self.step_fn.read(acc, reduce=lambda t: self._all_reduce(t))
        self._check_nan_stop(stats)
        stats.pop("first_skipped", None)
        stats.update(lr=lr, xi=xi, data_wait=meter.total_fraction())
        return stats

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        from sefar_fast.train.distributed import all_reduce_sum

        return all_reduce_sum(t, self.dist)

    def _global_step(self, lab: dict, unl: dict | None, xi: float, acc: dict[str, torch.Tensor]) -> None:
        """One optimizer step over this process's shards of the global batch."""
        cfg, a, w = self.cfg, self.cfg.optim.accum_steps, self.dist.world_size
        step = self.progress.global_step
        micro = [(m, shard_of(lab, m, a), shard_of(unl, m, a)) for m in range(a)]
        micro = [(m, lab_m, unl_m) for m, lab_m, unl_m in micro if lab_m is not None]
        for i, (m, lab_m, unl_m) in enumerate(micro):
            rng = seed_shard(cfg.run.seed, step, shard_id(self.dist.rank, w, m))
            with self.step_fn.no_sync(i < len(micro) - 1):
                self.step_fn.micro_step(lab_m, unl_m, self.teacher, xi, rng, acc, scale=1.0 / len(micro))
        _poison_gradient_for_tests(self.model, step + 1)
        self.step_fn.optimizer_step(self.optimizer, self.teacher, acc, self.on_nan)

    def _next_unlabeled(self):
        """Next unlabeled batch; the unlabeled pool cycles on its own, independently of the labeled epochs."""
        try:
            return next(self._unl_iter)
        except StopIteration:
            self._unl_iter = iter(self.unlabeled)  # at the end of a pass the loader moves to the next one
            return next(self._unl_iter)

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

    def finish(self) -> dict[str, Any]:
        cfg = self.cfg
        last = self.progress.history[-1] if self.progress.history else {}
        result = {
            "run": str(self.run_dir), "method": cfg.method.name, "data": cfg.data.name, "arch": cfg.model.arch,
            "epochs": cfg.optim.epochs, "best_val_top1": self.progress.best, "best_epoch": self.progress.best_epoch,
            "best_checkpoint": str(self.run_dir / "best.safetensors"), "last": last,
        }
        if self.dist.is_main:
            (self.run_dir / "finished").write_text(json.dumps(result, indent=2, default=float) + "\n")
            self._write_summary()
            rows = [(k, f"{100 * v:.2f}%" if k.startswith(("val_top", "val_mca", "pseudo", "data_wait")) else
                     (f"{v:.4g}" if isinstance(v, float) else str(v))) for k, v in last.items()]
            rows += [("best val top-1", f"{100 * self.progress.best:.2f}% (epoch {self.progress.best_epoch})"),
                     ("best checkpoint", str(self.run_dir / "best.safetensors"))]
            if self.profiler is not None and self.profiler.written:
                rows.append(("profiler trace", str(self.profiler.written)))
            rows.append(("curves", str(self._draw_curves())))
            console.print(results_table(f"sefar {cfg.method.name} on {cfg.data.name}", rows))
        return result

    def _draw_curves(self) -> Path:
        from sefar_fast.eval.curves import plot_curves

        return plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png",
                           title=f"{self.cfg.method.name} on {self.cfg.data.name}")

    def _write_summary(self) -> None:
        keys: list[str] = []
        for h in self.progress.history:
            keys += [k for k in h if k not in keys]
        lines = [",".join(keys)]
        for h in self.progress.history:
            lines.append(",".join("" if h.get(k) is None else str(h.get(k)) for k in keys))
        (self.run_dir / "summary.csv").write_text("\n".join(lines) + "\n")


def _poison_gradient_for_tests(model, step: int) -> None:
    """SEFAR_TEST_NAN_AT_STEP=N[,M...]: make the gradients of optimizer step N (1-based) non-finite."""
    spec = os.environ.get("SEFAR_TEST_NAN_AT_STEP")
    if spec and step in {int(s) for s in spec.split(",")}:
        p = next(q for q in model.parameters() if q.grad is not None)
        p.grad.view(-1)[0] = float("nan")


def train(cfg: Config, *, resume=None, resume_from=None, on_nan="skip", profile=False) -> dict[str, Any]:
    return Trainer(cfg, resume=resume, resume_from=resume_from, on_nan=on_nan, profile=profile).run()
