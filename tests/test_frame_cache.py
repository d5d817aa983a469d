"""Decoded frames in memory (`data.frame_cache`): the same batches as decoding every time, each frame
decoded once, and the trainer's loaders sharing one filled cache."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sefar_fast.data.frame_cache import FrameCache
from sefar_fast.data.loader import ClipLoader, fill_frame_cache
from sefar_fast.data.pipeline import dali_available
from sefar_fast.data.store import ClipData, ClipStore

ELEMENTS = [2, 2, 4]
BACKENDS = ["pil"] + (["dali"] if dali_available() else [])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Nine clips of 8 to 16 noisy frames, landscape and portrait (a resize of each differs)."""
    rng = np.random.default_rng(0)
    clips = [ClipData(f"c{i}", i % 3, "train",
                      rng.integers(0, 256, (8 + i, 24, 36, 3) if i % 2 else (8 + i, 36, 24, 3), dtype=np.uint8))
             for i in range(9)]
    return ClipStore.write(tmp_path_factory.mktemp("store"), clips, ["a", "b", "c"])


def records(*frames):
    return [SimpleNamespace(num_frames=n) for n in frames]


def labelled_decode(calls):
    """A decoder whose frame (record r, frame f) is filled with r * 16 + f, recording what it was asked."""
    def decode(record, frame_ids):
        calls.append(list(zip(record.tolist(), frame_ids.tolist())))
        return np.broadcast_to((record * 16 + frame_ids).astype(np.uint8)[:, None, None, None], (len(record), 2, 3, 3))
    return decode


def test_take_returns_the_frames_asked_for_and_decodes_each_once():
    cache = FrameCache(records(3, 5, 2), (2, 3))
    calls = []
    rec = np.array([1, 0, 2])
    ids = np.array([[4, 0], [2, 2], [1, 0]])  # record 0 asks frame 2 twice in one batch
    out = cache.take(rec, ids, labelled_decode(calls))
    assert out.shape == (6, 2, 3, 3)
    np.testing.assert_array_equal(out[:, 0, 0, 0], [20, 16, 2, 2, 33, 32])
    assert sorted(calls[0]) == [(0, 2), (1, 0), (1, 4), (2, 0), (2, 1)]  # each missing frame once
    out = cache.take(np.array([1, 2]), np.array([[0, 3], [1, 1]]), labelled_decode(calls))
    assert calls[1] == [(1, 3)]  # only the frame not held yet
    np.testing.assert_array_equal(out[:, 0, 0, 0], [16, 19, 33, 33])


def test_fill_decodes_every_frame_not_held_in_chunks():
    cache = FrameCache(records(3, 5, 2), (2, 3))
    calls, seen = [], []
    cache.take(np.array([0]), np.array([[1]]), labelled_decode(calls))
    cache.fill(labelled_decode(calls), chunk=4, progress=seen.append)
    assert seen == [4, 4, 1] and cache.ready.all()
    decoded = [frame for call in calls for frame in call]
    assert sorted(decoded) == sorted({(r, f) for r, n in enumerate((3, 5, 2)) for f in range(n)})  # each once
    np.testing.assert_array_equal(cache.frames[:, 0, 0, 0], [0, 1, 2, 16, 17, 18, 19, 20, 32, 33])


def test_a_cache_only_where_the_frames_fit_on_the_cpu(store):
    size = sum(r.num_frames for r in store.records) * 16 * 16 * 3
    assert FrameCache.fitting(store, (16, 16), size / 2**20, "cpu") is not None
    assert FrameCache.fitting(store, (16, 16), (size - 1) / 2**20, "cpu") is None
    assert FrameCache.fitting(store, (16, 16), 0, "cpu") is None
    assert FrameCache.fitting(store, (16, 16), 1024, "cuda") is None  # decoded on the GPU there
    direct = SimpleNamespace(records=store.records, frame_decoder=None)  # a video source decodes clips itself
    assert FrameCache.fitting(direct, (16, 16), 1024, "cpu") is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("prefill", [False, True])
def test_batches_are_bit_identical_with_the_cache(store, backend, prefill):
    """Two epochs of two-view batches, from frames decoded in other batches (or all at once) and kept."""
    def loader(cache):
        return ClipLoader(store, store.indices("train"), elements=ELEMENTS, batch_size=4, frame_size=(16, 20),
                          views=2, shuffle=True, seed=5, backend=backend, frame_cache=cache)

    cache = FrameCache(store.records, (16, 20))
    if prefill:
        fill_frame_cache(cache, store, backend, chunk=7)
    plain, cached = loader(None), loader(cache)
    for epoch in range(2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for a, b in zip(plain, cached, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), key
    assert cached.frame_cache is cache
    plain.close()
    cached.close()


def test_a_cache_of_another_frame_size_is_refused(store):
    with pytest.raises(ValueError, match="frame cache of \\(16, 20\\)"):
        ClipLoader(store, store.indices("train"), elements=ELEMENTS, batch_size=4, frame_size=(16, 16),
                   frame_cache=FrameCache(store.records, (16, 20)))


def test_a_run_with_the_cache_is_the_run_without_it(synth_cache, monkeypatch, tmp_path):
    """The trainer fills one cache for its labeled, unlabeled and val loaders, and the run (weights and
    every logged number but the timing) is bit-identical to the one decoding every batch."""
    from safetensors.torch import load_file

    from sefar_fast.config import build_config
    from sefar_fast.train import loop

    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    flags = {"model.arch": "vit-test", "model.pretrained": "none", "optim.epochs": 2, "run.device": "cpu"}
    overrides = ["data.synth_clips_per_class=4", "data.frame_size=[32,40]", "data.crop=32",
                 "data.scale_range=[32,38]", "method.warmup_epochs=1", "eval.views=2x1"]
    runs = {}
    for name, extra in (("cached", []), ("decoded", ["data.frame_cache_mb=0"])):
        trainer = loop.Trainer(build_config("synth", None, {**flags, "run.out": str(tmp_path / name)},
                                            [*overrides, *extra]))
        built = []
        real_setup = trainer.setup

        def setup(trainer=trainer, built=built):
            real_setup()
            built.append((trainer.frame_cache, trainer.labeled.frame_cache, trainer.unlabeled.frame_cache))

        trainer.setup = setup
        result = trainer.run()
        runs[name] = (built[0], result, load_file(str(tmp_path / name / "last.safetensors")))
    (cache, labeled, unlabeled), cached, weights = runs["cached"]
    assert cache is not None and cache.ready.all() and labeled is cache and unlabeled is cache
    assert runs["decoded"][0] == (None, None, None)
    other = runs["decoded"][2]
    assert weights.keys() == other.keys() and all(torch.equal(weights[k], other[k]) for k in weights)
    timing = {"data_wait"}
    assert {k: v for k, v in cached["last"].items() if k not in timing} == \
        {k: v for k, v in runs["decoded"][1]["last"].items() if k not in timing}
