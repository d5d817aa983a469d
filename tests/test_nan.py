"""Non-finite losses and gradients: a real skip decided on the device, and the skip / stop policies."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from cli_runner import run_cli
from torch import nn

from sefar_fast.checkpoint import load_weights
from sefar_fast.train.ema import EmaTeacher
from sefar_fast.train.guard import all_finite, guarded_update

TINY = ["--arch", "vit-test", "-b", "4", "--epochs", "1", "--device", "cpu", "--method", "supervised",
        "data.synth_clips_per_class=4", "eval.views=1x1", "data.frame_size=[32,32]", "data.crop=32",
        "data.scale_range=[32,36]", "run.log_every=1"]


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


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_guarded_update_skips_exactly_and_otherwise_matches_the_plain_update(kind):
    def make(seed):
        net = _net(seed)
        opt = (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
               if kind == "sgd" else torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=1e-2))
        return net, opt, EmaTeacher.create(net)

    guarded, plain = make(0), make(0)
    for step, nan in enumerate([True, False, True, False, False]):  # a skip first: before any optimizer state
        for net, _, _ in (guarded, plain):
            _grads(net, step, nan)
        net, opt, teacher = guarded
        before = _snapshot(net, opt, teacher)
        ok = all_finite([p.grad for p in net.parameters()], torch.device("cpu"))

        def update():
            opt.step()
            teacher.update(net, 0.9)

        applied = guarded_update(ok, opt, list(net.parameters()), list(teacher.module.state_dict().values()), update)
        assert bool(applied) == (not nan)
        if nan:  # bit for bit as before: weights, teacher and optimizer state (no state was created)
            after = _snapshot(net, opt, teacher)
            assert _equal(after[0], before[0]) and _equal(after[2], before[2])
            if step == 0:
                assert all(not torch.any(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
            else:
                assert _equal(after[1], before[1])
        else:  # the reference: the same step without the guard, on a copy that never saw the skipped steps
            pnet, popt, pteacher = plain
            popt.step()
            pteacher.update(pnet, 0.9)
            assert _equal(net.state_dict(), pnet.state_dict())
            assert _equal(teacher.state_dict(), pteacher.state_dict())
        for net_, opt_, _ in (guarded, plain):
            opt_.zero_grad(set_to_none=True)


def test_guard_rejects_an_update_that_overflows_the_weights():
    net = _net(1)
    opt = torch.optim.SGD(net.parameters(), lr=1e38)
    for p in net.parameters():
        p.grad = torch.full_like(p, 1e38)  # finite gradient, infinite weights after the step
    before = copy.deepcopy(net.state_dict())
    ok = guarded_update(torch.tensor(True), opt, list(net.parameters()), [], opt.step)
    assert not bool(ok) and _equal(net.state_dict(), before)


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
