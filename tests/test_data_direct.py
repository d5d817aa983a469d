"""Direct video mode: the loader reads clips straight from video files (no store).

Expected frames are computed independently: every frame decoded with PyAV in the test, the
cover-box crop written out by hand for the test's frame size, resized with PIL.
"""

import json
import os
import struct
import warnings

import av
import numpy as np
import pytest
from PIL import Image

from sefar_fast.data.adapters import SourceClip, SourceSet
from sefar_fast.data.direct import VideoSource, open_video_source, video_spec
from sefar_fast.data.loader import ClipLoader
from sefar_fast.data.pipeline import dali_available
from sefar_fast.errors import SefarError

H, W = 32, 48  # source frames
OUT = (16, 16)  # loader frames: scale 1/2 covers 16 x 16, then the centre 16 columns of 24
CROP_BOX = (8, 0, 40, 32)  # PIL box (x0, y0, x1, y1) in source pixels of that crop
ELEMENTS = [2, 2, 4]
STEP = 9  # grey-level step between consecutive frames: a wrong frame is off by >= 9 levels


def frame_pixels(i):
    """Frame i: a horizontal ramp (so the crop matters) over a per-frame grey level."""
    ramp = np.arange(W, dtype=np.int64)[None, :] * 2 + np.arange(H, dtype=np.int64)[:, None] // 4
    img = np.clip(20 + STEP * i + ramp, 0, 255).astype(np.uint8)
    return np.stack([img, img, 255 - img], axis=-1)


