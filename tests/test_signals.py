"""SIGINT / SIGTERM handling: the first signal asks for a stop, a repeat from a launcher counts once, a
later second signal ends the process at once; SIGTERM ends `sefar train` with status 143."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from sefar_fast.train import signals
from sefar_fast.train.signals import Interrupted, StopRequest


def test_first_signal_requests_a_stop_and_a_quick_repeat_counts_once(monkeypatch):
    kills = []
    monkeypatch.setattr(signals.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    before = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite was started in the background
    with StopRequest(announce=False) as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGINT)  # torchrun forwarding the terminal's Ctrl-C: the same request
        assert kills == [] and stop.signum == signal.SIGTERM
        stop.first_at -= signals.REPEAT_WINDOW_S + 1  # a real second signal, later
        signal.raise_signal(signal.SIGINT)
        assert kills == [(os.getpid(), signal.SIGINT)]  # re-sent with the default action: the process ends
        assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored after the block
    assert signal.getsignal(signal.SIGINT) == before_int


def test_exit_status_is_128_plus_the_signal():
    assert Interrupted(signal.SIGINT, "x").exit_code == 130
    assert Interrupted(signal.SIGTERM, "x").exit_code == 143


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_143(synth_cache, tmp_path):
    from sefar_fast.checkpoint import read_metadata

    run = tmp_path / "run"
    args = ["train", "--arch", "vit-test", "-b", "4", "--epochs", "1", "--device", "cpu", "--method", "supervised",
            "data.synth_clips_per_class=4", "data.frame_size=[32,32]", "data.crop=32", "data.scale_range=[32,36]",
            "eval.views=1x1", "model.pretrained=none", "--out", str(run)]
    env = {**os.environ, "SEFAR_CACHE": str(synth_cache), "OMP_NUM_THREADS": "1", "SEFAR_TEST_SIGNAL_AT_STEP": "2:TERM"}
    proc = subprocess.run([sys.executable, "-m", "sefar_fast", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert "SIGTERM: finishing this step" in proc.stderr
    assert f"resume with: sefar train --resume-from {run}" in proc.stderr
    assert read_metadata(run / "last.safetensors")["global_step"] == 2
