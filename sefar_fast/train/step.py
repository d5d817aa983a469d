"""One training micro-step: views, teacher, regulation, mixing, losses, backward; and the optimizer step.

Supervised step: weak labeled view -> student -> cross-entropy.

SeFAR step (after the warm-up), for B labeled and Bu = 3B unlabeled clips, in four phases
(each a `torch.profiler.record_function` range, which `sefar bench overhead` counts):

1. views: every random draw of the step on the host (`train.draws`, in the reference's order),
   uploaded in one asynchronous copy; then on the device labeled weak (jitter, crop, flip),
   unlabeled weak (no flip), unlabeled strong (re-drawn frames, own crop and flip, temporal
   perturbation, channel dropout) and tube-mixed strong views, written straight into the
   student's input [labeled; strong; mixed];
2. teacher: backbone + fusion once on the weak views (compiled with the student; on CUDA from
   a bf16 copy of its weights, `train.ema`), U head-dropout masks on the 256-d feature
   (`teacher_mc=head`; `full` reruns the network U times) -> adaptive regulation;
3. student: ONE forward over [labeled; strong; mixed],
   L = L_sup + xi * (w_un * L_un + w_mix * L_mix), backward (scaled for accumulation);
4. update (`optimizer_step`): the fused optimizer step and the EMA, skipped on the device when a
   loss or gradient was non-finite (`train.update`).

Nothing here reads a value back to the host: running sums stay on the device and `read()`
fetches them every `log_every` steps (tests/test_host_syncs.py counts the reads of a step).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function

from sefar_fast import kernels
from sefar_fast.distributed import DistInfo
from sefar_fast.ops import losses
from sefar_fast.ops.mixing import mix_targets
from sefar_fast.ops.regulation import regulate
from sefar_fast.train.compiling import CompiledForward
from sefar_fast.train.draws import StepDraws, draw_step
from sefar_fast.train.ema import decay_for
from sefar_fast.train.update import Update

# Per-rank sums (added over ranks when an epoch's stats are reduced).
STAT_KEYS = ("loss", "loss_sup", "loss_un", "loss_mix", "eta_sum", "pseudo_correct", "pseudo_n", "sup_n",
             "steps", "ssl_steps", "bad_loss", "bad_ssl")
# The same on every rank (decided on all-reduced gradients): skipped optimizer steps, optimizer steps,
# the first skipped one (1-based index into this accumulator's optimizer steps; 0 = none), and
# updates that left non-finite weights.
GLOBAL_KEYS = ("skipped", "opt_steps", "first_skipped", "diverged")


class TrainStep:
    def __init__(self, cfg, model, device: torch.device, amp: bool, compile: bool, dist: DistInfo,
                 on_compile_fallback=None):
        self.cfg, self.device, self.amp, self.dist = cfg, device, amp, dist
        self.model = model  # the plain module (EMA, checkpoints)
        self.net = model
        if dist.enabled:
            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.compile = compile
        self.on_compile_fallback = on_compile_fallback  # (message): run eagerly when the compiler fails
        self.forward = CompiledForward(self.net, on_compile_fallback) if compile else self.net
        d, o = cfg.data, cfg.optim
        self.mean, self.std = d.mean, d.std
        self.dtype = torch.bfloat16 if amp else torch.float32
        self.patch = model.backbone.patch_size
        self.ema_decay = decay_for(o.batch_size * o.accum_steps * dist.world_size, cfg.method.ema_decay)
        self.found = torch.zeros((), dtype=torch.float32, device=device)  # a non-finite value since the last step
        self._update: Update | None = None
        self._teacher_of = None  # the EmaTeacher whose features `_teacher_features` computes
        self._teacher_features = None

    # ------------------------------------------------------------------ stats
    def new_accumulator(self, sums: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        """Running sums of an epoch on the device: zeros, or `sums` (a checkpoint's, see `sums`)."""
        sums = sums or {}
        return {k: torch.tensor(float(sums.get(k, 0.0)), device=self.device, dtype=torch.float64)
                for k in STAT_KEYS + GLOBAL_KEYS}

    @staticmethod
    def sums(acc: dict[str, torch.Tensor]) -> dict[str, float]:
        """Host copy of the running sums, for a checkpoint taken mid-epoch (one sync)."""
        return dict(zip(acc, torch.stack(list(acc.values())).tolist()))

    def read(self, acc: dict[str, torch.Tensor], reduce=None) -> dict[str, float]:
        """Host copy of the running means (one sync). Means leave out micro-steps with a non-finite loss."""
        vec = torch.stack([acc[k] for k in STAT_KEYS])
        if reduce is not None:
            vec = reduce(vec.clone())
        vec = torch.cat([vec, torch.stack([acc[k] for k in GLOBAL_KEYS])])
        v = dict(zip(STAT_KEYS + GLOBAL_KEYS, vec.tolist()))
        steps = max(v["steps"] - v["bad_loss"], 1.0)
        ssl_steps = max(v["ssl_steps"] - v["bad_ssl"], 1.0)
        out = {"loss": v["loss"] / steps, "loss_sup": v["loss_sup"] / steps}
        if v["ssl_steps"] > 0:
            out["loss_un"] = v["loss_un"] / ssl_steps
            out["loss_mix"] = v["loss_mix"] / ssl_steps
            out["eta_mean"] = v["eta_sum"] / max(v["pseudo_n"], 1.0)
            out["pseudo_acc"] = v["pseudo_correct"] / max(v["pseudo_n"], 1.0)
        if v["skipped"]:
            out["skipped_steps"] = int(v["skipped"])
            out["first_skipped"] = int(v["first_skipped"])  # index into this accumulator's optimizer steps
        if v["diverged"]:
            out["diverged_steps"] = int(v["diverged"])
        return out

    def no_sync(self, skip_sync: bool):
        """Context for one accumulation micro-step: DDP all-reduces gradients only on the last one."""
        return self.net.no_sync() if skip_sync and self.dist.enabled else nullcontext()

    # ------------------------------------------------------------------ teacher
    def teacher_features(self, teacher):
        """The teacher's `features` (fused 256-d feature of clips), compiled when the student is."""
        if self._teacher_of is not teacher:
            features = teacher.forward_module.features
            self._teacher_features = CompiledForward(features, self.on_compile_fallback) if self.compile else features
            self._teacher_of = teacher
        return self._teacher_features

    @torch.no_grad()
    def teacher_regulation(self, teacher, x_weak: torch.Tensor, seed: int):
        """Regulation from U head-dropout samples of the teacher (masks: Philox stream of `seed`).

        teacher_mc=head: backbone and fusion once, then the fused regulation kernel (Triton on
        CUDA, its torch reference elsewhere) draws the U masks and never stores U x B x C; the
        classifier is applied in float32 with the teacher's float32 weights.
        teacher_mc=full: the reference's cost, U full forwards with the same masks.
        """
        m = self.cfg.method
        net = teacher.module
        cls = net.head.classifier
        features = self.teacher_features(teacher)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if m.teacher_mc == "head":
                feat = features(x_weak).float()
                return kernels.regulate_head(feat, cls.weight, cls.bias, seed, m.mc_samples,
                                             p=net.head_dropout, mode=m.regulation, threshold=m.threshold)
            keep = kernels.head_keep_masks(seed, m.mc_samples, x_weak.shape[0], cls.in_features,
                                           p=net.head_dropout, device=self.device)
            logits = torch.stack([teacher.forward_module.head_logits(features(x_weak).float(), keep[u])
                                  for u in range(m.mc_samples)])
        return regulate(torch.softmax(logits.float(), dim=-1), mode=m.regulation, threshold=m.threshold)

    # ------------------------------------------------------------------ the step
    def micro_step(self, lab: dict, unl: dict | None, teacher, xi: float, rng: np.random.Generator,
                   acc: dict[str, torch.Tensor], scale: float = 1.0) -> None:
        ssl = unl is not None and teacher is not None
        with record_function("sefar.views"):
            draws = draw_step(self.cfg, lab["frames"].shape[0], unl["frames"].shape[0] if ssl else 0,
                              self.patch, rng).to(self.device)
            x, x_weak = self.views(lab, unl if ssl else None, draws)
        reg = None
        if ssl:
            with record_function("sefar.teacher"):
                reg = self.teacher_regulation(teacher, x_weak, draws.mc_seed)
        with record_function("sefar.student"):
            self.student(x, lab["labels"], unl, reg, draws, xi, acc, scale)

    def views(self, lab: dict, unl: dict | None, draws: StepDraws) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(student input [labeled; strong; mixed], the unlabeled weak views for the teacher or None)."""
        m, crop = self.cfg.method, self.cfg.data.crop
        frames_l = lab["frames"][:, 0]
        b = frames_l.shape[0]
        bu = unl["frames"].shape[0] if unl is not None else 0
        rows = b + bu * (2 if m.mix else 1)
        x = torch.empty((rows, sum(m.elements), 3, crop, crop), dtype=self.dtype, device=self.device)
        kernels.build_views(frames_l, draws.labeled, self.mean, self.std, self.dtype, out=x[:b])
        if unl is None:
            return x, None
        frames_u = unl["frames"]
        if m.mix:
            # A mixed clip shows its own dropped strong view where the tube mask is set and the
            # partner's strong view before channel dropout elsewhere (one partner for all elements);
            # both views come out of one pass over the frames.
            kernels.build_strong_mixed(frames_u[:, 1], draws.strong, self.mean, self.std, draws.mix.masks,
                                       draws.mix.partner, m.elements, self.patch, self.dtype,
                                       out_strong=x[b:b + bu], out_mixed=x[b + bu:])
        else:
            kernels.build_views(frames_u[:, 1], draws.strong, self.mean, self.std, self.dtype, out=x[b:])
        weak = kernels.build_views(frames_u[:, 0], draws.weak, self.mean, self.std, self.dtype)
        return x, weak

    def student(self, x: torch.Tensor, labels: torch.Tensor, unl: dict | None, reg, draws: StepDraws, xi: float,
                acc: dict[str, torch.Tensor], scale: float) -> None:
        """The student's forward over every row, the losses, backward and the running sums."""
        m = self.cfg.method
        b = labels.shape[0]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.forward(x).float()
        loss_sup = losses.supervised_loss(logits[:b], labels)
        if reg is None:
            (loss_sup * scale).backward()
            bad = self._flag_bad(loss_sup, acc)
            acc["loss"] += _finite_or_zero(loss_sup, bad)
            acc["loss_sup"] += _finite_or_zero(loss_sup, bad)
            acc["steps"] += 1
            acc["sup_n"] += b
            return
        bu = reg.pseudo_label.shape[0]
        loss_un = losses.unlabeled_loss(logits[b:b + bu], reg.pseudo_label, reg.eta)
        if m.mix:
            y_mix, eta_mix = mix_targets(reg.mean, reg.eta, draws.mix.lam, draws.mix.partner)
            loss_mix = losses.mix_loss(logits[b + bu:], y_mix, eta_mix, kind=m.mix_loss)
        else:
            loss_mix = torch.zeros((), device=self.device)
        loss = losses.combine(loss_sup, loss_un, loss_mix, xi, w_un=m.w_un, w_mix=m.w_mix).total
        (loss * scale).backward()
        bad = self._flag_bad(loss, acc)
        acc["bad_ssl"] += bad
        acc["loss"] += _finite_or_zero(loss, bad)
        acc["loss_sup"] += _finite_or_zero(loss_sup, bad)
        acc["loss_un"] += _finite_or_zero(loss_un, bad)
        acc["loss_mix"] += _finite_or_zero(loss_mix, bad)
        acc["eta_sum"] += _finite_or_zero(reg.eta.sum(), bad)
        acc["pseudo_correct"] += (reg.pseudo_label == unl["labels"]).sum()
        acc["pseudo_n"] += bu
        acc["sup_n"] += b
        acc["steps"] += 1
        acc["ssl_steps"] += 1

    def _flag_bad(self, loss: torch.Tensor, acc: dict[str, torch.Tensor]) -> torch.Tensor:
        bad = ~torch.isfinite(loss.detach())
        acc["bad_loss"] += bad
        self.found.masked_fill_(bad, 1.0)  # the coming optimizer step is skipped
        return bad

    def optimizer_step(self, optimizer, teacher, acc: dict[str, torch.Tensor]) -> None:
        """Optimizer step, then the EMA update with the per-labeled-clip time constant, both skipped
        (exactly, on the device) when a loss or gradient since the last step was non-finite.
        `optimizer` must be fused (`train.update.make_optimizer`).

        Both `--on-nan` policies skip here; the trainer stops on `stop` when it reads the count back."""
        if self._update is None or self._update.optimizer is not optimizer:
            self._update = Update(self.model, optimizer, self.found, self.dist, self.ema_decay)
        with record_function("sefar.update"):
            self._update.step(teacher, acc)


def _finite_or_zero(value: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """The value for the running sums; 0 for a non-finite one (it is counted in bad_loss instead)."""
    return torch.where(bad, torch.zeros_like(value), value.detach())
