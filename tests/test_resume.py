"""Exact resume: a run interrupted by a signal, or killed inside a checkpoint write, continues bit for bit.

Every run here is the same tiny SeFAR training (vit-test, 32px, 1 warm-up + 1 semi-supervised epoch of
5 optimizer steps). The reference runs uninterrupted; the others are stopped in a subprocess and resumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import kill_when_hung, run_cli

from sefar_fast.checkpoint import load_state, load_weights, read_metadata

TINY = ["--arch", "vit-test", "--pretrained", "none", "-b", "4", "--epochs", "2", "--device", "cpu", "--keep", "1",
        "data.synth_clips_per_class=4", "method.warmup_epochs=1", "eval.views=1x1", "eval.every=2",
        "data.frame_size=[32,32]", "data.crop=32", "data.scale_range=[32,36]", "method.unlabeled_ratio=1",
        "method.mc_samples=2", "run.log_every=1"]


def spawn(args: list[str], cache: Path, **hooks: str) -> subprocess.Popen:
    # One intra-op thread, as `one_thread` gives this process: runs compared bit for bit must use
    # the same thread count (and a 2-core machine shared with other tests runs them faster this way).
    env = {**os.environ, "SEFAR_CACHE": str(cache), "OMP_NUM_THREADS": "1", **hooks}
    return subprocess.Popen([sys.executable, "-m", "sefar_fast", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_weights(a), load_weights(b)
    assert wa.teacher is not None and wb.teacher is not None
    for part in ("student", "teacher"):
        da, db = getattr(wa, part), getattr(wb, part)
        assert da.keys() == db.keys()
        for k in da:
            assert torch.equal(da[k], db[k]), f"{part}.{k} differs"


def step_records(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["global_step"] for r in map(json.loads, lines) if r["kind"] == "step"]


@pytest.fixture(scope="module")
def reference(synth_cache, tmp_path_factory, one_thread):
    """The uninterrupted run (in this process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("SEFAR_CACHE", str(synth_cache))
    from sefar_fast.cli.app import main

    mp.setattr(sys, "argv", ["sefar", "train", *TINY, "--out", str(out), "--profile"])  # numerics unchanged
    try:
        main()
    finally:
        mp.undo()
    return out


def test_reference_run_writes_the_expected_files(reference):
    names = {p.name for p in reference.iterdir()}
    assert {"last.safetensors", "last.state", "best.safetensors", "finished", "epoch-002.safetensors"} <= names
    assert "epoch-001.safetensors" not in names  # run.keep = 1
    assert step_records(reference) == list(range(1, 11))
    meta = read_metadata(reference / "last.safetensors")
    assert meta["global_step"] == 10
    assert load_state(reference / "last.state")["checkpoint_id"] == meta["checkpoint_id"]
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["data_wait"] <= 1 for r in records)  # every step and epoch record has it
    trace = json.loads((reference / "profile" / "trace-rank0.json").read_text())  # --profile
    assert any("aten::" in e.get("name", "") for e in trace["traceEvents"])


