"""TimeSformer backbone: a ViT with divided space-time attention.

Each block does, pre-LN with residuals:
  1. temporal attention over the T frames of each patch position, then
     `temporal_fc` (zero-initialised, so a fresh block starts as a plain ViT block);
  2. spatial attention over [cls, patches] of each frame, the cls token replicated
     per frame and its T outputs averaged back into one;
  3. the MLP on every token.
Parameter names follow timm's ViT (patch_embed.proj, cls_token, pos_embed,
blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}, norm) plus
blocks.i.{temporal_norm1,temporal_attn.qkv,temporal_attn.proj,temporal_fc}, so
ImageNet ViT weights load by name.

Tokens travel as one tensor [B, 1 + T*N, D], frame-major (frame t's patches are
tokens 1 + t*N ... (t+1)*N), so the spatial reshape is a view.

The forward has no host syncs and no data-dependent Python branches (only
shape-based ones), so torch.compile captures it with static shapes.

DropPath drops a whole residual branch per clip (per sample of the batch). The
reference TimeSformer drops per (clip, patch) in the temporal branch and per
(clip, frame) in the spatial branch and applies temporal_fc after the drop; we
use standard per-sample stochastic depth on the full branch. DropPath draws from
torch's device RNG (as nn.Dropout does), which torch.compile and CUDA graphs can
capture; it is not a Dropout and stays off in eval mode, MC-dropout included.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sefar_fast.errors import SefarError

ATTN_IMPLS = ("sdpa", "manual")
LN_EPS = 1e-6  # timm ViT / reference


def check_attn(attn: str) -> str:
    if attn not in ATTN_IMPLS:
        raise SefarError(f"unknown attention implementation {attn!r}: choose one of {', '.join(ATTN_IMPLS)}")
    return attn


class Attention(nn.Module):
    """Multi-head self-attention over the middle axis of [M, L, D]."""

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
        if self.attn_impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            # Reference style: explicit softmax(q k^T / sqrt(d)) v, materialising the attention matrix.
            scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)
            out = scores.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(m, length, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero the branch `x` [B, ...] for a random subset of samples, scaling survivors by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * (mask / keep)


class Block(nn.Module):
    """One divided space-time block on tokens [B, 1 + T*N, D]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, drop_path: float, attn: str):
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.temporal_attn = Attention(dim, heads, attn)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, attn)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        b, length, d = x.shape
        t = num_frames
        n = (length - 1) // t
        cls, patches = x[:, :1], x[:, 1:]

        # Temporal attention: sequences of T tokens, one per (clip, patch position).
        seq = patches.reshape(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)
        res = self.temporal_fc(self.temporal_attn(self.temporal_norm1(seq)))
        res = res.view(b, n, t, d).transpose(1, 2).reshape(b, t * n, d)
        patches = patches + drop_path(res, self.drop_path, self.training)

        # Spatial attention: per frame, [cls, N patches]; the cls token is shared by the frames.
        frames = torch.cat([cls.expand(b, t, d).reshape(b * t, 1, d), patches.reshape(b * t, n, d)], dim=1)
        res = self.attn(self.norm1(frames))
        res_cls = res[:, 0].view(b, t, d).mean(dim=1, keepdim=True)
        res = torch.cat([res_cls, res[:, 1:].reshape(b, t * n, d)], dim=1)
        x = torch.cat([cls, patches], dim=1) + drop_path(res, self.drop_path, self.training)

        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class TimeSformer(nn.Module):
    """Divided space-time ViT; returns the final-LN cls token of each clip.

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

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def embed_patches(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [M, 3, S, S] -> patch tokens [M, N, D] with the spatial position embedding added."""
        tokens = self.patch_embed.proj(frames).flatten(2).transpose(1, 2)
        return tokens + self.pos_embed[:, 1:]

    def forward_tokens(self, patches: torch.Tensor, time_embed: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens [B, T, N, D] (spatial position already added) -> cls feature [B, D].

        `time_embed` ([B or 1, T, D]) is added to every patch of each frame; the cls
        token gets no time embedding (as in TimeSformer).
        """
        b, t, n, d = patches.shape
        if time_embed is not None:
            patches = patches + time_embed.unsqueeze(2)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, 1, d)
        x = torch.cat([cls, patches.reshape(b, t * n, d)], dim=1)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, t, use_reentrant=False)
            else:
                x = blk(x, t)
        return self.norm(x[:, 0])

    def forward(self, frames: torch.Tensor, time_embed: torch.Tensor | None = None) -> torch.Tensor:
        """Clips [B, T, 3, S, S] -> cls features [B, D]."""
        b, t = frames.shape[:2]
        tokens = self.embed_patches(frames.flatten(0, 1))
        return self.forward_tokens(tokens.view(b, t, self.num_patches, self.dim), time_embed)
