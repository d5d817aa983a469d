"""bench/synth_results.py: the supervised-100% row trains as many steps as the 10% rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "synth_results.py"


@pytest.fixture(scope="module")
def synth_results():
    spec = importlib.util.spec_from_file_location("synth_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _last_epochs(cmd: list[str]) -> int:
    # the CLI takes the last --epochs it is given
    values = [cmd[i + 1] if a == "--epochs" else a.split("=", 1)[1]
              for i, a in enumerate(cmd) if a == "--epochs" or a.startswith("--epochs=")]
    return int(values[-1])


@pytest.mark.parametrize("common", [["--epochs", "300"], ["--epochs=200", "eval.every=20"]])
def test_full_label_row_matches_the_ten_percent_rows_in_optimizer_steps(synth_results, common):
    rows = {name: extra for name, _, extra in synth_results.ROWS}
    ten = synth_results.command(rows["supervised 10%"], 0, Path("o"), common)
    full = synth_results.command(rows["supervised 100%"], 0, Path("o"), common)
    assert "EQUAL_STEPS" not in full
    train_clips, batch = 1920, 16  # synth train split, preset batch
    assert _last_epochs(ten) * (train_clips // 10) // batch == _last_epochs(full) * train_clips // batch


def test_rows_are_reported_in_the_order_asked(synth_results, tmp_path, capsys):
    synth_results.main(["--table-only", "--out", str(tmp_path), "--rows", "sefar", "supervised100", "supervised"])
    names = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert names == ["sefar", "supervised 100%", "supervised 10%"]


def test_an_unknown_row_is_refused_naming_it(synth_results, tmp_path, capsys):
    with pytest.raises(SystemExit):
        synth_results.main(["--table-only", "--out", str(tmp_path), "--rows", "sefar", "sefra"])
    assert "unknown row 'sefra'" in capsys.readouterr().err
