"""`sefar extract`: per-clip features of a checkpoint, for downstream use (e.g. multimodal-model adapters).

    sefar extract runs/<run>/best.safetensors --split val --out feats.safetensors

For every clip of the split, the network runs on the same T x S deterministic views as
`sefar eval`, and each output is averaged over the views:

    fused       float32 [N, 256]   the fusion head's feature (`net.features`, before the dropout)
    element_<i> float32 [N, D]     the backbone's final-LN cls feature of element i (config order;
                                   the last element is the context one)
    probs       float32 [N, C]     mean softmax (what `sefar eval` scores)
    labels      int64   [N]        -1 = unknown

Row n is clip `clip_ids[n]`, in split order. The file's metadata (JSON strings) holds
format, clip_ids, class_names, checkpoint, model, data, split, views and elements. The
file is written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sefar_fast.checkpoint import load_weights
from sefar_fast.config import eval_views
from sefar_fast.console import console
from sefar_fast.errors import SefarError
from sefar_fast.eval.evaluate import (
    inference_model,
    open_checkpoint_data,
    split_indices,
    use_amp,
    view_batches,
)
from sefar_fast.io import atomic_write, ensure_writable

FEATURES_FORMAT = "sefar-features-1"


class FeatureSums:
    """Per-clip sums of several named float outputs over views, keyed by store record index."""

    def __init__(self, indices):
        self.row = {int(i): n for n, i in enumerate(indices)}
        self.sums: dict[str, np.ndarray] = {}
        self.views = np.zeros(len(self.row), np.int64)

    def add(self, index: np.ndarray, **outputs: np.ndarray) -> None:
        rows = np.array([self.row[int(i)] for i in index], np.int64)
        for name, value in outputs.items():
            value = np.asarray(value, np.float64)
            if name not in self.sums:
                self.sums[name] = np.zeros((len(self.row), value.shape[1]), np.float64)
            np.add.at(self.sums[name], rows, value)
        np.add.at(self.views, rows, 1)

    def means(self) -> dict[str, np.ndarray]:
        if (self.views == 0).any():
            missing = int((self.views == 0).sum())
            raise SefarError(f"{missing} clips received no view; the loader skipped clips (report this)")
        return {name: (s / self.views[:, None]).astype(np.float32) for name, s in self.sums.items()}


@torch.no_grad()
def extract_features(checkpoint, out, *, data=None, root=None, split="val", which="teacher", device=None,
                     views=None) -> dict[str, Any]:
    """Write the features of a split's clips to `out` (.safetensors); returns a summary dict."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise SefarError(f"--out {out} must end in .safetensors")
    ckpt = load_weights(checkpoint)
    if out.is_dir():
        raise SefarError(f"--out {out} is a folder; give a file name ending in .safetensors")
    ensure_writable(out.parent, "choose another --out")  # before the features are computed, not after
    ckpt, cfg, ds, dev = open_checkpoint_data(ckpt, data=data, root=root, views=views, device=device)
    indices = split_indices(ds, split)
    used, model = inference_model(ckpt, which, dev)
    t_s = eval_views(cfg)
    amp = use_amp(cfg, dev)
    sums = FeatureSums(indices)
    for vb in view_batches(ds, indices, cfg, dev, views=t_s, out_dtype=torch.bfloat16 if amp else torch.float32,
                           desc=f"extract {split} {used}"):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            cls = model.element_cls(vb.x)
            fused = model.fuse(cls)
            logits = model.head_logits(fused)  # eval mode: the head dropout is off
        outputs = {"fused": fused.float().cpu().numpy(),
                   "probs": torch.softmax(logits.float(), -1).cpu().numpy()}
        outputs.update({f"element_{i}": c.float().cpu().numpy() for i, c in enumerate(cls)})
        sums.add(vb.index.cpu().numpy(), **outputs)
    means = sums.means()
    tensors = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in means.items()}
    tensors["labels"] = torch.from_numpy(ds.labels(indices))
    clip_ids = [ds.store.records[i].clip_id for i in indices]
    meta = {"clip_ids": clip_ids, "class_names": list(ckpt.class_names), "checkpoint": str(checkpoint),
            "model": used, "data": cfg.data.name, "split": split, "views": f"{t_s[0]}x{t_s[1]}",
            "elements": list(cfg.method.elements)}
    metadata = {"format": FEATURES_FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    num_elements = len(cfg.method.elements)
    summary = {"out": str(out), "clips": len(indices), "model": used, "split": split, "views": meta["views"],
               "fused_dim": int(means["fused"].shape[1]),
               "element_dims": [int(means[f"element_{i}"].shape[1]) for i in range(num_elements)]}
    console.print(f"[green]features[/] {len(indices)} {split} clips ({used}, {meta['views']} views): fused "
                  f"[{len(indices)}, {summary['fused_dim']}], {num_elements} element cls "
                  f"[{len(indices)}, {summary['element_dims'][0]}] -> {out}")
    return summary


def load_features(path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a features file back: (tensors, metadata with its JSON values decoded)."""
    path = Path(path)
    if not path.is_file():
        raise SefarError(f"features file {path} does not exist")
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    if raw.get("format") != FEATURES_FORMAT:
        raise SefarError(f"{path} is not a sefar features file (no '{FEATURES_FORMAT}' metadata)")
    meta = {k: json.loads(v) for k, v in raw.items() if k != "format"}
    return load_file(str(path)), meta
