"""Non-finite losses and gradients: a real skip decided on the device, and the skip / stop policies."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from cli_runner import run_cli
from torch import nn

from sefar_fast.checkpoint import load_weights
from sefar_fast.distributed import DistInfo
from sefar_fast.train.ema import EmaTeacher
from sefar_fast.train.update import Update, make_optimizer

TINY = ["--arch", "vit-test", "-b", "4", "--epochs", "1", "--device", "cpu", "--method", "supervised",
        "data.synth_clips_per_class=4", "eval.views=1x1", "data.frame_size=[32,32]", "data.crop=32",
        "data.scale_range=[32,36]", "run.log_every=1", "model.pretrained=none"]


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3))


def _grads(net: nn.Module, seed: int, nan: bool = False) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    if nan:
        next(net.parameters()).grad[0, 0] = float("nan")


def _snapshot(net, opt, teacher):
    return (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()), copy.deepcopy(teacher.state_dict()))


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def _accumulator():
    return {k: torch.zeros((), dtype=torch.float64) for k in ("opt_steps", "skipped", "first_skipped", "diverged")}


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_a_skipped_update_changes_nothing_and_an_applied_one_equals_the_plain_fused_step(kind):
    def make(seed):
        net = _net(seed)
        opt = make_optimizer(kind, net.parameters(), lr=0.1, weight_decay=1e-2)
        return net, opt, EmaTeacher.create(net)

    guarded, plain = make(0), make(0)
    net, opt, teacher = guarded
    found = torch.zeros(())
    update, acc = Update(net, opt, found, DistInfo(), ema_decay=0.9), _accumulator()
    # a NaN gradient first (before any optimizer step), a NaN loss with finite gradients, NaN gradients again
    cases = [("grad", True), (None, False), ("loss", True), (None, False), ("grad", True), (None, False)]
    for step, (bad, skip) in enumerate(cases):
        for n, _, _ in (guarded, plain):
            _grads(n, step, nan=bad == "grad")
        if bad == "loss":
            found.masked_fill_(torch.tensor(True), 1.0)  # what a micro-step does for a non-finite loss
        before = _snapshot(net, opt, teacher)
        update.step(teacher, acc)
        if skip:  # bit for bit as before: weights, teacher and optimizer state (a fresh optimizer's at first)
            after = _snapshot(net, opt, teacher)
            assert _equal(after[0], before[0]) and _equal(after[2], before[2])
            if step == 0:  # AdamW creates its state at its first step: a fresh optimizer's zeros
                assert all(not torch.any(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
            else:
                assert _equal(after[1], before[1])
        else:  # the reference: the same step without the flag, on a copy that never saw the skipped steps
            pnet, popt, pteacher = plain
            popt.step()
            popt.zero_grad(set_to_none=True)
            pteacher.update(pnet, 0.9)
            assert _equal(net.state_dict(), pnet.state_dict())
            assert _equal(teacher.state_dict(), pteacher.state_dict())
            assert _equal(opt.state_dict()["state"], popt.state_dict()["state"])
        assert float(found) == 0.0  # cleared for the next step
    assert float(acc["opt_steps"]) == len(cases) and float(acc["skipped"]) == 3
    assert float(acc["first_skipped"]) == 1 and float(acc["diverged"]) == 0


def test_an_update_that_overflows_the_weights_is_counted():
    net = _net(1)
    opt = make_optimizer("sgd", net.parameters(), lr=1e38, weight_decay=0.0, momentum=0.0, nesterov=False)
    for p in net.parameters():
        p.grad = torch.full_like(p, 1e38)  # finite gradient, infinite weights after the step
    acc = _accumulator()
    Update(net, opt, torch.zeros(()), DistInfo(), ema_decay=0.9).step(EmaTeacher.create(net), acc)
    assert float(acc["diverged"]) == 1 and float(acc["skipped"]) == 0
    assert not all(torch.isfinite(p).all() for p in net.parameters())


def test_a_run_whose_weights_overflow_stops_before_writing_them(cache_env, tmp_path, monkeypatch, capsys):
    """Under the skip policy too: the weights are gone, nothing after the overflow may be saved."""
    step = Update.step

    def overflowing_at_step_3(self, teacher, acc):
        step(self, teacher, acc)
        if float(acc["opt_steps"]) == 3:
            self.diverged.fill_(1.0)
            acc["diverged"] += self.diverged

    monkeypatch.setattr(Update, "step", overflowing_at_step_3)
    run = tmp_path / "run"
    code, err = run_cli(["train", *TINY, "--out", run, "--on-nan", "skip", "--ckpt-every-steps", "2"],
                        monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "left non-finite weights" in lines[0], err
    assert f"the last good checkpoint is {run / 'last.safetensors'} (step 2)" in lines[0]
    assert load_weights(run / "last.safetensors").meta["global_step"] == 2


def test_the_update_needs_an_optimizer_that_can_skip_on_the_device():
    net = _net(2)
    with pytest.raises(ValueError, match="fused"):
        Update(net, torch.optim.SGD(net.parameters(), lr=0.1), torch.zeros(()), DistInfo(), ema_decay=0.9)


@pytest.fixture
def cache_env(synth_cache, monkeypatch):
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # faster on a shared 2-core machine
    yield
    torch.set_num_threads(before)


def test_skip_policy_counts_the_step_and_keeps_training(cache_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEFAR_TEST_NAN_AT_STEP", "3")
    code, err = run_cli(["train", *TINY, "--out", tmp_path / "run", "--on-nan", "skip"], monkeypatch, capsys)
    assert code == 0, err
    assert "skipped 1 optimizer step(s)" in err and "first: step 3" in err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r.get("skipped_steps", 0) for r in steps] == [0, 0, 1, 1, 1]
    assert [r for r in records if r["kind"] == "epoch"][0]["skipped_steps"] == 1
    weights = load_weights(tmp_path / "run" / "last.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.student.values())


def test_stop_policy_names_the_step_and_leaves_the_last_good_checkpoint(cache_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEFAR_TEST_NAN_AT_STEP", "3")
    run = tmp_path / "run"
    code, err = run_cli(["train", *TINY, "--out", run, "--on-nan", "stop", "--ckpt-every-steps", "2"],
                        monkeypatch, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "non-finite loss or gradient at step 3" in lines[0], err
    assert f"the last good checkpoint is {run / 'last.safetensors'} (step 2)" in lines[0]
    weights = load_weights(run / "last.safetensors")
    assert weights.meta["global_step"] == 2 and not (run / "finished").exists()
    assert all(torch.isfinite(v).all() for v in weights.student.values())
    last_record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last_record["global_step"] == 2  # stopped when step 3's flag was read, before logging it
