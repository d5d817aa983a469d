"""Progress in a log: plain periodic lines with count, rate, elapsed time and ETA instead of bars."""

from __future__ import annotations

import re

from cli_runner import run_cli_output

import sefar_fast.console as console_module
from sefar_fast.console import PlainBar, progress_bar


def test_a_bar_in_a_log_is_plain_lines(monkeypatch, capsys):
    monkeypatch.setattr(console_module, "PLAIN_EVERY_S", 0.0)  # a line at every advance
    with progress_bar("epoch 2/3 ssl", 4) as bar:  # pytest's captured stdout is not a terminal
        assert isinstance(bar, PlainBar)
        bar.start_at(1)  # a resumed epoch: one step already done
        for _ in range(3):
            bar.advance(1, loss=1.23456, lr=0.001)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 2/3 ssl"] * 3  # the last advance is the end line
    assert [re.search(r": (\d+)/4", line).group(1) for line in lines] == ["2", "3", "4"]
    assert all(re.search(r"\d+\.\d\d it/s  elapsed \d:\d\d:\d\d", line) for line in lines)
    assert "eta" in lines[0] and "eta" not in lines[-1] and lines[-1].endswith("loss 1.235  lr 0.001")


def test_the_rate_leaves_out_the_steps_done_before_the_bar(monkeypatch):
    clock = iter([100.0, 110.0])  # the bar starts at 100 s; the line is printed at 110 s
    monkeypatch.setattr(console_module.time, "monotonic", lambda: next(clock))
    bar = PlainBar("x", 100, every_s=1e9)
    bar.start_at(40)
    bar.done += 20  # 20 steps in 10 s
    printed = []
    monkeypatch.setattr(console_module.console, "print", lambda text, **kw: printed.append(text))
    bar.line()
    assert "2.00 it/s" in printed[0] and "eta 0:00:20" in printed[0]  # 40 left at 2 it/s


def test_sefar_train_in_a_log_prints_lines_not_bars(synth_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    monkeypatch.setattr(console_module, "PLAIN_EVERY_S", 1e9)  # only the end line of each bar
    args = ["train", "--arch", "vit-test", "--pretrained", "none", "-b", "4", "--epochs", "2", "--device", "cpu",
            "--out", tmp_path / "run", "method.warmup_epochs=1", "data.synth_clips_per_class=4", "eval.views=1x1",
            "data.frame_size=[32,32]", "data.crop=32", "data.scale_range=[32,36]", "method.mc_samples=2"]
    code, out, err = run_cli_output(args, monkeypatch, capsys)
    assert code == 0, err
    assert not re.search(r"━.*\d+/\d+ +\d+%", out) and "…" not in out  # no bar drawn into the log, nothing cut
    assert re.search(r"^epoch 1/2 sup: 5/5 .* it/s  elapsed \d:\d\d:\d\d  loss ", out, re.M), out
    assert re.search(r"^epoch 2/2 ssl: 5/5 ", out, re.M)
    assert "SeFAR on synth" in out and "sefar sefar" not in out
