"""`sefar train --dry-run`: the counts a run would use, computed without running it, and nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from cli_runner import run_cli_output

from sefar_fast.config import build_config
from sefar_fast.data.datasets import open_dataset
from sefar_fast.data.loader import ClipLoader
from sefar_fast.models import model_from_config
from sefar_fast.models.sizes import count_flops
from sefar_fast.train.dry_run import saved_activation_bytes

ARGS = ["--arch", "vit-test", "-b", "4", "--epochs", "3", "--device", "cpu", "data.synth_clips_per_class=4",
        "model.pretrained=none",
        "method.warmup_epochs=1", "data.frame_size=[32,32]", "data.crop=32", "data.scale_range=[32,36]"]


def test_dry_run_counts_what_the_run_would_use_and_writes_nothing(synth_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    run = tmp_path / "run"
    code, out, err = run_cli_output(["train", *ARGS, "--out", run, "--dry-run", "--json", "-"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads(out[out.index("{"):])
    assert not run.exists()  # nothing written: no run folder, no lock, no split

    cfg = build_config("synth", None, {"model.arch": "vit-test", "optim.batch_size": 4, "optim.epochs": 3},
                       ARGS[8:])
    data = open_dataset(cfg)
    assert (summary["labeled"], summary["unlabeled"], summary["val"]) == (len(data.labeled), len(data.unlabeled),
                                                                           len(data.val))
    loader = ClipLoader(data.store, data.labeled, elements=cfg.method.elements, batch_size=4,
                        drop_last=len(data.labeled) >= 4)
    assert summary["steps_per_epoch"] == len(loader) and summary["steps"] == 3 * len(loader)
    model = model_from_config(cfg, data.num_classes)
    assert summary["params"] == sum(p.numel() for p in model.parameters())
    assert summary["forward_gflop_per_clip"] * 1e9 == count_flops("vit-test", 32, cfg.method.elements,
                                                                   num_classes=data.num_classes)
    rows = 4 + 4 * cfg.method.unlabeled_ratio * 2  # labeled, strong and mixed rows of a semi-supervised micro-step
    assert summary["student_rows_per_micro_step"] == rows
    assert summary["memory_peak_estimate_gib"] > summary["memory_activations_gib"] > 0


def test_the_activation_count_on_the_meta_device_matches_a_real_forward():
    """What the meta device counts (no compute, any size) is what a real forward keeps, to 2% (tensors
    of one storage that are not views of each other count twice on the meta device)."""
    cfg = build_config("synth", None, {"model.arch": "vit-test"}, ["data.frame_size=[32,32]", "data.crop=32",
                                                                   "data.scale_range=[32,36]"])
    meta = model_from_config(cfg, 5, device="meta").train()
    real = model_from_config(cfg, 5).train()
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        real(torch.randn(1, 8, 3, 32, 32))
    assert saved_activation_bytes(meta, (8, 3, 32, 32)) == pytest.approx(sum(kept.values()), rel=0.02)


def test_dry_run_under_torchrun_prints_on_rank_0_only(synth_cache, tmp_path, monkeypatch, capsys):
    """Every rank resolves the same plan; only rank 0 prints it and writes the JSON (rank 1 is
    simulated: the trainer's DistInfo says rank 1 once the plan is made)."""
    import dataclasses

    import sefar_fast.train.loop as loop

    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))

    class OnRank1(loop.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.dist = dataclasses.replace(self.dist, rank=1)

    monkeypatch.setattr(loop, "Trainer", OnRank1)
    target = tmp_path / "plan.json"
    code, out, err = run_cli_output(["train", *ARGS, "--out", tmp_path / "run", "--dry-run", "--json", target],
                                    monkeypatch, capsys)
    assert code == 0, err
    assert "dry run" not in out and not target.exists()
