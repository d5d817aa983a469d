"""The trainer: epochs, evaluation, checkpoints, logging, resume, interruption.

    sefar train                                    # synth data, SeFAR, laptop CPU
    sefar train --data store:/data/gym99-store --arch vit-s --pretrained vit_s16.npz
    torchrun --nproc_per_node 8 -m sefar_fast train --data store:/data/gym99-store

Read `Trainer.run`, then `fit`, then `train_epoch`: that is the whole schedule.
One epoch is one pass over the labeled clips (as the paper). The first
`method.warmup_epochs` epochs are supervised; the EMA teacher is created from the
student when they end, and the semi-supervised loss ramps in with xi
(`train.schedule`). The arithmetic of one step lives in `train.step`; what a run
prints and writes in `train.report`; what it carries from step to step, and
checkpoints, in `train.state`.

One optimizer step takes a global batch of batch_size x accum_steps x world_size
labeled clips, split into shards whose clips and random draws do not depend on how
they are spread over processes and accumulation steps (`train.shards`); with
optim.global_batch (the paper's 64 by default) accum_steps is chosen to reach it. The
lr is scaled linearly with that batch, the EMA decay follows it (per labeled clip).

Exact resume. Nothing random depends on history: loader content depends on
(seed, epoch, position), step draws on (seed, step, shard). A checkpoint therefore
needs weights, optimizer state, the step counters and the loader positions
(`train.state`, written as a consistent pair by `train.checkpoints`). A resumed run
continues bit for bit as the uninterrupted one.
"""

from __future__ import annotations

import copy
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import torch

from sefar_fast import __version__, kernels
from sefar_fast.config import Config, eval_views
from sefar_fast.console import progress_bar
from sefar_fast.data.datasets import open_dataset
from sefar_fast.data.frame_cache import FrameCache
from sefar_fast.data.loader import ClipLoader, drops_last, fill_frame_cache
from sefar_fast.distributed import (
    all_reduce_sum,
    any_rank,
    barrier,
    broadcast_object,
    cleanup,
    cpu_threads,
    init_distributed,
)
from sefar_fast.errors import SefarError
from sefar_fast.eval.evaluate import evaluate_models
from sefar_fast.io import atomic_write_text
from sefar_fast.lock import FolderLock
from sefar_fast.models import load_pretrained, model_from_config
from sefar_fast.train import resume as resume_rules
from sefar_fast.train.checkpoints import RunCheckpoints
from sefar_fast.train.checks import check_data, preflight
from sefar_fast.train.report import Reporter
from sefar_fast.train.schedule import lr_at, milestone_epochs, scaled_lr, xi
from sefar_fast.train.shards import accumulation_for, seed_shard, shard_id, shard_of
from sefar_fast.train.signals import Interrupted, StopRequest, signal_self_for_tests
from sefar_fast.train.state import TrainState
from sefar_fast.train.step import TrainStep
from sefar_fast.train.telemetry import DataWaitMeter, StepProfiler
from sefar_fast.train.update import make_optimizer

ON_NAN = ("skip", "stop")
METHOD_TITLES = {"sefar": "SeFAR", "supervised": "supervised", "fixmatch": "FixMatch"}


