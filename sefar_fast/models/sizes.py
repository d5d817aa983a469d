"""Model sizes (arch names) and the analytic forward-FLOP count used for MFU.

An arch name fixes the ViT width, depth, heads and default patch size. The FLOP
count is computed from the shapes alone (matmuls and attention products, as
2 x multiply-accumulates), so the trainer can report model FLOP utilisation
without profiling. LayerNorm, GELU, softmax and additions are not counted, as
is the convention for MFU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from sefar_fast.errors import SefarError

FUSION_DIM = 256  # width of the fusion head's pairwise/unary/fused features (the reference's 256)


@dataclass(frozen=True)
class ArchSpec:
    """Backbone hyper-parameters of one arch name."""

    name: str
    dim: int
    depth: int
    heads: int
    patch_size: int
    mlp_ratio: int = 4


ARCHS: dict[str, ArchSpec] = {
    "vit-t": ArchSpec("vit-t", dim=192, depth=12, heads=3, patch_size=16),
    "vit-s": ArchSpec("vit-s", dim=384, depth=12, heads=6, patch_size=16),
    "vit-b": ArchSpec("vit-b", dim=768, depth=12, heads=12, patch_size=16),
    # Small enough to train on the built-in synthetic data on a laptop CPU.
    "vit-pico": ArchSpec("vit-pico", dim=64, depth=4, heads=2, patch_size=8),
    # Unit tests only.
    "vit-test": ArchSpec("vit-test", dim=32, depth=1, heads=2, patch_size=8),
}


def arch_spec(arch: str, patch_size: int | None = None) -> ArchSpec:
    """The spec of `arch`, with the patch size overridden when `patch_size` is given."""
    if arch not in ARCHS:
        raise SefarError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    if patch_size is not None:
        if int(patch_size) < 1:
            raise SefarError(f"patch_size {patch_size} for arch {arch!r} must be a positive integer")
        spec = replace(spec, patch_size=int(patch_size))
    return spec


def num_patches(img_size: int, patch_size: int) -> int:
    """Patches per frame; `img_size` must be a multiple of the patch size."""
    if img_size < patch_size or img_size % patch_size:
        raise SefarError(f"img_size {img_size} must be a positive multiple of the patch size {patch_size}")
    return (img_size // patch_size) ** 2


def count_flops(
    arch: str,
    img_size: int,
    elements: Sequence[int],
    *,
    patch_size: int | None = None,
    num_classes: int = 0,
) -> int:
    """Forward FLOPs of one clip (all its elements, plus the fusion head and classifier).

    Per element of T frames with N patches each and width D, per block:
    temporal attention on T*N tokens (qkv 3D^2, proj D^2, temporal_fc D^2 MACs per
    token, plus 2*T*D MACs per token for q.k and attn.v over T keys), spatial
    attention on T*(N+1) tokens (4D^2 per token plus 2*(N+1)*D for the products),
    and the MLP on the 1+T*N tokens (2*ratio*D^2 per token).

    This is the model's mathematics, element by element, what MFU is measured against. The
    one-pass backbone computes a little more (the cls slots' temporal step, multiplied by 0,
    the cls MLP once per frame, temporal products over K frames where T count): under 1% at
    224 x 224 with patch 16.
    """
    spec = arch_spec(arch, patch_size)
    n = num_patches(img_size, spec.patch_size)
    d, p = spec.dim, spec.patch_size
    macs = 0
    for t in elements:
        macs += t * n * 3 * p * p * d  # patch embedding
        block = 0
        block += t * n * (5 * d * d + 2 * t * d)  # temporal qkv+proj+fc, q.k and attn.v
        block += t * (n + 1) * (4 * d * d + 2 * (n + 1) * d)  # spatial qkv+proj, q.k and attn.v
        block += (1 + t * n) * 2 * spec.mlp_ratio * d * d  # MLP fc1 + fc2
        macs += spec.depth * block
    g = len(elements)
    pairs = g * (g - 1) // 2
    macs += pairs * 2 * d * FUSION_DIM + g * d * FUSION_DIM  # pairwise and unary projections
    macs += (g + pairs) * FUSION_DIM * FUSION_DIM  # fusion Linear
    macs += FUSION_DIM * num_classes  # classifier
    return 2 * macs
