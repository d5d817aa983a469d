"""`sefar predict` on video files: an H.264 mp4 written here from a val clip's frames must get the
class probabilities that `sefar eval` gives that clip, and an undecodable file is one clear error."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from sefar_fast.checkpoint import load_weights, save_weights
from sefar_fast.cli.app import app
from sefar_fast.errors import SefarError
from sefar_fast.eval.evaluate import load_model, open_checkpoint_data, score_views
from sefar_fast.eval.predict import predict_videos, top_classes


def write_h264(path, frames: np.ndarray, fps: int = 25) -> None:
    """Encode uint8 RGB frames [T, H, W, 3] to an mp4: H.264 (libx264), 4:4:4 chroma, lossless quantiser,
    so only the RGB <-> YUV rounding separates the decoded frames from these."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _pil_checkpoint(src, dst, *, teacher=True):
    """A copy of a checkpoint whose config decodes stored frames with PIL (the loader's reference backend)."""
    ckpt = load_weights(src)
    meta = dict(ckpt.meta)
    meta["config"] = {**ckpt.config, "data": {**ckpt.config["data"], "backend": "pil"}}
    save_weights(dst, ckpt.student, ckpt.teacher if teacher else None, meta)
    return dst


@pytest.mark.slow
def test_predict_h264_matches_eval_scores(tiny_run, tmp_path):
    ckpt_path = _pil_checkpoint(tiny_run.last, tmp_path / "pil.safetensors")
    ckpt, cfg, ds, dev = open_checkpoint_data(ckpt_path)
    few = list(ds.val[:5])
    _, teacher = load_model(ckpt, "teacher", dev)
    eval_scores = score_views(teacher, ds, few, cfg, dev, views=(2, 2)).scores_by_id()
    clip = few[2]
    rec = ds.store.records[clip]
    video = tmp_path / f"{rec.clip_id}.mp4"
    write_h264(video, ds.store.read_frames(clip, range(rec.num_frames)))

    out = tmp_path / "pred.json"
    # A wide terminal: the table folds long paths, which would split the clip id across lines.
    result = CliRunner().invoke(app, ["predict", str(ckpt_path), str(video), "--top-k", "50", "--json", str(out)],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert rec.clip_id in result.output  # the table names the video
    pred = json.loads(out.read_text())
    assert pred["model"] == "teacher" and pred["views"] == "2x2"
    (entry,) = pred["predictions"]
    assert entry["codec"] == "h264" and entry["frames"] == rec.num_frames
    top = entry["top_k"]
    assert len(top) == 20 and [t["rank"] for t in top] == list(range(1, 21))  # k capped at the class count
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True)
    assert all(ckpt.class_names[t["class_id"]] == t["name"] for t in top)
    vector = np.zeros(20)
    vector[[t["class_id"] for t in top]] = probs
    assert abs(vector.sum() - 1) < 1e-6
    # Same probabilities as eval gives the stored clip (up to the codec's colour rounding), and closer
    # to them than to any other clip's.
    distance = {i: np.abs(vector - s).max() for i, s in eval_scores.items()}
    assert distance[clip] < 2e-4
    assert min(distance, key=distance.get) == clip


@pytest.mark.slow
def test_predict_falls_back_to_student_and_caps_top_k(tiny_run, tmp_path):
    ckpt_path = _pil_checkpoint(tiny_run.last, tmp_path / "student-only.safetensors", teacher=False)
    ckpt, cfg, ds, dev = open_checkpoint_data(ckpt_path)
    clip = ds.val[0]
    rec = ds.store.records[clip]
    video = tmp_path / "clip.mp4"
    write_h264(video, ds.store.read_frames(clip, range(rec.num_frames)))
    pred = predict_videos(ckpt_path, [video, video], top_k=3, which="teacher", views="1x1", show=False)
    assert pred["model"] == "student" and pred["views"] == "1x1"
    assert len(pred["predictions"]) == 2 and pred["predictions"][0] == pred["predictions"][1]
    assert len(pred["predictions"][0]["top_k"]) == 3


@pytest.mark.slow
def test_undecodable_video_is_one_error_naming_file_and_codec(tiny_run, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(SefarError) as err:
        predict_videos(tiny_run.last, [bad], show=False)
    message = str(err.value)
    assert "broken.mp4" in message and "codec" in message and "\n" not in message
    with pytest.raises(SefarError, match="does not exist"):
        predict_videos(tiny_run.last, [tmp_path / "missing.mp4"], show=False)


def test_top_classes_order_and_ties():
    probs = np.array([0.1, 0.3, 0.3, 0.05, 0.25])
    top = top_classes(probs, list("abcde"), 4)
    assert [t["class_id"] for t in top] == [1, 2, 4, 0]  # tie 1/2: lower id first, as argmax
    assert [t["name"] for t in top] == ["b", "c", "e", "a"]


@pytest.mark.slow
def test_bad_files_among_good_ones_are_each_reported_after_the_results(tiny_run, tmp_path, monkeypatch, capsys):
    from cli_runner import run_cli

    ckpt_path = _pil_checkpoint(tiny_run.last, tmp_path / "pil.safetensors")
    _, _, ds, _ = open_checkpoint_data(ckpt_path)
    rec = ds.store.records[ds.val[0]]
    good = tmp_path / "good.mp4"
    write_h264(good, ds.store.read_frames(ds.val[0], range(rec.num_frames)))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    out = tmp_path / "pred.json"
    code, err = run_cli(["predict", ckpt_path, bad, good, tmp_path / "missing.mp4", "--views", "1x1",
                         "--json", out], monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), err
    assert "broken.mp4" in lines[0] and "codec" in lines[0]
    assert lines[1] == f"error: video {tmp_path / 'missing.mp4'} does not exist"
    pred = json.loads(out.read_text())  # the good result is kept, the bad files are listed
    assert [p["video"] for p in pred["predictions"]] == [str(good)]
    assert [f["video"] for f in pred["failed"]] == [str(bad), str(tmp_path / "missing.mp4")]


def test_weights_holding_nan_are_refused_before_any_video(tiny_run, tmp_path, monkeypatch, capsys):
    from cli_runner import run_cli

    ckpt = load_weights(tiny_run.last)
    teacher = dict(ckpt.teacher)
    name = sorted(teacher)[3]
    teacher[name] = teacher[name].clone()
    teacher[name].view(-1)[0] = float("nan")
    poisoned = tmp_path / "nan.safetensors"
    save_weights(poisoned, ckpt.student, teacher, ckpt.meta)
    code, err = run_cli(["predict", poisoned, tmp_path / "never-read.mp4"], monkeypatch, capsys)
    assert code == 2
    assert err.strip() == (f"error: checkpoint {poisoned}: the teacher weights hold NaN or inf ({name}); "
                           "use an earlier checkpoint")


def test_a_run_folder_given_as_checkpoint_names_the_file_to_give(tiny_run, monkeypatch, capsys):
    from cli_runner import run_cli

    code, err = run_cli(["predict", tiny_run.run, "clip.mp4"], monkeypatch, capsys)
    assert code == 2
    assert err.strip() == (f"error: checkpoint {tiny_run.run} is a folder; give a checkpoint file in it, "
                           f"e.g. {tiny_run.run / 'best.safetensors'}")
