"""One SeFAR iteration run the way the authors' released code runs it, for `sefar bench iteration`.

Same batch, same views, same regulation, mixing and losses as the trainer's
`train.step.TrainStep`, and the same random draws in the same order, so both
paths compute the same numbers; only the way of computing differs, as in the
released code (reference-code-facts §1.4 and §10):

- float32 everywhere: no autocast;
- the hand-written attention softmax(q k^T / sqrt(d)) v (`attn="manual"`), which
  materialises every attention matrix;
- THREE student forwards with grad: labeled weak, unlabeled strong, mixed;
- U = 10 FULL teacher forwards (`teacher_mc=full`), each with its own head-dropout
  mask; the masks are those `TrainStep` samples on the shared 256-d feature
  (`kernels.head_keep_masks`, Philox, seeded at the same point of `rng`);
- a host sync per iteration for the NaN check, one backward;
- the EMA as a Python loop over the state-dict entries (the trainer uses fused
  foreach ops), with the trainer's decay per labeled clip.

Draw order on `rng` (must stay the trainer's): labeled weak view, unlabeled weak
view, the teacher-mask seed, strong view, mixing plan.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from sefar_fast import kernels
from sefar_fast.errors import SefarError
from sefar_fast.ops import losses
from sefar_fast.ops.mixing import draw_mix, mix_targets
from sefar_fast.ops.regulation import regulate
from sefar_fast.ops.views import build_views, draw_view_params, mix_views
from sefar_fast.train.ema import decay_for


class ReferenceStep:
    """`micro_step` + `optimizer_step` of a SeFAR iteration in the reference code's style."""

    def __init__(self, cfg, model, device: torch.device):
        self.cfg, self.model, self.device = cfg, model, torch.device(device)
        model.set_attention("manual")
        d = cfg.data
        self.frame_hw = tuple(d.frame_size)
        self.ref_short = float(min(d.frame_size))
        self.patch = model.backbone.patch_size

    def _views(self, frames: torch.Tensor, kind: str, rng: np.random.Generator, *, flip=None):
        """(float32 view without channel dropout, its parameters)."""
        m, d = self.cfg.method, self.cfg.data
        params = draw_view_params(frames.shape[0], m.elements, self.frame_hw, d.crop, kind, rng,
                                  scale_range=tuple(d.scale_range), ref_short=self.ref_short, flip=flip,
                                  perturb=m.perturb, channel_drop=m.channel_drop)
        clean = replace(params, channel_scale=torch.ones_like(params.channel_scale))
        return build_views(frames, clean, d.mean, d.std, torch.float32), params

    @torch.no_grad()
    def teacher_probs(self, teacher, x_weak: torch.Tensor, seed: int) -> torch.Tensor:
        """[U, Bu, C]: U full teacher forwards, each with its own head-dropout mask."""
        net = teacher.module
        u = self.cfg.method.mc_samples
        keep = kernels.head_keep_masks(seed, u, x_weak.shape[0], net.head.classifier.in_features,
                                       p=net.head_dropout, device=self.device)
        return torch.stack([torch.softmax(net.head_logits(net.features(x_weak), keep[i]), dim=-1)
                            for i in range(u)])

    def micro_step(self, lab: dict, unl: dict, teacher, xi: float, rng: np.random.Generator) -> dict:
        """Forward and backward of one SeFAR iteration; returns the loss terms and regulation (detached)."""
        m = self.cfg.method
        x_l, _ = self._views(lab["frames"][:, 0], "weak", rng, flip=True)
        frames_u = unl["frames"]
        x_w, _ = self._views(frames_u[:, 0], "weak", rng)
        mc_seed = int(rng.integers(2**62))
        x_clean, p_s = self._views(frames_u[:, 1], "strong", rng)
        x_s = x_clean * p_s.channel_scale.to(self.device)[:, None, :, None, None]
        probs = self.teacher_probs(teacher, x_w, mc_seed)
        reg = regulate(probs, mode=m.regulation, threshold=m.threshold)

        # Three separate student passes, as the released code calls the model.
        logit_l = self.model(x_l)
        logit_s = self.model(x_s)
        loss_sup = losses.supervised_loss(logit_l, lab["labels"])
        loss_un = losses.unlabeled_loss(logit_s, reg.pseudo_label, reg.eta)
        if m.mix:
            grid = (self.cfg.data.crop // self.patch,) * 2
            plan = draw_mix(x_s.shape[0], m.elements, grid, rng, alpha=m.mix_alpha)
            partner = plan.partner.to(self.device)
            x_mix = mix_views(x_s, x_clean, plan.masks, partner, m.elements, self.patch)
            logit_mix = self.model(x_mix)
            y_mix, eta_mix = mix_targets(reg.mean, reg.eta, plan.lam, partner)
            loss_mix = losses.mix_loss(logit_mix, y_mix, eta_mix, kind=m.mix_loss)
        else:
            loss_mix = torch.zeros((), device=self.device)
        terms = losses.combine(loss_sup, loss_un, loss_mix, xi, w_un=m.w_un, w_mix=m.w_mix)
        if not bool(torch.isfinite(terms.total)):  # the reference's per-iteration NaN check (a host sync)
            raise SefarError(f"reference-style iteration: the loss is {float(terms.total)}")
        terms.total.backward()
        return {"loss": terms.total.detach(), "loss_sup": loss_sup.detach(), "loss_un": loss_un.detach(),
                "loss_mix": loss_mix.detach(), "eta": reg.eta, "pseudo_label": reg.pseudo_label}

    def optimizer_step(self, optimizer, teacher) -> None:
        """SGD step, then the EMA entry by entry, with the trainer's decay per labeled clip."""
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        decay = decay_for(self.cfg.optim.batch_size * self.cfg.optim.accum_steps, self.cfg.method.ema_decay)
        student = self.model.state_dict()
        with torch.no_grad():
            for name, value in teacher.module.state_dict().items():
                if value.is_floating_point():
                    value.mul_(decay).add_(student[name].detach(), alpha=1.0 - decay)
                else:
                    value.copy_(student[name])
