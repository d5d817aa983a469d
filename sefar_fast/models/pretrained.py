"""Load ImageNet ViT weights into the TimeSformer backbone, so that each frame starts as the source ViT.

`load_pretrained(net, spec)` takes a `--pretrained` spec (`models.weights`: timm:NAME.TAG,
hf:REPO[/FILE] or a local file), reads it in any published layout (`models.vit_files`:
timm, DeiT-III layer scale folded, big_vision / vit_jax .npz, timm training checkpoints)
and loads it so that, with identical frames, every element's cls feature equals the
source ViT's cls feature of that frame:

- spatial attention and norm1 are copied into temporal_attn and temporal_norm1 (unless the
  file has temporal weights, as a TimeSformer checkpoint does); temporal_fc stays zero, so
  the temporal branch adds nothing; the time embeddings and the fusion head keep their
  initialisation (SeFAR's elements carry their own time embeddings: a TimeSformer's
  `time_embed` is not used);
- a position embedding without a cls row (DeiT-III, `no_embed_class` ViTs add no position to
  the cls token) gets a zero cls row; one on another grid is resized by bicubic interpolation
  of the patch rows (as timm does);
- the classifier (`head`, `head_dist`, `pre_logits`: all after the cls feature) is dropped.

Anything else is an error, never a summary line: a tensor the backbone has no place for
(a distillation token, registers, a global-pool norm, ...) would change what it computes, a
ViT weight the file lacks would stay random, and a width, depth or patch mismatch names the
file and both shapes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sefar_fast.errors import SefarError
from sefar_fast.models.timesformer import TimeSformer
from sefar_fast.models.vit_files import GIVE_INSTEAD, fold_layer_scale, read_vit_state
from sefar_fast.models.weights import resolve_weights

TEMPORAL_COPIES = (("temporal_attn.", "attn."), ("temporal_norm1.", "norm1."))  # (target, source) inside a block
# After the cls feature (classifiers), or replaced by SeFAR's per-element time embeddings.
DROPPED = re.compile(r"^(head|head_dist|pre_logits|fc_norm_head)\.|^time_embed$")


@dataclass
class PretrainedReport:
    """What `load_pretrained` did, in the network's parameter names."""

    path: str
    loaded: list[str] = field(default_factory=list)  # set from the file (temporal copies included)
    dropped: list[str] = field(default_factory=list)  # file entries dropped by design (the classifier)
    # Parts a ViT has no weights for (temporal_fc, time embeddings, fusion head): left at their init.
    kept_init: list[str] = field(default_factory=list)
    pos_embed_resized: tuple[int, int] | None = None  # (old grid, new grid) when resized
    cls_position_zero: bool = False  # the file's position embedding had no cls row
    layer_scale_folded: bool = False  # DeiT-III gammas multiplied into attn.proj / mlp.fc2

    def summary(self) -> str:
        text = f"{self.path}: loaded {len(self.loaded)} tensors, {len(self.dropped)} dropped (classifier)"
        if self.layer_scale_folded:
            text += ", layer scale folded into the projections"
        if self.cls_position_zero:
            text += ", no cls position in the file (zero, as the source adds none)"
        if self.pos_embed_resized:
            text += f", pos_embed resized {self.pos_embed_resized[0]}x -> {self.pos_embed_resized[1]}x"
        return text


# ---------------------------------------------------------------- pos_embed


