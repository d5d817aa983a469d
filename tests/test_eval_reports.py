"""Report files agree with the metrics and with each other; confusion ordering groups confused classes."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from sefar_fast.eval.metrics import compute_metrics
from sefar_fast.eval.reports import confusion_order, short_name, write_report


def random_eval(num_classes, seed, clips_per_class=12):
    """Probabilities from a noisy classifier; the last class has no clips."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes - 1), clips_per_class)
    scores = rng.dirichlet(np.ones(num_classes), len(labels))
    right = rng.random(len(labels)) < 0.6
    scores[right, labels[right]] += 1.0
    return scores / scores.sum(1, keepdims=True), labels


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_report_files_agree(tmp_path):
    scores, labels = random_eval(6, seed=0)
    names = ["salto, backward (stretched)", "b", "c", "d", "e", "never shown"]
    m = compute_metrics(scores, labels)
    out = tmp_path / "eval"
    report = write_report(out, m, names, model="teacher", views="5x3", protocol="multi-view",
                          checkpoint=tmp_path / "best.safetensors", extra={"epoch": 7})
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    assert on_disk["top1"] == pytest.approx(m.top1) and on_disk["top5"] == pytest.approx(m.top5)
    assert (on_disk["model"], on_disk["views"], on_disk["protocol"], on_disk["epoch"]) == ("teacher", "5x3",
                                                                                         "multi-view", 7)
    assert on_disk["checkpoint"].endswith("best.safetensors")
    assert (on_disk["num_clips"], on_disk["num_classes"]) == (len(labels), 6)
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "confusion_pairs.csv", "per_class.csv",
                                                     "report.json"]  # no temporary files left behind

    rows = read_csv(out / "per_class.csv")
    assert [r["name"] for r in rows] == names  # the comma and parentheses survive the CSV
    present = [r for r in rows if int(r["support"]) > 0]
    assert rows[5]["recall"] == "" and int(rows[5]["support"]) == 0
    mean_class_acc = np.mean([float(r["recall"]) for r in present])
    assert mean_class_acc == pytest.approx(on_disk["mean_class_acc"], abs=1e-9)
    # top-1 again, as support-weighted recall
    top1 = sum(float(r["recall"]) * int(r["support"]) for r in present) / len(labels)
    assert top1 == pytest.approx(on_disk["top1"], abs=1e-9)
    assert sum(int(r["predicted_count"]) for r in rows) == len(labels)

    pairs = read_csv(out / "confusion_pairs.csv")
    counts = [int(p["count"]) for p in pairs]
    assert counts == sorted(counts, reverse=True)
    correct = sum(float(r["recall"]) * int(r["support"]) for r in present)
    assert sum(counts) + round(correct) == len(labels)  # off-diagonal + diagonal = every clip
    for p in pairs:
        t, q = int(p["true_id"]), int(p["pred_id"])
        assert t != q and int(p["count"]) == m.confusion[t, q]
        assert (p["true_name"], p["pred_name"]) == (names[t], names[q])
        assert float(p["rate"]) == pytest.approx(m.confusion[t, q] / m.support[t])
    top_pair = on_disk["most_confused_pairs"][0]
    a, b = top_pair["class_a"], top_pair["class_b"]
    assert top_pair["total"] == m.confusion[a, b] + m.confusion[b, a] == (m.confusion + m.confusion.T)[
        np.triu_indices(6, 1)].max()

    with Image.open(out / "confusion.png") as image:
        assert image.format == "PNG" and min(image.size) > 400


def test_report_refuses_overwriting_keys(tmp_path):
    scores, labels = random_eval(3, seed=1)
    with pytest.raises(ValueError, match="top1"):
        write_report(tmp_path, compute_metrics(scores, labels), None, model="student", views=1,
                     protocol="reference-single-view", checkpoint=None, extra={"top1": 1.0})


def test_report_for_99_classes_without_names(tmp_path):
    scores, labels = random_eval(99, seed=2, clips_per_class=3)
    report = write_report(tmp_path, compute_metrics(scores, labels), None, model="student", views={"t": 5, "s": 3},
                          protocol="multi-view", checkpoint=None, order="label")
    assert report["confusion_order"] == "label" and report["classes_present"] == 98
    with Image.open(tmp_path / "confusion.png") as image:
        assert min(image.size) > 1200  # the figure grows with the class count


def test_confusion_order_puts_confused_classes_together():
    confusion = np.eye(8, dtype=np.int64) * 10
    for a, b, n in [(0, 7, 6), (7, 0, 5), (3, 5, 4), (1, 4, 3), (4, 6, 3)]:
        confusion[a, b] = n
    order = list(confusion_order(confusion))
    assert sorted(order) == list(range(8))
    position = {c: i for i, c in enumerate(order)}
    assert abs(position[0] - position[7]) == 1
    assert abs(position[3] - position[5]) == 1
    assert sorted(position[c] for c in (1, 4, 6)) == list(range(min(position[c] for c in (1, 4, 6)),
                                                                min(position[c] for c in (1, 4, 6)) + 3))
    assert abs(position[4] - position[1]) == 1 and abs(position[4] - position[6]) == 1  # the chain 1-4-6
    assert list(confusion_order(confusion, "label")) == list(range(8))
    assert list(confusion_order(np.eye(5, dtype=np.int64))) == list(range(5))  # nothing confused: label order


def test_short_name_keeps_both_ends():
    name = "salto backward stretched with 1.5 twist to handstand"
    short = short_name(name, 30)
    assert len(short) == 30 and short.startswith("salto") and short.endswith("handstand") and "…" in short
    assert short_name("giant circle", 30) == "giant circle"
