"""A training step never waits for the device: no host reads, a short update, one compile per phase.

On the CPU every "read" is free, so the test counts the calls that would make a host wait for
a GPU (`.item()`, `.tolist()`, `.cpu()`, `bool(t)`, `nonzero`, ...; `bench.overhead.HostReads`)
during one semi-supervised micro-step and its optimizer step. On CUDA the same step runs under
torch's sync debug mode set to "error".
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_runner import run_cli

from sefar_fast.bench.overhead import HostReads, count_ops
from sefar_fast.bench.workload import bench_config, default_settings, sgd, synthetic_batches
from sefar_fast.distributed import DistInfo
from sefar_fast.models import model_from_config
from sefar_fast.train.ema import EmaTeacher
from sefar_fast.train.step import TrainStep


def _ssl_step(device: torch.device):
    s = default_settings(device, arch="vit-test", batch=2, unlabeled=3, drop_path=0.0, num_classes=5)
    cfg = bench_config(s)
    model = model_from_config(cfg, s.num_classes).to(device).train()
    step = TrainStep(cfg, model, device, amp=device.type == "cuda", compile=False, dist=DistInfo())
    teacher = EmaTeacher.create(model, torch.bfloat16 if device.type == "cuda" else None)
    opt = sgd(cfg, model, fused=True)
    lab, unl = synthetic_batches(s, 2, 3, seed=1)
    acc = step.new_accumulator()
    counter = iter(range(10**6))

    def run():
        step.micro_step(lab, unl, teacher, 0.5, np.random.default_rng([0, next(counter)]), acc)
        step.optimizer_step(opt, teacher, acc)

    run()  # the optimizer state exists from here
    return run, acc


def test_a_semi_supervised_step_reads_nothing_back_to_the_host():
    run, acc = _ssl_step(torch.device("cpu"))
    with HostReads() as reads:
        run()
    assert reads.seen > 500  # the counter really watched the step
    assert reads.calls == {}
    assert float(acc["ssl_steps"]) == 2 and float(acc["opt_steps"]) == 2  # and the step really ran


def test_the_counter_sees_a_host_read():
    x = torch.ones(3)
    with HostReads() as reads:
        x.sum().item()
        bool(x.any())
        x.tolist()
    assert reads.calls == {"item": 1, "__bool__": 1, "tolist": 1}


def test_the_update_is_a_handful_of_operations():
    run, _ = _ssl_step(torch.device("cpu"))
    result = count_ops(run, torch.device("cpu"))
    assert 5 <= result["ops"]["update"] <= 20, result["ops"]
    assert result["host_syncs"] == 0 and result["ops"]["outside_phases"] == 0
    assert all(result["ops"][phase] > 0 for phase in ("views", "teacher", "student"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_step_on_cuda_never_synchronises():
    run, _ = _ssl_step(torch.device("cuda"))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_each_phase_compiles_once_with_static_shapes(synth_cache, tmp_path, monkeypatch, capsys):
    """Warm-up (labeled rows), semi-supervised (labeled + strong + mixed rows) and the teacher: one graph
    each, none with symbolic sizes; validation runs the plain module."""
    import sefar_fast.train.loop as loop

    graphs = []
    phase = {}

    def counting_backend(gm, example_inputs):
        dynamic = any(isinstance(x, torch.SymInt) for x in example_inputs)
        graphs.append((phase.get("epoch"), dynamic))
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=counting_backend, **kw))
    train_epoch = loop.Trainer.train_epoch

    def recording_epoch(self, epoch):
        phase["epoch"] = epoch
        return train_epoch(self, epoch)

    monkeypatch.setattr(loop.Trainer, "train_epoch", recording_epoch)
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    torch._dynamo.reset()
    code, err = run_cli(["train", "--arch", "vit-test", "--pretrained", "none", "-b", "4", "--epochs", "3",
                         "--device", "cpu", "--compile", "--out", tmp_path / "run", "method.warmup_epochs=1",
                         "data.synth_clips_per_class=4",
                         "eval.views=1x1", "eval.every=1", "data.frame_size=[32,32]", "data.crop=32",
                         "data.scale_range=[32,36]", "method.mc_samples=2", "method.elements=[4]"], monkeypatch, capsys)
    torch._dynamo.reset()
    assert code == 0, err
    assert not any(dynamic for _, dynamic in graphs), graphs
    # epoch 0: the student's warm-up graph; epoch 1: the semi-supervised student and the teacher; epoch 2: none
    assert sorted(epoch for epoch, _ in graphs) == [0, 1, 1], graphs