def write_video(path, n, encoder="libx264", options=None, rate=10, noise=None):
    with av.open(str(path), "w") as c:
        s = c.add_stream(encoder, rate=rate)
        s.height, s.width, s.pix_fmt = H, W, "yuv420p"
        s.options = options or {}
        for i in range(n):
            pixels = frame_pixels(i) if noise is None else noise.integers(0, 256, (H, W, 3), np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def h264(path, n=24):  # B-frames (libx264 default) and a keyframe every 5 frames: reads seek
    return write_video(path, n, "libx264", {"g": "5", "keyint_min": "5", "sc_threshold": "0"})


def vp9(path, n=20):
    return write_video(path, n, "libvpx-vp9", {"g": "6", "deadline": "realtime", "cpu-used": "8"})


def pyav_frames(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def expected(frames):
    """PIL's bilinear resize of the crop box, independent of the loader's code."""
    return np.stack([np.asarray(Image.fromarray(f).resize(OUT[::-1], Image.BILINEAR, box=CROP_BOX)) for f in frames])


def source_of(clips, tmp_path, names=("a", "b")):
    return VideoSource.from_sources(SourceSet("test", clips, list(names)), cache_path=tmp_path / "index.json",
                                    workers=1)


def check_batch(batch, plan, source, tol):
    """Every frame of the batch is the one the plan asked for: close to it, and closer than to any other."""
    got = batch["frames"].numpy().astype(np.int64)
    b = got.shape[0]
    assert got.shape == (b, plan["frames"].shape[1], sum(ELEMENTS), *OUT, 3)
    for j, r in enumerate(plan["records"]):
        rec = source.records[int(r)]
        clip = expected(pyav_frames(rec.path)[rec.first:rec.first + rec.num_frames]).astype(np.int64)
        for v, ids in enumerate(plan["frames"][j]):
            for k, f in enumerate(ids):
                err = np.abs(got[j, v, k][None] - clip).mean(axis=(1, 2, 3))
                assert err[f] < tol, (rec.clip_id, f, err[f])
                assert int(np.argmin(err)) == f, (rec.clip_id, f, err.round(1).tolist())
    assert batch["index"].tolist() == plan["records"].tolist()
    assert batch["labels"].tolist() == [source.records[int(r)].label for r in plan["records"]]


def decoder_of(loader):
    (dec,) = loader._decoders
    return dec


@pytest.mark.parametrize("backend", ["dali", "pil"])
def test_h264_frames_are_the_frames_asked_for(tmp_path, backend):
    if backend == "dali" and not dali_available():
        pytest.skip("DALI not installed")
    a, b = h264(tmp_path / "a.mp4", 24), h264(tmp_path / "b.mp4", 13)
    clips = [SourceClip("a", a, 0, "train"), SourceClip("b", b, 1, "train"),
             SourceClip("a-window", a, 1, "train", start=1.0, end=2.0)]  # frames 10..19 at 10 fps
    source = source_of(clips, tmp_path)
    assert [(r.num_frames, r.first) for r in source.records] == [(24, 0), (13, 0), (10, 10)]
    assert source.file_of(0).codec == "h264" and source.file_of(0).keyframes[1][0] >= 5  # a later keyframe
    loader = ClipLoader(source, source.indices(), elements=ELEMENTS, batch_size=3, frame_size=OUT, views=2,
                        seed=5, backend=backend)
    batch = next(iter(loader))
    check_batch(batch, loader.plan_batch(0, 0), source, tol=3)
    assert decoder_of(loader).routes == {"dali": 0, "pyav": 3, "images": 0}
    loader.close()


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_vp9_decodes_through_dali_on_the_cpu(tmp_path):
    clips = [SourceClip(f"v{i}", vp9(tmp_path / f"v{i}.webm", n), i % 2, "train") for i, n in enumerate((20, 9))]
    source = source_of(clips, tmp_path)
    assert [r.num_frames for r in source.records] == [20, 9]  # a webm declares no count: decoded
    loader = ClipLoader(source, source.indices(), elements=ELEMENTS, batch_size=2, frame_size=OUT, views=2,
                        seed=1, backend="dali")
    batch = next(iter(loader))
    # DALI converts YUV to RGB a little differently from PyAV/swscale
    check_batch(batch, loader.plan_batch(0, 0), source, tol=4)
    dec = decoder_of(loader)
    assert dec.routes == {"dali": 2, "pyav": 0, "images": 0} and not dec.dali_failed
    loader.close()


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_a_file_dali_cannot_decode_goes_to_pyav(tmp_path, monkeypatch):
    from sefar_fast.data import video_pipeline

    def broken(self, encoded, frames, boxes):
        raise RuntimeError("Critical error in pipeline:\nunsupported stream")

    monkeypatch.setattr(video_pipeline.DaliVideoGraph, "decode", broken)
    source = source_of([SourceClip("v", vp9(tmp_path / "v.webm", 12), 0, "train")], tmp_path)
    loader = ClipLoader(source, [0], elements=ELEMENTS, batch_size=1, frame_size=OUT, backend="dali")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = next(iter(loader))
    check_batch(batch, loader.plan_batch(0, 0), source, tol=3)
    dec = decoder_of(loader)
    assert dec.routes["pyav"] == 1 and dec.dali_failed == {str(tmp_path / "v.webm")}
    assert any("v.webm" in str(w.message) and "unsupported stream" in str(w.message) for w in caught)
    loader.close()


def test_deterministic_resumable_and_sharded(tmp_path):
    clips = [SourceClip(f"c{i}", h264(tmp_path / f"c{i}.mp4", 10 + i), i % 2, "train") for i in range(4)]
    source = source_of(clips, tmp_path)

    def make(**kw):
        return ClipLoader(source, source.indices(), elements=ELEMENTS, batch_size=2, frame_size=OUT, views=2,
                          shuffle=True, seed=3, backend="pil", **kw)

    first, second = make(), make()
    run1 = [b["frames"].clone() for b in first]
    run2 = [b["frames"].clone() for b in second]
    assert len(run1) == 2 and all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(run1, run2))
    resumed = make()
    resumed.load_state_dict({"epoch": 0, "position": 1})
    (rest,) = list(resumed)
    assert np.array_equal(rest["frames"].numpy(), run1[1].numpy())
    seen = [make(rank=r, world_size=2).plan_batch(0, 0)["records"].tolist() for r in range(2)]
    assert sorted(seen[0] + seen[1]) == [0, 1, 2, 3]
    for loader in (first, second, resumed):
        loader.close()


def test_frame_folders_read_their_images(tmp_path):
    folder = tmp_path / "clip1"
    folder.mkdir()
    pixels = [frame_pixels(i) for i in range(12)]
    for i, p in enumerate(pixels):  # natural order: img_2 before img_10
        Image.fromarray(p).save(folder / f"img_{i + 1}.png")
    source = source_of([SourceClip("f", folder, 1, "val")], tmp_path)
    assert source.records[0].num_frames == 12 and source.file_of(0).kind == "frames"
    loader = ClipLoader(source, [0], elements=ELEMENTS, batch_size=1, frame_size=OUT, temporal="centre",
                        backend="pil")
    batch = next(iter(loader))
    ids = loader.plan_batch(0, 0)["frames"][0, 0]
    want = expected(np.stack(pixels)[ids]).astype(int)
    assert np.abs(batch["frames"][0, 0].numpy().astype(int) - want).max() <= 1
    assert decoder_of(loader).routes["images"] == 1
    loader.close()


def test_counts_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    from sefar_fast.data import direct

    path = vp9(tmp_path / "v.webm", 7)
    clips = [SourceClip("v", path, 0, "train")]
    assert source_of(clips, tmp_path).records[0].num_frames == 7
    cache = json.loads((tmp_path / "index.json").read_text())
    assert cache["files"][str(path)]["frames"] == 7

    def no_decoding(*args, **kw):
        raise AssertionError("decoded again")

    monkeypatch.setattr(direct, "probe_video", no_decoding)
    assert source_of(clips, tmp_path).records[0].num_frames == 7  # from the cache
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "modified": must be decoded again
    with pytest.raises(SefarError, match="decoded again"):
        source_of(clips, tmp_path)


def test_unreadable_files_are_one_line_errors_naming_file_and_codec(tmp_path):
    good = h264(tmp_path / "good.mp4", 12)
    # undecodable: the container is intact, every byte of the H.264 payload zeroed
    data = bytearray(good.read_bytes())
    at = data.find(b"mdat")
    size = struct.unpack(">I", data[at - 4:at])[0]
    data[at + 4:at - 4 + size] = bytes(size - 8)
    (tmp_path / "zeroed.mp4").write_bytes(bytes(data))
    with pytest.raises(SefarError, match=r"zeroed\.mp4 \(codec h264\) cannot be decoded") as err:
        source_of([SourceClip("z", tmp_path / "zeroed.mp4", 0, "train")], tmp_path)
    assert "\n" not in str(err.value) and "index-failures.json" in str(err.value)

    # truncated: the index (faststart) survives, the last third of the frames does not
    noisy = tmp_path / "noisy.mp4"
    with av.open(str(noisy), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=10)
        s.height, s.width, s.pix_fmt = H, W, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(30):
            for p in s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 256, (H, W, 3), np.uint8), "rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = noisy.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SefarError, match=r"cut\.mp4 \(codec h264\) is truncated: \d+ of the 30 frames"):
        source_of([SourceClip("t", tmp_path / "cut.mp4", 0, "train")], tmp_path)

    # zero frames: a video stream without a single packet (the file holds only audio)
    empty = tmp_path / "empty.mkv"
    with av.open(str(empty), "w") as c:
        v = c.add_stream("libx264", rate=10)
        v.height, v.width, v.pix_fmt = H, W, "yuv420p"
        a = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in list(a.encode(frame)) + list(a.encode()):
            c.mux(p)
    with pytest.raises(SefarError, match=r"empty\.mkv \(codec h264\) has no decodable frames"):
        source_of([SourceClip("e", empty, 0, "train")], tmp_path)

    # several at once: counted, the first named, every one in the report; the good file still indexed
    clips = [SourceClip("g", good, 0, "train"), SourceClip("m", tmp_path / "missing.mp4", 0, "train"),
             SourceClip("z", tmp_path / "zeroed.mp4", 1, "train"),
             SourceClip("w", good, 1, "train", start=50.0, end=60.0)]
    with pytest.raises(SefarError, match=r"^3 unreadable clips in 3 files \(first: video .*missing\.mp4 does not "
                                         r"exist\)") as err:
        source_of(clips, tmp_path)
    report = json.loads((tmp_path / "index-failures.json").read_text())
    assert len(report) == 3 and "no frames between 50.0s and 60.0s" in report[2]["error"]
    assert str(good) in json.loads((tmp_path / "index.json").read_text())["files"]


