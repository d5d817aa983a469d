"""Clip store: round trip, index bookkeeping, and refusal of bad clips and broken stores."""

import json

import numpy as np
import pytest

from sefar_fast.data.store import ClipData, ClipStore
from sefar_fast.errors import SefarError


def smooth_frames(rng, t, h, w):
    """Frames with low-frequency content, which JPEG keeps well (noise would not round-trip closely)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        phase = rng.uniform(0, 2 * np.pi, 3)
        for c in range(3):
            out[i, :, :, c] = (127 + 100 * np.sin(xx / 9.0 + yy / 13.0 + phase[c])).astype(np.uint8)
    return out


def make_clips(n=5, seed=0):
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        t = 3 + i
        h, w = (32, 48) if i % 2 == 0 else (40, 24)
        clips.append(ClipData(f"clip{i}", i % 3, "train" if i < 3 else "val", smooth_frames(rng, t, h, w)))
    return clips


def test_round_trip_frames_and_index(tmp_path):
    clips = make_clips()
    store = ClipStore.write(tmp_path / "s", clips, ["a", "b", "c"], shard_bytes=4000)
    again = ClipStore.open(tmp_path / "s")
    assert again.class_names == ["a", "b", "c"]
    assert len(again.records) == len(clips)
    assert len(again.shard_names) > 1  # the small shard size forced several shards
    assert again.indices("train") == [0, 1, 2] and again.indices("val") == [3, 4]
    for i, clip in enumerate(clips):
        r = again.records[i]
        assert (r.clip_id, r.label, r.split) == (clip.clip_id, clip.label, clip.split)
        assert (r.num_frames, r.height, r.width) == clip.frames.shape[:3]
        got = again.read_frames(i, range(r.num_frames))
        assert got.shape == clip.frames.shape
        err = np.abs(got.astype(int) - clip.frames.astype(int))
        assert err.mean() < 3.0 and err.max() < 40
    # frames come back in the order asked, not sorted
    assert np.array_equal(store.read_frames(4, [5, 0]), store.read_frames(4, [5, 0])[[0, 1]])
    assert np.array_equal(store.read_frames(4, [5, 0])[1], store.read_frames(4, [0])[0])
    assert store.read_jpeg(0, 0)[:2] == b"\xff\xd8"


def test_zero_frame_clip_is_rejected(tmp_path):
    bad = ClipData("empty_clip", 0, "train", np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(SefarError, match="empty_clip.*zero frames"):
        ClipStore.write(tmp_path / "s", [bad], ["a"])
    with pytest.raises(SefarError, match="never finished"):
        ClipStore.open(tmp_path / "s")


def test_duplicate_ids_and_bad_labels_are_rejected(tmp_path):
    clips = make_clips(2)
    clips[1].clip_id = clips[0].clip_id
    with pytest.raises(SefarError, match="duplicate clip id 'clip0'"):
        ClipStore.write(tmp_path / "s", clips, ["a", "b", "c"])
    clips = make_clips(1)
    clips[0].label = 3
    with pytest.raises(SefarError, match="label 3 is out of range"):
        ClipStore.write(tmp_path / "s", clips, ["a", "b", "c"])
    clips[0].label = -1  # unknown label is allowed
    assert ClipStore.write(tmp_path / "s", clips, ["a", "b", "c"]).records[0].label == -1
    clips[0].frames = clips[0].frames.astype(np.float32)
    with pytest.raises(SefarError, match="uint8"):
        ClipStore.write(tmp_path / "s", clips, ["a", "b", "c"])


def test_open_refuses_broken_stores(tmp_path):
    with pytest.raises(SefarError, match="does not exist"):
        ClipStore.open(tmp_path / "nope")
    root = tmp_path / "s"
    ClipStore.write(root, make_clips(2), ["a", "b", "c"])
    index = json.loads((root / "index.json").read_text())
    (root / "index.json").write_text(json.dumps({**index, "version": 99}))
    with pytest.raises(SefarError, match="version 99"):
        ClipStore.open(root)
    (root / "index.json").write_text('{"format": "sefar-clip-st')
    with pytest.raises(SefarError, match="corrupt"):
        ClipStore.open(root)
    (root / "index.json").write_text(json.dumps(index))
    (root / index["shards"][0]).unlink()
    with pytest.raises(SefarError, match="missing"):
        ClipStore.open(root)


def test_rewrite_replaces_previous_store(tmp_path):
    root = tmp_path / "s"
    ClipStore.write(root, make_clips(5), ["a", "b", "c"], shard_bytes=2000)
    store = ClipStore.write(root, make_clips(1, seed=3), ["a", "b", "c"])
    assert len(store.records) == 1
    assert sorted(p.name for p in root.glob("shard-*.bin")) == store.shard_names
