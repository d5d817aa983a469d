"""ViT weight files in the layouts they are published in -> one state dict in timm's names.

Read (`read_vit_state`), never executed:
  - torch files (.pth, .pt, .bin, .pth.tar), loaded with weights_only=True: a bare state dict
    (timm's `pytorch_model.bin`), or one nested under "model" / "state_dict" / "model_state"
    (a timm training checkpoint holds "state_dict" beside "args", "optimizer", ...), names
    possibly prefixed "module." / "model." / "backbone.";
  - .safetensors with the same names;
  - .npz in the big_vision / vit_jax layout: with any prefix before `embedding/kernel`
    ("opt/target/", "params/", ...), blocks one per `encoderblock_<i>` or scanned (one
    `encoderblock` whose arrays carry the depth as their first axis).
A sefar checkpoint, or a file without a ViT's patch embedding, is a SefarError saying what the
file is and what to give instead.

Layer scale (DeiT-III: `blocks.i.ls1.gamma` / `ls2.gamma` in timm, `gamma_1` / `gamma_2` in
the original) multiplies a residual branch's output channels; it is folded exactly into that
branch's last projection (`fold_layer_scale`): W' = diag(gamma) W, b' = gamma * b.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from sefar_fast.errors import SefarError

NESTED_KEYS = ("model", "state_dict", "model_state")
NAME_PREFIXES = ("module.", "model.", "backbone.")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar")
# (the gamma's names, the projection it folds into) per residual branch of a block
LAYER_SCALES = ((("ls1.gamma", "gamma_1"), "attn.proj"), (("ls2.gamma", "gamma_2"), "mlp.fc2"))
GIVE_INSTEAD = ("give ImageNet ViT weights: timm:NAME.TAG, hf:OWNER/REPO[/FILE] or a timm-layout "
                ".pth/.npz/.safetensors file")


def torch_file(path: Path) -> dict:
    # timm training checkpoints carry their argparse arguments: a plain namespace, safe to allow
    if argparse.Namespace not in torch.serialization.get_safe_globals():
        torch.serialization.add_safe_globals([argparse.Namespace])
    return torch.load(path, map_location="cpu", weights_only=True)


def unwrap(state, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint, with wrapper prefixes removed from the names."""
    for key in NESTED_KEYS:
        while isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SefarError(f"{path}: not a state dict of tensors; {GIVE_INSTEAD}")
    if any(k.startswith(("student.", "teacher.")) for k in state):
        raise SefarError(f"{path} is a sefar checkpoint (a trained SeFAR network, not ImageNet weights): evaluate it "
                         f"with 'sefar eval {path}' or continue its run with 'sefar train --resume-from RUN'; "
                         f"for --pretrained {GIVE_INSTEAD}")
    out = {}
    for name, value in state.items():
        for prefix in NAME_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = value
    return out


def unscan(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """big_vision's scanned blocks (`encoderblock/...` with the depth first) as `encoderblock_<i>/...`."""
    scanned = f"{prefix}Transformer/encoderblock/"
    out = {k: v for k, v in arrays.items() if not k.startswith(scanned)}
    for key, value in arrays.items():
        if key.startswith(scanned):
            for i in range(value.shape[0]):
                out[f"{prefix}Transformer/encoderblock_{i}/{key[len(scanned):]}"] = value[i]
    return out


def npz_to_timm(arrays: dict[str, np.ndarray], path: Path) -> dict[str, torch.Tensor]:
    """big_vision / vit_jax names and layouts -> timm ViT names and layouts. Arrays outside the weights'
    prefix (a training checkpoint's optimizer state) are not read; weights not converted keep their
    name under "npz:" (the loader refuses them)."""
    prefix = next((k[: -len("embedding/kernel")] for k in arrays if k.endswith("embedding/kernel")
                   and "posembed" not in k), None)
    if prefix is None:
        raise SefarError(f"{path}: no 'embedding/kernel' (a ViT patch embedding) in this .npz; {GIVE_INSTEAD}")
    w = {k[len(prefix):]: v for k, v in unscan(arrays, prefix).items() if k.startswith(prefix)}

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
    if "Transformer/encoder_norm/scale" in w:
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
        head = re.match(r"(head|pre_logits)/(kernel|bias)$", name)
        if head:  # the classifier and vit_jax's pre-logits layer, both after the cls feature
            out[f"{head[1]}.{'weight' if head[2] == 'kernel' else 'bias'}"] = t(name)
        else:
            out["npz:" + name] = t(name)
    return out


def read_vit_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A local ViT weight file -> a state dict in timm names (CPU tensors)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TORCH_SUFFIXES:
            state = unwrap(torch_file(path), path)
        elif suffix == ".safetensors":
            state = unwrap(load_file(str(path), device="cpu"), path)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                state = npz_to_timm({k: data[k] for k in data.files}, path)
        else:
            raise SefarError(f"pretrained weights {path}: unknown suffix {suffix!r}; use .pth, .pt, .pth.tar, .bin, "
                             ".npz or .safetensors")
    except SefarError:
        raise
    except Exception as exc:  # corrupt or foreign files: one readable line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SefarError(f"cannot read pretrained weights {path}: {type(exc).__name__}: {first}") from None
    if "patch_embed.proj.weight" not in state:
        some = ", ".join(sorted(state)[:3])
        raise SefarError(f"{path} holds no ViT weights (no patch_embed.proj.weight; it has {some}, ...); "
                         f"{GIVE_INSTEAD}")
    return state


def fold_layer_scale(state: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """(state with each block's layer-scale gammas multiplied into the projection ending their branch,
    how many gammas were folded)."""
    state, folded = dict(state), 0
    for key in [k for k in state if re.match(r"blocks\.\d+\.", k)]:
        block, _, rest = key.partition(".")[2].partition(".")
        for names, proj in LAYER_SCALES:
            if rest not in names:
                continue
            gamma = state.pop(key)
            where = f"blocks.{block}.{proj}"
            if f"{where}.weight" not in state or gamma.shape != state[f"{where}.weight"].shape[:1]:
                raise SefarError(f"{path}: layer scale {key} has no {where} of {tuple(gamma.shape)} outputs to "
                                 "fold into; these are not ViT weights sefar can load")
            state[f"{where}.weight"] = gamma[:, None] * state[f"{where}.weight"]
            if f"{where}.bias" in state:
                state[f"{where}.bias"] = gamma * state[f"{where}.bias"]
            folded += 1
    return state, folded
