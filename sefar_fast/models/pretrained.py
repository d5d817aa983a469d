"""Load ImageNet ViT weights (timm layout) from a local file into the TimeSformer backbone.

Accepted files (nothing is ever downloaded):
  - .pth / .pt: a torch state dict with timm ViT names, loaded with
    weights_only=True, possibly nested under "model" / "state_dict" (and with a
    "module." or "model." prefix);
  - .safetensors: the same names;
  - .npz: the big_vision / vit_jax layout that timm reads
    (Transformer/encoderblock_i/..., embedding/kernel, cls, ...), converted here.
The classifier (head.*) is dropped. Spatial attention and norm1 are copied into
temporal_attn and temporal_norm1 (unless the file already has temporal weights, as a
TimeSformer checkpoint does); temporal_fc stays zero, the time embeddings and the
fusion head keep their initialisation. A pos_embed on a different grid is resized
by bicubic interpolation (as timm does). A width, depth or patch mismatch is a
SefarError naming the file and both shapes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from sefar_fast.errors import SefarError
from sefar_fast.models.timesformer import TimeSformer

TEMPORAL_COPIES = (("temporal_attn.", "attn."), ("temporal_norm1.", "norm1."))  # (target, source) inside a block


@dataclass
class PretrainedReport:
    """What `load_pretrained` did, in the network's parameter names."""

    path: str
    loaded: list[str] = field(default_factory=list)  # set from the file (temporal copies included)
    missing: list[str] = field(default_factory=list)  # ViT weights the file lacked: left at their init
    unexpected: list[str] = field(default_factory=list)  # file entries not used (head.* excluded)
    dropped: list[str] = field(default_factory=list)  # file entries dropped by design (the classifier)
    # Parts a ViT has no weights for (temporal_fc, time embeddings, fusion head): left at their init.
    kept_init: list[str] = field(default_factory=list)
    pos_embed_resized: tuple[int, int] | None = None  # (old grid, new grid) when resized

    def summary(self) -> str:
        text = (
            f"{self.path}: loaded {len(self.loaded)} tensors, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.dropped)} dropped"
        )
        if self.pos_embed_resized:
            text += f", pos_embed resized {self.pos_embed_resized[0]}x -> {self.pos_embed_resized[1]}x"
        return text


# ---------------------------------------------------------------- reading files


def _unwrap(state: dict, path: Path) -> dict:
    for key in ("model", "state_dict", "model_state"):
        while isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SefarError(f"{path}: not a state dict of tensors; expected timm ViT weights")
    out = {}
    for name, value in state.items():
        for prefix in ("module.", "model.", "backbone."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        out[name] = value
    return out


def _npz_to_timm(arrays: dict[str, np.ndarray], path: Path) -> dict[str, torch.Tensor]:
    """big_vision / vit_jax names and layouts -> timm ViT names and layouts."""
    prefix = "opt/target/" if "opt/target/embedding/kernel" in arrays else ""
    w = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    if "embedding/kernel" not in w:
        raise SefarError(f"{path}: no 'embedding/kernel' entry; expected a big_vision/vit_jax ViT .npz")

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(w.pop(name)))

    out: dict[str, torch.Tensor] = {}
    out["patch_embed.proj.weight"] = t("embedding/kernel").permute(3, 2, 0, 1)  # HWIO -> OIHW
    out["patch_embed.proj.bias"] = t("embedding/bias")
    if "cls" in w:
        out["cls_token"] = t("cls")
    for pos_name in ("Transformer/posembed_input/pos_embedding", "pos_embedding"):
        if pos_name in w:
            out["pos_embed"] = t(pos_name)
            break
    out["norm.weight"] = t("Transformer/encoder_norm/scale")
    out["norm.bias"] = t("Transformer/encoder_norm/bias")
    # vit_jax numbers the sub-modules LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
    # MlpBlock_3; big_vision uses LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0.
    big_vision = "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel" in w
    mha, ln2, mlp = (0, 1, 0) if big_vision else (1, 2, 3)
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in w:
        src, dst = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        att = f"{src}MultiHeadDotProductAttention_{mha}/"
        out[dst + "norm1.weight"] = t(src + "LayerNorm_0/scale")
        out[dst + "norm1.bias"] = t(src + "LayerNorm_0/bias")
        # query/key/value kernels are [D_in, heads, head_dim]; timm's qkv weight is [3*D_out, D_in].
        qkv = ("query", "key", "value")
        out[dst + "attn.qkv.weight"] = torch.cat([t(f"{att}{n}/kernel").flatten(1).T for n in qkv])
        out[dst + "attn.qkv.bias"] = torch.cat([t(f"{att}{n}/bias").flatten() for n in qkv])
        out[dst + "attn.proj.weight"] = t(f"{att}out/kernel").flatten(0, 1).T  # [heads, head_dim, D_out]
        out[dst + "attn.proj.bias"] = t(f"{att}out/bias")
        out[dst + "norm2.weight"] = t(f"{src}LayerNorm_{ln2}/scale")
        out[dst + "norm2.bias"] = t(f"{src}LayerNorm_{ln2}/bias")
        for r in (0, 1):
            out[dst + f"mlp.fc{r + 1}.weight"] = t(f"{src}MlpBlock_{mlp}/Dense_{r}/kernel").T
            out[dst + f"mlp.fc{r + 1}.bias"] = t(f"{src}MlpBlock_{mlp}/Dense_{r}/bias")
        i += 1
    for name in list(w):
        if name.startswith("head/"):
            out["head." + name[len("head/") :]] = t(name)
        else:
            out["npz:" + name] = t(name)  # left over; reported as unexpected
    return out


