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


def _trained_steps(cmd: list[str], tmp_path, monkeypatch, capsys) -> int:
    """Optimizer steps of the run `cmd` would start, as `sefar train` resolves its arguments."""
    from cli_runner import run_cli

    import sefar_fast.train.loop as loop

    seen = {}
    monkeypatch.setattr(loop, "train", lambda cfg, **kw: seen.setdefault("cfg", cfg) and {})
    code, err = run_cli(cmd[1:], monkeypatch, capsys)  # cmd[0] is "sefar"
    assert code == 0, err
    cfg = seen["cfg"]
    labeled = round(1920 * cfg.data.label_rate)  # synth train split
    return cfg.optim.epochs * labeled // cfg.optim.batch_size


@pytest.mark.parametrize("common", [["--epochs", "300"], ["--epochs=200", "eval.every=20"],
                                    ["epochs=120", "--epochs", "40"], []])
def test_full_label_row_matches_the_ten_percent_rows_in_optimizer_steps(synth_results, common, tmp_path,
                                                                        monkeypatch, capsys):
    rows = {name: extra for name, _, extra in synth_results.ROWS}
    ten = synth_results.command(rows["supervised 10%"], 0, tmp_path, common)
    full = synth_results.command(rows["supervised 100%"], 0, tmp_path, common)
    assert not any("EQUAL_STEPS" in a for a in full)
    ten_steps = _trained_steps(ten, tmp_path, monkeypatch, capsys)
    # a tenth of the epochs is rounded, so equal within half a 100% epoch (60 steps)
    assert abs(_trained_steps(full, tmp_path, monkeypatch, capsys) - ten_steps) <= 60
    if common:
        assert _trained_steps(full, tmp_path, monkeypatch, capsys) == ten_steps


def test_rows_are_reported_in_the_order_asked(synth_results, tmp_path, capsys):
    synth_results.main(["--table-only", "--out", str(tmp_path), "--rows", "sefar", "supervised100", "supervised"])
    names = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert names == ["sefar", "supervised 100%", "supervised 10%"]


def test_an_unknown_row_is_refused_naming_it(synth_results, tmp_path, capsys):
    with pytest.raises(SystemExit):
        synth_results.main(["--table-only", "--out", str(tmp_path), "--rows", "sefar", "sefra"])
    assert "unknown row 'sefra'" in capsys.readouterr().err


def test_full_label_row_reads_the_epochs_of_a_config_file(synth_results, tmp_path, monkeypatch, capsys):
    config = tmp_path / "long.yaml"
    config.write_text("optim:\n  epochs: 250\n")
    common = ["-c", str(config), "eval.every=20"]
    rows = {name: extra for name, _, extra in synth_results.ROWS}
    ten = synth_results.command(rows["supervised 10%"], 0, tmp_path, common)
    full = synth_results.command(rows["supervised 100%"], 0, tmp_path, common)
    assert _trained_steps(ten, tmp_path, monkeypatch, capsys) == 250 * 192 // 16
    assert _trained_steps(full, tmp_path, monkeypatch, capsys) == 25 * 1920 // 16
