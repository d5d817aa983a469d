"""Pretrain a ViT backbone for the built-in synth data: its "ImageNet weights".

    sefar pretrain-synth --out synth-vit-pico.safetensors

Real fine-grained data starts from a ViT pretrained on ImageNet; from scratch, the synth data's
`vit-pico` needs hundreds of epochs to leave chance, and which seeds do is a lottery
(docs/results.md). This trains the same ViT on single synth frames to regress the figure's
16 body points (`data.synth_poses`: fresh clips, never the data set's, with no class and no
time), then writes the backbone in timm's ViT layout, where `--pretrained` reads it like any
ImageNet file: spatial attention copied to the temporal one, the time embeddings and the
fusion head left at their init.

Frames go through the trainer's own weak view (scale jitter, crop, flip; `ops.views`) at the
synth preset's sizes, so the backbone sees what training shows it. A point's target is its
place in the crop, x and y in [-1, 1] (mirrored with the view), and its depth. The network
is a TimeSformer fed one frame at a time with its temporal parts frozen at their init, where
they add nothing (temporal_fc is zero): a plain ViT, whose weights are exactly what is saved.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from sefar_fast.config import build_config
from sefar_fast.console import progress_bar
from sefar_fast.data.synth_poses import pose_frames
from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write
from sefar_fast.models.sizes import arch_spec
from sefar_fast.models.timesformer import TimeSformer
from sefar_fast.ops.views import build_views, draw_view_params, eval_view_params

POINTS = 16
DEPTH_SCALE = 0.2  # world units: depths are divided by this, to weigh about as much as a crop coordinate
TEMPORAL_PARTS = (".temporal_norm1.", ".temporal_attn.", ".temporal_fc.")


def is_temporal(name: str) -> bool:
    """Whether a backbone parameter belongs to the temporal attention, which single frames leave unused."""
    return any(part in f".{name}" for part in TEMPORAL_PARTS)


@dataclass
class PretrainSettings:
    arch: str = "vit-pico"
    seed: int = 0
    steps: int = 8000
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    clips: int = 6000  # pose clips to draw frames from; a twentieth more are held out to measure
    frames_per_clip: int = 8
    workers: int = 1  # processes rendering the pose clips (the frames do not depend on it)


def targets(points: torch.Tensor, box: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Points [B, 16, 3] in frame pixels -> targets [B, 48]: x, y in the crop box, in [-1, 1] across it
    (x mirrored for a flipped view), and depth / DEPTH_SCALE."""
    y0, x0, h, w = box.unbind(1)
    x = (points[..., 0] - x0[:, None]) / w[:, None] * 2 - 1
    y = (points[..., 1] - y0[:, None]) / h[:, None] * 2 - 1
    x = torch.where(flip[:, None], -x, x)
    return torch.stack([x, y, points[..., 2] / DEPTH_SCALE], -1).flatten(1)


