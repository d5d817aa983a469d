"""Every config key is checked before any work: a bad value of any key of any section stops `sefar train`
with one line naming the key and the value, before data is generated, a run folder made or a step taken.

The keys are read from the config dataclasses, so a key added later without an entry in BAD fails
here until someone says what a bad value of it is (and sees that it is refused in time).
"""

from __future__ import annotations

import dataclasses

import pytest
from cli_runner import run_cli

from sefar_fast.config import SECTION_TYPES
from sefar_fast.train.loop import Trainer

# key -> [(bad value as typed after `key=`, a fragment the one-line error must hold)]
BAD: dict[str, list[tuple[str, str]]] = {
    "data.name": [("nothing-like-this", "data.name 'nothing-like-this' is neither a preset"),
                  ("foo:bar", "unknown source kind 'foo'")],
    "data.root": [("no-such-folder", "--root no-such-folder is not a folder")],
    "data.store": [("no-such-store", "data.store no-such-store is not a folder")],
    "data.num_classes": [("-1", "data.num_classes -1 is out of range"), ("2.5", "data.num_classes must be an integer")],
    "data.label_rate": [("0", "data.label_rate 0.0 must be in (0, 1]"), ("nan", "data.label_rate nan")],
    "data.split_seed": [("-1", "data.split_seed -1 is out of range")],
    "data.frame_size": [("[40]", "data.frame_size [40] is out of range"),
                        ("[40,a]", "data.frame_size must be a list of integers")],
    "data.crop": [("0", "data.crop 0 is out of range"), ("48", "data.crop 48 is larger than the frames")],
    "data.scale_range": [("[40,34]", "data.scale_range [40, 34] is out of range"),
                         ("[24,40]", "data.scale_range [24, 40] starts below data.crop 32")],
    "data.mean": [("[0.4,0.4]", "data.mean [0.4, 0.4] is out of range"), ("[0.4,0.4,.inf]", "data.mean")],
    "data.std": [("[0,0,0]", "data.std [0.0, 0.0, 0.0] is out of range"), ("[0.2,-0.2,0.2]", "data.std")],
    "data.backend": [("gpu", "data.backend 'gpu' is not one of auto, dali, pil")],
    "data.synth_clips_per_class": [("1", "data.synth_clips_per_class 1 is out of range")],
    "data.synth_seed": [("-5", "data.synth_seed -5 is out of range")],
    "data.frame_cache_mb": [("-1", "data.frame_cache_mb -1 is out of range: it must be an integer >= 0 (0: off)")],
    "model.arch": [("vit-h", "model.arch 'vit-h' is not one of")],
    "model.patch_size": [("0", "model.patch_size 0 is out of range"), ("5", "not a multiple of the patch size 5")],
    "model.drop_path": [("1.0", "model.drop_path 1.0 is out of range")],
    "model.head_dropout": [("-0.1", "model.head_dropout -0.1 is out of range")],
    "model.pretrained": [("no-such-vit.npz", "pretrained weights no-such-vit.npz not found")],
    "model.attn": [("flash", "model.attn 'flash' is not one of sdpa, manual")],
    "model.checkpoint_activations": [("maybe", "model.checkpoint_activations must be true or false, got 'maybe'")],
    "model.pos_embed_std": [("-1", "model.pos_embed_std -1.0 is out of range")],
    "model.time_embed_std": [("nan", "model.time_embed_std nan is out of range")],
    "method.name": [("mean-teacher", "method.name 'mean-teacher' is not one of sefar, supervised, fixmatch")],
    "method.elements": [("[]", "method.elements [] is out of range"), ("[2,0,4]", "method.elements [2, 0, 4]"),
                        ("[2,a,4]", "method.elements must be a list of integers"),
                        ("[2.5,4]", "method.elements must be a list of integers"),
                        ("[4,2]", "the last (context) element must be the longest")],
    "method.perturb": [("reverse", "method.perturb 'reverse' is not one of")],
    "method.regulation": [("soft", "method.regulation 'soft' is not one of adaptive, threshold, none")],
    "method.threshold": [("1.5", "method.threshold 1.5 is out of range")],
    "method.teacher_mc": [("half", "method.teacher_mc 'half' is not one of head, full")],
    "method.mc_samples": [("0", "method.mc_samples 0 is out of range")],
    "method.mix": [("sometimes", "method.mix must be true or false")],
    "method.mix_alpha": [("-1", "method.mix_alpha -1.0 is out of range"), ("0", "method.mix_alpha 0.0")],
    "method.mix_loss": [("l1", "method.mix_loss 'l1' is not one of mse, soft-ce")],
    "method.w_un": [("-2", "method.w_un -2.0 is out of range")],
    "method.w_mix": [("inf", "method.w_mix inf is out of range")],
    "method.channel_drop": [("1", "method.channel_drop 1.0 is out of range")],
    "method.ema_decay": [("1", "method.ema_decay 1.0 is out of range")],
    "method.warmup_epochs": [("-1", "method.warmup_epochs -1 is out of range"),
                             ("60", "warmup_epochs 60 leaves no semi-supervised epoch out of 60")],
    "method.unlabeled_ratio": [("0", ("method.unlabeled_ratio 0 is out of range: it must be an integer >= 1 "
                                      "(unlabeled clips per labeled clip)"))],
    "optim.name": [("lamb", "optim.name 'lamb' is not one of sgd, adamw")],
    "optim.epochs": [("0", "optim.epochs 0 is out of range")],
    "optim.batch_size": [("0", "optim.batch_size 0 is out of range")],
    "optim.accum_steps": [("0", "optim.accum_steps 0 is out of range")],
    "optim.global_batch": [("-64", "optim.global_batch -64 is out of range")],
    "optim.lr": [("-0.004", "optim.lr -0.004 is out of range"), ("abc", "optim.lr must be a number, got 'abc'"),
                 ("null", "optim.lr needs a value")],
    "optim.ref_batch": [("0", "optim.ref_batch 0 is out of range")],
    "optim.momentum": [("1", "optim.momentum 1.0 is out of range")],
    "optim.nesterov": [("maybe", "optim.nesterov must be true or false")],
    "optim.weight_decay": [("-0.05", "optim.weight_decay -0.05 is out of range")],
    "optim.milestones": [("[0.5,1.2]", "optim.milestones [0.5, 1.2] is out of range"),
                         ("[0.9,0.5]", "optim.milestones [0.9, 0.5] is out of range"),
                         ("[0.5]", "optim.milestones [0.5] and optim.lr_factors [0.1, 0.01] must have the same")],
    "optim.lr_factors": [("[0.1,0]", "optim.lr_factors [0.1, 0.0] is out of range")],
    "optim.lr_warmup_epochs": [("-1", "optim.lr_warmup_epochs -1.0 is out of range"),
                               ("70", "optim.lr_warmup_epochs 70.0 must be in [0, epochs=60)")],
    "eval.views": [("5by3", "eval views '5by3' must look like TxS")],
    "eval.every": [("0", "eval.every 0 is out of range")],
    "eval.batch_size": [("0", "eval.batch_size 0 is out of range")],
    "eval.protocol": [("single", "eval.protocol 'single' is not one of multiview, reference")],
    "eval.headline": [("ema", "eval.headline 'ema' is not one of student, teacher")],
    "run.out": [("a-file.txt", "--out a-file.txt is a file")],
    "run.seed": [("-1", "run.seed -1 is out of range")],
    "run.device": [("tpu", "run.device 'tpu' is not one of auto, cpu, cuda")],
    "run.compile": [("maybe", "run.compile must be true or false")],
    "run.amp": [("2", "run.amp must be true or false")],
    "run.log_every": [("0", "run.log_every 0 is out of range")],
    "run.keep": [("-1", "run.keep -1 is out of range")],
    "run.ckpt_every_steps": [("-1", "run.ckpt_every_steps -1 is out of range")],
    "run.loggers": [("[mlflow]", "run.loggers 'mlflow' is not one of tensorboard, wandb, none"),
                    ("tensorboard", "run.loggers must be a list")],
}

