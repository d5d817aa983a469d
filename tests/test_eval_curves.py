"""Training curves from a hand-made metrics.jsonl: epoch records only, missing series skipped."""

import json

import numpy as np
import pytest
from PIL import Image

from sefar_fast.errors import SefarError
from sefar_fast.eval.curves import curve_series, plot_curves, read_epoch_records


def write_metrics(path, records, tail=""):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n" + tail)
    return path


RECORDS = [
    {"kind": "iter", "step": 10, "loss": 99.0},  # not an epoch record: ignored
    {"kind": "epoch", "epoch": 0, "loss": 2.0, "loss_sup": 2.0, "lr": 0.005, "val_top1_student": 0.1},
    {"kind": "epoch", "epoch": 1, "loss": 1.5, "loss_sup": 1.2, "loss_un": 0.3, "eta_mean": 0.4,
     "pseudo_acc": 0.5, "lr": 0.005, "val_top1_student": 0.3, "val_top1_teacher": None},
    {"kind": "epoch", "epoch": 2, "loss": 1.1, "loss_sup": 0.8, "loss_un": 0.3, "eta_mean": 0.6,
     "pseudo_acc": float("nan"), "lr": 0.0005, "val_top1_student": 0.4, "val_top1_teacher": 0.45},
]


def test_series_skip_missing_and_non_finite_values(tmp_path):
    path = write_metrics(tmp_path / "metrics.jsonl", RECORDS, tail='{"kind": "epoch", "epo')  # cut-off last line
    records = read_epoch_records(path)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    series = curve_series(records)
    assert "loss_mix" not in series  # never logged
    np.testing.assert_array_equal(series["loss"][0], [0, 1, 2])
    np.testing.assert_array_equal(series["loss"][1], [2.0, 1.5, 1.1])
    np.testing.assert_array_equal(series["loss_un"][0], [1, 2])
    np.testing.assert_array_equal(series["pseudo_acc"][0], [1])  # NaN at epoch 2 dropped
    np.testing.assert_array_equal(series["val_top1_teacher"][0], [2])  # null at epoch 1 dropped


def test_plot_curves_writes_png_next_to_metrics(tmp_path):
    path = write_metrics(tmp_path / "metrics.jsonl", RECORDS)
    out = plot_curves(path)
    assert out == tmp_path / "curves.png"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 800


def test_plot_curves_with_only_losses(tmp_path):
    path = write_metrics(tmp_path / "metrics.jsonl", [{"kind": "epoch", "loss": 1.0}, {"kind": "epoch", "loss": 0.5}])
    assert set(curve_series(read_epoch_records(path))) == {"loss"}
    with Image.open(plot_curves(path, tmp_path / "c.png")) as image:
        assert image.format == "PNG"


def test_bad_metrics_files(tmp_path):
    with pytest.raises(SefarError, match="does not exist"):
        read_epoch_records(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "epoch", "loss": 1}\nnot json\n{"kind": "epoch", "loss": 2}\n')
    with pytest.raises(SefarError, match="line 2"):
        read_epoch_records(bad)