def test_a_file_that_changes_after_indexing_fails_loudly(tmp_path):
    path = h264(tmp_path / "a.mp4", 20)
    source = source_of([SourceClip("a", path, 0, "train")], tmp_path)
    path.write_bytes(b"\0" * 100)
    loader = ClipLoader(source, [0], elements=ELEMENTS, batch_size=1, frame_size=OUT, backend="pil")
    with pytest.raises(SefarError, match=r"a\.mp4 \(codec h264\) cannot be decoded"):
        next(iter(loader))
    loader.close()


def test_video_spec_and_open_dataset(tmp_path, monkeypatch):
    assert video_spec("video:lists:/x/splits") == "lists:/x/splits"
    assert video_spec("video:/data/clips") == "folder:/data/clips"
    assert video_spec("video:ucf101:2") == "ucf101:2"
    assert video_spec("store:/s") is None and video_spec("synth") is None
    for split, n in (("train", 3), ("val", 1)):
        for cls in ("jump", "spin"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                h264(tmp_path / "data" / split / cls / f"{cls}{i}.mp4", 9 + i)
    monkeypatch.setenv("SEFAR_CACHE", str(tmp_path / "cache"))
    source = open_video_source(f"video:{tmp_path / 'data'}")
    assert source.class_names == ["jump", "spin"] and source.splits() == ["train", "val"]
    assert len(list((tmp_path / "cache" / "video-index").glob("folder-*.json"))) == 1

    from sefar_fast.config import build_config
    from sefar_fast.data.datasets import open_dataset

    cfg = build_config(f"video:folder:{tmp_path / 'data'}", None, {"data.label_rate": 0.5}, [])
    ds = open_dataset(cfg, tmp_path)
    assert isinstance(ds.store, VideoSource) and ds.num_classes == 2
    assert sorted(ds.labeled + ds.unlabeled) == ds.store.indices("train") and len(ds.val) == 2
    assert set(ds.labels(ds.labeled).tolist()) == {0, 1}  # at least one labeled clip per class
    assert json.loads((tmp_path / "split.json").read_text())["labeled"] == ds.labeled


def test_bench_direct_video_measures_and_reports_routes(tmp_path, monkeypatch):
    from sefar_fast.data import bench

    result = bench.bench_direct_video(codec="h264", batches=2, batch_size=2, frame_size=(16, 16), views=2,
                                      clips=3, frames=10, size=(32, 48), warmup=1, workers=1, prefetch=1)
    assert result["batches"] == 2 and result["codec"] == "h264" and result["frames_per_clip"] == 8
    assert result["frames_per_s"] == pytest.approx(result["clips_per_s"] * 16)
    # 3 batches of an epoch of 2 + 1 clips were consumed (more may have been prefetched): all through PyAV
    assert result["routes"]["pyav"] >= 5 and result["routes"]["dali"] == 0

    calls = []
    monkeypatch.setattr(bench, "bench_direct_video", lambda **kw: calls.append(kw) or {"clips_per_s": 1.0})
    bench.synthetic_store(tmp_path / "s", clips=4, frames=8, size=(32, 40))
    both = bench.bench_data(tmp_path / "s", batches=1, batch_size=2, frame_size=(16, 16), workers=1, warmup=0,
                            direct_codecs=("h264", "vp9"))
    assert both["clips_per_s"] > 0 and set(both["direct_video"]) == {"h264", "vp9"}
    assert [c["codec"] for c in calls] == ["h264", "vp9"] and calls[0]["frame_size"] == (16, 16)


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_video_decode_check_runs_on_the_cpu():
    from sefar_fast.data.bench import check_video_decode

    result = check_video_decode("cpu", batch_size=2, frame_size=(32, 32))
    assert result["ok"], result
    assert result["vp9"]["routes"]["dali"] == 2 and result["h264"]["routes"]["pyav"] == 2  # CPU: H.264 by PyAV
    assert result["vp9"]["mean_abs_diff"] < 3 and result["h264"]["mean_abs_diff"] < 1  # same decoder: resize only


def test_new_windows_of_an_indexed_file_are_measured(tmp_path):
    path = h264(tmp_path / "long.mp4", 30)  # 10 fps
    first = source_of([SourceClip("w1", path, 0, "train", start=0.5, end=1.0)], tmp_path)
    assert [(r.first, r.num_frames) for r in first.records] == [(5, 5)]
    both = source_of([SourceClip("w1", path, 0, "train", start=0.5, end=1.0),
                      SourceClip("w2", path, 1, "val", start=2, end=None)], tmp_path)  # int start: same key rule
    assert [(r.first, r.num_frames) for r in both.records] == [(5, 5), (20, 10)]
    windows = json.loads((tmp_path / "index.json").read_text())["files"][str(path)]["windows"]
    assert windows == {"0.5|1.0": [5, 5], "2.0|None": [20, 10]}
