"""TimeSformer backbone: a ViT with divided space-time attention, all temporal elements in one pass.

A clip's K frames come grouped by temporal element (lengths T_1..T_G, config order). Each
element is a TimeSformer input of its own, with its own cls token and time embedding; all of
them go through the blocks together. Tokens travel as one tensor [B, K, L, D], L = 1 + N
slots per frame: slot 0 holds the cls token of the frame's element (a copy per frame, all
copies equal), slots 1..N the frame's patches. Each block does, pre-LN with residuals:
  1. temporal attention, for every slot, over the frames of the same element (block-diagonal
     in time: `ops.attention.element_attention`, or the kernel set by `set_temporal_kernel`),
     then `temporal_fc` (zero-initialised, so a fresh block starts as a plain ViT block); the
     cls slot's result is multiplied by 0, since TimeSformer has no temporal step for cls;
  2. spatial attention over the L slots of each frame; the cls slot of every frame of an
     element then takes the mean of that element's per-frame cls results (TimeSformer
     replicates its one cls token per frame and averages the outputs back, the same numbers);
  3. the MLP on every slot.
So the spatial attention is a view of the tokens and no block concatenates or transposes
them; one cat builds the tokens once per forward. All of this equals running each element
through a TimeSformer of its own (a test compares outputs and gradients with that path).
Under autocast the position, cls and time embeddings are cast once to the patch embedding's
dtype, so the residual stream stays bf16.

Parameter names follow timm's ViT (patch_embed.proj, cls_token, pos_embed,
blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}, norm) plus
blocks.i.{temporal_norm1,temporal_attn.qkv,temporal_attn.proj,temporal_fc}, so
ImageNet ViT weights load by name.

The forward has no host syncs (the element layout is built on the device from shapes) and no
data-dependent Python branches, so torch.compile captures it with static shapes.

DropPath drops a whole residual branch per (clip, element), as if each element were a sample
of its own batch. The reference TimeSformer drops per (clip, patch) in the temporal branch and
per (clip, frame) in the spatial branch and applies temporal_fc after the drop; we use
standard per-sample stochastic depth on the full branch. DropPath draws from torch's device
RNG (as nn.Dropout does), which torch.compile and CUDA graphs can capture; it is not a
Dropout and stays off in eval mode, MC-dropout included.
"""

from __future__ import annotations

import itertools
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sefar_fast.errors import SefarError
from sefar_fast.ops.attention import attention, element_attention

ATTN_IMPLS = ("sdpa", "manual")
LN_EPS = 1e-6  # timm ViT / reference

# (qkv [B, K, L, 3D], element [K], heads) -> [B, K, L, D], as ops.attention.element_attention.
TemporalKernel = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def check_attn(attn: str) -> str:
    if attn not in ATTN_IMPLS:
        raise SefarError(f"unknown attention implementation {attn!r}: choose one of {', '.join(ATTN_IMPLS)}")
    return attn


class ElementLayout(NamedTuple):
    """Where the elements sit among a clip's K frames and L slots, as device tensors."""

    element: torch.Tensor  # int64 [K]: the element of each frame
    average: torch.Tensor  # [G, K]: row g averages the frames of element g
    first: torch.Tensor  # int64 [G]: the first frame of each element
    slot_keep: torch.Tensor  # [L, 1]: 0 for the cls slot, 1 for the patches

    @classmethod
    def build(cls, lengths: Sequence[int], slots: int, like: torch.Tensor) -> ElementLayout:
        """From arange and comparisons on the device: no host-to-device copy (which would sync)."""
        dev = like.device
        frame = torch.arange(sum(lengths), device=dev)
        element = torch.zeros_like(frame)
        for start in itertools.accumulate(lengths[:-1]):
            element += frame >= start
        index = torch.arange(len(lengths), device=dev)[:, None]
        member = element[None, :] == index
        average = (member / member.sum(1, keepdim=True)).to(like.dtype)
        first = (element[None, :] < index).sum(1)
        slot_keep = (torch.arange(slots, device=dev) > 0).to(like.dtype)[:, None]
        return cls(element, average, first, slot_keep)