@pytest.mark.slow
def test_sigint_mid_epoch_then_resume_equals_uninterrupted(reference, synth_cache, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    proc = spawn(["train", *TINY, "--out", run], synth_cache, SEFAR_TEST_SIGNAL_AT_STEP="7")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert f"resume with: sefar train --resume-from {run}" in err
    assert "epoch 2, step 2/5" in err
    assert read_metadata(run / "last.safetensors")["global_step"] == 7
    assert not (run / "finished").exists()

    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    # The shards of a global batch are part of the run: another layout is refused before any step,
    # and the refusal leaves the run folder as it was.
    saved_config = (run / "config.yaml").read_text()
    code, err = run_cli(["train", "--resume-from", run, "optim.accum_steps=2"], monkeypatch, capsys)
    assert code == 2 and "keep processes x optim.accum_steps = 1" in err
    assert (run / "config.yaml").read_text() == saved_config
    code, err = run_cli(["train", "--resume-from", run], monkeypatch, capsys)
    assert code == 0, err
    assert_same_weights(run / "last.safetensors", reference / "last.safetensors")
    assert step_records(run) == list(range(1, 11))  # steps logged after the checkpoint were dropped


@pytest.mark.slow
def test_kill_during_checkpoint_write_keeps_a_consistent_pair(reference, synth_cache, tmp_path, monkeypatch,
                                                              capsys):
    run = tmp_path / "run"
    # Checkpoints after steps 2 and 4; the second write of last.safetensors hangs before its rename.
    proc = spawn(["train", *TINY, "--out", run, "--ckpt-every-steps", "2"], synth_cache,
                 SEFAR_TEST_HANG_IN_WRITE="last.safetensors:2")
    kill_when_hung(proc, run / "last.safetensors.hang")

    # The new state (step 4) was written, its weights were not: the previous pair (step 2) still loads.
    assert load_state(run / "last.state")["progress"]["global_step"] == 4
    assert list(run.glob(".last.safetensors.*.tmp")), "the half-done write left its temporary"
    weights = load_weights(run / "last.safetensors")
    assert weights.meta["global_step"] == 2
    assert load_state(run / "prev.state")["checkpoint_id"] == weights.meta["checkpoint_id"]

    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    code, err = run_cli(["train", *TINY, "--out", run], monkeypatch, capsys)  # same command: auto-resume
    assert code == 0, err
    assert not list(run.glob(".*.tmp"))
    assert_same_weights(run / "last.safetensors", reference / "last.safetensors")


@pytest.mark.parametrize("crash_in", ["state", "weights", "link"])
def test_a_crash_at_any_point_of_a_save_leaves_a_pair_to_resume_from(tmp_path, monkeypatch, crash_in):
    from sefar_fast.train import checkpoints
    from sefar_fast.train.checkpoints import RunCheckpoints

    files = RunCheckpoints(tmp_path)
    meta = {"config": {}, "class_names": ["a"]}

    def save(step):
        files.save({"w": torch.full((3,), float(step))}, {"w": torch.zeros(3)}, {**meta, "step": step},
                   {"progress": {"global_step": step}}, epoch_end=step, best=True, keep=2)

    save(1)
    save(2)

    def crash(*args, **kwargs):  # the process dies at this point of the save
        raise KeyboardInterrupt("killed")

    name = {"state": "save_state", "weights": "save_weights", "link": "link_or_copy"}[crash_in]
    with monkeypatch.context() as m:
        m.setattr(checkpoints, name, crash)
        with pytest.raises(KeyboardInterrupt):
            save(3)
    weights, state = RunCheckpoints(tmp_path).load_latest()
    expected = 3 if crash_in == "link" else 2  # the pair is complete once last.safetensors is renamed
    assert weights.meta["step"] == expected and state["progress"]["global_step"] == expected
    assert torch.equal(weights.student["w"], torch.full((3,), float(expected)))
    assert load_state(tmp_path / "last.state")["checkpoint_id"] == weights.meta["checkpoint_id"]  # invariant back


def test_keep_policy_keeps_the_newest_epoch_files(tmp_path):
    from sefar_fast.train.checkpoints import RunCheckpoints

    files = RunCheckpoints(tmp_path)
    for epoch in range(1, 5):
        files.save({"w": torch.zeros(1)}, None, {"config": {}, "class_names": []}, {}, epoch_end=epoch, keep=2)
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-003.safetensors", "epoch-004.safetensors"]
    assert load_weights(tmp_path / "epoch-004.safetensors").meta == load_weights(tmp_path / "last.safetensors").meta


def test_a_run_written_before_global_batch_and_headline_resumes_as_it_trained(tmp_path):
    import yaml

    from sefar_fast.config import build_config
    from sefar_fast.train.resume import config_changes, load_run_config

    # config.yaml as earlier versions wrote it: no optim.global_batch (accum_steps as given), no
    # eval.headline (the teacher picked the best checkpoint)
    written = build_config("synth").to_dict()
    del written["optim"]["global_batch"], written["eval"]["headline"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(written))
    saved = load_run_config(tmp_path)
    assert (saved.optim.global_batch, saved.eval.headline) == (0, "teacher")
    assert config_changes(saved, build_config("synth")) == []  # the same command continues it
