"""Checkpoint files: round trip, atomic replacement, clear errors."""

import os

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
