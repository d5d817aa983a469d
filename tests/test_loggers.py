"""Trackers get what metrics.jsonl gets: TensorBoard read back with its own reader, W&B offline, resume."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
import torch
from cli_runner import kill_when_hung, run_cli

TINY = ["--arch", "vit-test", "--pretrained", "none", "-b", "4", "--epochs", "2", "--device", "cpu",
        "data.synth_clips_per_class=4", "method.warmup_epochs=1", "eval.views=1x1", "eval.every=1",
        "data.frame_size=[32,32]", "data.crop=32", "data.scale_range=[32,36]", "method.unlabeled_ratio=1",
        "method.mc_samples=2", "run.log_every=2"]


@pytest.fixture
def cache_env(synth_cache, monkeypatch):
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield synth_cache
    torch.set_num_threads(before)


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def expected_scalars(recs: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """What metrics.jsonl says each TensorBoard tag should hold, computed from the records alone."""
    out: dict[str, list] = {}
    for r in recs:
        for key, value in r.items():
            if key in ("kind", "epoch", "step", "global_step") or isinstance(value, (bool, str)) or value is None:
                continue
            if r["kind"] == "step":
                tag = f"train/{key}"
            else:
                tag = f"val/{key[4:]}" if key.startswith("val_") else f"epoch/{key}"
            out.setdefault(tag, []).append((r["global_step"], value))
    return out


def test_tensorboard_holds_what_metrics_jsonl_holds(cache_env, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    code, err = run_cli(["train", *TINY, "--out", run, "--logger", "tensorboard"], monkeypatch, capsys)
    assert code == 0, err
    got, acc = tensorboard_scalars(run / "tensorboard")
    want = expected_scalars(records(run))
    assert set(got) == set(want) and "val/top1_teacher" in got and "train/loss" in got
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag
    images = acc.Tags()["images"]
    assert "val/confusion_student" in images and "val/confusion_teacher" in images
    assert [e.step for e in acc.Images("val/confusion_teacher")] == [r["global_step"] for r in records(run)
                                                                     if r["kind"] == "epoch"][1:]


def test_a_resumed_run_continues_its_tensorboard_run_without_repeating_steps(cache_env, tmp_path, monkeypatch,
                                                                               capsys):
    """Killed while writing the checkpoint of step 8: steps 7 and 8 reached TensorBoard, the run continues
    from step 6 and trains them again; the events read back hold each step once, with the new values."""
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    args = ["train", *TINY, "--out", run, "--logger", "tensorboard", "run.log_every=1", "--ckpt-every-steps", "2"]
    env = {**os.environ, "SEFAR_CACHE": str(cache_env), "OMP_NUM_THREADS": "1",
           "SEFAR_TEST_HANG_IN_WRITE": "last.safetensors:5"}  # writes at steps 2, 4, 5 (epoch end), 6, 8
    proc = subprocess.Popen([sys.executable, "-m", "sefar_fast", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_when_hung(proc, run / "last.safetensors.hang")
    before, _ = tensorboard_scalars(run / "tensorboard")
    assert [s for s, _ in before["train/loss"]][-2:] == [7, 8]  # logged after the last complete checkpoint

    code, err = run_cli(args, monkeypatch, capsys)  # the same command resumes from step 6
    assert code == 0, err
    got, _ = tensorboard_scalars(run / "tensorboard")
    want = expected_scalars(records(run))
    assert [s for s, _ in want["train/loss"]] == list(range(1, 11))
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag  # each step once
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def wandb_history(run_file) -> dict[int, dict]:
    """{step: {key: value}} from an offline W&B run file: LevelDB-style log blocks of protobuf records."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, part = 7, 32768, [], b""
    while pos < len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            records.append(part)
            part = b""
    history: dict[int, dict] = {}
    for raw in records:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            history.setdefault(row["_step"], {}).update(row)
    return history


def test_wandb_offline_receives_the_same_numbers(cache_env, tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    code, err = run_cli(["train", *TINY, "--out", run, "--logger", "wandb"], monkeypatch, capsys)
    assert code == 0, err
    (run_file,) = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (run / "wandb-id").read_text().strip() in run_file.name
    history = wandb_history(run_file)
    for tag, points in expected_scalars(records(run)).items():
        for step, value in points:
            assert history[step][tag] == pytest.approx(value, rel=1e-6), (tag, step)
    assert history[10]["val/confusion_teacher/_type"] == "image-file"


def test_a_missing_tracker_is_one_line_before_any_work(cache_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if TensorBoard were not installed
    code, err = run_cli(["train", *TINY, "--out", tmp_path / "run", "--logger", "tensorboard"], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and 'pip install "sefar-fast[tensorboard]"' in lines[0], err
    code, err = run_cli(["train", *TINY, "--out", tmp_path / "run2", "--logger", "mlflow"], monkeypatch, capsys)
    assert code == 2 and "run.loggers 'mlflow' is not one of tensorboard, wandb, none" in err
