"""`sefar predict`: classify video files with a checkpoint, top-k class names with probabilities.

    sefar predict runs/<run>/best.safetensors clip1.mp4 clip2.webm --top-k 5 --json preds.json

Each file is one clip, prepared as the training data was: decoded with PyAV (any codec
FFmpeg has; on CUDA too, where the frames are then moved to the GPU), the short side
brought down to 256 as `sefar prepare` does; the frames the T x S deterministic views
of `sefar eval` use are scaled to cover the run's frame size and centre-cropped (the
loader's `cover_box`, PIL bilinear as its reference decoder), and the softmax is
averaged over the views.
A file that cannot be read is reported in one line naming it (and its codec), after the
results of the others; the command then exits with status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from rich.markup import escape
from rich.table import Table

from sefar_fast import kernels
from sefar_fast.checkpoint import load_weights
from sefar_fast.config import config_from_dict, eval_views, set_value, validate
from sefar_fast.console import console, err_console, progress_bar
from sefar_fast.data.pipeline import cover_box
from sefar_fast.data.sampling import eval_frames
from sefar_fast.data.video import probe_codec, read_clip
from sefar_fast.distributed import pick_device
from sefar_fast.errors import SefarError
from sefar_fast.eval.evaluate import inference_model, use_amp
from sefar_fast.ops.views import eval_view_params

PREPARE_SHORT_SIDE = 256  # `sefar prepare`'s default short side, which the training frames went through


def fit_frames(frames: np.ndarray, frame_size: Sequence[int]) -> np.ndarray:
    """uint8 [L, H, W, 3] -> [L, H0, W0, 3]: scaled to cover H0 x W0 (aspect kept) and centre-cropped,
    bilinear and antialiased, exactly as the loader's PIL decoder treats a stored frame."""
    h0, w0 = int(frame_size[0]), int(frame_size[1])
    length, height, width = frames.shape[:3]
    if (height, width) == (h0, w0):
        return np.ascontiguousarray(frames)
    y0, x0, y1, x1 = cover_box(height, width, h0, w0)
    out = np.empty((length, h0, w0, 3), np.uint8)
    for i in range(length):
        out[i] = np.asarray(Image.fromarray(frames[i]).resize((w0, h0), Image.BILINEAR, box=(x0, y0, x1, y1)))
    return out


def clip_views(frames: np.ndarray, cfg, views: tuple[int, int], device, out_dtype=torch.float32) -> torch.Tensor:
    """All T*S evaluation views of one clip of uint8 frames [L, H, W, 3] (any size: only the frames
    the views use are fitted to the run's frame size): float [T*S, K, 3, crop, crop], view t*S + s."""
    t_views, s_views = views
    picks = np.stack([eval_frames(len(frames), cfg.method.elements, t, t_views) for t in range(t_views)])
    used, where = np.unique(picks, return_inverse=True)  # fit each used frame once
    fitted = torch.from_numpy(fit_frames(frames[used], cfg.data.frame_size)).to(device)
    clips = fitted[torch.from_numpy(where.reshape(picks.shape)).to(fitted.device)]  # [T, K, H0, W0, 3]
    frame_hw = (int(fitted.shape[1]), int(fitted.shape[2]))
    per_s = [kernels.build_views(clips, eval_view_params(t_views, frame_hw, cfg.data.crop, s, s_views),
                         cfg.data.mean, cfg.data.std, out_dtype) for s in range(s_views)]
    return torch.stack(per_s, dim=1).flatten(0, 1)


@torch.no_grad()
def clip_probabilities(model, frames: np.ndarray, cfg, views: tuple[int, int], device, *,
                       amp: bool = False, batch_size: int | None = None) -> np.ndarray:
    """Mean softmax over the T*S views of one clip (uint8 frames [L, H, W, 3]): float64 [C]."""
    dtype = torch.bfloat16 if amp else torch.float32
    x = clip_views(frames, cfg, views, device, dtype)
    step = batch_size or cfg.eval.batch_size
    total = None
    for chunk in x.split(step):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            logits = model(chunk)
        probs = torch.softmax(logits.float(), -1).double().sum(0)
        total = probs if total is None else total + probs
    return (total / x.shape[0]).cpu().numpy()