def default_run_dir(cfg: Config) -> Path:
    """runs/<data>-<method>-<time>-s<seed>-<random>: runs started in the same second never share a folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = cfg.data.name.replace(":", "-").replace("/", "_")
    return Path("runs") / f"{name}-{cfg.method.name}-{stamp}-s{cfg.run.seed}-{secrets.token_hex(3)}"


class Trainer:
    """One training run; `run()` trains it to the end (or to a stop signal) and returns its result."""

    def __init__(self, cfg: Config, *, resume: bool | None = None, resume_from: Path | None = None,
                 on_nan: str = "skip", profile: bool = False, strict: bool = False):
        if on_nan not in ON_NAN:
            raise SefarError(f"--on-nan '{on_nan}' must be skip or stop")
        preflight(cfg)
        self.cfg = cfg = copy.deepcopy(cfg)  # the caller's config stays as it was
        self.on_nan, self.profile, self.strict = on_nan, profile, strict
        self.dist, self.device = init_distributed(cfg.run.device)
        if cfg.optim.global_batch:  # the paper's effective batch over whatever batch and processes are given
            cfg.optim.accum_steps = accumulation_for(cfg.optim.global_batch, cfg.optim.batch_size,
                                                     self.dist.world_size)
        on_cuda = self.device.type == "cuda"
        if not on_cuda and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(cpu_threads())
        self.amp = cfg.run.amp if cfg.run.amp is not None else on_cuda
        self.compile = cfg.run.compile if cfg.run.compile is not None else on_cuda
        self.resume_arg, self.resume_from = resume, resume_from
        self.lock: FolderLock | None = None  # taken by rank 0 in setup(), for the whole run
        plan = self._plan()
        self.run_dir, self.resuming = plan.run_dir, plan.resuming
        cfg.run.out = str(self.run_dir)
        self.files = RunCheckpoints(self.run_dir)
        self.report = Reporter(self.run_dir, self.dist.is_main)

        o = cfg.optim
        self.shards = self.dist.world_size * o.accum_steps  # of each global batch (train.shards)
        self.global_batch = o.batch_size * self.shards
        self.base_lr = scaled_lr(o.lr, self.global_batch, o.ref_batch)
        self.milestones = milestone_epochs(o.epochs, o.milestones)

        # Built by setup():
        self.data = None
        self.frame_cache: FrameCache | None = None  # decoded frames in memory, shared by all loaders
        self.state: TrainState | None = None
        self.step: TrainStep | None = None
        self.labeled: ClipLoader | None = None
        self.unlabeled: ClipLoader | None = None
        # While training:
        self.stop: StopRequest | None = None
        self.profiler: StepProfiler | None = None
        self.acc: dict[str, torch.Tensor] | None = None  # the current epoch's running sums (on the device)
        self.saved_at: int | None = None  # global step of the newest checkpoint
        self.skips_reported = 0

    # ------------------------------------------------------------------ the schedule
    def run(self) -> dict[str, Any]:
        try:
            self.setup()
            self.report.say(self.headline())
            with StopRequest(announce=self.dist.is_main) as self.stop:
                self.fit()
            return self.finish()
        finally:
            self.close()
            cleanup(self.dist)

    def fit(self) -> None:
        """Epochs until the end: train, validate when due, checkpoint, report; stop cleanly on a signal."""
        cfg, progress = self.cfg, self.state.progress
        while progress.epoch < cfg.optim.epochs:
            epoch = progress.epoch
            stats = self.train_epoch(epoch)
            if stats is None:  # a stop signal ended the epoch early
                self.save(self.acc, {})
                self.interrupted()
            metrics = {"epoch": epoch + 1, **stats}
            last = epoch + 1 == cfg.optim.epochs
            if (epoch + 1) % cfg.eval.every == 0 or last:
                metrics.update(self.validate())
            best = self.state.end_epoch(metrics, last=last)
            self.report.record({"kind": "epoch", "global_step": progress.global_step, **metrics})
            self.save(None, metrics, epoch_end=epoch + 1, best=best)
            self.report.epoch(metrics, cfg.optim.epochs)
            if not last and self.stop_requested():
                self.interrupted()

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """Train the rest of `epoch`; its stats, or None when a stop signal ended it early."""
        cfg, p = self.cfg, self.state.progress
        ssl = cfg.method.name != "supervised" and epoch >= cfg.method.warmup_epochs and self.unlabeled is not None
        teacher = self.state.start_teacher() if ssl else self.state.teacher
        weight = xi(epoch, cfg.method.warmup_epochs, cfg.optim.epochs) if ssl else 0.0
        n = len(self.labeled)
        self.labeled.load_state_dict({"epoch": epoch, "position": p.step})
        labeled = iter(self.labeled)
        unlabeled = self.unlabeled_batches() if ssl else None
        self.acc = acc = self.step.new_accumulator(self.state.epoch_sums)  # resumed mid-epoch: its sums so far
        self.state.epoch_sums = None
        self.skips_reported = 0
        self.state.model.train()
        meter = DataWaitMeter()
        lr = self.lr_at(epoch + p.step / n)
        with progress_bar(f"epoch {epoch + 1}/{cfg.optim.epochs} {'ssl' if ssl else 'sup'}", n) as bar:
            bar.start_at(p.step)
            for step in range(p.step, n):
                with meter.waiting():
                    lab = next(labeled)
                    unl = next(unlabeled) if ssl else None
                lr = self.lr_at(epoch + step / n)
                for group in self.state.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer_step(lab, unl, teacher, weight)
                p.step, p.global_step = step + 1, p.global_step + 1
                if self.profiler is not None:
                    self.profiler.step_done()
                signal_self_for_tests(p.global_step)
                if p.step % cfg.run.log_every == 0 or p.step == n:
                    stats = self.step.read(acc)
                    self.check_skips(stats)
                    self.report.record({"kind": "step", "epoch": epoch + 1, "step": p.step,
                                        "global_step": p.global_step, "lr": lr,
                                        "data_wait": meter.interval_fraction(), **stats})
                    bar.advance(1, loss=stats["loss"], lr=lr)
                else:
                    bar.advance(1)
                if self.stop_requested():
                    return None
                every = cfg.run.ckpt_every_steps
                if every and p.global_step % every == 0 and p.step < n:
                    self.save(acc, {})
        if self.profiler is not None:
            self.profiler.finish()
        stats = self.step.read(acc, reduce=lambda t: all_reduce_sum(t, self.dist))
        self.check_skips(stats)
        stats.pop("first_skipped", None)
        stats.update(lr=lr, xi=weight, data_wait=meter.total_fraction())
        return stats

    def optimizer_step(self, lab: dict, unl: dict | None, teacher, weight: float) -> None:
        """One optimizer step over this process's shards of the global batch."""
        a, w = self.cfg.optim.accum_steps, self.dist.world_size
        step = self.state.progress.global_step
        micro = [(m, shard_of(lab, m, a), shard_of(unl, m, a)) for m in range(a)]
        micro = [(m, lab_m, unl_m) for m, lab_m, unl_m in micro if lab_m is not None]
        for i, (m, lab_m, unl_m) in enumerate(micro):
            rng = seed_shard(self.cfg.run.seed, step, shard_id(self.dist.rank, w, m))
            with self.step.no_sync(i < len(micro) - 1):
                self.step.micro_step(lab_m, unl_m, teacher, weight, rng, self.acc, scale=1.0 / len(micro))
        _poison_gradient_for_tests(self.state.model, step + 1)
        self.step.optimizer_step(self.state.optimizer, teacher, self.acc)

    def lr_at(self, epoch_float: float) -> float:
        o = self.cfg.optim
        return lr_at(epoch_float, self.base_lr, self.milestones, o.lr_factors, o.lr_warmup_epochs)

    def unlabeled_batches(self):
        """Unlabeled batches forever: the unlabeled pool cycles on its own, independently of the labeled
        epochs (at the end of a pass the loader moves on to its next one)."""
        while True:
            yield from self.unlabeled

    def validate(self) -> dict[str, float]:
        """Top-1, top-5 and mean class accuracy of the student and (once it exists) the teacher, under
        `eval.protocol` (multiview: eval.views; reference: one random view per clip, seeded by run.seed).

        `val_top1`, which picks the best checkpoint, is the `eval.headline` model's (the student's until
        the teacher exists)."""
        cfg, out = self.cfg, {}
        models = {"student": self.state.model}
        if self.state.teacher is not None:
            models["teacher"] = self.state.teacher.module
        results = evaluate_models(models, self.data, self.data.val, cfg, self.device, views=eval_views(cfg),
                                  protocol=cfg.eval.protocol, seed=cfg.run.seed, amp=self.amp,
                                  desc=f"val {' + '.join(models)}", dist=self.dist, frame_cache=self.frame_cache)
        for name, res in results.items():
            self.report.confusion(name, res["confusion"], self.data.class_names, self.state.progress.global_step)
            out[f"val_top1_{name}"] = res["top1"]
            out[f"val_top5_{name}"] = res["top5"]
            out[f"val_mca_{name}"] = res["mean_class_acc"]
        primary = cfg.eval.headline if f"val_top1_{cfg.eval.headline}" in out else "student"
        out["val_top1"] = out[f"val_top1_{primary}"]
        out["val_model"] = primary
        return out

    # ------------------------------------------------------------------ setup
    def _plan(self, lock: bool = False) -> resume_rules.RunPlan:
        """Rank 0 decides (folder, resume or not); every rank gets the same answer or the same error.

        lock: take the run folder's lock first and decide under it (another process may have written
        the folder since the first look)."""
        answer = None
        if self.dist.is_main:
            try:
                run_dir = resume_rules.chosen_dir(self.cfg, self.resume_from, default_run_dir(self.cfg))
                self.lock = FolderLock(run_dir, "sefar train")
                if lock:
                    self.lock.acquire("choose another --out")
                else:  # a first look, before judging the folder's contents: nothing is written yet
                    self.lock.check_free("choose another --out")
                plan = resume_rules.plan_run(self.cfg, self.resume_arg, self.resume_from, run_dir)
                if plan.resuming:
                    resume_rules.check_same_run(plan.run_dir, self.cfg, explicit=self.resume_from is not None)
                answer = (plan, None)
            except SefarError as e:
                answer = (None, str(e))
        plan, error = broadcast_object(answer, self.dist)
        if error is not None:
            raise SefarError(error)
        return plan

    def setup(self) -> None:
        """Run folder, data, model, optimizer, resumed state, step and loaders."""
        cfg = self.cfg
        self.resuming = self._plan(lock=True).resuming
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.files.clean_temporaries()
            if not self.resuming:  # written first, so a start that fails below leaves a recognisable run folder
                resume_rules.clear_unfinished(self.run_dir)
                self.write_config()
        barrier(self.dist)
        self.data = open_dataset(cfg, self.run_dir if self.dist.is_main else None)
        check_data(cfg, self.data, self.report.warn, strict=self.strict, record=str(self.run_dir / "split.json"))
        torch.manual_seed(cfg.run.seed)
        model = model_from_config(cfg, self.data.num_classes, seed=cfg.run.seed,
                                  temporal_kernel=kernels.element_attention).to(self.device)
        if cfg.model.pretrained and not self.resuming:
            self.report.say(f"pretrained: {load_pretrained(model, cfg.model.pretrained).summary()}")
        if cfg.model.checkpoint_activations:
            model.set_grad_checkpointing(True)
        o = cfg.optim
        optimizer = make_optimizer(o.name, model.parameters(), lr=self.base_lr, weight_decay=o.weight_decay,
                                   momentum=o.momentum, nesterov=o.nesterov)
        # On CUDA with bf16 the teacher's forward reads a bf16 copy of its weights (train.ema).
        self.state = TrainState(model, optimizer, teacher_dtype=torch.bfloat16 if self.amp else None)
        if self.resuming:
            self.resume()
            if self.dist.is_main:  # only once the run was accepted: a refused resume leaves the folder as it was
                self.write_config()
        self.step = TrainStep(cfg, model, self.device, self.amp, self.compile, self.dist,
                              on_compile_fallback=self.report.warn)
        self.frame_cache = self.make_frame_cache()
        self.labeled, self.unlabeled = self.make_loaders()
        self.report.open_loggers(cfg.run.loggers, cfg.to_dict(),
                                 self.state.progress.global_step if self.resuming else None)
        if self.profile:
            self.profiler = StepProfiler(self.run_dir / "profile", self.dist.rank, self.device)

    def write_config(self) -> None:
        atomic_write_text(self.run_dir / "config.yaml", self.cfg.to_yaml())

    def make_frame_cache(self) -> FrameCache | None:
        """The decoded frames in memory for every loader of the run (`data.frame_cache_mb`), or None.
        Decoded once now, after everything that can refuse the run, not in the background of every step."""
        d = self.cfg.data
        cache = FrameCache.fitting(self.data.store, d.frame_size, d.frame_cache_mb, self.device)
        if cache is not None:
            with progress_bar("decoding frames into memory", len(cache.frames)) as bar:
                fill_frame_cache(cache, self.data.store, d.backend, progress=bar.advance)
        return cache

    def make_loaders(self) -> tuple[ClipLoader, ClipLoader | None]:
        """Labeled (one view) and unlabeled (weak + strong views, method.unlabeled_ratio x as many) loaders."""
        cfg, d, w = self.cfg, self.cfg.data, self.dist.world_size
        common = dict(elements=cfg.method.elements, frame_size=tuple(d.frame_size), device=self.device,
                      rank=self.dist.rank, world_size=w, backend=d.backend, frame_cache=self.frame_cache)
        b = cfg.optim.batch_size * cfg.optim.accum_steps  # a process's micro-batches, taken together
        labeled = ClipLoader(self.data.store, self.data.labeled, batch_size=b, views=1, shuffle=True,
                             drop_last=drops_last(len(self.data.labeled), b, w), seed=cfg.run.seed, **common)
        unlabeled = None
        if cfg.method.name != "supervised" and self.data.unlabeled:
            bu = b * cfg.method.unlabeled_ratio
            unlabeled = ClipLoader(self.data.store, self.data.unlabeled, batch_size=bu, views=2, shuffle=True,
                                   drop_last=drops_last(len(self.data.unlabeled), bu, w), seed=cfg.run.seed + 1, **common)
        for name, loader in (("labeled", labeled), ("unlabeled", unlabeled)):
            if loader is not None and name in self.state.loader_positions:
                loader.load_state_dict(self.state.loader_positions[name])
        return labeled, unlabeled

    def resume(self) -> None:
        """Load the run folder's newest checkpoint pair into the state."""
        if not self.files.exists():
            raise SefarError(f"rank {self.dist.rank} cannot read {self.files.last}; resuming a multi-node run "
                             "needs the run folder on a shared file system")
        barrier(self.dist)
        if self.dist.is_main:  # may rename prev.state -> last.state: the other ranks read after it
            weights, state = self.files.load_latest()
        barrier(self.dist)
        if not self.dist.is_main:
            weights, state = self.files.load_latest()
        resume_rules.check_batch_layout(state, self.cfg, self.dist.world_size, self.run_dir)
        self.state.restore(weights, state, state_path=self.files.last_state, num_classes=self.data.num_classes)
        self.report.truncate(state.get("metrics_bytes", 0))  # records written after the checkpoint
        p = self.state.progress
        self.saved_at = p.global_step
        self.report.say(f"[yellow]resuming[/] {self.run_dir} at epoch {p.epoch + 1}, step {p.step} "
                        f"(global step {p.global_step})")

    def close(self) -> None:
        self.report.close()
        for loader in (self.labeled, self.unlabeled):
            if loader is not None:
                loader.close()
        if self.lock is not None:
            self.lock.release()

    # ------------------------------------------------------------------ checkpoints and stops
    def save(self, acc: dict[str, torch.Tensor] | None, metrics: dict, *, epoch_end: int | None = None,
             best: bool = False) -> None:
        """Write last.* (and best / epoch-NNN); refuses, under --on-nan stop, once a step was skipped."""
        sums = None
        if acc is not None:
            self.check_skips(self.step.read(acc))
            sums = self.step.sums(acc)
        if self.dist.is_main:
            self.state.loader_positions = {"labeled": self.labeled.state_dict()}
            if self.unlabeled is not None:
                self.state.loader_positions["unlabeled"] = self.unlabeled.state_dict()
            p = self.state.progress
            meta = {"config": self.cfg.to_dict(), "class_names": self.data.class_names, "epoch": p.epoch,
                    "global_step": p.global_step, "metrics": metrics, "sefar_version": __version__}
            state = self.state.capture(sums=sums, layout={"batch_size": self.cfg.optim.batch_size,
                                                          "shards": self.shards},
                                       metrics_bytes=self.report.metrics_bytes())
            try:
                self.files.save(*self.state.weights(), meta, state, epoch_end=epoch_end, best=best,
                                keep=self.cfg.run.keep)
            except SefarError as e:  # the file system refused: the previous pair is whole (train.checkpoints)
                raise SefarError(f"{e}; {self.how_to_continue()}") from None
        barrier(self.dist)
        self.saved_at = self.state.progress.global_step

    def check_skips(self, stats: dict) -> None:
        """Skipped optimizer steps (non-finite loss or gradient): a warning, or the end under --on-nan stop.
        An update that left non-finite weights ends the run under either policy."""
        p = self.state.progress
        if stats.get("diverged_steps"):
            last = (f"the last good checkpoint is {self.files.last} (step {self.saved_at})"
                    if self.saved_at is not None else "no checkpoint was written before it")
            raise SefarError(f"an optimizer step in epoch {p.epoch + 1} left non-finite weights (the update "
                             f"overflowed: lower optim.lr); {last}")
        skipped = stats.get("skipped_steps", 0)
        if not skipped:
            return
        first = p.global_step - p.step + stats["first_skipped"]
        if self.on_nan == "stop":
            last = (f"the last good checkpoint is {self.files.last} (step {self.saved_at})"
                    if self.saved_at is not None else "no checkpoint was written before it")
            raise SefarError(f"non-finite loss or gradient at step {first} (epoch {p.epoch + 1}); stopped by "
                             f"--on-nan stop without applying it; {last}")
        if skipped > self.skips_reported:
            self.report.warn(f"skipped {skipped} optimizer step(s) with a non-finite loss or gradient this epoch "
                             f"(first: step {first}); the weights were left unchanged")
            self.skips_reported = skipped

    def stop_requested(self) -> bool:
        return any_rank(self.stop.requested, self.dist)

    def how_to_continue(self) -> str:
        """After a failed checkpoint write: where the run can be picked up again."""
        if not self.files.exists():
            return "no checkpoint was written yet: run the same command again"
        return f"the last complete checkpoint is kept: continue with '{self.resume_command()}'"

    def resume_command(self) -> str:
        return resume_rules.resume_command(self.run_dir, self.dist.world_size,
                                           int(os.environ.get("LOCAL_WORLD_SIZE", self.dist.world_size)))

    def interrupted(self) -> None:
        p = self.state.progress
        signum = self.stop.signum or signal.SIGINT  # a rank that saw no signal stops with its peers
        cmd = self.resume_command()
        where = f"epoch {p.epoch + 1}, step {p.step}/{len(self.labeled)}" if p.step else f"the end of epoch {p.epoch}"
        raise Interrupted(signum, f"interrupted at {where} (global step {p.global_step}); checkpoint written to "
                                  f"{self.files.last}; resume with: {cmd}")

    # ------------------------------------------------------------------ words
    @property
    def title(self) -> str:
        """What the run is, in words: e.g. "SeFAR on synth", "supervised on store:/data/gym99"."""
        return f"{METHOD_TITLES[self.cfg.method.name]} on {self.cfg.data.name}"

    def headline(self) -> str:
        cfg, d = self.cfg, self.data
        target = cfg.optim.global_batch
        nearest = f", the nearest to optim.global_batch {target}" if target and target != self.global_batch else ""
        return (f"[bold]{self.title}[/]: {len(d.labeled)} labeled, "
                f"{len(d.unlabeled)} unlabeled, {len(d.val)} val clips, {d.num_classes} classes; {cfg.model.arch}, "
                f"elements {cfg.method.elements}, {cfg.optim.epochs} epochs x {len(self.labeled)} steps of "
                f"{self.global_batch} labeled clips ({self.dist.world_size} process(es) x {cfg.optim.accum_steps} "
                f"accumulation x {cfg.optim.batch_size}{nearest}), lr {self.base_lr:.3g}, val headline "
                f"{cfg.eval.headline} ({cfg.eval.protocol}), device {self.device}{' bf16' if self.amp else ''} "
                f"-> {self.run_dir}")

    def finish(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.state.progress
        best = str(self.run_dir / "best.safetensors")
        result = {"run": str(self.run_dir), "method": cfg.method.name, "data": cfg.data.name, "arch": cfg.model.arch,
                  "epochs": cfg.optim.epochs, "best_val_top1": p.best, "best_epoch": p.best_epoch,
                  "best_checkpoint": best, "last": p.history[-1] if p.history else {}}
        best_model = next((h.get("val_model") for h in p.history if h["epoch"] == p.best_epoch), None)
        rows = [("best val top-1", f"{100 * p.best:.2f}% (epoch {p.best_epoch}, {best_model})"),
                ("best checkpoint", best)]
        if self.profiler is not None and self.profiler.written:
            rows.append(("profiler trace", str(self.profiler.written)))
        self.report.finish(result, p.history, rows, title=self.title)
        return result


def _poison_gradient_for_tests(model, step: int) -> None:
    """SEFAR_TEST_NAN_AT_STEP=N[,M...]: make the gradients of optimizer step N (1-based) non-finite."""
    spec = os.environ.get("SEFAR_TEST_NAN_AT_STEP")
    if spec and step in {int(s) for s in spec.split(",")}:
        p = next(q for q in model.parameters() if q.grad is not None)
        p.grad.view(-1)[0] = float("nan")


def train(cfg: Config, *, resume=None, resume_from=None, on_nan="skip", profile=False,
          strict=False) -> dict[str, Any]:
    return Trainer(cfg, resume=resume, resume_from=resume_from, on_nan=on_nan, profile=profile, strict=strict).run()
