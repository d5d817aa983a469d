"""bench/synth_results.py: the supervised-100% row trains at least as many steps as the other rows (within one epoch)."""

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
    train = 20 * cfg.data.synth_clips_per_class * 4 // 5  # synth: 20 classes, a fifth of each class is val
    labeled = round(train * cfg.data.label_rate)
    return cfg.optim.epochs * (labeled // cfg.optim.batch_size)


# (common arguments, steps of the other rows, steps of the 100% row): 12 steps per 5% epoch, 240 per 100% epoch
@pytest.mark.parametrize("common, steps, full_steps", [
    (["--epochs", "300"], 3600, 3600),
    (["--epochs=200", "eval.every=20"], 2400, 2400),
    (["epochs=120", "--epochs", "40"], 1440, 1440),  # key=value wins over the flag
    ([], 720, 720),  # the preset's 60 epochs: 3 epochs of 100%
    (["--epochs", "50"], 600, 720),  # 2.5 epochs of 100% rounded up to 3
    (["--label-rate", "0.1"], 1440, 1440),  # 24 steps per epoch at 10%: 6 epochs of 100%
])
def test_full_label_row_trains_at_least_the_other_rows_steps(synth_results, common, steps, full_steps, tmp_path,
                                                            monkeypatch, capsys):
    rows = {name: extra for name, _, extra in synth_results.ROWS}
    partial = synth_results.command(rows["supervised"], 0, tmp_path, common)
    full = synth_results.command(rows["supervised 100%"], 0, tmp_path, common)
    assert not any("EQUAL_STEPS" in a for a in full)
    assert _trained_steps(partial, tmp_path, monkeypatch, capsys) == steps
    assert _trained_steps(full, tmp_path, monkeypatch, capsys) == full_steps


def test_rows_are_reported_in_the_order_asked(synth_results, tmp_path, capsys):
    synth_results.main(["--table-only", "--out", str(tmp_path), "--rows", "sefar", "supervised100", "supervised"])
    names = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert names == ["sefar", "supervised 100%", "supervised"]


def test_an_unknown_row_is_refused_naming_it(synth_results, tmp_path, capsys):
    with pytest.raises(SystemExit):
        synth_results.main(["--table-only", "--out", str(tmp_path), "--rows", "sefar", "sefra"])
    assert "unknown row 'sefra'" in capsys.readouterr().err


def test_full_label_row_reads_the_epochs_of_a_config_file(synth_results, tmp_path, monkeypatch, capsys):
    config = tmp_path / "long.yaml"
    config.write_text("optim:\n  epochs: 250\n")
    common = ["-c", str(config), "eval.every=20"]
    rows = {name: extra for name, _, extra in synth_results.ROWS}
    partial = synth_results.command(rows["supervised"], 0, tmp_path, common)
    full = synth_results.command(rows["supervised 100%"], 0, tmp_path, common)
    assert _trained_steps(partial, tmp_path, monkeypatch, capsys) == 250 * 12
    assert _trained_steps(full, tmp_path, monkeypatch, capsys) == 13 * 240  # 12.5 epochs rounded up
