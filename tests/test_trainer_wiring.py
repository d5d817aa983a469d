"""The trainer's wiring: decisions a refactor could flip without any other test noticing.

One short SeFAR run on the tiny synth set is recorded from the inside (the pieces the trainer
calls are wrapped, not replaced), and each test checks one decision against a value computed
here from the config: when the teacher is created and from what, the EMA decay with
accumulation, the unsupervised weight per epoch, the lr per step with its milestones, the
loaders' seeds, views and batches, the evaluation protocol, which model the best checkpoint
follows (the eval.headline one), and the accumulation that reaches optim.global_batch.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import sefar_fast.train.loop as loop
from sefar_fast import kernels
from sefar_fast.checkpoint import read_metadata
from sefar_fast.config import build_config
from sefar_fast.models import build_model
from sefar_fast.models.timesformer import ElementAttention
from sefar_fast.train.ema import EmaTeacher
from sefar_fast.train.step import TrainStep

EPOCHS, WARMUP, BATCH, ACCUM, RATIO = 4, 2, 2, 2, 3
LR, REF_BATCH, EMA = 0.05, 64, 0.99
SEED = 3
MILESTONES, FACTORS = [0.5, 0.8], [0.1, 0.01]
LABELED = 20  # tiny synth: 20 classes x 3 train clips at label rate 0.1 -> one labeled clip per class
# Scripted validation top-1 per epoch (1-based): the teacher exists from epoch WARMUP + 1.
STUDENT_TOP1 = {1: 0.10, 2: 0.20, 3: 0.30, 4: 0.40}
TEACHER_TOP1 = {3: 0.90, 4: 0.50}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, synth_cache):
    seen = SimpleNamespace(created=[], decays=[], micro=[], lrs=[], loaders=[], evals=[], protocols=[])
    mp = pytest.MonkeyPatch()
    mp.setenv("SEFAR_CACHE", str(synth_cache))
    trainer_box = []

    create = EmaTeacher.create.__func__

    def recording_create(cls, student, *args, **kwargs):
        teacher = create(cls, student, *args, **kwargs)
        t = trainer_box[0]
        same = all(torch.equal(a, b) for a, b in zip(teacher.module.state_dict().values(),
                                                     student.state_dict().values()))
        seen.created.append((t.state.progress.global_step, same, student is t.state.model))
        return teacher

    lerp = EmaTeacher.lerp

    def recording_lerp(self, student, weight):
        seen.decays.append(1.0 - float(weight))  # the decay the step used (weight = 1 - decay)
        return lerp(self, student, weight)

    micro_step = TrainStep.micro_step

    def recording_micro_step(self, lab, unl, teacher, xi, rng, acc, scale=1.0):
        t = trainer_box[0]
        seen.micro.append((t.state.progress.epoch, xi, teacher is not None, unl is not None, scale,
                           lab["frames"].shape[0], None if unl is None else unl["frames"].shape[:2]))
        return micro_step(self, lab, unl, teacher, xi, rng, acc, scale)

    optimizer_step = TrainStep.optimizer_step

    def recording_optimizer_step(self, optimizer, teacher, acc):
        t = trainer_box[0]
        seen.lrs.append((t.state.progress.epoch, t.state.progress.step, optimizer.param_groups[0]["lr"]))
        return optimizer_step(self, optimizer, teacher, acc)

    class RecordingLoader(loop.ClipLoader):
        def __init__(self, store, indices, **kw):
            seen.loaders.append({"clips": len(indices), **{k: kw[k] for k in ("seed", "views", "batch_size")}})
            super().__init__(store, indices, **kw)

    def scripted_eval(models, data, indices, cfg, device, *, desc, **kw):
        t = trainer_box[0]
        epoch = t.state.progress.epoch + 1
        out = {}
        for name in models:
            seen.evals.append((epoch, name))
            seen.protocols.append((kw.get("protocol"), kw.get("seed"), kw.get("views")))
            top1 = (TEACHER_TOP1 if name == "teacher" else STUDENT_TOP1)[epoch]
            out[name] = {"top1": top1, "top5": 1.0, "mean_class_acc": top1, "confusion": np.eye(20, dtype=np.int64)}
        return out

    mp.setattr(EmaTeacher, "create", classmethod(recording_create))
    mp.setattr(EmaTeacher, "lerp", recording_lerp)
    mp.setattr(TrainStep, "micro_step", recording_micro_step)
    mp.setattr(TrainStep, "optimizer_step", recording_optimizer_step)
    mp.setattr(loop, "ClipLoader", RecordingLoader)
    mp.setattr(loop, "evaluate_models", scripted_eval)
    run = tmp_path_factory.mktemp("wiring") / "run"
    flags = {"run.out": str(run), "model.arch": "vit-test", "model.pretrained": "none", "optim.epochs": EPOCHS,
             "optim.batch_size": BATCH, "run.device": "cpu", "data.label_rate": 0.1}
    overrides = [f"method.warmup_epochs={WARMUP}", f"optim.accum_steps={ACCUM}", f"method.unlabeled_ratio={RATIO}",
                 f"optim.lr={LR}", f"optim.ref_batch={REF_BATCH}", f"method.ema_decay={EMA}",
                 f"optim.milestones={MILESTONES}", f"optim.lr_factors={FACTORS}", "optim.name=sgd",
                 "data.synth_clips_per_class=4", "method.mc_samples=2", "eval.views=1x1", "eval.every=1",
                 "run.log_every=1", "eval.headline=student", "eval.protocol=reference", f"run.seed={SEED}",
                 "data.frame_size=[32,40]", "data.crop=32", "data.scale_range=[32,38]"]
    cfg = build_config("synth", None, flags, overrides)
    try:
        trainer = loop.Trainer(cfg)
        trainer_box.append(trainer)
        seen.result = trainer.run()
    finally:
        mp.undo()
    seen.trainer, seen.run = trainer, run
    seen.steps_per_epoch = LABELED // (BATCH * ACCUM)
    return seen


def test_the_teacher_is_created_once_from_the_student_when_the_warmup_ends(recorded):
    assert recorded.created == [(WARMUP * recorded.steps_per_epoch, True, True)]
    with_teacher = {epoch for epoch, _, teacher, unl, *_ in recorded.micro if teacher and unl}
    assert with_teacher == set(range(WARMUP, EPOCHS))
    assert all(not teacher and not unl for epoch, _, teacher, unl, *_ in recorded.micro if epoch < WARMUP)


def test_the_ema_decay_counts_every_labeled_clip_of_the_global_batch(recorded):
    ssl_steps = (EPOCHS - WARMUP) * recorded.steps_per_epoch
    assert recorded.decays == [pytest.approx(EMA ** (BATCH * ACCUM))] * ssl_steps


def test_xi_is_zero_in_the_warmup_then_follows_the_sine_ramp_per_epoch(recorded):
    expected = {e: 0.0 if e < WARMUP else math.sin(math.pi / 2 * (e + 1 - WARMUP) / (EPOCHS - WARMUP))
                for e in range(EPOCHS)}
    for epoch, xi, *_ in recorded.micro:
        assert xi == pytest.approx(expected[epoch]), epoch
    assert expected[EPOCHS - 1] == pytest.approx(1.0)


def test_the_lr_is_scaled_by_the_global_batch_and_decays_at_fractional_epochs(recorded):
    base = LR * BATCH * ACCUM / REF_BATCH
    n = recorded.steps_per_epoch
    assert len(recorded.lrs) == EPOCHS * n
    for epoch, step, lr in recorded.lrs:
        at = epoch + step / n  # the epoch, fractional, when the step starts
        factor = 1.0
        for m, f in zip(MILESTONES, FACTORS):
            if at >= m * EPOCHS:
                factor = f
        assert lr == pytest.approx(base * factor), (epoch, step)
    # The second milestone (0.8 x 4 = 3.2 epochs) falls inside epoch 4: its first step is not decayed yet.
    assert [lr for e, s, lr in recorded.lrs if e == 3][:2] == pytest.approx([base * 0.1, base * 0.01])


def test_micro_batches_and_accumulation_scale(recorded):
    for epoch, _, _, unl, scale, lab_rows, unl_shape in recorded.micro:
        assert scale == pytest.approx(1 / ACCUM) and lab_rows == BATCH
        if unl:
            assert tuple(unl_shape) == (BATCH * RATIO, 2)  # weak and strong views of each unlabeled clip


def test_the_loaders_take_their_own_seeds_views_and_batches(recorded):
    seed = recorded.trainer.cfg.run.seed
    labeled, unlabeled = recorded.loaders[:2]
    assert labeled == {"clips": LABELED, "seed": seed, "views": 1, "batch_size": BATCH * ACCUM}
    assert unlabeled == {"clips": 40, "seed": seed + 1, "views": 2, "batch_size": BATCH * ACCUM * RATIO}


def test_both_models_are_scored_under_the_configured_protocol(recorded):
    assert recorded.evals == [(1, "student"), (2, "student"), (3, "student"), (3, "teacher"), (4, "student"),
                              (4, "teacher")]
    assert set(recorded.protocols) == {("reference", SEED, (1, 1))}
    last = recorded.result["last"]
    assert last["val_top1_student"] == STUDENT_TOP1[4] and last["val_top1_teacher"] == TEACHER_TOP1[4]


def test_the_best_checkpoint_follows_the_headline_model(recorded):
    best = read_metadata(recorded.run / "best.safetensors")
    # The headline is the student: its 0.40 at epoch 4 is the best, though the teacher had 0.90 at epoch 3.
    assert best["epoch"] == 4 and best["metrics"]["val_top1"] == pytest.approx(STUDENT_TOP1[4])
    assert best["metrics"]["val_model"] == "student"
    assert recorded.result["best_epoch"] == 4


def test_a_teacher_headline_is_the_teachers_top1_once_it_exists(recorded, monkeypatch):
    trainer = recorded.trainer
    scores = {"student": 0.25, "teacher": 0.75}

    def fixed_eval(models, data, indices, cfg, device, *, desc, **kw):
        return {name: {"top1": scores[name], "top5": 1.0, "mean_class_acc": scores[name],
                       "confusion": np.eye(20, dtype=np.int64)} for name in models}

    monkeypatch.setattr(loop, "evaluate_models", fixed_eval)
    monkeypatch.setattr(trainer.cfg.eval, "headline", "teacher")
    assert trainer.validate()["val_top1"] == 0.75 and trainer.validate()["val_model"] == "teacher"
    monkeypatch.setattr(trainer.state, "teacher", None)  # before the warm-up ends: the student
    assert trainer.validate()["val_top1"] == 0.25 and trainer.validate()["val_model"] == "student"


@pytest.mark.parametrize("batch, target, accum", [(8, 64, 8), (3, 64, 21), (6, 64, 11), (24, 64, 3), (100, 64, 1)])
def test_accumulation_reaches_the_global_batch_nearest(batch, target, accum, synth_cache, monkeypatch):
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    cfg = build_config("synth", None, {"model.arch": "vit-test", "model.pretrained": "none", "run.device": "cpu",
                                       "optim.batch_size": batch}, [f"optim.global_batch={target}", f"optim.lr={LR}"])
    trainer = loop.Trainer(cfg, resume=False)
    assert trainer.cfg.optim.accum_steps == accum and trainer.global_batch == batch * accum
    assert min(abs(batch * a - target) for a in range(1, 100)) == abs(batch * accum - target)
    assert trainer.base_lr == pytest.approx(LR * batch * accum / REF_BATCH)


def test_the_callers_config_is_left_as_it_was(recorded, synth_cache, monkeypatch):
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    cfg = build_config("synth", None, {"model.arch": "vit-test", "model.pretrained": "none", "run.device": "cpu"}, [])
    before = cfg.to_dict()
    trainer = loop.Trainer(cfg, resume=False)
    assert cfg.to_dict() == before and trainer.cfg.run.out is not None and cfg.run.out is None


def test_student_and_teacher_attend_in_time_through_the_kernel_dispatcher(recorded):
    state = recorded.trainer.state
    for model in (state.model, state.teacher.module):
        installed = {m.kernel for m in model.modules() if isinstance(m, ElementAttention)}
        assert installed == {kernels.element_attention}


@pytest.mark.parametrize("seed", [0, 3])
def test_the_run_seed_initialises_the_model(seed, synth_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    flags = {"model.arch": "vit-test", "run.device": "cpu", "run.seed": seed, "run.out": str(tmp_path / "run")}
    cfg = build_config("synth", None, flags, ["model.pretrained=none", "data.synth_clips_per_class=4"])
    trainer = loop.Trainer(cfg)
    try:
        trainer.setup()
        initial = trainer.state.model.state_dict()
    finally:
        trainer.close()
    for init_seed in (0, 3):
        expected = build_model("vit-test", 20, cfg.method.elements, seed=init_seed, img_size=cfg.data.crop,
                               drop_path=cfg.model.drop_path, head_dropout=cfg.model.head_dropout,
                               pos_embed_std=cfg.model.pos_embed_std, time_embed_std=cfg.model.time_embed_std)
        same = all(torch.equal(initial[k], v) for k, v in expected.state_dict().items())
        assert same == (init_seed == seed), init_seed


def test_the_synth_preset_starts_from_the_packaged_backbone(synth_cache, monkeypatch, tmp_path):
    from safetensors.torch import load_file

    from sefar_fast.models import resolve_weights

    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    cfg = build_config("synth", None, {"run.device": "cpu", "run.out": str(tmp_path / "run")},
                       ["data.synth_clips_per_class=4"])
    trainer = loop.Trainer(cfg)
    try:
        trainer.setup()
        backbone = trainer.state.model.backbone.state_dict()
    finally:
        trainer.close()
    vit = load_file(str(resolve_weights("synth:vit-pico")))
    assert vit and all(torch.equal(backbone[k], v) for k, v in vit.items())
    assert torch.equal(backbone["blocks.3.temporal_attn.proj.weight"], vit["blocks.3.attn.proj.weight"])

