"""SeFAR network: a shared TimeSformer over the temporal elements, then the fusion head.

Input clips are [B, K, 3, S, S] with the K = sum(elements) frames grouped by
element in config order (the last element is the context). Each element is a
TimeSformer input of its own, with its own temporal embedding (zero-init,
[1, T_i, D]); all elements go through the shared backbone in one pass, temporal
attention block-diagonal over the elements (`TimeSformer.forward_elements`), which
gives the same result as separate passes.

Fusion head over the G element features f_i (pairs i<j in lexicographic order):
    pair_ij = LN(GELU(Linear(2D->256)([f_i; f_j])))   (Linear and LN shared by the pairs)
    unary_i = LN(GELU(Linear(D->256)(f_i)))           (shared by the elements)
    feature = LN(GELU(Linear((G + G(G-1)/2)*256 -> 256)([pairs..., unaries...])))
    logits  = Linear(256->C)(Dropout(0.5)(feature))
With G=1 there are no pairs.

The head's Dropout is the only Dropout with p > 0 in the whole network, so
MC-dropout on the teacher (`enable_mc_dropout`) turns on only that one: the
backbone and fusion run once and the U samples differ only in the dropout mask on
the 256-d feature (`head_logits(feature, keep_mask)`), which is exactly the distribution of U full MC passes.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sefar_fast.errors import SefarError
from sefar_fast.models.sizes import FUSION_DIM, arch_spec
from sefar_fast.models.timesformer import LN_EPS, TemporalKernel, TimeSformer, check_attn


def _torch_default_linear_init(linear: nn.Linear, generator: torch.Generator | None) -> None:
    """nn.Linear's own initialisation (uniform +-1/sqrt(fan_in)), drawn from `generator`."""
    bound = 1.0 / math.sqrt(linear.in_features)
    nn.init.uniform_(linear.weight, -bound, bound, generator=generator)
    nn.init.uniform_(linear.bias, -bound, bound, generator=generator)


