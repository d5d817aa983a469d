"""Backbones that ship inside the package, named like `--pretrained synth:vit-pico`.

A packaged backbone is an ordinary timm-layout ViT file (`models.pretrained` reads it like
any ImageNet weights); the name only says where it lies. `synth:<arch>` is the backbone
pretrained for the built-in synth data by `sefar pretrain-synth` (its command, seed and commit
are in the file's metadata and in docs/results.md).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sefar_fast.errors import SefarError

PACKAGED = {"vit-pico": "synth-vit-pico.safetensors"}  # synth:<arch> -> file in models/backbones/


def synth_weights(arch: str, spec: str) -> Path:
    """The packaged file of `synth:<arch>` (the `synth` scheme of models.weights)."""
    if arch not in PACKAGED:
        raise SefarError(f"--pretrained {spec}: no such packaged backbone; packaged: "
                         f"{', '.join('synth:' + a for a in PACKAGED)}")
    return Path(str(resources.files("sefar_fast.models") / "backbones" / PACKAGED[arch]))


def check_packaged_arch(spec: str | None, arch: str) -> None:
    """A packaged backbone fits one arch: say which before anything loads."""
    scheme, _, own = str(spec).partition(":")
    if scheme == "synth" and own in PACKAGED and own != arch:
        raise SefarError(f"--pretrained {spec} is a {own} backbone but the model is {arch}: "
                         f"use --arch {own}, or --pretrained none to train {arch} from scratch")
