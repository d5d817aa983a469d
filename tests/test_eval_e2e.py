"""`sefar eval` and `sefar report` end to end on the tiny synth run (tests/conftest.py: tiny_run;
the tests that use it are marked slow: the run trains once per session, about 20 s on 2 cores).

The run validated its teacher and student on 2x2 views while training; evaluating its last
checkpoint must give exactly the numbers it recorded, every val clip must be scored on all
T*S views, two evaluations must write identical reports, the report files must agree with
each other, and Gym-QA accuracy must match answers worked out here from the clip scores.
"""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sefar_fast import kernels
from sefar_fast.checkpoint import load_weights
from sefar_fast.cli.app import app
from sefar_fast.errors import SefarError
from sefar_fast.eval.evaluate import (
    REFERENCE_LABEL,
    evaluate_checkpoint,
    load_model,
    open_checkpoint_data,
    score_models,
    score_views,
    view_batches,
)
from sefar_fast.models.timesformer import ElementAttention

LETTERS = "ABCD"


def _invoke(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def _qa_questions(ds, class_names, seed=3):
    """A hand-made Gym-QA file: one question per val clip (true class among 4 options, shuffled), one
    3-option question, and one about a clip that is not in the val split (so it is not scored)."""
    rng = np.random.default_rng(seed)
    questions = {}
    val = list(ds.val)
    for n, i in enumerate(val):
        rec = ds.store.records[i]
        count = 3 if n == 0 else 4
        others = rng.choice([c for c in range(len(class_names)) if c != rec.label], count - 1, replace=False)
        options = [rec.label, *others.tolist()]
        rng.shuffle(options)
        text = " ".join(f"{LETTERS[k]}.{class_names[c]}" for k, c in enumerate(options))
        questions[f"{n:07d}"] = {"question": f"What gymnastics move is this athlete performing? {text}",
                                 "answer": LETTERS[options.index(rec.label)], "answer_type": "what",
                                 "video": rec.clip_id, "frame_length": rec.num_frames, "_options": options}
    outside = ds.store.records[ds.labeled[0]]
    questions["9999999"] = {"question": f"What move? A.{class_names[0]} B.{class_names[1]}", "answer": "A",
                            "video": outside.clip_id, "_options": [0, 1]}
    return questions


@pytest.fixture(scope="module")
def scored(tiny_run):
    """The teacher's val scores on the run's 2x2 views, straight from score_views."""
    ckpt, cfg, ds, dev = open_checkpoint_data(tiny_run.last)
    _, model = load_model(ckpt, "teacher", dev)
    assert {m.kernel for m in model.modules() if isinstance(m, ElementAttention)} == {kernels.element_attention}
    acc = score_views(model, ds, ds.val, cfg, dev, views=(2, 2))
    return SimpleNamespace(ckpt=ckpt, cfg=cfg, ds=ds, acc=acc)


@pytest.fixture(scope="module")
def cli_eval(tiny_run, scored, tmp_path_factory):
    """`sefar eval last.safetensors --out ... --qa ... --json ...` run once for the module."""
    base = tmp_path_factory.mktemp("eval")
    questions = _qa_questions(scored.ds, scored.ckpt.class_names)
    qa_path = base / "qa.json"
    qa_path.write_text(json.dumps({k: {f: v for f, v in q.items() if f != "_options"} for k, q in questions.items()}))
    _invoke(["eval", tiny_run.last, "--out", base / "reports", "--qa", qa_path, "--json", base / "eval.json"])
    return SimpleNamespace(out=base / "reports", result=json.loads((base / "eval.json").read_text()),
                           qa=qa_path, questions=questions)


@pytest.mark.slow
def test_eval_reproduces_training_numbers(tiny_run, cli_eval):
    trained = load_weights(tiny_run.last).meta["metrics"]
    assert trained["epoch"] == 2 and cli_eval.result["views"] == "2x2"
    for model in ("teacher", "student"):
        got = cli_eval.result[model]
        assert got["top1"] == trained[f"val_top1_{model}"]
        assert got["top5"] == trained[f"val_top5_{model}"]
        assert got["mean_class_acc"] == trained[f"val_mca_{model}"]
        report = json.loads((cli_eval.out / model / "report.json").read_text())
        assert report["top1"] == trained[f"val_top1_{model}"] and report["model"] == model
        assert report["protocol"] == "multi-view" and report["views"] == "2x2" and report["num_clips"] == 20


@pytest.mark.slow
def test_two_models_scored_in_one_pass_score_as_each_alone(scored, tiny_run, monkeypatch):
    """Teacher and student in one pass (how training validates) give exactly each one's own scores,
    and every batch of views is built once for both."""
    from sefar_fast.eval import evaluate

    _, teacher = load_model(scored.ckpt, "teacher", torch.device("cpu"))
    _, student = load_model(scored.ckpt, "student", torch.device("cpu"))
    student_alone = score_views(student, scored.ds, scored.ds.val, scored.cfg, torch.device("cpu"), views=(2, 2))
    built = []
    real_build = evaluate.kernels.build_views

    def counting_build(*args, **kwargs):
        built.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(evaluate.kernels, "build_views", counting_build)
    both = score_models({"teacher": teacher, "student": student}, scored.ds, scored.ds.val, scored.cfg,
                        torch.device("cpu"), views=(2, 2))
    batches = 2 * 2 * -(-len(scored.ds.val) // scored.cfg.eval.batch_size)  # T x S views of each batch
    assert len(built) == batches
    for name, alone in (("teacher", scored.acc), ("student", student_alone)):
        assert sorted(both[name].ids) == sorted(alone.ids)
        np.testing.assert_array_equal(both[name].metrics().confusion, alone.metrics().confusion)
        mine, theirs = both[name].scores_by_id(), alone.scores_by_id()
        assert all(np.array_equal(mine[i], theirs[i]) for i in theirs)
    assert not any(np.array_equal(both["teacher"].scores_by_id()[i], both["student"].scores_by_id()[i])
                   for i in scored.ds.val)  # two different models, each scored with its own weights


@pytest.mark.slow
def test_every_val_clip_scored_once_on_all_views(scored):
    acc = scored.acc
    assert sorted(acc.ids) == sorted(scored.ds.val)
    assert (acc.views_per_clip == 4).all()
    labels = dict(zip(acc.ids, acc.labels))
    assert all(labels[i] == scored.ds.store.records[i].label for i in scored.ds.val)
    np.testing.assert_allclose(acc.scores().sum(1), 1.0, atol=1e-6)


@pytest.mark.slow
def test_view_sampling_deterministic_and_complete(scored):
    """Model-free: each clip appears T*S times; two passes give the same tensors; the reference protocol
    gives one view per clip that changes with the seed and repeats with the same seed."""
    ds, cfg = scored.ds, scored.cfg
    few = list(ds.val[:5])

    def run(**kw):
        seen, xs = {}, []
        for vb in view_batches(ds, few, cfg, torch.device("cpu"), **kw):
            for i in vb.index.tolist():
                seen[i] = seen.get(i, 0) + 1
            xs.append(vb.x)
        return seen, torch.cat(xs)

    seen, a = run(views=(2, 3))
    assert seen == {i: 6 for i in few}
    _, b = run(views=(2, 3))
    assert torch.equal(a, b)
    # the three crops of 32x40 frames sit at x = 0, 4, 8: the views differ from each other
    assert not torch.equal(a[:5], a[5:10]) and not torch.equal(a[5:10], a[10:15])
    seen, r0 = run(protocol="reference", seed=0)
    assert seen == {i: 1 for i in few}
    _, r0_again = run(protocol="reference", seed=0)
    _, r1 = run(protocol="reference", seed=1)
    assert torch.equal(r0, r0_again) and not torch.equal(r0, r1)


@pytest.mark.slow
def test_two_evals_write_identical_reports(tiny_run, cli_eval, tmp_path):
    evaluate_checkpoint(tiny_run.last, which="teacher", out=tmp_path, qa=cli_eval.qa)
    for name in ("report.json", "per_class.csv", "confusion_pairs.csv"):
        assert (tmp_path / "teacher" / name).read_bytes() == (cli_eval.out / "teacher" / name).read_bytes()
    assert not (tmp_path / "student").exists()


@pytest.mark.slow
def test_report_files_agree(cli_eval):
    for model in ("teacher", "student"):
        folder = cli_eval.out / model
        report = json.loads((folder / "report.json").read_text())
        rows = list(csv.DictReader((folder / "per_class.csv").open()))
        n = report["num_clips"]
        assert len(rows) == report["num_classes"] == 20
        support = np.array([int(r["support"]) for r in rows])
        recall = np.array([float(r["recall"]) if r["recall"] else math.nan for r in rows])
        assert support.sum() == n
        assert math.isclose(np.nanmean(recall[support > 0]), report["mean_class_acc"], abs_tol=1e-12)
        correct = round(float(np.nansum(recall * support)))
        assert math.isclose(correct / n, report["top1"], abs_tol=1e-12)
        pairs = list(csv.DictReader((folder / "confusion_pairs.csv").open()))
        assert sum(int(p["count"]) for p in pairs) == n - correct
        for p in pairs:
            assert p["true_id"] != p["pred_id"]
            assert math.isclose(float(p["rate"]), int(p["count"]) / support[int(p["true_id"])], rel_tol=1e-9)
        with Image.open(folder / "confusion.png") as img:
            assert img.format == "PNG" and min(img.size) > 400


@pytest.mark.slow
def test_qa_accuracy_matches_hand_worked_answers(scored, cli_eval):
    scores = {scored.ds.store.records[i].clip_id: s for i, s in scored.acc.scores_by_id().items()}
    correct = scored_count = 0
    chance = []
    for q in cli_eval.questions.values():
        if q["video"] not in scores:
            continue
        probs = [scores[q["video"]][c] for c in q["_options"]]
        correct += LETTERS[int(np.argmax(probs))] == q["answer"]
        scored_count += 1
        chance.append(1 / len(q["_options"]))
    got = cli_eval.result["teacher"]["qa"]
    assert got["qa_scored"] == scored_count == 20 and got["qa_missing_videos"] == 1
    assert got["qa_correct"] == correct
    assert math.isclose(got["qa_accuracy"], correct / 20)
    assert math.isclose(got["qa_chance"], np.mean(chance)) and got["qa_chance"] > 0.25  # one 3-option question
    report = json.loads((cli_eval.out / "teacher" / "report.json").read_text())
    assert report["qa"] == got


@pytest.mark.slow
def test_reference_protocol_is_labelled_and_separate(tiny_run, tmp_path):
    result = evaluate_checkpoint(tiny_run.last, protocol="reference", out=tmp_path)
    assert set(result) >= {"student"} and "teacher" not in result
    report = json.loads((tmp_path / "student-reference" / "report.json").read_text())
    assert report["protocol"] == REFERENCE_LABEL and report["views"] == "1x1 random"
    assert report["num_clips"] == 20 and report["model"] == "student"
    with pytest.raises(SefarError, match="reference"):
        evaluate_checkpoint(tiny_run.last, protocol="reference", which="teacher", out=tmp_path)


@pytest.mark.slow
def test_teacher_missing_is_a_clear_error(tiny_run, tmp_path):
    from sefar_fast.checkpoint import save_weights

    ckpt = load_weights(tiny_run.last)
    student_only = tmp_path / "student-only.safetensors"
    save_weights(student_only, ckpt.student, None, ckpt.meta)
    with pytest.raises(SefarError, match="no teacher"):
        evaluate_checkpoint(student_only, which="teacher", out=tmp_path / "r")


@pytest.mark.slow
def test_report_command_draws_curves(tiny_run):
    target = tiny_run.run / "curves.png"
    target.unlink(missing_ok=True)
    _invoke(["report", tiny_run.run])
    with Image.open(target) as img:
        assert img.format == "PNG" and img.size[0] > 800


def test_report_command_needs_a_run(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert isinstance(result.exception, SefarError) and "metrics.jsonl" in str(result.exception)
