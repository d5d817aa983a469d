"""Learning-rate steps, linear scaling, milestone scaling, the lr warm-up and the xi ramp at
hand-computed points; the warm-up also as a training run applies it."""

import json
import math

import pytest
from cli_runner import run_cli

from sefar_fast.train.schedule import lr_at, milestone_epochs, scaled_lr, xi


def test_lr_steps_at_25_and_28_of_30():
    cases = [(0.0, 0.005), (10.5, 0.005), (24.999, 0.005), (25.0, 0.0005), (27.9, 0.0005), (28.0, 5e-5), (29.99, 5e-5)]
    for epoch, lr in cases:
        assert lr_at(epoch, 0.005, [25, 28]) == pytest.approx(lr)
    assert lr_at(5, 0.01, [2, 4, 6], [0.5, 0.25, 0.125]) == pytest.approx(0.0025)
    with pytest.raises(ValueError):
        lr_at(1, 0.1, [1, 2], [0.1])


def test_linear_scaling_with_the_effective_labeled_batch():
    assert scaled_lr(0.005, 64) == pytest.approx(0.005)
    assert scaled_lr(0.005, 8) == pytest.approx(0.000625)
    assert scaled_lr(0.005, 256) == pytest.approx(0.02)
    assert scaled_lr(0.01, 32, ref_batch=16) == pytest.approx(0.02)


def test_milestones_scale_with_the_run_length():
    assert milestone_epochs(30) == pytest.approx([25, 28])
    assert milestone_epochs(60) == pytest.approx([50, 56])
    assert milestone_epochs(10) == pytest.approx([25 / 3, 28 / 3])  # fractional: decays mid-epoch
    assert milestone_epochs(52, [0.9, 0.97]) == pytest.approx([46.8, 50.44])  # the synth preset
    assert milestone_epochs(20, [0.5]) == pytest.approx([10])


def test_xi_ramp():
    assert [xi(e, 5, 30) for e in range(5)] == [0.0] * 5
    assert xi(5, 5, 30) == pytest.approx(0.0628, abs=1e-4)  # sin(pi/50)
    assert xi(17, 5, 30) == pytest.approx(math.sin(math.pi / 2 * 13 / 25))
    assert xi(29, 5, 30) == pytest.approx(1.0)
    assert xi(35, 5, 30) == pytest.approx(1.0)  # capped after the last epoch
    assert xi(0, 0, 4) == pytest.approx(math.sin(math.pi / 8))
    values = [xi(e, 5, 30) for e in range(5, 30)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_lr_warmup_ramps_linearly_then_hands_over_to_the_steps():
    cases = [(0.0, 0.0), (0.5, 0.001), (1.25, 0.0025), (3.999, 0.007998), (4.0, 0.008), (10.0, 0.008),
             (25.0, 0.0008)]
    for epoch, lr in cases:
        assert lr_at(epoch, 0.008, [25, 28], warmup=4) == pytest.approx(lr)
    assert lr_at(1.0, 0.008, [0.5], [0.1], warmup=2) == pytest.approx(0.008 * 0.5 * 0.1)  # both apply
    assert lr_at(0.0, 0.008, [25, 28], warmup=0) == pytest.approx(0.008)  # none by default


def test_training_applies_the_lr_warmup_per_step(synth_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    out = tmp_path / "run"
    code, err = run_cli(["train", "--method", "supervised", "--arch", "vit-test", "-b", "2", "--epochs", "2",
                         "--device", "cpu", "--label-rate", "0.5", "--out", out, "data.synth_clips_per_class=4",
                         "data.frame_size=[32,32]", "data.crop=32", "data.scale_range=[32,36]", "eval.views=1x1",
                         "run.log_every=1", "optim.lr=0.032", "optim.lr_warmup_epochs=1",
                         "optim.milestones=[]", "optim.lr_factors=[]", "model.pretrained=none"], monkeypatch, capsys)
    assert code == 0, err
    steps = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]
    first = [r["lr"] for r in steps if r["epoch"] == 1]
    second = [r["lr"] for r in steps if r["epoch"] == 2]
    base = 0.032 * 2 / 64  # optim.lr is for 64 labeled clips per step, scaled to the batch of 2
    n = len(first)
    assert n >= 2 and first == pytest.approx([base * k / n for k in range(n)])
    assert second == pytest.approx([base] * len(second))


def test_lr_warmup_longer_than_the_run_is_refused(monkeypatch, capsys):
    code, err = run_cli(["train", "--method", "supervised", "--epochs", "3", "optim.lr_warmup_epochs=3"], monkeypatch, capsys)
    assert code != 0 and "optim.lr_warmup_epochs 3" in err and len(err.strip().splitlines()) == 1