def read_vit_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A local ViT weight file -> a state dict in timm names (CPU tensors)."""
    path = Path(path)
    if not path.is_file():
        raise SefarError(f"pretrained weights {path} not found; give a local .pth, .npz or .safetensors file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".pth", ".pt"):
            return _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)
        if suffix == ".safetensors":

            return _unwrap(load_file(str(path), device="cpu"), path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return _npz_to_timm({k: data[k] for k in data.files}, path)
    except SefarError:
        raise
    except Exception as exc:  # corrupt or foreign files: one readable line
        raise SefarError(f"cannot read pretrained weights {path}: {type(exc).__name__}: {exc}") from exc
    raise SefarError(f"pretrained weights {path}: unknown suffix {suffix!r}; use .pth, .pt, .npz or .safetensors")


# ---------------------------------------------------------------- pos_embed


def _split_pos_embed(pos: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """[1, P + G*G, D] -> (cls row [1, 1, D] or None, grid rows [1, G*G, D], G)."""
    length = pos.shape[1]
    for prefix in (1, 0, 2):  # cls; none (global-pool ViTs); cls + distillation token (DeiT)
        grid = math.isqrt(max(length - prefix, 0))
        if grid > 0 and grid * grid == length - prefix:
            return (pos[:, :1] if prefix else None), pos[:, prefix:], grid
    raise SefarError(f"pos_embed with {length} positions is not a square grid of patches")


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


def load_pretrained(net: nn.Module, path: str | Path) -> PretrainedReport:
    """Load timm-layout ViT weights from `path` into `net` (a SefarNet or a TimeSformer), in place."""
    backbone, prefix = _backbone_of(net)
    state = read_vit_state(path)
    report = PretrainedReport(path=str(path))
    report.dropped = sorted(k for k in state if k.startswith("head."))
    state = {k: v for k, v in state.items() if not k.startswith("head.")}

    own = backbone.state_dict()
    depth = len(backbone.blocks)
    file_depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    width = state["norm.weight"].shape[0] if "norm.weight" in state else None
    if width is not None and width != backbone.dim or file_depth != depth:
        raise SefarError(
            f"{path}: a ViT of width {width} and depth {file_depth} does not fit the model's "
            f"width {backbone.dim} and depth {depth}; pick the matching --arch or weights file"
        )

    has_temporal = any(".temporal_attn." in k for k in state)
    targets: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name == "pos_embed":
            cls_row, rows, grid = _split_pos_embed(value)
            if grid != backbone.grid:
                rows = resize_pos_embed(rows, grid, backbone.grid)
                report.pos_embed_resized = (grid, backbone.grid)
            if cls_row is None:  # no cls position in the file: keep the model's own
                cls_row = own["pos_embed"][:, :1].to(rows.dtype)
            value = torch.cat([cls_row.to(rows.dtype), rows], dim=1)
        if name in own:
            targets[name] = value
            if not has_temporal:
                for dst, src in TEMPORAL_COPIES:
                    copy = name.replace(f".{src}", f".{dst}", 1)
                    if name.startswith("blocks.") and f".{src}" in name and copy in own:
                        targets[copy] = value
        else:
            report.unexpected.append(name)

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

    for name in own:
        if name in targets:
            report.loaded.append(prefix + name)
        elif ".temporal_fc." in name and not has_temporal:
            report.kept_init.append(prefix + name)
        else:
            report.missing.append(prefix + name)
    if prefix:
        report.kept_init += [k for k in net.state_dict() if not k.startswith(prefix)]
    return report
