"""`--help` reads well at 80 columns: nothing cut, every placeholder shown, examples as written."""

from __future__ import annotations

import re

import click
import pytest
import typer
from typer.testing import CliRunner

from sefar_fast.cli.app import app

WIDTH = 80


def commands(group: click.Command, path=()):
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from commands(sub, path + (name,))


ALL = list(commands(typer.main.get_command(app)))


def render(path) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path, command", ALL, ids=[" ".join(p) or "sefar" for p, _ in ALL])
def test_help_fits_80_columns_and_cuts_nothing(path, command):
    text = render(path)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, [line for line in lines if len(line) > WIDTH]
    # Nothing cut: no "…", and "..." only as click's mark of an argument taking several values.
    assert "…" not in text
    cut = [line for line in lines if "..." in line and not line.startswith("Usage:")
           and not re.match(r"^\s+[\w\[\]{}]+\.\.\.\s", line)]
    assert not cut, cut
    flat = " ".join(text.split())  # wrapped lines joined
    for param in command.params:
        for opt in (param.opts + param.secondary_opts) if isinstance(param, click.Option) else ():
            assert re.search(rf"(^|[\s,/]){re.escape(opt)}([\s,=/]|$)", text, re.M), f"{opt} is missing or cut"
        for placeholder in re.findall(r"<[^<>\s]+>", getattr(param, "help", None) or ""):
            assert placeholder in flat, f"{placeholder} of {param.name} was swallowed"
    for placeholder in re.findall(r"<[^<>\s]+>", command.help or ""):
        assert placeholder in flat


def test_train_help_is_short_and_points_to_the_long_story():
    text = render(("train",))
    assert len(text.splitlines()) <= 100
    assert "docs/training.md" in text and "sefar config keys" in " ".join(text.split())
    # examples keep their line breaks (not re-wrapped into one paragraph)
    assert "\n    sefar train\n    sefar train --method supervised --label-rate 1.0 --epochs 3\n" in text
