"""`sefar export`: ONNX (run in onnxruntime) and TorchScript match the checkpoint's network; the doc's lines run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli

from sefar_fast.checkpoint import load_weights
from sefar_fast.eval.evaluate import load_model
from sefar_fast.eval.export import read_spec

DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"


def _inputs(shape, n=3):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def test_onnx_export_runs_in_onnxruntime_and_matches_torch(tiny_run, tmp_path, monkeypatch, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "teacher.onnx"
    code, err = run_cli(["export", tiny_run.best, "--out", out], monkeypatch, capsys)
    assert code == 0, err
    ckpt = load_weights(tiny_run.best)
    _, teacher = load_model(ckpt, "teacher", torch.device("cpu"))
    spec = read_spec(out)
    assert spec["model"] == "teacher" and spec["class_names"] == ckpt.class_names
    assert spec["elements"] == ckpt.config["method"]["elements"] and spec["crop"] == ckpt.config["data"]["crop"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    k, crop = sum(spec["elements"]), spec["crop"]
    assert (inp.name, inp.shape, outp.name) == ("clip", [1, k, 3, crop, crop], "logits")
    for x in _inputs((1, k, 3, crop, crop)):
        got = session.run(None, {"clip": x.numpy()})[0]
        with torch.no_grad():
            want = teacher(x).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_torchscript_export_of_the_student_matches_torch(tiny_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "student.pt"
    code, err = run_cli(["export", tiny_run.best, "--format", "torchscript", "--model", "student", "--out", out],
                        monkeypatch, capsys)
    assert code == 0, err
    _, student = load_model(load_weights(tiny_run.best), "student", torch.device("cpu"))
    spec = read_spec(out)
    assert spec["model"] == "student"
    scripted = torch.jit.load(str(out))
    k, crop = sum(spec["elements"]), spec["crop"]
    for x in _inputs((1, k, 3, crop, crop)):
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), student(x), atol=1e-5, rtol=0)


def test_the_documented_lines_score_a_video_as_sefar_predict_does(tiny_run, tmp_path, monkeypatch, capsys):
    """The code block of docs/export.md, run on a video of a val clip, gives sefar predict's probabilities."""
    pytest.importorskip("onnxruntime")
    import av  # noqa: F401  (PyAV writes the test video)

    from sefar_fast.data.store import ClipStore
    from sefar_fast.eval.predict import predict_videos

    store = ClipStore.open(tiny_run.store)
    clip = store.indices("val")[0]
    rec = store.records[clip]
    video = tmp_path / "clip.mp4"
    _write_video(video, store.read_frames(clip, range(rec.num_frames)))
    onnx_file = tmp_path / "best-teacher.onnx"
    code, err = run_cli(["export", tiny_run.best, "--out", onnx_file], monkeypatch, capsys)
    assert code == 0, err

    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, str(DOC), "exec"), scope)  # the doc's own lines, as a reader would run them
    want = predict_videos(tiny_run.best, [video], top_k=len(scope["spec"]["class_names"]), show=False)
    want_probs = {p["class_id"]: p["probability"] for p in want["predictions"][0]["top_k"]}
    got = scope["probs"].numpy()
    assert got.shape == (len(want_probs),)
    np.testing.assert_allclose(got, [want_probs[c] for c in range(len(got))], atol=1e-5)


def test_a_bad_format_or_suffix_is_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    code, err = run_cli(["export", tiny_run.best, "--format", "tflite"], monkeypatch, capsys)
    assert code == 2 and "--format 'tflite' must be one of onnx, torchscript" in err
    code, err = run_cli(["export", tiny_run.best, "--out", tmp_path / "x.pt"], monkeypatch, capsys)
    assert code == 2 and "must end in .onnx" in err


def _write_video(path: Path, frames: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
