"""`sefar bench`: the reference-style iteration computes what the fast step computes, and the JSON record.

Equality of the two iterations on the CPU in float32 (fast path without autocast,
no compile, drop_path 0): the only randomness left is then
- the views, tube masks and partner, drawn from the same numpy `rng` in the same order;
- the teacher's head-dropout masks, drawn from a torch generator both paths seed
  from the same `rng` draw (`kernels.head_keep_masks`, shape [U, Bu, 256]);
- the student's head Dropout, which draws from the global torch RNG. The fast step
  draws one mask for its single forward over [labeled; strong; mixed]; the
  reference draws three, one per forward. Seeding alike cannot make those equal,
  so both students get a `ReplayDropout`: a fixed table of keep masks, one row per
  student input row, handed out in call order. Labeled, strong and mixed rows are
  consumed in the same order by one call or by three, so every sample gets the same
  mask in both paths, exactly.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sefar_fast.bench.reference import ReferenceStep
from sefar_fast.bench.workload import bench_config, default_settings, synthetic_batches
from sefar_fast.distributed import DistInfo
from sefar_fast.kernels import head_keep_masks
from sefar_fast.models import model_from_config
from sefar_fast.train.ema import EmaTeacher
from sefar_fast.train.step import TrainStep


class ReplayDropout(nn.Module):
    """Dropout whose masks come from a fixed [rows, D] table, rows handed out in call order."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table, self.cursor = table, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        mask = self.table[self.cursor:self.cursor + n]
        assert mask.shape[0] == n, "more student rows than the mask table holds"
        self.cursor += n
        return x * mask


# Tiny models run fastest on one thread, and then do not fight other jobs for the cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(labeled=2, unlabeled=3, mix=True, seed=0):
    s = default_settings(torch.device("cpu"), arch="vit-test", batch=labeled, unlabeled=unlabeled,
                         drop_path=0.0, num_classes=5)
    cfg = bench_config(s)
    cfg.method.mix = mix
    torch.manual_seed(seed)
    fast_model = model_from_config(cfg, s.num_classes).train()
    # Let the untrained net make confident, varied predictions so eta and the losses are not degenerate.
    with torch.no_grad():
        fast_model.head.classifier.weight.mul_(30.0)
    ref_model = copy.deepcopy(fast_model)
    rows = labeled + unlabeled * (2 if mix else 1)
    table = (torch.rand(rows, 256, generator=torch.Generator().manual_seed(seed + 1)) >= 0.5).float() / 0.5
    fast_model.head.dropout = ReplayDropout(table)
    ref_model.head.dropout = ReplayDropout(table)
    lab, unl = synthetic_batches(s, labeled, unlabeled, seed=seed + 2)
    return s, cfg, fast_model, ref_model, lab, unl


