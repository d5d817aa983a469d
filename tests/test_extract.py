"""`sefar extract`: per-clip features with clip ids, checked for shapes and ids, for giving the
accuracy training recorded, and for a clip's fused feature computed by hand from its views."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from sefar_fast.checkpoint import load_weights, save_weights
from sefar_fast.cli.app import app
from sefar_fast.errors import SefarError
from sefar_fast.eval.evaluate import load_model, open_checkpoint_data
from sefar_fast.eval.extract import extract_features, load_features
from sefar_fast.eval.predict import clip_views


@pytest.mark.slow
def test_extract_shapes_ids_and_accuracy(tiny_run, tmp_path):
    out = tmp_path / "feats.safetensors"
    result = CliRunner().invoke(app, ["extract", str(tiny_run.last), "--out", str(out), "--split", "val"])
    assert result.exit_code == 0, result.output
    tensors, meta = load_features(out)
    ckpt, cfg, ds, _ = open_checkpoint_data(tiny_run.last)
    n = len(ds.val)
    assert set(tensors) == {"fused", "element_0", "element_1", "element_2", "probs", "labels"}
    assert tensors["fused"].shape == (n, 256) and tensors["fused"].dtype == torch.float32
    for i in range(3):
        assert tensors[f"element_{i}"].shape == (n, 32)  # vit-test width
    assert tensors["probs"].shape == (n, 20)
    assert meta["clip_ids"] == [ds.store.records[i].clip_id for i in ds.val]
    assert tensors["labels"].tolist() == [ds.store.records[i].label for i in ds.val]
    assert meta["class_names"] == ckpt.class_names and meta["checkpoint"] == str(tiny_run.last)
    assert meta["model"] == "teacher" and meta["views"] == "2x2" and meta["elements"] == [2, 2, 4]
    # The averaged probabilities are the teacher's eval scores: same top-1 as training recorded.
    top1 = (tensors["probs"].argmax(1) == tensors["labels"]).double().mean().item()
    assert top1 == load_weights(tiny_run.last).meta["metrics"]["val_top1_teacher"]
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


@pytest.mark.slow
def test_fused_feature_is_the_mean_over_views(tiny_run, tmp_path):
    ckpt = load_weights(tiny_run.last)
    meta = dict(ckpt.meta)
    meta["config"] = {**ckpt.config, "data": {**ckpt.config["data"], "backend": "pil"}}
    pil_ckpt = tmp_path / "pil.safetensors"
    save_weights(pil_ckpt, ckpt.student, ckpt.teacher, meta)
    out = tmp_path / "student.safetensors"
    extract_features(pil_ckpt, out, which="student", views="1x2")
    tensors, meta = load_features(out)
    assert meta["model"] == "student" and meta["views"] == "1x2"

    ckpt, cfg, ds, dev = open_checkpoint_data(pil_ckpt)
    _, student = load_model(ckpt, "student", dev)
    row = 3
    rec = ds.store.records[ds.val[row]]
    frames = ds.store.read_frames(ds.val[row], range(rec.num_frames))
    with torch.no_grad():
        x = clip_views(frames, cfg, (1, 2), dev)  # the two spatial views
        cls = student.element_cls(x)
        fused = student.features(x)
    torch.testing.assert_close(tensors["fused"][row], fused.mean(0), atol=1e-5, rtol=1e-5)
    for i in range(3):
        torch.testing.assert_close(tensors[f"element_{i}"][row], cls[i].mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_extract_rejects_bad_output_name(tiny_run, tmp_path):
    with pytest.raises(SefarError, match="safetensors"):
        extract_features(tiny_run.last, tmp_path / "feats.npz")
