"""`sefar train --data lists:DIR --root R` on reference-format list folders of H.264 mp4 files (CPU)."""

import json
import sys

import av
import numpy as np


def write_h264(path, values, size):
    """An H.264 mp4 whose frame i is a flat grey of values[i]."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        for v in values:
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((*size, 3), v, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_train_from_reference_list_folder_of_h264_files(tmp_path, monkeypatch):
    media = tmp_path / "media" / "video"
    media.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = {"train": [], "unlabel": [], "val": []}
    for split, count in (("train", 4), ("unlabel", 4), ("val", 4)):
        for i in range(count):
            label = i % 2
            name = f"{split}{i}.mp4"
            # class 0 gets bright frames, class 1 dark ones: a real, learnable difference
            values = list(rng.integers(150, 250, 12) if label == 0 else rng.integers(0, 100, 12))
            write_h264(media / name, values, size=(24, 32))
            lines[split].append(f"/root/video/{name} {label}")  # the authors' absolute paths
    lists = tmp_path / "lists"
    lists.mkdir()
    for split, rows in lines.items():
        (lists / f"{split}.csv").write_bytes("\r\n".join(rows).encode() + b"\r\n")  # CRLF as shipped

    monkeypatch.setenv("SEFAR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [
        "sefar", "train", "--data", f"lists:{lists}", "--root", str(tmp_path / "media"), "--arch", "vit-test",
        "--epochs", "2", "--batch-size", "2", "--out", str(out), "--json", str(tmp_path / "r.json"),
        "--label-rate", "0.5",  # states the lists' own split: 4 train.csv clips of 8
        "data.frame_size=[16,16]", "data.crop=16", "data.scale_range=[16,18]", "warmup_epochs=1",
        "eval.views=1x1", "unlabeled_ratio=1"])
    from sefar_fast.cli.app import main

    try:
        main()
    except SystemExit as e:
        assert not e.code, e.code
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["epochs"] == 2 and (out / "best.safetensors").is_file()
    assert "val_top1_teacher" in result["last"]  # the semi-supervised phase ran on the unlabel.csv clips
    split = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("kind") == "epoch" and "pseudo_acc" in r for r in split)