def read_video_frames(path: str | Path, frame_size: Sequence[int]) -> np.ndarray:
    """Decode a video file (or JPEG frame folder) as `sefar prepare` does: uint8 [L, H, W, 3] with the
    short side at most 256 (or the run's frame size, if larger). SefarError naming the file and codec
    when it cannot be decoded."""
    return read_clip(path, short_side=max(PREPARE_SHORT_SIDE, min(int(v) for v in frame_size)))


def top_classes(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The k most probable classes, highest first (ties: the lower class id first, as argmax)."""
    order = np.argsort(-probs, kind="stable")[: min(k, len(probs))]
    return [{"rank": r + 1, "class_id": int(c), "name": class_names[c], "probability": float(probs[c])}
            for r, c in enumerate(order)]


def predict_videos(checkpoint, videos: Sequence[str | Path], *, top_k: int = 5, which: str = "teacher",
                   device: str | None = None, views: str | None = None, show: bool = True) -> dict[str, Any]:
    """Top-k predictions for each video file; prints a table unless show=False.

    Returns {"checkpoint", "model", "views", "predictions": [{"video", "codec", "frames",
    "top_k": [{"rank", "class_id", "name", "probability"}]}], "failed": [{"video", "error"}]}; each
    failure is also printed as an error line. A single video that fails is a SefarError.
    """
    if top_k < 1:
        raise SefarError(f"--top-k {top_k} must be at least 1")
    paths = [Path(v) for v in videos]
    if not paths:
        raise SefarError("no video files given; pass one or more paths after the checkpoint")
    ckpt = load_weights(checkpoint)
    cfg = config_from_dict(ckpt.config)
    if views is not None:
        set_value(cfg, "eval.views", views)
        validate(cfg)
    dev = pick_device(device or cfg.run.device)
    used, model = inference_model(ckpt, which, dev)
    t_s = eval_views(cfg)
    amp = use_amp(cfg, dev)
    names = ckpt.class_names
    predictions, failed = [], []
    with progress_bar("predict", len(paths), enabled=show) as bar:
        for p in paths:
            try:
                predictions.append(predict_one(model, p, cfg, t_s, dev, amp, names, top_k))
            except SefarError as e:  # one bad file does not hide the others' results
                failed.append({"video": str(p), "error": str(e)})
            bar.advance(1)
    if failed and not predictions and len(paths) == 1:
        raise SefarError(failed[0]["error"])
    result = {"checkpoint": str(checkpoint), "model": used, "views": f"{t_s[0]}x{t_s[1]}",
              "predictions": predictions, "failed": failed}
    if show and predictions:
        table = Table(title=f"{escape(Path(checkpoint).name)} ({used}, {t_s[0]}x{t_s[1]} views)", header_style="bold")
        table.add_column("video", overflow="fold")  # fold, not cut: the path is how a person finds the file
        table.add_column("#", justify="right")
        table.add_column("class", overflow="fold")
        table.add_column("probability", justify="right")
        for pred in predictions:
            video = Path(pred["video"])
            for row in pred["top_k"]:
                # the file name on a line of its own, so folding a long path never cuts it
                where = f"{escape(video.name)}\n[dim]{escape(str(video.parent))}[/]"
                table.add_row(where if row["rank"] == 1 else "", str(row["rank"]),
                              f"{escape(row['name'])} [dim]({row['class_id']})[/]", f"{100 * row['probability']:.1f}%",
                              end_section=row["rank"] == len(pred["top_k"]))
        console.print(table)
    for f in failed:
        err_console.print(f"[bold red]error:[/] {escape(f['error'])}", soft_wrap=True)
    return result


def predict_one(model, path: Path, cfg, views, device, amp, names, top_k) -> dict[str, Any]:
    """The prediction for one video file; SefarError naming the file when it cannot be given."""
    if not path.exists():
        raise SefarError(f"video {path} does not exist")
    frames = read_video_frames(path, cfg.data.frame_size)
    probs = clip_probabilities(model, frames, cfg, views, device, amp=amp)
    if not np.isfinite(probs).all():
        raise SefarError(f"video {path}: the model gives non-finite scores; the checkpoint cannot classify it")
    return {"video": str(path), "codec": "frames" if path.is_dir() else probe_codec(path),
            "frames": int(frames.shape[0]), "top_k": top_classes(probs, names, top_k)}
