"""One process per run folder: a second `sefar train` (or `sefar eval` writing into the run) is refused in
one line naming the holder; the lock goes with the process that held it; default run names never collide.

The holders here are real processes held inside their first write into the run folder (config.yaml) by
the SEFAR_TEST_HANG_IN_WRITE hook of `sefar_fast.io`, then killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import run_cli

from sefar_fast.lock import FolderLock

TINY = ["--arch", "vit-test", "--pretrained", "none", "-b", "4", "--epochs", "2", "--device", "cpu",
        "data.synth_clips_per_class=4", "method.warmup_epochs=1", "eval.views=1x1", "data.frame_size=[32,32]",
        "data.crop=32", "data.scale_range=[32,36]", "method.unlabeled_ratio=1", "method.mc_samples=2"]


def spawn_held(args: list, cwd: Path, cache: Path) -> subprocess.Popen:
    """`sefar train ARGS` in a subprocess that stops inside its first write of config.yaml."""
    env = {**os.environ, "SEFAR_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "SEFAR_TEST_HANG_IN_WRITE": "config.yaml:1"}
    return subprocess.Popen([sys.executable, "-m", "sefar_fast", "train", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(pattern: str, folder: Path, count: int, procs: list[subprocess.Popen]) -> list[Path]:
    deadline = time.monotonic() + 240
    while len(found := sorted(folder.glob(pattern))) < count:
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"no {pattern} under {folder}"
        time.sleep(0.2)
    return found


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def test_a_second_train_on_a_run_folder_is_refused_naming_the_holder(synth_cache, tmp_path, monkeypatch, capsys):
    holder = spawn_held([*TINY, "--out", "run"], tmp_path, synth_cache)
    try:
        wait_for("run/config.yaml.hang", tmp_path, 1, [holder])
        before = sorted(p.name for p in (tmp_path / "run").iterdir())
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
        code, err = run_cli(["train", *TINY, "--out", "run"], monkeypatch, capsys)
        assert code == 2
        assert err.strip() == (f"error: run is in use by sefar train (PID {holder.pid} on {socket.gethostname()}); "
                               "wait for it to end, or choose another --out")
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # the holder's files untouched
    finally:
        kill(holder)
    (tmp_path / "run" / "config.yaml.hang").unlink()
    # The lock went with the process: the same command now runs (stopped by a signal after its first step).
    monkeypatch.setenv("SEFAR_TEST_SIGNAL_AT_STEP", "1")
    code, err = run_cli(["train", *TINY, "--out", "run"], monkeypatch, capsys)
    assert code == 130, err
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_runs_started_together_with_the_default_name_get_their_own_folders(synth_cache, tmp_path):
    procs = [spawn_held([*TINY], tmp_path, synth_cache) for _ in range(2)]
    try:
        markers = wait_for("runs/*/config.yaml.hang", tmp_path, 2, procs)
    finally:
        for proc in procs:
            kill(proc)
    folders = {m.parent.name for m in markers}
    assert len(folders) == 2 and all("-sefar-" in f and "-s0-" in f for f in folders), folders


def test_default_run_names_carry_the_seed_and_differ_within_a_second():
    from sefar_fast.config import build_config
    from sefar_fast.train.loop import default_run_dir

    cfg = build_config("synth", None, {"run.seed": 7}, [])
    names = {default_run_dir(cfg).name for _ in range(20)}  # well within one second
    assert len(names) == 20 and all(n.startswith("synth-sefar-") and "-s7-" in n for n in names)


def test_the_lock_is_exclusive_and_released(tmp_path):
    first = FolderLock(tmp_path / "run", "sefar train").acquire("choose another --out")
    with pytest.raises(Exception, match=f"in use by sefar train \\(PID {os.getpid()} "):
        FolderLock(tmp_path / "run", "sefar eval").acquire("choose another --out")
    first.release()
    FolderLock(tmp_path / "run", "sefar eval").acquire("choose another --out").release()


def test_eval_writing_into_a_run_in_use_is_refused_before_scoring(tiny_run, tmp_path, monkeypatch, capsys):
    from sefar_fast.eval import evaluate

    held = FolderLock(tiny_run.run, "sefar train").acquire("choose another --out")  # a training still running
    try:
        def not_now(*args, **kwargs):
            raise AssertionError("scored clips before refusing")

        with monkeypatch.context() as m:
            m.setattr(evaluate, "score_models", not_now)
            code, err = run_cli(["eval", tiny_run.best, "--views", "1x1"], monkeypatch, capsys)
            assert code == 2
            assert err.strip() == (f"error: {tiny_run.run} is in use by sefar train (PID {os.getpid()} on "
                                   f"{socket.gethostname()}); wait for it to end, or write the reports elsewhere "
                                   "with --out")
            # a report folder that cannot be made is refused before scoring too
            (tmp_path / "a-file").write_text("")
            code, err = run_cli(["eval", tiny_run.best, "--out", tmp_path / "a-file" / "reports"], monkeypatch, capsys)
            assert code == 2 and "cannot write to" in err and "write the reports elsewhere with --out" in err
        code, err = run_cli(["eval", tiny_run.best, "--views", "1x1", "--model", "student", "--out",
                             tmp_path / "reports"], monkeypatch, capsys)
        assert code == 0, err
        assert (tmp_path / "reports" / "student" / "report.json").is_file()
    finally:
        held.release()
