"""One training micro-step: views, teacher, regulation, mixing, losses, backward.

Supervised step: weak labeled view -> student -> cross-entropy.

SeFAR step (after the warm-up), for B labeled and Bu = 3B unlabeled clips:

1. views (one pass each, on the device): labeled weak (jitter, crop, flip),
   unlabeled weak (no flip), unlabeled strong (re-drawn frames, own crop and flip,
   temporal perturbation, channel dropout), tube-mixed strong views;
2. teacher: backbone + fusion once on the weak views, U head-dropout masks on the
   256-d feature (`teacher_mc=head`; `full` reruns the network U times) ->
   softmaxes [U, Bu, C] -> adaptive regulation (pseudo-labels, eta);
3. student: ONE forward over [labeled; strong; mixed];
4. L = L_sup + xi * (w_un * L_un + w_mix * L_mix), backward (scaled for accumulation).

Nothing here reads a value back to the host: running sums stay on the device and
`read()` fetches them every `log_every` steps. `optimizer_step` guards the update
(`train.guard`): a non-finite loss or gradient leaves student, optimizer state and
teacher exactly as they were, decided on the device, and counts a skipped step.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from sefar_fast import kernels
from sefar_fast.distributed import DistInfo, all_reduce_sum
from sefar_fast.ops import losses
from sefar_fast.ops.mixing import draw_mix, mix_targets
from sefar_fast.ops.regulation import regulate
from sefar_fast.ops.views import draw_view_params
from sefar_fast.train.compiling import CompiledForward
from sefar_fast.train.ema import decay_for
from sefar_fast.train.guard import all_finite, guarded_update

# Per-rank sums (added over ranks when an epoch's stats are reduced).
STAT_KEYS = ("loss", "loss_sup", "loss_un", "loss_mix", "eta_sum", "pseudo_correct", "pseudo_n", "sup_n",
             "steps", "ssl_steps", "bad_loss", "bad_ssl")
# The same on every rank (decided on all-reduced gradients): skipped optimizer steps, optimizer steps,
# and the first skipped one (1-based index into this accumulator's optimizer steps; 0 = none).
GLOBAL_KEYS = ("skipped", "opt_steps", "first_skipped")


class TrainStep:
    def __init__(self, cfg, model, device: torch.device, amp: bool, compile: bool, dist: DistInfo,
                 on_compile_fallback=None):
        self.cfg, self.device, self.amp, self.dist = cfg, device, amp, dist
        self.model = model  # the plain module (EMA, checkpoints)
        self.net = model
        if dist.enabled:
            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        # on_compile_fallback(message): run eagerly when the compiler fails (None: raise instead)
        self.forward = CompiledForward(self.net, on_compile_fallback) if compile else self.net
        d = cfg.data
        self.mean, self.std = d.mean, d.std
        self.frame_hw = tuple(d.frame_size)
        self.ref_short = float(min(d.frame_size))
        self.dtype = torch.bfloat16 if amp else torch.float32
        self.patch = model.backbone.patch_size

    # ------------------------------------------------------------------ stats
    def new_accumulator(self, sums: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        """Running sums of an epoch on the device: zeros, or `sums` (a checkpoint's, see `sums`)."""
        keys = STAT_KEYS + GLOBAL_KEYS + ("pending_bad",)  # pending_bad: non-finite losses since the last update
        sums = sums or {}
        return {k: torch.tensor(float(sums.get(k, 0.0)), device=self.device, dtype=torch.float64) for k in keys}

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
        return out

    def no_sync(self, skip_sync: bool):
        """Context for one accumulation micro-step: DDP all-reduces gradients only on the last one."""
        return self.net.no_sync() if skip_sync and self.dist.enabled else nullcontext()

    # ------------------------------------------------------------------ views
    def _weak(self, frames: torch.Tensor, params, out: torch.Tensor | None = None) -> torch.Tensor:
        """A weak view (no channel dropout), written into `out` when given."""
        return kernels.build_views(frames, params, self.mean, self.std, self.dtype, out=out)

    def _params(self, batch: int, kind: str, rng: np.random.Generator, *, flip=None):
        m, d = self.cfg.method, self.cfg.data
        return draw_view_params(batch, m.elements, self.frame_hw, d.crop, kind, rng,
                                scale_range=tuple(d.scale_range), ref_short=self.ref_short, flip=flip,
                                perturb=m.perturb, channel_drop=m.channel_drop)

    # ------------------------------------------------------------------ teacher
    @torch.no_grad()
    def teacher_regulation(self, teacher, x_weak: torch.Tensor, seed: int):
        """Regulation from U head-dropout samples of the teacher (masks: Philox stream of `seed`).

        teacher_mc=head: backbone and fusion once, then the fused regulation kernel (Triton on
        CUDA, its torch reference elsewhere) draws the U masks and never stores U x B x C.
        teacher_mc=full: the reference's cost, U full forwards with the same masks.
        """
        m = self.cfg.method
        net = teacher.module
        cls = net.head.classifier
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if m.teacher_mc == "head":
                feat = net.features(x_weak).float()
                return kernels.regulate_head(feat, cls.weight.float(), cls.bias.float(), seed, m.mc_samples,
                                             p=net.head_dropout, mode=m.regulation, threshold=m.threshold)
            keep = kernels.head_keep_masks(seed, m.mc_samples, x_weak.shape[0], cls.in_features,
                                           p=net.head_dropout, device=self.device)
            logits = torch.stack([net.head_logits(net.features(x_weak).float(), keep[u])
                                  for u in range(m.mc_samples)])
        return regulate(torch.softmax(logits.float(), dim=-1), mode=m.regulation, threshold=m.threshold)

    # ------------------------------------------------------------------ the step
    def micro_step(self, lab: dict, unl: dict | None, teacher, xi: float, rng: np.random.Generator,
                   acc: dict[str, torch.Tensor], scale: float = 1.0) -> None:
        m = self.cfg.method
        frames_l, y_l = lab["frames"][:, 0], lab["labels"]
        b = frames_l.shape[0]
        p_l = self._params(b, "weak", rng, flip=True)
        ssl = unl is not None and teacher is not None
        if not ssl:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.forward(self._weak(frames_l, p_l))
            loss_sup = F.cross_entropy(logits.float(), y_l)
            (loss_sup * scale).backward()
            bad = self._count_bad(loss_sup, acc)
            acc["loss"] += _finite_or_zero(loss_sup, bad)
            acc["loss_sup"] += _finite_or_zero(loss_sup, bad)
            acc["steps"] += 1
            acc["sup_n"] += b
            return

        frames_u = unl["frames"]
        bu = frames_u.shape[0]
        # Every random draw first (their order fixes the run), then the views straight into one
        # student input [labeled; strong; mixed]: no concatenation copy before the forward.
        p_w = self._params(bu, "weak", rng)
        mc_seed = int(rng.integers(2**62))
        p_s = self._params(bu, "strong", rng)
        if m.mix:
            grid = (self.cfg.data.crop // self.patch,) * 2
            plan = draw_mix(bu, m.elements, grid, rng, alpha=m.mix_alpha)
        crop = self.cfg.data.crop
        x = torch.empty((b + bu * (2 if m.mix else 1), sum(m.elements), 3, crop, crop), dtype=self.dtype,
                        device=self.device)
        self._weak(frames_l, p_l, out=x[:b])
        if m.mix:
            # A mixed clip shows its own dropped strong view where the tube mask is set and the
            # partner's strong view before channel dropout elsewhere (one partner for all elements);
            # both views come out of one pass over the frames.
            kernels.build_strong_mixed(frames_u[:, 1], p_s, self.mean, self.std, plan.masks, plan.partner,
                                       m.elements, self.patch, self.dtype, out_strong=x[b:b + bu],
                                       out_mixed=x[b + bu:])
        else:
            kernels.build_views(frames_u[:, 1], p_s, self.mean, self.std, self.dtype, out=x[b:])
        reg = self.teacher_regulation(teacher, self._weak(frames_u[:, 0], p_w), mc_seed)
        if m.mix:
            y_mix, eta_mix = mix_targets(reg.mean, reg.eta, plan.lam, plan.partner.to(self.device))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.forward(x).float()
        logit_l, logit_s = logits[:b], logits[b:b + bu]
        loss_sup = losses.supervised_loss(logit_l, y_l)
        loss_un = losses.unlabeled_loss(logit_s, reg.pseudo_label, reg.eta)
        loss_mix = (losses.mix_loss(logits[b + bu:], y_mix, eta_mix, kind=m.mix_loss) if m.mix
                    else torch.zeros((), device=self.device))
        loss = losses.combine(loss_sup, loss_un, loss_mix, xi, w_un=m.w_un, w_mix=m.w_mix).total
        (loss * scale).backward()
        bad = self._count_bad(loss, acc)
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

    @staticmethod
    def _count_bad(loss: torch.Tensor, acc: dict[str, torch.Tensor]) -> torch.Tensor:
        bad = ~torch.isfinite(loss.detach())
        acc["bad_loss"] += bad
        acc["pending_bad"] += bad
        return bad

    def optimizer_step(self, optimizer, teacher, acc: dict[str, torch.Tensor]) -> None:
        """Optimizer step, then the EMA update with the per-labeled-clip time constant, both skipped
        (exactly, on the device) when a loss or gradient since the last step was non-finite.

        Both `--on-nan` policies skip here; the trainer stops on `stop` when it reads the count back."""
        params = list(self.model.parameters())
        bad = acc["pending_bad"] + (~all_finite([p.grad for p in params], self.device)).double()
        if self.dist.enabled:  # gradients agree after the all-reduce; a loss may be non-finite on one rank only
            bad = all_reduce_sum(bad.clone(), self.dist)
        ok = bad == 0
        teacher_tensors = list(teacher.module.state_dict().values()) if teacher is not None else []
        o = self.cfg.optim
        decay = decay_for(o.batch_size * o.accum_steps * self.dist.world_size, self.cfg.method.ema_decay)

        def update():
            optimizer.step()
            if teacher is not None:
                teacher.update(self.model, decay)

        ok = guarded_update(ok, optimizer, params, teacher_tensors, update)
        optimizer.zero_grad(set_to_none=True)
        skipped = (~ok).double()
        acc["opt_steps"] += 1
        acc["first_skipped"] = torch.where((acc["first_skipped"] == 0) & ~ok, acc["opt_steps"], acc["first_skipped"])
        acc["skipped"] += skipped
        acc["pending_bad"].zero_()


def _finite_or_zero(value: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """The value for the running sums; 0 for a non-finite one (it is counted in bad_loss instead)."""
    return torch.where(bad, torch.zeros_like(value), value.detach())