# Rules between keys that need two keys changed (the single-key cases above cover the others).
TOGETHER = [
    (["optim.momentum=0", "optim.name=sgd"], "optim.nesterov needs optim.momentum > 0"),
]

# Keys whose messages name the command-line option instead (the way the user gave them, usually).
FLAGS = {"data.name": "--data", "data.root": "--root", "run.out": "--out"}

KEYS = [f"{sec}.{f.name}" for sec, cls in SECTION_TYPES.items() for f in dataclasses.fields(cls)]
CASES = [(key, value, fragment) for key in KEYS for value, fragment in BAD.get(key, [(None, None)])]


def refused_before_any_work(overrides: list[str], tmp_path, monkeypatch, capsys) -> str:
    """Run `sefar train` with the overrides in an empty folder and cache: the one line it prints."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file.txt").write_text("not a folder\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("SEFAR_CACHE", str(cache))

    def work_started(self):  # a value that slips through would start data generation here: fail at once
        raise AssertionError(f"{overrides} reached the data and training setup")

    monkeypatch.setattr(Trainer, "setup", work_started)
    code, err = run_cli(["train", "--device", "cpu", "--out", "run", *overrides], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert not any(cache.iterdir()), "data was generated before the error"
    assert not (tmp_path / "run").exists(), "a run folder was made before the error"
    return lines[0]


def test_every_key_has_bad_values():
    missing = [key for key in KEYS if key not in BAD]
    assert not missing, f"add a bad value for {missing} to BAD (and make sure it is refused before any work)"
    assert not set(BAD) - set(KEYS), "BAD names keys the config does not have"


@pytest.mark.parametrize("key,value,fragment", CASES, ids=[f"{k}={v}" for k, v, _ in CASES])
def test_a_bad_value_of_any_key_is_refused_before_any_work(key, value, fragment, tmp_path, monkeypatch, capsys):
    assert value is not None, f"no bad value for {key} in BAD"
    line = refused_before_any_work([f"{key}={value}"], tmp_path, monkeypatch, capsys)
    assert fragment in line
    name = key.split(".")[1]
    assert any(n in line for n in (key, name, name.replace("_", " "), FLAGS.get(key, key))), line


@pytest.mark.parametrize("overrides,fragment", TOGETHER)
def test_rules_between_keys(overrides, fragment, tmp_path, monkeypatch, capsys):
    assert fragment in refused_before_any_work(overrides, tmp_path, monkeypatch, capsys)


def test_the_defaults_pass(tmp_path):
    """The baseline the cases change one key of is itself valid (so each case fails for its own key)."""
    from sefar_fast.config import build_config
    from sefar_fast.train.checks import preflight

    preflight(build_config("synth", None, {"run.device": "cpu", "run.out": str(tmp_path / "run")}, []))


def test_a_corrected_command_takes_over_a_run_folder_left_without_a_checkpoint(tmp_path, monkeypatch, capsys):
    """A start that failed after writing the run folder (here: --strict meets a clip the store could not
    read, found once the data is open) leaves no checkpoint, so the corrected command, with other
    settings, starts afresh there instead of being refused as 'an unfinished run with other settings'."""
    import numpy as np
    from PIL import Image

    from sefar_fast.data.adapters import SourceClip, SourceSet
    from sefar_fast.data.prepare import prepare

    clips = []
    for i in range(8):
        folder = tmp_path / "frames" / f"c{i}"
        folder.mkdir(parents=True)
        for f in range(8):
            Image.fromarray(np.full((32, 32, 3), 30 * i, np.uint8)).save(folder / f"{f:05d}.jpg")
        clips.append(SourceClip(f"c{i}", folder, i % 2, "train" if i < 6 else "val"))
    clips.append(SourceClip("gone", tmp_path / "frames" / "missing", 0, "train"))
    prepare(SourceSet("frames", clips, ["a", "b"]), tmp_path / "store", short_side=None, workers=1)
    monkeypatch.chdir(tmp_path)
    tiny = ["--data", "store:store", "--label-rate", "0.5", "--arch", "vit-test", "-b", "2", "--device", "cpu",
            "eval.views=1x1", "data.frame_size=[32,32]", "data.crop=32", "data.scale_range=[32,36]",
            "method.unlabeled_ratio=1", "method.mc_samples=2", "method.warmup_epochs=1", "--out", "run"]
    code, err = run_cli(["train", *tiny, "--epochs", "3", "--strict"], monkeypatch, capsys)
    assert code == 2 and "--strict refuses to train without them" in err
    assert (tmp_path / "run" / "config.yaml").is_file() and not (tmp_path / "run" / "last.safetensors").exists()
    monkeypatch.setenv("SEFAR_TEST_SIGNAL_AT_STEP", "1")  # stop after one step: enough to see it train
    code, err = run_cli(["train", *tiny, "--epochs", "2"], monkeypatch, capsys)
    assert code == 130, err
    assert (tmp_path / "run" / "last.safetensors").is_file()
    assert "epochs: 2" in (tmp_path / "run" / "config.yaml").read_text()