@pytest.mark.parametrize("mix", [True, False])
def test_reference_and_fast_iterations_compute_the_same_losses_and_gradients(mix):
    s, cfg, fast_model, ref_model, lab, unl = _setup(mix=mix)
    fast = TrainStep(cfg, fast_model, torch.device("cpu"), amp=False, compile=False, dist=DistInfo())
    ref = ReferenceStep(cfg, ref_model, torch.device("cpu"))
    assert all(m.attn_impl == "manual" for m in ref_model.modules() if hasattr(m, "attn_impl"))
    assert all(m.attn_impl == "sdpa" for m in fast_model.modules() if hasattr(m, "attn_impl"))
    assert cfg.method.teacher_mc == "head"  # the fast path samples the head only; the reference reruns all

    xi = 0.7
    acc = fast.new_accumulator()
    fast.micro_step(lab, unl, EmaTeacher.create(fast_model), xi, np.random.default_rng(11), acc)
    out = ref.micro_step(lab, unl, EmaTeacher.create(ref_model), xi, np.random.default_rng(11))

    for key in ("loss", "loss_sup", "loss_un", "loss_mix"):
        assert float(acc[key]) == pytest.approx(float(out[key]), rel=1e-5, abs=1e-6), key
    assert float(acc["eta_sum"]) == pytest.approx(float(out["eta"].sum()), rel=1e-5)
    assert float(acc["pseudo_correct"]) == float((out["pseudo_label"] == unl["labels"]).sum())
    # Not a degenerate case: every term is present and the weights are neither all 0 nor all 1.
    assert float(out["loss_un"]) > 0 and 0 < float(out["eta"].mean()) < 1
    assert (float(out["loss_mix"]) > 0) == mix

    ref_grads = dict(ref_model.named_parameters())
    checked = 0
    for name, p in fast_model.named_parameters():
        q = ref_grads[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is None:
            continue
        scale = max(float(q.grad.abs().max()), 1e-12)
        assert float((p.grad - q.grad).abs().max()) <= 1e-4 * scale + 1e-7, name
        checked += 1
    assert checked == len(list(fast_model.parameters()))


def test_reference_teacher_reruns_the_network_with_the_fast_path_masks():
    """U full teacher passes with masks k_u equal the head applied to one feature with the same k_u."""
    s, cfg, fast_model, ref_model, lab, unl = _setup()
    teacher = EmaTeacher.create(ref_model)
    ref = ReferenceStep(cfg, ref_model, torch.device("cpu"))
    x = torch.randn(3, 8, 3, s.crop, s.crop, generator=torch.Generator().manual_seed(5))
    calls = []
    features = teacher.module.features
    teacher.module.features = lambda v: calls.append(1) or features(v)
    probs = ref.teacher_probs(teacher, x, 123)
    assert len(calls) == cfg.method.mc_samples  # the network really ran U times
    keep = head_keep_masks(123, cfg.method.mc_samples, 3, 256, p=0.5)
    with torch.no_grad():
        expect = torch.softmax(teacher.module.head.classifier(features(x)[None] * keep), dim=-1)
    torch.testing.assert_close(probs, expect, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the record
TINY = dict(crop=16, frame_size=(18, 24), scale_range=(18.0, 22.0), repeats=1, warmup=1, data_clips=4,
            data_batches=1, data_batch_size=2)


@pytest.fixture(scope="module")
def record():
    from sefar_fast.bench.runner import run_bench

    return run_bench(quick=True, device="cpu", show=False, **TINY)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def test_record_names_the_machine_and_the_settings(record):
    import json

    import sefar_fast

    json.dumps(record, allow_nan=False)  # plain JSON, no NaN
    assert record["schema"] == "sefar-bench/1"
    assert record["sections"] == ["data", "model", "iteration", "overhead", "memory"]
    for key in ("card", "driver", "torch", "triton", "dali", "sefar", "python", "date", "cuda"):
        assert key in record, key
    assert record["sefar"] == sefar_fast.__version__ and record["torch"] == torch.__version__
    assert record["device"] == "cpu" and record["driver"] is None
    st = record["settings"]
    # the paper's ratio by default: 3 unlabeled clips per labeled clip
    assert st["arch"] == "vit-test" and st["crop"] == 16 and st["labeled"] == 2 and st["unlabeled"] == 6
    assert st["model_batch"] == 2 + 2 * 6 and st["train_unlabeled"] == 6 and st["amp"] is False


def test_iteration_and_model_fields_are_consistent(record):
    from sefar_fast.models.sizes import count_flops

    it, model = record["iteration"], record["model"]
    assert "error" not in it and "error" not in model
    for key in ("reference_ms", "fast_ms", "speedup", "clip_views_per_s"):
        assert _number(it[key]) and it[key] > 0, key
    assert it["speedup"] == pytest.approx(it["reference_ms"] / it["fast_ms"])
    assert it["labeled"] == 2 and it["unlabeled"] == 6 and it["mc_samples"] == 10
    assert it["clip_views_per_s"] == pytest.approx((2 + 2 * 6) / (it["fast_ms"] / 1e3))
    assert it["student_rows"] == 2 + 2 * 6 and _number(it["student_step_ms"]) and it["student_step_ms"] > 0
    assert it["overhead_ratio"] == pytest.approx(it["fast_ms"] / it["student_step_ms"])
    assert "reference_tf32_ms" not in it and "speedup_tf32" not in it  # TF32 is a CUDA matter
    for key in ("train_clips_per_s", "reference_train_clips_per_s", "infer_clips_per_s", "tflops", "mfu",
                "peak_tflops", "train_ms"):
        assert _number(model[key]) and model[key] > 0, key
    assert model["peak_dtype"] == "float32"
    flops = count_flops("vit-test", 16, (2, 2, 4), num_classes=99)
    assert model["forward_gflop_per_clip"] == pytest.approx(flops / 1e9)
    assert model["tflops"] == pytest.approx(3 * flops * model["train_clips_per_s"] / 1e12)
    assert model["mfu"] == pytest.approx(model["tflops"] / model["peak_tflops"])
    assert model["train_clips_per_s"] == pytest.approx(model["batch"] / (model["train_ms"] / 1e3))
    assert model["datasheet_tflops"] is None and model["mfu_datasheet"] is None  # no datasheet for a CPU


def test_overhead_counts_every_phase_and_no_host_sync(record):
    over = record["overhead"]
    assert "error" not in over, over
    assert set(over["ops"]) == {"views", "teacher", "student", "update", "outside_phases"}
    assert all(over["ops"][p] > 0 for p in ("views", "teacher", "student", "update"))
    assert over["ops"]["update"] <= over["targets"]["update_ops"] == 20
    assert over["host_syncs"] == 0 and over["host_reads"] == {}
    assert all(_number(v) and v > 0 for v in over["host_ms"].values())


def test_data_and_memory_sections_on_the_cpu(record):
    data, mem = record["data"], record["memory"]
    assert _number(data["clips_per_s"]) and data["clips_per_s"] > 0
    assert data["frames_per_s"] == pytest.approx(8 * data["clips_per_s"])
    assert data["headroom"] == pytest.approx(data["clips_per_s"] / record["iteration"]["clip_views_per_s"])
    assert mem["kind"] is None and "CPU" in mem["note"]
    for key in ("iteration_reference_gib", "iteration_fast_gib", "train_fast_gib", "train_fast_checkpoint_gib"):
        assert key in mem and mem[key] is None


def test_table_shows_every_section(record):
    from rich.console import Console

    from sefar_fast.bench.runner import bench_table

    console = Console(record=True, width=140)
    console.print(bench_table(record))
    text = console.export_text()
    for word in ("data", "model", "iteration", "memory", "speedup", "MFU", f"{record['iteration']['speedup']:.1f}x"):
        assert word in text, word


def test_a_failing_section_is_recorded_and_the_others_still_run(monkeypatch):
    from sefar_fast.bench import sections
    from sefar_fast.bench.runner import run_bench

    def broken(s):
        raise RuntimeError("decoder missing")

    monkeypatch.setattr(sections, "data_section", broken)
    rec = run_bench(["memory", "data"], quick=True, device="cpu", show=False, **TINY)
    assert rec["sections"] == ["data", "memory"]
    assert rec["data"]["error"] == "RuntimeError: decoder missing"
    assert "error" not in rec["memory"] and "model" not in rec


def test_unknown_section_and_bad_batch_are_user_errors():
    from sefar_fast.bench.runner import run_bench
    from sefar_fast.errors import SefarError

    with pytest.raises(SefarError, match="unknown bench section 'speed'"):
        run_bench(["speed"], device="cpu", show=False)
    with pytest.raises(SefarError, match="unlabeled"):
        run_bench(["iteration"], device="cpu", batch=1, unlabeled=1, show=False)


def test_result_file_stem_is_card_and_date():
    from sefar_fast.bench.env import result_stem, slug

    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    stem = result_stem(torch.device("cpu"))
    assert stem.startswith("cpu-") and stem[-10:].count("-") == 2 and stem[-10:-6].isdigit()


def test_a_step_that_cannot_compile_is_measured_eagerly_and_says_why(monkeypatch):
    from sefar_fast.bench.runner import run_bench

    def no_compiler(module, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no C compiler found")

        return call

    monkeypatch.setattr(torch, "compile", no_compiler)
    rec = run_bench(["model", "iteration"], quick=True, device="cpu", compile=True, show=False, **TINY)
    for name in ("model", "iteration"):
        sec = rec[name]
        assert sec["compiled"] is False and sec["compile_error"] == "RuntimeError: no C compiler found", name
    assert rec["iteration"]["fast_ms"] > 0 and "fast_eager_ms" not in rec["iteration"]
    assert "eager_train_clips_per_s" not in rec["model"] and rec["model"]["train_clips_per_s"] > 0


def test_gpu_check_summary_puts_numbers_against_the_targets(tmp_path):
    import json

    from sefar_fast.bench.summary import summary_rows

    stem = "nvidia-h100-80gb-hbm3-2026-11-30"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "parts.tsv").write_text("bench-vit-b\tok\t150\ntrain\ttimed out after 150s\t150\n")

    def bench(speedup, mfu, train_gib, ckpt_gib, ratio, update_ops):
        fast = 1600.0 / speedup
        return {"iteration": {"speedup": speedup, "reference_ms": 1600.0, "fast_ms": fast, "labeled": 8,
                              "unlabeled": 24, "compiled": True, "reference_tf32_ms": 800.0,
                              "speedup_tf32": 800.0 / fast, "student_step_ms": fast / ratio, "overhead_ratio": ratio},
                "overhead": {"ops": {"views": 9, "teacher": 3, "student": 40, "update": update_ops},
                             "host_syncs": 0},
                "model": {"mfu": mfu, "tflops": 400 * mfu, "peak_tflops": 400.0, "train_clips_per_s": 200.0,
                          "mfu_datasheet": mfu / 2},
                "memory": {"train_labeled": 8, "train_unlabeled": 24, "train_fast_gib": train_gib,
                           "train_fast_checkpoint_gib": ckpt_gib}}

    (tmp_path / f"{stem}-bench-vit-b.json").write_text(json.dumps(bench(13.0, 0.31, 70.0, 38.0, 1.2, 16)))
    (tmp_path / f"{stem}-bench-vit-s.json").write_text(json.dumps(bench(9.5, 0.19, 20.0, None, 1.4, 21)))
    (tmp_path / f"{stem}-model-vit-b-sdpa.json").write_text(json.dumps({"model": {"mfu": 0.22,
                                                                                   "train_clips_per_s": 150.0}}))
    (tmp_path / f"{stem}-train.json").write_text(json.dumps({"last": {"loss": 1.0, "data_wait": 0.01}}))
    # The first logging interval holds the compile (the host waits for no data then): left out.
    steps = [{"kind": "step", "step": 5 * (i + 1), "data_wait": w} for i, w in enumerate([0.001, 0.04, 0.08])]
    (tmp_path / "logs" / "train-metrics.jsonl").write_text(
        "\n".join(json.dumps(r) for r in steps + [{"kind": "epoch", "data_wait": 0.01}]) + "\n")
    rows = {r[0]: r for r in summary_rows(tmp_path, stem)}

    assert rows["part bench-vit-b"][3] == "met" and rows["part train"][3] == "SHORT"
    assert rows["vit-b iteration speedup (8+24, compiled)"][3] == "met"  # 13x against 12x
    assert rows["vit-s iteration speedup (8+24, compiled)"][3] == "SHORT"  # 9.5x against 10x
    assert rows["vit-b iteration speedup over a TF32 reference"][1] == "6.5x (800 ms)"
    assert rows["vit-b iteration / its student step"][1:] == ("1.20x (102.6 ms)", "<= 1.3x", "met")
    assert rows["vit-s iteration / its student step"][3] == "SHORT"  # 1.4x against 1.3x
    ops = "host ops per phase (views/teacher/student/update), host syncs"
    assert rows[f"vit-b {ops}"][1:] == ("9/3/40/16, 0", "update <= 20, 0 syncs", "met")
    assert rows[f"vit-s {ops}"][3] == "SHORT"  # 21 update operations
    # MFU against the measured peak: 31% >= 30% for vit-b, 19% < 20% for vit-s; the datasheet figure is shown
    assert rows["vit-b student train step MFU"][3] == "met" and rows["vit-s student train step MFU"][3] == "SHORT"
    assert "datasheet 15.5%" in rows["vit-b student train step MFU"][1]
    assert rows["vit-b student step MFU, torch attention path (SEFAR_KERNELS=torch)"][1] == "22.0% (150 clips/s)"
    # Memory targets are in GB (1e9 bytes): 70 GiB = 75.2 GB fits 80 GB, 38 GiB = 40.8 GB misses 40 GB.
    assert rows["vit-b peak memory 8+24"][1:] == ("75.2 GB", "<= 80 GB", "met")
    assert rows["vit-b peak memory 8+24, checkpointing"][1:] == ("40.8 GB", "<= 40 GB", "SHORT")
    assert rows["vit-s peak memory 8+24"][3] == "-"  # the memory targets are for vit-b
    wait = [r for name, r in rows.items() if name.startswith("sefar train GPU waiting")]
    assert len(wait) == 1 and wait[0][1:] == ("6.0%", "< 5%", "SHORT") and "steady" in wait[0][0]


def test_gpu_check_summary_reads_the_kernel_benchmark_and_the_video_check(tmp_path):
    import json

    from sefar_fast.bench.summary import summary_rows

    stem = "nvidia-h200-2026-11-28"
    kernels = {
        "kernels": {"views": {"speedup": 23.7, "bw_fraction": 0.41, "max_abs_diff": 0.0156},
                    "strong_mixed": {"speedup": 13.2, "bw_fraction": 0.75, "max_abs_diff": 0.0156},
                    "regulation": {"speedup": 3.9, "bw_fraction": 0.0006, "max_abs_diff": 2e-7}},
        "regulation_fraction_of_step": 0.0003,
        "targets": {"views_bw_fraction": 0.7, "views_speedup": 3.0, "regulation_fraction_of_step": 0.02},
        "targets_met": {"views_bw_fraction": False, "views_speedup": True, "strong_mixed_bw_fraction": True,
                        "strong_mixed_speedup": True, "regulation_fraction_of_step": True},
    }
    (tmp_path / f"{stem}-kernels.json").write_text(json.dumps(kernels))
    video = {"check": {"h264": {"mean_abs_diff": 1.95}, "vp9": {"mean_abs_diff": 1.89}, "ok": False}}
    (tmp_path / f"{stem}-video-check.json").write_text(json.dumps(video))
    rows = {r[0]: r for r in summary_rows(tmp_path, stem)}

    views = rows["views kernel: speedup, copy-bandwidth fraction"]
    assert views[1:] == ("23.7x, 41% (max |diff| 0.0156)", ">= 3x, 70%", "SHORT")  # fast, but 41% < 70%
    assert rows["strong_mixed kernel: speedup, copy-bandwidth fraction"][3] == "met"
    assert rows["regulation kernel: share of a vit-s step"][1:] == ("0.03% (max |diff| 2e-07)", "< 2%", "met")
    assert rows["direct video NVDEC vs PyAV"][1:] == ("mean |diff| h264 1.95, vp9 1.89", "mean < 3, all by DALI",
                                                      "SHORT")