class Attention(nn.Module):
    """Multi-head self-attention over the middle axis of [M, S, D] (timm's qkv and proj)."""

    def __init__(self, dim: int, heads: int, attn: str = "sdpa"):
        super().__init__()
        if dim % heads:
            raise SefarError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.attn_impl = check_attn(attn)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, length, d = x.shape
        q, k, v = self.qkv(x).view(m, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v, manual=self.attn_impl == "manual")
        return self.proj(out.transpose(1, 2).reshape(m, length, d))


class ElementAttention(Attention):
    """Temporal attention of the tokens [B, K, L, D] within each element; on the SDPA path the
    installed kernel (`TimeSformer.set_temporal_kernel`) computes it when there is one."""

    kernel: TemporalKernel | None = None

    def forward(self, x: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        if self.kernel is not None and self.attn_impl == "sdpa":
            return self.proj(self.kernel(qkv, element, self.heads))
        return self.proj(element_attention(qkv, element, self.heads, manual=self.attn_impl == "manual"))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _per_frame(keep: torch.Tensor | None, layout: ElementLayout) -> torch.Tensor | None:
    """Per-element keep scales [B, G] -> [B, K, 1, 1], each frame taking its element's."""
    return None if keep is None else keep.index_select(1, layout.element)[:, :, None, None]


def _residual(x: torch.Tensor, branch: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return x + branch if keep is None else torch.addcmul(x, branch, keep)


class Block(nn.Module):
    """One divided space-time block on tokens [B, K, L, D] (module docstring)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, drop_path: float, attn: str):
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.temporal_attn = ElementAttention(dim, heads, attn)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, attn)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.drop_path = drop_path

    def _keep(self, x: torch.Tensor, layout: ElementLayout) -> torch.Tensor | None:
        """DropPath's keep scales per (clip, element) [B, G]: 0 or 1/(1-p); None when off."""
        if self.drop_path == 0.0 or not self.training:
            return None
        keep = 1.0 - self.drop_path
        return x.new_empty((x.shape[0], layout.average.shape[0])).bernoulli_(keep) / keep

    def forward(self, x: torch.Tensor, layout: ElementLayout) -> torch.Tensor:
        b, k, slots, d = x.shape

        # Temporal attention within each element, slot by slot; the cls slot keeps its value.
        res = self.temporal_fc(self.temporal_attn(self.temporal_norm1(x), layout.element))
        keep = _per_frame(self._keep(x, layout), layout)
        x = torch.addcmul(x, res, layout.slot_keep if keep is None else keep * layout.slot_keep)

        # Spatial attention per frame; each element's cls takes the mean of its frames' cls results.
        res = self.attn(self.norm1(x).flatten(0, 1)).view(b, k, slots, d)
        keep = self._keep(x, layout)
        cls_res = layout.average @ res[:, :, 0]
        if keep is not None:
            cls_res = cls_res * keep[:, :, None]
        cls = x[:, :, 0] + cls_res.index_select(1, layout.element)  # one value per element: copies stay equal
        x = _residual(x, res, _per_frame(keep, layout))
        x[:, :, 0] = cls

        return _residual(x, self.mlp(self.norm2(x)), _per_frame(self._keep(x, layout), layout))


class TimeSformer(nn.Module):
    """Divided space-time ViT; returns the final-LN cls token of each clip, or of each of its elements.

    Parameters are created by the constructor but only initialised by
    `reset_parameters(generator)`, so a model can be built on the meta device first.
    """

    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: int = 4,
        drop_path: float = 0.1,
        attn: str = "sdpa",
        pos_embed_std: float = 0.02,
        temporal_kernel: TemporalKernel | None = None,
    ):
        super().__init__()
        if img_size < patch_size or img_size % patch_size:
            raise SefarError(f"img_size {img_size} must be a positive multiple of the patch size {patch_size}")
        if not 0.0 <= drop_path < 1.0:
            raise SefarError(f"drop_path {drop_path} must be in [0, 1)")
        self.img_size = img_size
        self.pos_embed_std = float(pos_embed_std)  # timm's 0.02; larger helps from scratch (see SefarNet)
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.num_patches = self.grid**2
        self.dim = dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + self.num_patches, dim))
        # Stochastic depth rate grows linearly from 0 at the first block to drop_path at the last.
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, r, attn) for r in rates)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.grad_checkpointing = False
        self.set_temporal_kernel(temporal_kernel)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """timm ViT initialisation (truncated normal 0.02; pos_embed at `pos_embed_std`), temporal_fc zero."""
        nn.init.trunc_normal_(self.pos_embed, std=self.pos_embed_std, generator=generator)
        nn.init.normal_(self.cls_token, std=1e-6, generator=generator)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for blk in self.blocks:
            # Zero temporal_fc: a fresh block adds nothing from time, so ImageNet weights start as a ViT.
            nn.init.zeros_(blk.temporal_fc.weight)
            nn.init.zeros_(blk.temporal_fc.bias)

    def set_attention(self, attn: str) -> None:
        """Switch every attention layer between "sdpa" and "manual" (same numbers)."""
        check_attn(attn)
        for module in self.modules():
            if isinstance(module, Attention):
                module.attn_impl = attn

    def set_temporal_kernel(self, kernel: TemporalKernel | None) -> None:
        """Compute the temporal attention with `kernel` (same arguments and result as
        `ops.attention.element_attention`; e.g. `kernels.element_attention`, Triton on CUDA) on
        the SDPA path; None: with `ops.attention` (the "manual" path always is)."""
        for module in self.modules():
            if isinstance(module, ElementAttention):
                module.kernel = kernel

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def tokens(self, frames: torch.Tensor, time_embed: torch.Tensor | None = None) -> torch.Tensor:
        """Frames [B, K, 3, S, S] -> tokens [B, K, 1 + N, D] (module docstring), in the patch embedding's dtype.

        `time_embed` ([B or 1, K, D]) is added to every patch of each frame; the cls token gets
        no time embedding (as in TimeSformer)."""
        b, k = frames.shape[:2]
        patches = self.patch_embed.proj(frames.flatten(0, 1)).flatten(2).transpose(1, 2)
        dtype = patches.dtype  # bf16 under autocast: the embeddings follow, so the stream stays bf16
        patches = patches.view(b, k, self.num_patches, self.dim) + self.pos_embed[:, 1:].to(dtype)
        if time_embed is not None:
            patches = patches + time_embed.to(dtype)[:, :, None]
        cls = (self.cls_token + self.pos_embed[:, :1]).to(dtype)
        return torch.cat([cls[:, None].expand(b, k, 1, self.dim), patches], dim=2)

    def forward_elements(self, frames: torch.Tensor, lengths: Sequence[int],
                         time_embed: torch.Tensor | None = None) -> torch.Tensor:
        """Clips [B, K, 3, S, S] whose K frames are elements of `lengths` (in order) -> the
        final-LN cls feature of each element [B, G, D]. `time_embed` as in `tokens`."""
        x = self.tokens(frames, time_embed)
        layout = ElementLayout.build(lengths, x.shape[2], x)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, layout, use_reentrant=False)
            else:
                x = blk(x, layout)
        return self.norm(x[:, :, 0].index_select(1, layout.first))

    def forward(self, frames: torch.Tensor, time_embed: torch.Tensor | None = None) -> torch.Tensor:
        """Clips [B, T, 3, S, S], all T frames one element -> cls features [B, D]."""
        return self.forward_elements(frames, [frames.shape[1]], time_embed)[:, 0]
