"""Video decoding (PyAV) and `prepare`: frames, failures reported not fatal, resume, parallel workers."""

import json

import av
import numpy as np
import pytest
from PIL import Image

from sefar_fast.data.adapters import SourceClip, SourceSet
from sefar_fast.data.prepare import JOURNAL_NAME, prepare
from sefar_fast.data.store import ClipStore
from sefar_fast.data.video import decode_video, probe_codec, read_clip
from sefar_fast.errors import SefarError


def levels(n, step=20, offset=0):
    return [(offset + step * i) % 250 for i in range(n)]


def write_video(path, values, size=(16, 16), codec="libx264", rate=10, faststart=False, noise=None):
    """A tiny video whose frame i is a flat grey of values[i] (exactly recoverable after lossy coding);
    with a numpy Generator `noise`, random frames instead (large packets, for truncation tests)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        for v in values:
            pixels = np.full((*size, 3), v, np.uint8) if noise is None else noise.integers(0, 256, (*size, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_h264_decodes_every_frame_in_order(tmp_path):
    vals = levels(10)
    path = write_video(tmp_path / "a.mp4", vals)
    assert probe_codec(path) == "h264"
    frames = decode_video(path)
    assert frames.shape == (10, 16, 16, 3)
    assert np.abs(frames[:, 8, 8, 0].astype(int) - vals).max() <= 3
    half = decode_video(path, fps=5)  # 10 fps source: every other frame
    assert np.abs(half[:, 8, 8, 0].astype(int) - vals[::2]).max() <= 3
    window = decode_video(path, start=0.3, end=0.6)  # frames at 0.3, 0.4, 0.5 s
    assert np.abs(window[:, 8, 8, 0].astype(int) - vals[3:6]).max() <= 3


def test_short_side_downscale_keeps_aspect(tmp_path):
    path = write_video(tmp_path / "wide.mp4", levels(3), size=(32, 64))
    assert decode_video(path, short_side=16).shape == (3, 16, 32, 3)
    assert decode_video(path, short_side=100).shape == (3, 32, 64, 3)  # never upscaled


def test_bad_videos_are_one_line_errors(tmp_path):
    with pytest.raises(SefarError, match="missing.mp4 does not exist"):
        decode_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    with pytest.raises(SefarError, match=r"junk.mp4 \(codec unknown\) cannot be decoded"):
        decode_video(junk)
    good = write_video(tmp_path / "fs.mp4", levels(30, 7), size=(32, 32), faststart=True)
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SefarError, match=r"cut.mp4 \(codec h264\) (is truncated|cannot be decoded)") as err:
        decode_video(cut)
    assert "\n" not in str(err.value)
    noisy = write_video(tmp_path / "noisy.mp4", levels(30), size=(32, 32), faststart=True,
                        noise=np.random.default_rng(0))
    data = noisy.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])  # the index survives, the last third of the frames does not
    with pytest.raises(SefarError, match=r"cut.mp4 \(codec h264\) is truncated: \d+ of the 30 frames"):
        decode_video(cut)
    (tmp_path / "empty_frames").mkdir()
    with pytest.raises(SefarError, match="no .jpg/.png frames"):
        read_clip(tmp_path / "empty_frames")


def make_sources(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    clips = []
    for i in range(4):
        write_video(vids / f"v{i}.mp4", levels(6 + i, offset=10 * i))
        clips.append(SourceClip(f"v{i}", vids / f"v{i}.mp4", i % 2, "train" if i < 3 else "val"))
    folder = tmp_path / "frames" / "f0"
    folder.mkdir(parents=True)
    for k in range(5):  # natural order: img_10 after img_2
        Image.fromarray(np.full((24, 24, 3), 30 * k, np.uint8)).save(folder / f"img_{[1, 2, 10, 11, 12][k]}.jpg")
    clips.append(SourceClip("f0", folder, 1, "train"))
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 300)
    clips.append(SourceClip("junk", junk, 0, "train"))
    clips.append(SourceClip("gone", tmp_path / "gone.mp4", 0, "train"))
    return SourceSet("test", clips, ["a", "b"])


def check_store(root):
    store = ClipStore.open(root)
    assert [r.clip_id for r in store.records] == ["v0", "v1", "v2", "v3", "f0"]
    for i in range(4):
        r = store.records[i]
        got = store.read_frames(i, range(r.num_frames))[:, 8, 8, 0].astype(int)
        assert r.num_frames == 6 + i and np.abs(got - levels(6 + i, offset=10 * i)).max() <= 4
    f0 = store.records[4]
    assert f0.num_frames == 5
    assert np.abs(store.read_frames(4, range(5))[:, 5, 5, 0].astype(int) - [0, 30, 60, 90, 120]).max() <= 3
    assert store.indices("val") == [3]
    return store


def test_prepare_reports_failures_and_goes_on(tmp_path):
    sources = make_sources(tmp_path)
    seen = []
    summary = prepare(sources, tmp_path / "store", workers=1, progress=lambda d, t: seen.append((d, t)))
    assert summary["written"] == 5 and summary["skipped"] == 0
    assert sorted(f["clip_id"] for f in summary["failed"]) == ["gone", "junk"]
    assert any("gone.mp4 does not exist" in f["error"] for f in summary["failed"])
    assert seen[-1] == (7, 7)
    check_store(tmp_path / "store")
    report = json.loads((tmp_path / "store" / "prepare-report.json").read_text())
    assert len(report["failed"]) == 2
    assert not (tmp_path / "store" / JOURNAL_NAME).exists()
    with pytest.raises(SefarError, match="2 of 7 clips could not be read"):
        prepare(sources, tmp_path / "store", workers=1, strict=True)


def test_prepare_resumes_after_interruption(tmp_path):
    sources = make_sources(tmp_path)

    def stop_after_three(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(sources, tmp_path / "store", workers=1, progress=stop_after_three)
    assert (tmp_path / "store" / JOURNAL_NAME).is_file()
    with pytest.raises(SefarError, match="never finished"):
        ClipStore.open(tmp_path / "store")
    summary = prepare(sources, tmp_path / "store", workers=1)
    assert summary["skipped"] == 3 and summary["written"] == 2
    check_store(tmp_path / "store")
    again = prepare(sources, tmp_path / "store", workers=1)  # a finished store: only the failures are retried
    assert again["skipped"] == 5 and again["written"] == 0
    check_store(tmp_path / "store")
    smaller = prepare(sources, tmp_path / "store", workers=1, short_side=12)  # new settings: start afresh
    assert smaller["skipped"] == 0
    assert ClipStore.open(tmp_path / "store").records[4].height == 12


def test_prepare_in_parallel_processes(tmp_path):
    summary = prepare(make_sources(tmp_path), tmp_path / "store", workers=2)
    assert summary["written"] == 5 and len(summary["failed"]) == 2
    store = check_store(tmp_path / "store")
    assert len(store.shard_names) == 2  # one shard per worker process


def test_duplicate_ids_and_bad_labels_in_sources(tmp_path):
    clip = SourceClip("x", tmp_path / "x.mp4", 0, "train")
    with pytest.raises(SefarError, match="duplicate clip id 'x'"):
        prepare(SourceSet("s", [clip, clip], ["a"]), tmp_path / "store")
    with pytest.raises(SefarError, match="label 3, outside 0..1"):
        prepare(SourceSet("s", [SourceClip("y", clip.path, 3, "train")], ["a", "b"]), tmp_path / "store")


def test_store_for_source_prepares_once(tmp_path):
    from sefar_fast.data.prepare import store_for_source

    lists = tmp_path / "lists"
    lists.mkdir()
    (tmp_path / "media" / "video").mkdir(parents=True)
    write_video(tmp_path / "media" / "video" / "a.mp4", levels(4))
    write_video(tmp_path / "media" / "video" / "b.mp4", levels(5))
    (lists / "train.csv").write_bytes(b"/root/video/a.mp4 0\r\n")
    (lists / "val.csv").write_bytes(b"/root/video/b.mp4 1")
    calls = []
    path = store_for_source(f"lists:{lists}", root=tmp_path / "media", cache_dir=tmp_path / "cache", workers=1,
                            progress=lambda d, t: calls.append(d))
    store = ClipStore.open(path)
    assert [(r.clip_id, r.split, r.num_frames) for r in store.records] == [("a", "train", 4), ("b", "val", 5)]
    assert store_for_source(f"lists:{lists}", root=tmp_path / "media", cache_dir=tmp_path / "cache") == path
    assert calls[-1] == 2 and len(calls) == 3  # the second call found the finished store
