"""The synthetic gymnastics set: determinism, exact time-reversal pairs, class semantics, splits, caching."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sefar_fast.data import synth
from sefar_fast.data.store import ClipStore
from sefar_fast.data.synth import (
    MOVES,
    REVERSAL_PAIRS,
    SYNTH_CLASSES,
    ensure_synth,
    render,
    reverse_params,
    synth_clips,
    synth_params,
)


def clip_frames(clips):
    return {c.clip_id: c.frames for c in clips}


# ---- classes ------------------------------------------------------------------------------------------------------

def test_class_table_has_reversal_pairs_and_count_pairs():
    assert 16 <= len(SYNTH_CLASSES) <= 24
    assert len(set(SYNTH_CLASSES)) == len(SYNTH_CLASSES)
    assert len(REVERSAL_PAIRS) >= 4
    members = [c for pair in REVERSAL_PAIRS for c in pair]
    assert len(members) == len(set(members))  # every class is in at most one pair
    for a, b in REVERSAL_PAIRS:
        assert a != b
        words_a, words_b = SYNTH_CLASSES[a].split(), SYNTH_CLASSES[b].split()
        assert {"forward", "backward"} <= set(words_a) | set(words_b)
    # classes that differ only in a count: same name once the numbers are blanked out
    def without_numbers(name):
        return " ".join("#" if w.replace(".", "").isdigit() else w.rstrip("s") for w in name.split())
    count_pairs = [(i, j) for i in range(len(MOVES)) for j in range(i + 1, len(MOVES))
                   if without_numbers(SYNTH_CLASSES[i]) == without_numbers(SYNTH_CLASSES[j])]
    assert len(count_pairs) >= 3
    assert SYNTH_CLASSES[0] == "salto forward tucked 1 turn"


def test_module_docstring_lists_the_class_table():
    table, pairs = {}, []
    for line in synth.__doc__.splitlines():
        words = line.split()
        if len(words) > 2 and words[0].isdigit() and words[1] == "salto":
            name = line.split("<->")[0].split("(")[0].strip().split(" ", 1)[1].strip()
            table[int(words[0])] = name
            if "<->" in line:
                pairs.append((int(words[0]), int(line.split("<->")[1].split()[0])))
    assert table == dict(enumerate(SYNTH_CLASSES))
    assert pairs == REVERSAL_PAIRS


# ---- rendering ----------------------------------------------------------------------------------------------------

def test_render_shape_dtype_and_visible_figure():
    for label in range(len(MOVES)):
        p = synth_params(label, np.random.default_rng(label), size=48)
        frames = render(p)
        assert frames.dtype == np.uint8 and frames.shape == (p.num_frames, 48, 48, 3)
        assert synth.MIN_FRAMES <= p.num_frames <= synth.MAX_FRAMES
        # the figure changes the picture: compare against the same clip with the figure moved far off-frame
        from dataclasses import replace
        empty = render(replace(p, origin_x=-1000.0))
        diff = np.abs(frames.astype(int) - empty.astype(int)).max(axis=-1)
        assert (diff > 40).sum(axis=(1, 2)).min() >= 5, SYNTH_CLASSES[label]


@pytest.mark.parametrize("pair", REVERSAL_PAIRS)
def test_reverse_params_reverses_frames_exactly(pair):
    a, b = pair
    for k in range(3):
        p = synth_params(a, np.random.default_rng([k, a]))
        q = reverse_params(p)
        assert q.label == b and SYNTH_CLASSES[q.label] != SYNTH_CLASSES[p.label]
        assert np.array_equal(render(q), render(p)[::-1])
        assert reverse_params(q).label == a
        assert np.array_equal(render(reverse_params(q)), render(p))


@pytest.mark.parametrize("pair", REVERSAL_PAIRS)
def test_pair_class_clips_are_reversed_clips_of_the_first(pair):
    """A clip drawn for class b is a clip of class a played backwards: every single frame of b's clip is a
    frame of a's clip, so no single frame tells the two classes apart."""
    a, b = pair
    clip_b = render(synth_params(b, np.random.default_rng(7)))
    clip_a = render(synth_params(a, np.random.default_rng(7)))
    assert np.array_equal(clip_b, clip_a[::-1])
    assert not np.array_equal(clip_b, clip_a)


def test_reverse_params_refuses_unpaired_class():
    paired = {c for pair in REVERSAL_PAIRS for c in pair}
    unpaired = [i for i in range(len(MOVES)) if i not in paired]
    assert unpaired
    with pytest.raises(ValueError):
        reverse_params(synth_params(unpaired[0], np.random.default_rng(0)))


