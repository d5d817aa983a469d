"""`sefar export`: a checkpoint's network as a one-clip inference graph, ONNX or TorchScript.

    sefar export runs/<run>/best.safetensors                          # -> runs/<run>/best-teacher.onnx
    sefar export best.safetensors --format torchscript --model student --out student.pt

The graph takes `clip`, float32 [1, K, 3, S, S]: one view of one clip, its K = sum(elements)
frames grouped by element in config order (the context element last), sampled and normalised
as `sefar eval` does, and returns `logits`, float32 [1, C]. `sefar eval`'s score of a clip is
the mean softmax over its T x S views: docs/export.md shows the few lines that build the views
with sefar's own sampling and run the exported file on them.

The file carries what a reader needs to build its input (`SPEC_KEY`, JSON): class names,
elements, crop, frame size, mean and std, the views of the run's evaluation, and which model
(teacher or student) it holds; ONNX keeps it in the model's metadata, TorchScript as the extra
file `sefar.json`.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from sefar_fast.checkpoint import load_weights
from sefar_fast.config import Config, config_from_dict
from sefar_fast.errors import SefarError
from sefar_fast.eval.evaluate import inference_model
from sefar_fast.io import atomic_write

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
SPEC_KEY = "sefar"
OPSET = 18


def export_spec(cfg, class_names, model: str) -> dict[str, Any]:
    d = cfg.data
    return {"format": "sefar-export-1", "model": model, "class_names": list(class_names),
            "elements": list(cfg.method.elements), "crop": d.crop, "frame_size": list(d.frame_size),
            "mean": list(d.mean), "std": list(d.std), "views": cfg.eval.views,
            "input": "clip float32 [1, K, 3, S, S], frames grouped by element, normalised",
            "output": "logits float32 [1, C]"}


def export_model(checkpoint, *, fmt: str = "onnx", which: str = "teacher", out=None) -> dict[str, Any]:
    """Write the exported graph; returns {"out", "format", "model", "input_shape", "classes"}."""
    if fmt not in FORMATS:
        raise SefarError(f"--format {fmt!r} must be one of {', '.join(FORMATS)}")
    ckpt = load_weights(checkpoint)
    cfg = config_from_dict(ckpt.config)
    used, model = inference_model(ckpt, which, torch.device("cpu"))
    model.eval()
    # Attention written out (softmax(q k^T / sqrt(d)) v, the same numbers as SDPA and the Triton kernel):
    # what every ONNX runtime and TorchScript can run.
    model.set_attention("manual")
    out = Path(out) if out else Path(checkpoint).with_name(f"{Path(checkpoint).stem}-{used}{FORMATS[fmt]}")
    if out.suffix != FORMATS[fmt]:
        raise SefarError(f"--out {out} must end in {FORMATS[fmt]} for --format {fmt}")
    shape = (1, sum(cfg.method.elements), 3, cfg.data.crop, cfg.data.crop)
    example = torch.zeros(shape)
    spec = export_spec(cfg, ckpt.class_names, used)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notes on what they trace are not for the user
        if fmt == "onnx":
            atomic_write(out, lambda tmp: _write_onnx(model, example, tmp, spec))
        else:
            traced = torch.jit.trace(model, example)
            atomic_write(out, lambda tmp: torch.jit.save(traced, tmp, _extra_files={f"{SPEC_KEY}.json":
                                                                                     json.dumps(spec)}))
    return {"out": str(out), "format": fmt, "model": used, "input_shape": list(shape),
            "classes": len(ckpt.class_names)}


def _write_onnx(model, example: torch.Tensor, path: str, spec: dict) -> None:
    try:
        import onnx
    except ImportError:
        raise SefarError('--format onnx needs the ONNX exporter: pip install "sefar-fast[onnx]"') from None
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(model, (example,), path, input_names=["clip"], output_names=["logits"],
                          opset_version=OPSET, dynamo=True, verbose=False)
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, json.dumps(spec)
    onnx.save(proto, path)


def spec_config(spec: dict[str, Any]) -> Config:
    """A config holding what building the input views needs (elements, frames, crop, normalisation, views)."""
    return config_from_dict({"method": {"elements": spec["elements"]},
                             "data": {"frame_size": spec["frame_size"], "crop": spec["crop"], "mean": spec["mean"],
                                      "std": spec["std"]},
                             "eval": {"views": spec["views"]}})


def read_spec(path) -> dict[str, Any]:
    """The spec stored in an exported file (ONNX or TorchScript)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[SPEC_KEY])
    files = {f"{SPEC_KEY}.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files[f"{SPEC_KEY}.json"])
