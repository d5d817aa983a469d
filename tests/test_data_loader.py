"""Clip loader and its decoders: exact frames, shapes, determinism, resume, rank sharding."""

import numpy as np
import pytest
import torch
from PIL import Image

from sefar_fast.data.loader import ClipLoader
from sefar_fast.data.pipeline import dali_available
from sefar_fast.data.store import ClipData, ClipStore
from sefar_fast.errors import SefarError

ELEMENTS = [2, 2, 4]
BACKENDS = ["pil"] + (["dali"] if dali_available() else [])


def frame_pattern(t, h, w, clip):
    """Smooth frames whose level moves with the frame number, so frames are told apart after JPEG."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 60 + 40 * np.sin(xx / 6.0) * np.cos(yy / 7.0)
    out = np.empty((t, h, w, 3), np.uint8)
    for f in range(t):
        for c in range(3):
            out[f, :, :, c] = np.clip(base + 7 * f + 25 * c + 3 * clip, 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    clips = []
    for i in range(13):
        t = 9 + (i % 5) * 3
        h, w = (32, 48) if i % 3 else (48, 32)  # landscape and portrait frames
        clips.append(ClipData(f"c{i:02d}", i % 4, "train", frame_pattern(t, h, w, i)))
    return ClipStore.write(root, clips, ["a", "b", "c", "d"], shard_bytes=20000)


def expected_frame(store, record, frame, out_h, out_w):
    """Independent expectation: decode with the store, resize the short side with PIL, crop the centre."""
    img = store.read_frames(record, [frame])[0]
    h, w = img.shape[:2]
    scale = max(out_h / h, out_w / w)
    rh, rw = round(h * scale), round(w * scale)
    big = np.asarray(Image.fromarray(img).resize((rw, rh), Image.BILINEAR))
    y0, x0 = (rh - out_h) // 2, (rw - out_w) // 2
    return big[y0:y0 + out_h, x0:x0 + out_w]


def batches(loader):
    return [{k: v.clone() for k, v in b.items()} for b in loader]


@pytest.mark.parametrize("backend", BACKENDS)
def test_loader_decodes_exactly_the_frames_asked_for(store, backend):
    loader = ClipLoader(store, store.indices("train"), elements=ELEMENTS, batch_size=4, frame_size=(16, 16),
                        views=2, shuffle=True, drop_last=False, seed=3, device="cpu", backend=backend)
    assert len(loader) == 4  # 13 clips, batch 4, last batch partial
    for b, batch in enumerate(loader):
        plan = loader.plan_batch(loader.epoch, b)
        n = len(plan["records"])
        assert batch["frames"].shape == (n, 2, 8, 16, 16, 3) and batch["frames"].dtype == torch.uint8
        assert torch.equal(batch["index"], torch.from_numpy(plan["records"]))
        assert batch["labels"].tolist() == [store.records[r].label for r in plan["records"]]
        for s, r in enumerate(plan["records"]):
            for v in range(2):
                for k in range(8):
                    f = int(plan["frames"][s, v, k])
                    got = batch["frames"][s, v, k].numpy().astype(int)
                    want = expected_frame(store, int(r), f, 16, 16).astype(int)
                    assert np.abs(got - want).mean() < 2.0, (backend, r, f)
                    if f + 1 < store.records[r].num_frames:  # a neighbouring frame is clearly different
                        other = expected_frame(store, int(r), f + 1, 16, 16).astype(int)
                        assert np.abs(got - other).mean() > 4.0
    # the strong view re-draws frames: some differ from the weak view's
    plan = loader.plan_batch(0, 0)
    assert (plan["frames"][:, 0] != plan["frames"][:, 1]).any()


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_dali_cpu_matches_pil_on_non_square_output(store):
    outs = {}
    for backend in ("pil", "dali"):
        loader = ClipLoader(store, store.indices(), elements=ELEMENTS, batch_size=5, frame_size=(12, 20),
                            shuffle=False, seed=0, device="cpu", backend=backend)
        outs[backend] = batches(loader)
    for a, b in zip(outs["pil"], outs["dali"]):
        assert a["frames"].shape[-3:] == (12, 20, 3)
        assert (a["frames"].int() - b["frames"].int()).abs().max() <= 2


def test_same_seed_same_batches_and_epochs_differ(store):
    def make():
        return ClipLoader(store, store.indices(), elements=ELEMENTS, batch_size=4, frame_size=(8, 8),
                          shuffle=True, drop_last=True, seed=11, device="cpu", workers=2, prefetch=3)

    a, b = batches(make()), batches(make())
    assert len(a) == 3
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)
    loader = make()
    loader.set_epoch(1)
    c = batches(loader)
    assert not all(torch.equal(x["index"], y["index"]) for x, y in zip(a, c))


def test_resume_mid_epoch_gives_identical_remaining_batches(store):
    def make():
        return ClipLoader(store, store.indices(), elements=ELEMENTS, batch_size=3, frame_size=(8, 8), views=2,
                          shuffle=True, drop_last=False, seed=5, device="cpu")

    full = make()
    full.set_epoch(2)
    reference = batches(full)
    first = make()
    first.set_epoch(2)
    it = iter(first)
    for _ in range(2):
        next(it)
    state = first.state_dict()
    assert state == {"epoch": 2, "position": 2}
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the trainer re-selecting the same epoch keeps the position
    rest = batches(resumed)
    assert len(rest) == len(reference) - 2
    for x, y in zip(rest, reference[2:]):
        assert all(torch.equal(x[k], y[k]) for k in x)
    # a finished pass moves on to the next epoch
    assert resumed.state_dict() == {"epoch": 2, "position": len(reference)}
    next(iter(resumed))
    assert resumed.epoch == 3


@pytest.mark.parametrize("drop_last", [True, False])
def test_two_ranks_split_the_epoch(store, drop_last):
    per_rank = []
    for rank in range(2):
        loader = ClipLoader(store, store.indices(), elements=ELEMENTS, batch_size=2, frame_size=(8, 8),
                            shuffle=True, drop_last=drop_last, seed=7, device="cpu", rank=rank, world_size=2,
                            temporal="centre")
        per_rank.append(torch.cat([b["index"] for b in loader]).tolist())
    assert len(per_rank[0]) == len(per_rank[1])
    seen = per_rank[0] + per_rank[1]
    if drop_last:  # 13 clips: 6 per rank, all distinct
        assert len(per_rank[0]) == 6 and len(set(seen)) == 12
    else:  # padded to 7 per rank: every clip once, one twice
        assert len(per_rank[0]) == 7 and set(seen) == set(range(13))


def test_frame_fn_and_centre_sampling_are_deterministic(store):
    fixed = ClipLoader(store, [0, 1], elements=ELEMENTS, batch_size=2, frame_size=(8, 8), device="cpu",
                       frame_fn=lambda n: np.arange(8) % n)
    assert fixed.plan_batch(0, 0)["frames"][:, 0].tolist() == [list(range(8))] * 2
    centre = ClipLoader(store, [0, 1], elements=ELEMENTS, batch_size=2, frame_size=(8, 8), device="cpu",
                        temporal="centre")
    assert np.array_equal(centre.plan_batch(0, 0)["frames"], centre.plan_batch(5, 0)["frames"])


def test_loader_argument_errors(store):
    with pytest.raises(SefarError, match="no clips"):
        ClipLoader(store, [], elements=ELEMENTS, batch_size=2)
    with pytest.raises(SefarError, match="no full batch"):
        ClipLoader(store, [0, 1], elements=ELEMENTS, batch_size=4, drop_last=True)
    with pytest.raises(SefarError, match="unknown data backend"):
        ClipLoader(store, [0, 1], elements=ELEMENTS, batch_size=1, backend="opencv")
    bad = ClipLoader(store, [0], elements=ELEMENTS, batch_size=1, frame_fn=lambda n: np.arange(8) + n)
    with pytest.raises(SefarError, match="do not fit"):
        bad.plan_batch(0, 0)
