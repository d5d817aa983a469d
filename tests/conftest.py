"""Shared pytest fixtures. Keep each one small; add new fixtures at the end."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from interpreted import run_interpreted


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished 2-epoch SeFAR run (1 warm-up epoch, so the last checkpoint holds a teacher) on a
    tiny synth set: 20 classes, 3 train + 1 val clip per class, vit-test on 32x40 frames, 32px crops,
    validated on 2x2 views. Trained once per test session, on the CPU.

    Fields: run (folder), store (clip store root), best / last (checkpoints), result (train()'s dict).
    """
    from sefar_fast.config import build_config
    from sefar_fast.data.synth import ensure_synth
    from sefar_fast.train.loop import train

    base = tmp_path_factory.mktemp("tiny-run")
    store = ensure_synth(base / "cache", seed=0, clips_per_class=4, workers=1)  # 80 clips: a pool costs more
    flags = {"run.out": str(base / "run"), "model.arch": "vit-test", "model.pretrained": "none", "optim.epochs": 2,
             "run.device": "cpu"}
    overrides = ["method.warmup_epochs=1", "eval.views=2x2", "data.frame_size=[32,40]", "data.crop=32",
                 "data.scale_range=[32,38]"]
    cfg = build_config("synth", None, flags, overrides)
    cfg.data.name = f"store:{store}"  # the run and every later eval read this store, not a cache lookup
    result = train(cfg)
    run = base / "run"
    return SimpleNamespace(run=run, store=store, best=run / "best.safetensors", last=run / "last.safetensors",
                           result=result)


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory):
    """A $SEFAR_CACHE folder holding the built-in synth store at clips_per_class=4 (20 classes, 3 train +
    1 val clip per class), generated once per test session. Train on it with SEFAR_CACHE set to this
    folder and `data.synth_clips_per_class=4` (so `--data synth` finds it instead of generating)."""
    from sefar_fast.data.synth import ensure_synth

    cache = tmp_path_factory.mktemp("synth-cache")
    ensure_synth(cache, seed=0, clips_per_class=4, workers=1)
    return cache


@pytest.fixture(scope="module")
def interpreted(request):
    """What a kernel test module computes when run as a script under TRITON_INTERPRET=1 (tests/interpreted.py)."""
    return run_interpreted(request.module.__file__)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for this module's in-process runs, also through OMP_NUM_THREADS: the
    trainer keeps a thread count it is given that way (else it takes every core), and runs
    compared bit for bit, here or with a subprocess started at OMP_NUM_THREADS=1, must use the same."""
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(before)