class PoseNet(nn.Module):
    """A TimeSformer on single frames, its cls feature regressed to the 16 points."""

    def __init__(self, arch: str, img_size: int):
        super().__init__()
        spec = arch_spec(arch)
        self.backbone = TimeSformer(img_size=img_size, patch_size=spec.patch_size, dim=spec.dim, depth=spec.depth,
                                    heads=spec.heads, mlp_ratio=spec.mlp_ratio, drop_path=0.0)
        self.head = nn.Linear(spec.dim, POINTS * 3)

    def reset_parameters(self, generator: torch.Generator) -> None:
        self.backbone.reset_parameters(generator)
        with torch.no_grad():
            nn.init.trunc_normal_(self.head.weight, std=0.02, generator=generator)
            nn.init.zeros_(self.head.bias)
        for name, param in self.backbone.named_parameters():
            param.requires_grad_(not is_temporal(name))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, 1, 3, S, S] -> targets [B, 48]."""
        return self.head(self.backbone(frames))

    def vit_state(self) -> dict[str, torch.Tensor]:
        """The backbone in timm ViT names (no temporal parts)."""
        return {k: v.detach().clone().contiguous() for k, v in self.backbone.state_dict().items() if not is_temporal(k)}


def _lr(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of the steps, then cosine to zero."""
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def git_commit() -> str:
    """The package's git commit, with "-dirty" when its files differ from it; "unknown" outside a checkout."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", str(here.parent))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def pretrain_synth(out: str | Path, settings: PretrainSettings, command: str) -> dict:
    """Train the backbone, write it to `out` (safetensors, timm ViT names, provenance in the metadata)
    and return its summary: settings, the held-out point error and where it was written."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise SefarError(f"--out {out}: the backbone is written as .safetensors; give a name ending in it")
    s = settings
    if s.steps < 1 or s.batch_size < 1:
        raise SefarError(f"steps={s.steps} and batch_size={s.batch_size} must be at least 1")
    d = build_config("synth", None, {"model.arch": s.arch}).data  # the sizes and normalisation training uses
    held_out = max(1, s.clips // 20)
    with progress_bar("pose frames", s.clips + held_out) as bar:
        def tick(done, total):
            bar.advance(1)

        frame_hw = (d.frame_size[0], d.frame_size[1])
        train_set = pose_frames(s.seed, s.clips, s.frames_per_clip, frame_hw, workers=s.workers, progress=tick)
        val_set = pose_frames(s.seed, held_out, s.frames_per_clip, frame_hw, first_clip=s.clips, workers=s.workers,
                              progress=tick)
    net = PoseNet(s.arch, d.crop)
    net.reset_parameters(torch.Generator().manual_seed(s.seed))
    fit(net, train_set, d, s)
    summary = {"arch": s.arch, "settings": asdict(s), "command": command, "commit": git_commit(),
               "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "held_out_point_error_px": point_error(net, val_set, d), "frame_size": list(frame_hw),
               "crop": d.crop, "train_frames": len(train_set), "held_out_frames": len(val_set)}
    metadata = {"format": "timm-vit", "sefar_pretrain": json.dumps(summary)}
    atomic_write(out, lambda tmp: save_file(net.vit_state(), tmp, metadata=metadata))
    return {**summary, "out": str(out)}


def fit(net: PoseNet, data, d, s: PretrainSettings) -> None:
    """AdamW on the point regression: random frames, each through the trainer's weak view (with flips)."""
    params = [p for p in net.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": s.weight_decay},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]  # no decay on norms, biases
    opt = torch.optim.AdamW(groups, lr=s.lr)
    frames, points = torch.from_numpy(data.frames), torch.from_numpy(data.points)
    frame_hw = tuple(frames.shape[1:3])
    rng = np.random.default_rng([s.seed, 1])
    net.train()
    with progress_bar(f"pretrain {s.arch}", s.steps) as bar:
        for step in range(s.steps):
            idx = torch.from_numpy(rng.integers(0, len(frames), s.batch_size))
            view = draw_view_params(s.batch_size, [1], frame_hw, d.crop, "weak", rng, flip=True,
                                    scale_range=tuple(d.scale_range), ref_short=float(min(frame_hw)))
            x = build_views(frames[idx][:, None], view, d.mean, d.std)
            loss = F.mse_loss(net(x), targets(points[idx], view.box, view.flip))
            for group in opt.param_groups:
                group["lr"] = _lr(step, s.steps, s.lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 20 == 0:
                bar.advance(1, loss=loss.item())
            else:
                bar.advance(1)


@torch.no_grad()
def point_error(net: PoseNet, data, d) -> float:
    """Mean distance in crop pixels between predicted and true x, y points, on centre views of `data`."""
    net.eval()
    frame_hw = data.frames.shape[1:3]
    total, count = 0.0, 0
    for start in range(0, len(data), 512):
        f = torch.from_numpy(data.frames[start:start + 512])
        view = eval_view_params(len(f), frame_hw, d.crop, 0, 1)
        pred = net(build_views(f[:, None], view, d.mean, d.std)).view(len(f), POINTS, 3)
        true = targets(torch.from_numpy(data.points[start:start + 512]), view.box, view.flip).view(len(f), POINTS, 3)
        total += float((pred[..., :2] - true[..., :2]).norm(dim=-1).sum()) * d.crop / 2
        count += len(f) * POINTS
    return total / count