def _split_pos_embed(pos: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """[1, P + G*G, D] -> (cls row [1, 1, D] or None, grid rows [1, G*G, D], G)."""
    length = pos.shape[1]
    for prefix in (1, 0):  # a cls row; none (no_embed_class ViTs such as DeiT-III)
        grid = math.isqrt(max(length - prefix, 0))
        if grid > 0 and grid * grid == length - prefix:
            return (pos[:, :1] if prefix else None), pos[:, prefix:], grid
    raise SefarError(f"pos_embed with {length} positions is not a cls row and a square grid of patches")


def resize_pos_embed(grid_rows: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """Patch position rows [1, old*old, D] -> [1, new*new, D] by bicubic interpolation (timm's method)."""
    d = grid_rows.shape[-1]
    img = grid_rows.float().reshape(1, old, old, d).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(new, new), mode="bicubic", antialias=True, align_corners=False)
    return img.permute(0, 2, 3, 1).reshape(1, new * new, d).to(grid_rows.dtype)


# ---------------------------------------------------------------- loading


def _backbone_of(net: nn.Module) -> tuple[TimeSformer, str]:
    if isinstance(net, TimeSformer):
        return net, ""
    backbone = getattr(net, "backbone", None)
    if isinstance(backbone, TimeSformer):
        return backbone, "backbone."
    raise SefarError(f"load_pretrained needs a SefarNet or TimeSformer, got {type(net).__name__}")


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def load_pretrained(net: nn.Module, spec: str | Path) -> PretrainedReport:
    """Load the ViT weights `spec` names into `net` (a SefarNet or a TimeSformer), in place."""
    backbone, prefix = _backbone_of(net)
    path = resolve_weights(str(spec))
    state, folded = fold_layer_scale(read_vit_state(path), path)
    report = PretrainedReport(path=str(spec), layer_scale_folded=folded > 0)
    report.dropped = sorted(k for k in state if DROPPED.match(k))
    state = {k: v for k, v in state.items() if not DROPPED.match(k)}

    own = backbone.state_dict()
    depth = len(backbone.blocks)
    file_depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    width = state["patch_embed.proj.weight"].shape[0]
    if width != backbone.dim or file_depth != depth:
        raise SefarError(
            f"{path}: a ViT of width {width} and depth {file_depth} does not fit the model's "
            f"width {backbone.dim} and depth {depth}; pick the matching --arch or weights file"
        )

    has_temporal = any(".temporal_attn." in k for k in state)
    targets: dict[str, torch.Tensor] = {}
    unplaced = []
    for name, value in state.items():
        if name == "pos_embed":
            cls_row, rows, grid = _split_pos_embed(value)
            if grid != backbone.grid:
                rows = resize_pos_embed(rows, grid, backbone.grid)
                report.pos_embed_resized = (grid, backbone.grid)
            if cls_row is None:  # the source adds no position to its cls token: neither do we
                cls_row = torch.zeros_like(rows[:, :1])
                report.cls_position_zero = True
            value = torch.cat([cls_row.to(rows.dtype), rows], dim=1)
        if name not in own:
            unplaced.append(name)
            continue
        targets[name] = value
        if not has_temporal:
            for dst, src in TEMPORAL_COPIES:
                copy = name.replace(f".{src}", f".{dst}", 1)
                if name.startswith("blocks.") and f".{src}" in name and copy in own:
                    targets[copy] = value
    if unplaced:
        raise SefarError(f"{path}: {len(unplaced)} tensors have no place in the model and would change what it "
                         f"computes ({_names(sorted(unplaced))}); these are not plain ViT weights: {GIVE_INSTEAD}")
    lacking = [n for n in own if n not in targets and not (".temporal_fc." in n and not has_temporal)]
    if lacking:
        raise SefarError(f"{path} lacks {len(lacking)} ViT weights ({_names(lacking)}), which would stay random; "
                         f"{GIVE_INSTEAD}")
    for name, value in targets.items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise SefarError(
                f"{path}: {name} has shape {tuple(value.shape)} but the model needs {tuple(own[name].shape)}; "
                f"pick the matching --arch / patch size or weights file"
            )
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if name in targets:
                param.copy_(targets[name])

    report.loaded = [prefix + n for n in own if n in targets]
    report.kept_init = [prefix + n for n in own if n not in targets]
    if prefix:
        report.kept_init += [k for k in net.state_dict() if not k.startswith(prefix)]
    return report
