"""A full disk, a read-only folder, Ctrl-C: one line each, nothing half-written left behind, nothing
computed lost, and a run stopped by a full disk continues bit for bit once there is space.

A full or read-only file system is stood in for by making the write raise what the OS raises
(ENOSPC, EROFS): the tests may run as root, whom file permissions do not stop.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli

from sefar_fast.checkpoint import load_weights
from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write_text

TINY = ["--arch", "vit-test", "--pretrained", "none", "-b", "4", "--epochs", "2", "--device", "cpu",
        "--keep", "1", "data.synth_clips_per_class=4", "method.warmup_epochs=1", "eval.views=1x1", "eval.every=2",
        "data.frame_size=[32,32]", "data.crop=32", "data.scale_range=[32,36]", "method.unlabeled_ratio=1",
        "method.mc_samples=2", "run.log_every=1", "--ckpt-every-steps", "2"]


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_refused_write_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "old\n")
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(SefarError) as e:
        atomic_write_text(target, "new\n")
    assert str(e.value) == (f"cannot write {target} (No space left on device) (the previous file is intact); "
                            "free space there or use a writable folder")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.slow
def test_a_disk_full_at_a_checkpoint_stops_in_one_line_and_the_run_continues_exactly(
        synth_cache, tmp_path, monkeypatch, capsys, one_thread):
    from sefar_fast import checkpoint

    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    code, err = run_cli(["train", *TINY, "--out", tmp_path / "reference"], monkeypatch, capsys)
    assert code == 0, err

    run = tmp_path / "run"
    calls = {"n": 0}
    real_save_file = checkpoint.save_file

    def fills_up(tensors, filename, metadata=None):  # checkpoint 1 = state + weights; checkpoint 2's weights fail
        calls["n"] += 1
        if calls["n"] == 4:
            full_disk()
        return real_save_file(tensors, filename, metadata=metadata)

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save_file", fills_up)
        code, err = run_cli(["train", *TINY, "--out", run], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: cannot write {run / 'last.safetensors'} (No space left on device) "
                               "(the previous file is intact)")
    assert lines[0].endswith(f"the last complete checkpoint is kept: continue with 'sefar train --resume-from {run}'")
    assert not list(run.glob(".*.tmp"))
    code, err = run_cli(["train", "--resume-from", run], monkeypatch, capsys)  # space again
    assert code == 0, err
    for part in ("student", "teacher"):
        a, b = getattr(load_weights(run / "last.safetensors"), part), getattr(load_weights(
            tmp_path / "reference" / "last.safetensors"), part)
        assert all(torch.equal(a[k], b[k]) for k in a), part
    steps = [r["global_step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "step"]
    assert steps == list(range(1, 11))


def test_a_full_cache_during_synth_generation_leaves_nothing(tmp_path, monkeypatch):
    from sefar_fast.data import store
    from sefar_fast.data.synth import ensure_synth

    calls = {"n": 0}
    real_append = store.ShardWriter.append_clip

    def fills_up(self, jpegs):
        calls["n"] += 1
        if calls["n"] == 5:
            full_disk()
        return real_append(self, jpegs)

    monkeypatch.setattr(store.ShardWriter, "append_clip", fills_up)
    cache = tmp_path / "cache"
    with pytest.raises(SefarError) as e:
        ensure_synth(cache, seed=0, clips_per_class=4, workers=1)
    assert str(e.value) == (f"cannot write the synthetic data to {cache} (No space left on device); "
                            "free space there or use a writable folder")
    assert list(cache.iterdir()) == []  # the half-written store went with the error


def test_a_full_disk_during_prepare_is_one_line_and_the_rerun_finishes(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from sefar_fast.data import store
    from sefar_fast.data.adapters import SourceClip, SourceSet
    from sefar_fast.data.prepare import prepare
    from sefar_fast.data.store import ClipStore

    clips = []
    for i in range(6):  # frame folders: no video codec needed
        folder = tmp_path / "frames" / f"clip{i}"
        folder.mkdir(parents=True)
        for f in range(3):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{f:05d}.jpg")
        clips.append(SourceClip(f"clip{i}", folder, i % 2, "train" if i < 4 else "val"))
    sources = SourceSet("frames", clips, ["a", "b"])
    out = tmp_path / "store"
    real_append = store.ShardWriter.append_clip
    calls = {"n": 0}

    def fills_up(self, jpegs):
        calls["n"] += 1
        if calls["n"] == 4:
            full_disk()
        return real_append(self, jpegs)

    with monkeypatch.context() as m:
        m.setattr(store.ShardWriter, "append_clip", fills_up)
        with pytest.raises(SefarError) as e:
            prepare(sources, out, short_side=None, workers=1)
    assert str(e.value) == (f"cannot write the clip store {out} (No space left on device); free space there or use "
                            "a writable folder; running the same command again continues where this one stopped")
    summary = prepare(sources, out, short_side=None, workers=1)
    assert summary["skipped"] == 3 and summary["written"] == 3  # the three clips before the fault were kept
    assert len(ClipStore.open(out).records) == 6


@pytest.mark.slow
def test_ctrl_c_during_synth_generation_prints_one_line(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "SEFAR_CACHE": str(cache)}
    # Ctrl-C in a terminal signals the whole process group: the command and its worker processes.
    proc = subprocess.Popen([sys.executable, "-m", "sefar_fast", "data", "synth", "--clips-per-class", "100"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            # as from a terminal, also where the suite runs in the background (SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (cache.is_dir() and list(cache.glob(".synth-*.tmp-*"))):  # generation has started
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(2)  # the workers are rendering
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.splitlines() == ["interrupted: nothing was left half-written; run the same command again"]
    assert list(cache.iterdir()) == []