class FusionHead(nn.Module):
    """Pairwise + unary element features -> fused 256-d feature -> dropout -> classifier."""

    def __init__(self, dim: int, num_elements: int, num_classes: int, dropout: float):
        super().__init__()
        self.pairs = list(combinations(range(num_elements), 2))
        fused_in = (num_elements + len(self.pairs)) * FUSION_DIM
        self.pair_fc = nn.Linear(2 * dim, FUSION_DIM) if self.pairs else None
        self.pair_norm = nn.LayerNorm(FUSION_DIM, eps=LN_EPS) if self.pairs else None
        self.unary_fc = nn.Linear(dim, FUSION_DIM)
        self.unary_norm = nn.LayerNorm(FUSION_DIM, eps=LN_EPS)
        self.fuse_fc = nn.Linear(fused_in, FUSION_DIM)
        self.fuse_norm = nn.LayerNorm(FUSION_DIM, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(FUSION_DIM, num_classes)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        # The reference leaves the head at PyTorch's default init; we draw the same law from `generator`.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                _torch_default_linear_init(module, generator)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def fuse(self, cls: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-element features [B, D] (config order) -> fused feature [B, 256]."""
        parts = []
        if self.pairs:
            pair_in = torch.stack([torch.cat([cls[i], cls[j]], dim=-1) for i, j in self.pairs])
            parts.extend(self.pair_norm(F.gelu(self.pair_fc(pair_in))).unbind(0))
        unary_in = torch.stack(list(cls))
        parts.extend(self.unary_norm(F.gelu(self.unary_fc(unary_in))).unbind(0))
        return self.fuse_norm(F.gelu(self.fuse_fc(torch.cat(parts, dim=-1))))

    def logits(self, feature: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        if keep_mask is None:
            return self.classifier(self.dropout(feature))
        return self.classifier(feature * keep_mask)


class SefarNet(nn.Module):
    """Shared TimeSformer over the temporal elements + fusion head; see the module docstring."""

    def __init__(
        self,
        *,
        arch: str,
        num_classes: int,
        elements: Sequence[int],
        img_size: int,
        patch_size: int | None = None,
        drop_path: float = 0.1,
        head_dropout: float = 0.5,
        attn: str = "sdpa",
        pos_embed_std: float = 0.02,
        time_embed_std: float = 0.0,
        temporal_kernel: TemporalKernel | None = None,
    ):
        super().__init__()
        elements = [int(e) for e in elements]
        if not elements or any(e < 1 for e in elements):
            raise SefarError(f"elements {elements} must be a non-empty list of positive frame counts")
        if int(num_classes) < 1:
            raise SefarError(f"num_classes {num_classes} must be at least 1")
        if not 0.0 <= head_dropout < 1.0:
            raise SefarError(f"head_dropout {head_dropout} must be in [0, 1)")
        check_attn(attn)
        for name, value in (("pos_embed_std", pos_embed_std), ("time_embed_std", time_embed_std)):
            if not 0.0 <= value <= 10.0:
                raise SefarError(f"model.{name} {value} must be in [0, 10]")
        self.time_embed_std = float(time_embed_std)
        spec = arch_spec(arch, patch_size)
        self.arch = arch
        self.elements = elements
        self.num_classes = int(num_classes)
        self.head_dropout = float(head_dropout)
        self.backbone = TimeSformer(
            img_size=img_size,
            patch_size=spec.patch_size,
            dim=spec.dim,
            depth=spec.depth,
            heads=spec.heads,
            mlp_ratio=spec.mlp_ratio,
            drop_path=drop_path,
            attn=attn,
            pos_embed_std=pos_embed_std,
            temporal_kernel=temporal_kernel,
        )
        self.time_embed = nn.ParameterList(nn.Parameter(torch.empty(1, t, spec.dim)) for t in elements)
        self.head = FusionHead(spec.dim, len(elements), self.num_classes, self.head_dropout)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """timm's init, and a zero time embedding by default (an ImageNet checkpoint has none, so a
        loaded model starts as an image ViT per frame).

        From scratch on little data, attention at init averages the patch tokens almost uniformly,
        so a small figure on a large background barely moves the features and the loss sits at
        ln(C) for hundreds of steps. Position and time embeddings of std ~0.5, larger than the
        patch embeddings at timm's init, give every token a distinct place in space and time that
        attention can use from the first step; the synth preset sets both to 0.5. Measured on the
        synth clips, vit-pico, AdamW 1e-3, batch 32: val top-1 after 200 steps 6.0% at timm's
        init, 23.3% with both at 0.3."""
        self.backbone.reset_parameters(generator)
        for embed in self.time_embed:
            if self.time_embed_std > 0:
                nn.init.trunc_normal_(embed, std=self.time_embed_std, generator=generator)
            else:
                nn.init.zeros_(embed)
        self.head.reset_parameters(generator)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def set_attention(self, attn: str) -> None:
        self.backbone.set_attention(attn)

    def set_temporal_kernel(self, kernel: TemporalKernel | None) -> None:
        self.backbone.set_temporal_kernel(kernel)

    def enable_mc_dropout(self) -> "SefarNet":
        """Eval mode everywhere (DropPath off) except the head Dropout, the only Dropout with p > 0."""
        self.eval()
        self.head.dropout.train()
        return self

    def element_cls(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Clips [B, K, 3, S, S] -> per-element final-LN cls features, a list of [B, D] in config order."""
        if x.dim() != 5 or x.shape[1] != sum(self.elements):
            raise SefarError(
                f"input of shape {tuple(x.shape)} does not match [B, {sum(self.elements)}, 3, S, S] "
                f"for elements {self.elements}"
            )
        time_embed = torch.cat(list(self.time_embed), dim=1)
        return list(self.backbone.forward_elements(x, self.elements, time_embed).unbind(1))

    def fuse(self, cls: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-element cls features -> fused feature [B, 256]."""
        return self.head.fuse(cls)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips [B, K, 3, S, S] -> fused feature [B, 256] (before the head dropout)."""
        return self.fuse(self.element_cls(x))

    def head_logits(self, feature: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Classifier on the fused feature. keep_mask [..., 256] holds 0 or 1/(1-p) scales
        (broadcast against feature, e.g. [U, B, 256] -> logits [U, B, C]); None uses the module Dropout."""
        return self.head.logits(feature, keep_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clips [B, K, 3, S, S] -> logits [B, C]."""
        return self.head_logits(self.features(x))


def build_model(arch: str, num_classes: int, elements: Sequence[int], *, seed: int = 0,
                device: str | torch.device | None = None, **options) -> SefarNet:
    """A SefarNet initialised from `seed` (same weights on any device), on `device` (default CPU).

    `options` are SefarNet's keyword arguments (img_size, patch_size, drop_path, ...).
    `device="meta"` builds the shapes only (no memory, no init), e.g. to count parameters.
    """
    with torch.device("meta"):
        net = SefarNet(arch=arch, num_classes=num_classes, elements=elements, **options)
    device = torch.device("cpu" if device is None else device)
    if device.type == "meta":
        return net
    # Initialise on the CPU so a seed gives the same weights whatever the device.
    net.to_empty(device="cpu")
    net.reset_parameters(torch.Generator().manual_seed(seed))
    return net.to(device)


def model_from_config(cfg, num_classes: int, **kwargs) -> SefarNet:
    """The network a run's config describes (`cfg.model`, the elements and the crop), for `num_classes`.

    Training, evaluation, benchmarks and checkpoint loading all build their models here."""
    m = cfg.model
    return build_model(m.arch, num_classes, cfg.method.elements, img_size=cfg.data.crop, patch_size=m.patch_size,
                       drop_path=m.drop_path, head_dropout=m.head_dropout, attn=m.attn,
                       pos_embed_std=m.pos_embed_std, time_embed_std=m.time_embed_std, **kwargs)