def flight_frames(p):
    """Frames in the air: the lowest point of the body clearly above the floor."""
    pts = synth.pose_in_world(p.joints, p.twist, p.pitch)
    lowest = (pts[..., 1] - synth._POINT_R).min(axis=1) + p.root[:, 1]
    return np.flatnonzero(lowest > 0.05)


@pytest.mark.parametrize("label", range(len(MOVES)))
def test_motion_matches_class_description(label):
    """Kinematics of the parameters against the class table: somersault angle and sense, travel, twists,
    body shape in the air, and which way up the figure starts and ends."""
    move = MOVES[label]
    for k in range(3):
        p = synth_params(label, np.random.default_rng([k, label]))
        air = flight_frames(p)
        assert len(air) >= 6
        spin = p.pitch[air[-1]] - p.pitch[air[0]]
        full = move.turns * 2 * np.pi
        # world angles are counter-clockwise with the figure facing +x: forward rotation is negative
        assert np.sign(spin) == -move.direction
        assert 0.55 * full < abs(spin) <= full + 0.3
        assert np.cos(p.pitch[0]) * (1 if move.start == "feet" else -1) > 0.7
        assert np.cos(p.pitch[-1]) * (1 if move.end == "feet" else -1) > 0.7
        dx = p.root[air[-1], 0] - p.root[air[0], 0]
        if move.travel:
            assert np.sign(dx) == move.travel, (dx, move)
        assert abs(abs(p.twist[-1] - p.twist[0]) - move.twists * 2 * np.pi) < 1e-6
        middle = air[len(air) // 2]
        hip, knee = p.joints[middle, 2], p.joints[middle, 3]
        if move.twists == 0:
            if move.shape == "tucked":
                assert hip > 1.8 and knee > 1.8
            elif move.shape == "piked":
                assert hip > 1.8 and knee < 0.3
            else:
                assert hip < 0.5 and knee < 0.3


def test_framing_is_tight_and_keeps_the_centre_of_mass_inside():
    for label in range(len(MOVES)):
        for k in range(3):
            p = synth_params(label, np.random.default_rng(100 * label + k))
            pts = synth.pose_in_world(p.joints, p.twist, p.pitch) + np.pad(p.root, ((0, 0), (0, 1)))[:, None]
            px = p.origin_x + p.facing * p.scale * pts[..., 0]
            py = p.floor_y - p.scale * pts[..., 1]
            com = synth.centre_of_mass(pts)
            cx, cy = p.origin_x + p.facing * p.scale * com[:, 0], p.floor_y - p.scale * com[:, 1]
            assert (cx > 0).all() and (cx < p.size).all() and (cy > 0).all() and (cy < p.size).all()
            inside = (px >= 0) & (px < p.size) & (py >= 0) & (py < p.size)
            assert inside.mean() > 0.7  # limbs may leave the frame at the top of a jump, most of the body not
            standing = py[0].max() - py[0].min()
            assert standing > 0.4 * p.size  # the figure is large: several patches of a small ViT


# ---- the data set -------------------------------------------------------------------------------------------------

def test_synth_clips_deterministic_from_seed():
    first = clip_frames(synth_clips(seed=3, clips_per_class=1, size=32))
    again = clip_frames(synth_clips(seed=3, clips_per_class=1, size=32))
    other = clip_frames(synth_clips(seed=4, clips_per_class=1, size=32))
    assert first.keys() == again.keys() == other.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not any(first[k].shape == other[k].shape and np.array_equal(first[k], other[k]) for k in first)


def test_labels_cover_all_classes_and_splits_are_stratified():
    clips = list(synth_clips(seed=0, clips_per_class=5, size=24, val_fraction=0.4))
    assert len(clips) == 5 * len(MOVES)
    assert len({c.clip_id for c in clips}) == len(clips)
    for label in range(len(MOVES)):
        splits = [c.split for c in clips if c.label == label]
        assert sorted(splits) == ["train"] * 3 + ["val"] * 2


def test_worker_processes_give_the_same_clips():
    serial = list(synth_clips(seed=1, clips_per_class=4, size=24, workers=1))
    parallel = list(synth_clips(seed=1, clips_per_class=4, size=24, workers=2))
    assert [c.clip_id for c in serial] == [c.clip_id for c in parallel]
    assert all(np.array_equal(s.frames, q.frames) and s.label == q.label and s.split == q.split
               for s, q in zip(serial, parallel))


# ---- the cached store ---------------------------------------------------------------------------------------------

def test_ensure_synth_writes_a_store_and_reuses_it(tmp_path):
    calls = []
    path = ensure_synth(tmp_path, seed=5, clips_per_class=2, size=32, workers=1,
                        progress=lambda done, total: calls.append((done, total)))
    n = 2 * len(MOVES)
    assert calls[-1] == (n, n) and len(calls) == n
    assert path.parent == tmp_path and path.name.startswith(f"synth-v{synth.SYNTH_VERSION}-5-")
    store = ClipStore.open(path)
    assert store.class_names == SYNTH_CLASSES
    assert len(store) == n
    assert len(store.indices("train")) == len(store.indices("val")) == len(MOVES)
    assert sorted(r.label for r in store.records) == sorted(list(range(len(MOVES))) * 2)
    # frames read back close to the rendered ones (JPEG is lossy)
    clips = {c.clip_id: c for c in synth_clips(seed=5, clips_per_class=2, size=32)}
    i = 3
    rec = store.records[i]
    want = clips[rec.clip_id].frames
    got = store.read_frames(i, range(rec.num_frames))
    assert got.shape == want.shape
    assert np.abs(got.astype(float) - want).mean() < 8
    index_mtime = (path / "index.json").stat().st_mtime_ns

    calls.clear()
    again = ensure_synth(tmp_path, seed=5, clips_per_class=2, size=32, workers=1,
                         progress=lambda done, total: calls.append(done))
    assert again == path and calls == []  # nothing regenerated
    assert (path / "index.json").stat().st_mtime_ns == index_mtime
    other = ensure_synth(tmp_path, seed=5, clips_per_class=1, size=32, workers=1)
    assert other != path  # other settings, other store


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_interrupted_generation_is_never_reused(tmp_path):
    class Stop(Exception):
        pass

    def interrupt(done, total):
        if done == 5:
            raise Stop

    with pytest.raises(Stop):
        ensure_synth(tmp_path, seed=2, clips_per_class=1, size=24, workers=1, progress=interrupt)
    assert list(tmp_path.iterdir()) == []  # the partial temp folder was removed

    # a temp folder left by a killed process, even one holding a readable store, is not taken for the result
    name = synth.synth_store_name(2, 1, 24, 0.2)
    stale = tmp_path / f".{name}.tmp-{synth.socket.gethostname()}-{dead_pid()}-deadbeef"
    ClipStore.write(stale, [], SYNTH_CLASSES)
    # and an unfinished store at the final path (no index) is replaced
    (tmp_path / name).mkdir()
    (tmp_path / name / "shard-00000.bin").write_bytes(b"partial")
    path = ensure_synth(tmp_path, seed=2, clips_per_class=1, size=24, workers=1)
    assert path == tmp_path / name
    assert len(ClipStore.open(path)) == len(MOVES)
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    """One rule for every cache (synth stores, prepared stores, video indexes): $SEFAR_CACHE when set
    and not empty, else ~/.cache/sefar."""
    from sefar_fast.io import cache_root

    monkeypatch.setenv("SEFAR_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.setenv("SEFAR_CACHE", "")
    assert cache_root() == Path.home() / ".cache" / "sefar"
    monkeypatch.delenv("SEFAR_CACHE")
    assert cache_root() == Path.home() / ".cache" / "sefar"


def test_one_size_of_the_set_everywhere():
    """The generator's default, the config's default and the synth preset name the same set, so
    `sefar data synth` with no options generates the store `sefar train` then finds."""
    from sefar_fast.config import DataConfig, build_config

    assert DataConfig().synth_clips_per_class == synth.DEFAULT_CLIPS_PER_CLASS
    assert build_config("synth", None, {}, []).data.synth_clips_per_class == synth.DEFAULT_CLIPS_PER_CLASS


def test_bad_settings_raise_clear_errors(tmp_path):
    from sefar_fast.errors import SefarError
    with pytest.raises(SefarError, match="clips_per_class"):
        ensure_synth(tmp_path, clips_per_class=0)
    with pytest.raises(SefarError, match="val_fraction"):
        list(synth_clips(val_fraction=1.5))


def test_figure_is_darker_than_the_background():
    """One contrast polarity: every part of the figure (face dot aside) is darker than the wall behind it."""
    luma = np.array([0.299, 0.587, 0.114])
    for label in range(len(MOVES)):
        p = synth_params(label, np.random.default_rng([label, 11]))
        figure = p.colors[:4] @ luma
        wall = p.bg_colors[:2] @ luma
        assert figure.max() + 0.1 < wall.min(), SYNTH_CLASSES[label]
