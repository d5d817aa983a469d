"""Everything one micro-step draws on the host, and its single trip to the device.

A SeFAR micro-step draws, from its shard's Generator and in this order (the reference
step's order, `bench.reference`): the labeled weak view, the unlabeled weak view, the seed
of the teacher's dropout masks, the strong view, the mixing plan. They are small (a crop box,
a flip, a frame order and channel scales per clip; one tube mask per element; a partner
permutation) and all of them go to the device as one pinned buffer in one asynchronous copy,
so building views never waits for the GPU and the host never waits for a copy.

On the device the view parameters keep their shapes with int32 flips and frame orders and
float32 boxes and scales (what the kernels read); tube masks and partner are int32.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from sefar_fast.ops.mixing import MixPlan, draw_mix
from sefar_fast.ops.views import ViewParams, draw_view_params


@dataclass
class StepDraws:
    labeled: ViewParams
    weak: ViewParams | None = None
    strong: ViewParams | None = None
    mc_seed: int | None = None
    mix: MixPlan | None = None

    def to(self, device: torch.device) -> "StepDraws":
        """The same draws on `device`, uploaded together (no copy at all on the CPU)."""
        views = [v for v in (self.labeled, self.weak, self.strong) if v is not None]
        parts = []
        for v in views:
            parts += [v.box, v.flip.to(torch.int32), v.order.to(torch.int32), v.channel_scale]
        if self.mix is not None:
            parts += [self.mix.masks.to(torch.int32), self.mix.partner.to(torch.int32)]
        moved = iter(upload(parts, device))
        views = [ViewParams(next(moved), next(moved), next(moved), next(moved), v.out_size) for v in views]
        mix = replace(self.mix, masks=next(moved), partner=next(moved)) if self.mix is not None else None
        labeled, *unlabeled = views
        weak, strong = unlabeled if unlabeled else (None, None)
        return StepDraws(labeled, weak, strong, self.mc_seed, mix)


def upload(parts: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Host tensors (float32 or int32) on `device`: one pinned buffer, one non-blocking copy."""
    device = torch.device(device)
    if device.type == "cpu":
        return parts
    words = torch.cat([p.reshape(-1).view(torch.int32) for p in parts]).pin_memory()
    on_device = words.to(device, non_blocking=True).split([p.numel() for p in parts])
    return [w.view(p.dtype).view(p.shape) for w, p in zip(on_device, parts)]


def draw_step(cfg, labeled: int, unlabeled: int, patch: int, rng: np.random.Generator) -> StepDraws:
    """The host draws of one micro-step over `labeled` clips and (0 in the warm-up) `unlabeled` ones."""
    m, d = cfg.method, cfg.data

    def view(batch: int, kind: str, flip=None) -> ViewParams:
        return draw_view_params(batch, m.elements, tuple(d.frame_size), d.crop, kind, rng,
                                scale_range=tuple(d.scale_range), ref_short=float(min(d.frame_size)), flip=flip,
                                perturb=m.perturb, channel_drop=m.channel_drop)

    draws = StepDraws(view(labeled, "weak", flip=True))
    if unlabeled:
        draws.weak = view(unlabeled, "weak")
        draws.mc_seed = int(rng.integers(2**62))
        draws.strong = view(unlabeled, "strong")
        if m.mix:
            grid = (d.crop // patch,) * 2
            draws.mix = draw_mix(unlabeled, m.elements, grid, rng, alpha=m.mix_alpha)
    return draws
