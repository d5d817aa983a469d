"""Checkpoint files: round trip, atomic replacement, clear errors."""

import json
import math
import os
import pickle
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sefar_fast.checkpoint import load_state, load_weights, save_state, save_weights
from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write


def _sd(seed):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(3, 4, generator=g), "b.bias": torch.randn(5, generator=g)}


def test_round_trip_student_teacher_and_metadata(tmp_path):
    meta = {"config": {"model": {"arch": "vit-test"}}, "class_names": ["x", "y"], "epoch": 3, "metrics": {"top1": 0.5}}
    save_weights(tmp_path / "c.safetensors", _sd(0), _sd(1), meta)
    ck = load_weights(tmp_path / "c.safetensors")
    for k, v in _sd(0).items():
        assert torch.equal(ck.student[k], v)
    for k, v in _sd(1).items():
        assert torch.equal(ck.teacher[k], v)
    assert ck.meta == meta and ck.class_names == ["x", "y"]


def test_no_teacher_before_warmup(tmp_path):
    save_weights(tmp_path / "c.safetensors", _sd(0), None, {"config": {}, "class_names": []})
    assert load_weights(tmp_path / "c.safetensors").teacher is None


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def failing(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]  # no temporary left behind


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(SefarError, match="does not exist"):
        load_weights(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SefarError, match="corrupt"):
        load_weights(bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(SefarError, match="not written by sefar"):
        load_weights(foreign)
    # A truncated copy of a good checkpoint is reported as corrupt, not half-loaded.
    good = tmp_path / "good.safetensors"
    save_weights(good, _sd(0), None, {"config": {}, "class_names": []})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(SefarError, match="corrupt"):
        load_weights(cut)


def test_state_round_trip_and_errors(tmp_path):
    state = {"progress": {"epoch": 2}, "rng": torch.get_rng_state()}
    save_state(tmp_path / "last.state", state)
    back = load_state(tmp_path / "last.state")
    assert back["progress"] == {"epoch": 2} and torch.equal(back["rng"], state["rng"])
    (tmp_path / "bad.state").write_bytes(b"not a torch file")
    with pytest.raises(SefarError, match="corrupt"):
        load_state(tmp_path / "bad.state")
    with pytest.raises(SefarError, match="does not exist"):
        load_state(tmp_path / "missing.state")


def _same(a, b) -> bool:
    """Equal values of the same types, all the way down (tuples stay tuples, int keys stay ints)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))  # nan == nan here


def test_a_state_comes_back_with_its_types(tmp_path):
    net = torch.nn.Linear(3, 2)
    net(torch.randn(4, 3)).sum().backward()
    states = {}
    for name, opt in (("sgd", torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)),
                      ("adamw", torch.optim.AdamW(net.parameters(), lr=0.1))):
        opt.step()
        states[name] = opt.state_dict()  # int keys, tuples (betas), 0-d tensors (step)
    state = {"optimizers": states, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                           "python": random.getstate(), "cuda": None},
             "numbers": [0, -1, 2.5, float("nan"), float("inf"), True, None, "text", np.int64(7), np.float32(0.5)],
             "empty": torch.zeros(0, 2), "flags": torch.tensor([True, False]), "half": torch.ones(2, dtype=torch.bfloat16),
             "nested": {3: {"__sefar__": "a key that looks like a tag"}}}
    save_state(tmp_path / "s.state", state)
    back = load_state(tmp_path / "s.state")
    assert _same(back, state)
    assert not _same({1: 0}, {"1": 0}) and not _same((1,), [1])  # the comparison itself tells them apart


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this calls os.mkdir(marker)
        return os.mkdir, (str(self.marker),)


def test_a_crafted_state_runs_no_code(tmp_path):
    marker = tmp_path / "code-ran"
    pickled = tmp_path / "pickled.state"  # what an older sefar wrote, with a payload inside
    torch.save({"progress": {}, "payload": _RunsCode(marker)}, pickled)
    with pytest.raises(SefarError, match="is a pickle written by an older sefar; it is not read"):
        load_state(pickled)
    bare = tmp_path / "bare.state"
    bare.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(SefarError, match="is a pickle"):
        load_state(bare)
    assert not marker.exists()
    # A state file in today's format whose tree asks for objects: refused as corrupt, nothing built.
    for tree in ({"__sefar__": "ndarray", "name": "0", "dtype": "|O", "shape": [1]},
                 {"__sefar__": "object", "module": "os", "name": "system"}):
        crafted = tmp_path / "crafted.state"
        save_file({"0": torch.zeros(8, dtype=torch.uint8)}, str(crafted),
                  metadata={"format": "sefar-state-1", "state": json.dumps(tree)})
        with pytest.raises(SefarError, match="is corrupt"):
            load_state(crafted)


def test_a_corrupt_last_checkpoint_names_the_pair_still_there(tmp_path):
    from sefar_fast.train.checkpoints import RunCheckpoints

    files = RunCheckpoints(tmp_path)
    for step in (1, 2):
        files.save({"w": torch.full((2,), float(step))}, None, {"config": {}, "class_names": [], "global_step": step},
                   {"progress": {"global_step": step}}, epoch_end=step, keep=2)
    files.last.unlink()  # a copy of the run that broke off: the epoch file (a hard link) is whole
    files.last.write_bytes(b"cut short")
    with pytest.raises(SefarError) as e:
        files.load_latest()
    message = str(e.value)
    assert "last.safetensors is corrupt" in message
    assert (f"epoch-002.safetensors still pairs with last.state: copy it over last.safetensors "
            f"(cp {tmp_path / 'epoch-002.safetensors'} {files.last}) to continue exactly from its step 2") in message
    files.last.write_bytes((tmp_path / "epoch-002.safetensors").read_bytes())  # what the message says to do
    weights, state = files.load_latest()
    assert state["progress"]["global_step"] == 2 and torch.equal(weights.student["w"], torch.full((2,), 2.0))
    (tmp_path / "last.state").unlink()
    (tmp_path / "prev.state").unlink()
    files.last.write_bytes(b"cut short")
    with pytest.raises(SefarError, match="no other checkpoint pairs with a training state: evaluate .*epoch-002"):
        files.load_latest()
