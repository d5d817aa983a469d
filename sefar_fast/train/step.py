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
`read()` fetches them every `log_every` steps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sefar_fast.train.distributed import DistInfo

STAT_KEYS = ("loss", "loss_sup", "loss_un", "loss_mix", "eta_sum", "pseudo_correct", "pseudo_n", "sup_n",
             "steps", "ssl_steps", "skipped")


class TrainStep:
    def __init__(self, cfg, model, device: torch.device, amp: bool, compile: bool, dist: DistInfo):
        self.cfg, self.device, self.amp, self.dist = cfg, device, amp, dist
        self.model = model  # the plain module (EMA, checkpoints)
        self.net = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.forward = torch.compile(self.net) if compile else self.net
        d = cfg.data
        self.mean, self.std = d.mean, d.std
        self.frame_hw = tuple(d.frame_size)
        self.ref_short = float(min(d.frame_size))
        self.dtype = torch.bfloat16 if amp else torch.float32
        self.mc_gen = torch.Generator(device=device)
        self.patch = model.backbone.patch_size

    # ------------------------------------------------------------------ stats
    def new_accumulator(self) -> dict[str, torch.Tensor]:
        return {k: torch.zeros((), device=self.device, dtype=torch.float64) for k in STAT_KEYS}

    def read(self, acc: dict[str, torch.Tensor], reduce=None) -> dict[str, float]:
        """Host copy of the running means (one sync)."""
        vec = torch.stack([acc[k] for k in STAT_KEYS])
        if reduce is not None:
            vec = reduce(vec.clone())
        v = dict(zip(STAT_KEYS, vec.tolist()))
        steps = max(v["steps"], 1.0)
        out = {"loss": v["loss"] / steps, "loss_sup": v["loss_sup"] / steps}
        if v["ssl_steps"] > 0:
            out["loss_un"] = v["loss_un"] / v["ssl_steps"]
            out["loss_mix"] = v["loss_mix"] / v["ssl_steps"]
            out["eta_mean"] = v["eta_sum"] / max(v["pseudo_n"], 1.0)
            out["pseudo_acc"] = v["pseudo_correct"] / max(v["pseudo_n"], 1.0)
        if v["skipped"]:
            out["skipped_steps"] = int(v["skipped"])
        return out

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------------ views
    def _views(self, frames: torch.Tensor, kind: str, rng: np.random.Generator, *, flip=None):
        """(view, params); strong views come back without channel dropout (params carry the scales)."""
        from dataclasses import replace

        from sefar_fast.train.views import build_views, draw_view_params

        m, d = self.cfg.method, self.cfg.data
        params = draw_view_params(frames.shape[0], m.elements, self.frame_hw, d.crop, kind, rng,
                                  scale_range=tuple(d.scale_range), ref_short=self.ref_short, flip=flip,
                                  perturb=m.perturb, channel_drop=m.channel_drop)
        clean = replace(params, channel_scale=torch.ones_like(params.channel_scale))
        return build_views(frames, clean, self.mean, self.std, self.dtype), params

    # ------------------------------------------------------------------ teacher
    @torch.no_grad()
    def teacher_probs(self, teacher, x_weak: torch.Tensor) -> torch.Tensor:
        """[U, Bu, C] softmaxes of the teacher with U head-dropout samples."""
        m = self.cfg.method
        net = teacher.module
        b = x_weak.shape[0]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if m.teacher_mc == "head":
                feat = net.features(x_weak).float()
                keep = net.draw_keep_masks((m.mc_samples, b), generator=self.mc_gen, device=self.device)
                logits = net.head_logits(feat[None], keep)
            else:  # reference cost: U full passes, each with its own head-dropout mask
                keep = net.draw_keep_masks((m.mc_samples, b), generator=self.mc_gen, device=self.device)
                logits = torch.stack([net.head_logits(net.features(x_weak).float(), keep[u])
                                      for u in range(m.mc_samples)])
        return torch.softmax(logits.float(), dim=-1)

    # ------------------------------------------------------------------ the step
    def micro_step(self, lab: dict, unl: dict | None, teacher, xi: float, rng: np.random.Generator,
                   acc: dict[str, torch.Tensor], scale: float = 1.0) -> None:
        from sefar_fast.train import losses

        m = self.cfg.method
        x_l, _ = self._views(lab["frames"][:, 0], "weak", rng, flip=True)
        y_l = lab["labels"]
        b = x_l.shape[0]
        ssl = unl is not None and teacher is not None
        if not ssl:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.forward(x_l)
            loss_sup = F.cross_entropy(logits.float(), y_l)
            (loss_sup * scale).backward()
            acc["loss"] += loss_sup.detach()
            acc["loss_sup"] += loss_sup.detach()
            acc["steps"] += 1
            acc["sup_n"] += b
            return

        from sefar_fast.train.mixing import draw_mix, mix_targets
        from sefar_fast.train.regulation import regulate
        from sefar_fast.train.views import mix_views

        frames_u = unl["frames"]
        x_w, _ = self._views(frames_u[:, 0], "weak", rng)
        self.mc_gen.manual_seed(int(rng.integers(2**62)))
        x_clean, p_s = self._views(frames_u[:, 1], "strong", rng)
        x_s = x_clean * p_s.channel_scale.to(self.device, self.dtype)[:, None, :, None, None]
        bu = x_w.shape[0]
        probs = self.teacher_probs(teacher, x_w)
        reg = regulate(probs, mode=m.regulation, threshold=m.threshold)
        inputs = [x_l, x_s]
        if m.mix:
            # A mixed clip shows its own dropped strong view where the tube mask is set and the
            # partner's strong view before channel dropout elsewhere (one partner for all elements).
            grid = (self.cfg.data.crop // self.patch,) * 2
            plan = draw_mix(bu, m.elements, grid, rng, alpha=m.mix_alpha)
            partner = plan.partner.to(self.device)
            inputs.append(mix_views(x_s, x_clean, plan.masks, partner, m.elements, self.patch))
            y_mix, eta_mix = mix_targets(reg.mean, reg.eta, plan.lam, partner)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.forward(torch.cat(inputs)).float()
        logit_l, logit_s = logits[:b], logits[b:b + bu]
        loss_sup = F.cross_entropy(logit_l, y_l)
        loss_un = losses.unlabeled_loss(logit_s, reg.pseudo_label, reg.eta)
        loss_mix = (losses.mix_loss(logits[b + bu:], y_mix, eta_mix, kind=m.mix_loss) if m.mix
                    else torch.zeros((), device=self.device))
        loss = loss_sup + xi * (m.w_un * loss_un + m.w_mix * loss_mix)
        (loss * scale).backward()
        acc["loss"] += loss.detach()
        acc["loss_sup"] += loss_sup.detach()
        acc["loss_un"] += loss_un.detach()
        acc["loss_mix"] += loss_mix.detach()
        acc["eta_sum"] += reg.eta.sum().detach()
        acc["pseudo_correct"] += (reg.pseudo_label == unl["labels"]).sum()
        acc["pseudo_n"] += bu
        acc["sup_n"] += b
        acc["steps"] += 1
        acc["ssl_steps"] += 1

    def optimizer_step(self, optimizer, teacher, acc: dict[str, torch.Tensor], on_nan: str) -> None:
        """SGD step, then the EMA update with the per-labeled-clip time constant."""
        from sefar_fast.train.ema import decay_for

        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if teacher is not None:
            o = self.cfg.optim
            clips = o.batch_size * o.accum_steps * self.dist.world_size
            teacher.update(self.model, decay_for(clips, self.cfg.method.ema_decay))


def make_step(cfg, model, device, amp, compile, dist) -> TrainStep:
    return TrainStep(cfg, model, device, amp, compile, dist)
