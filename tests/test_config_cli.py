"""`sefar config show` and `sefar config keys`: the resolved config and every key with its help."""

from __future__ import annotations

import dataclasses
import re
import sys

import yaml
from cli_runner import run_cli

from sefar_fast.config import Config, build_config, config_from_dict
from sefar_fast.configs.keys import HELP


def all_keys() -> set[str]:
    return {f"{sec.name}.{f.name}" for sec in dataclasses.fields(Config)
            for f in dataclasses.fields(sec.default_factory())}


def stdout_of(args, monkeypatch, capsys) -> str:
    from sefar_fast.cli.app import main

    monkeypatch.setattr(sys, "argv", ["sefar", *args])
    main()
    return capsys.readouterr().out


def test_every_config_key_has_one_line_of_help():
    assert set(HELP) == all_keys()
    assert all(text and "\n" not in text and len(text) <= 110 for text in HELP.values())


def test_config_keys_lists_every_key_with_its_type_default_and_help(monkeypatch, capsys):
    out = stdout_of(["config", "keys"], monkeypatch, capsys)
    entries = re.findall(r"^(\S+)  \((.+), default (.+)\)\n    (.+)$", out, re.M)
    assert {key for key, *_ in entries} == all_keys()
    by_key = {key: (kind, default, text) for key, kind, default, text in entries}
    assert by_key["method.elements"][:2] == ("list[int]", "[2, 2, 4]")
    assert by_key["run.compile"][:2] == ("bool | None", "None")
    assert by_key["optim.lr"][2] == HELP["optim.lr"]


def test_config_show_prints_what_train_would_use(monkeypatch, capsys):
    out = stdout_of(["config", "show", "--data", "gym99", "optim.lr=0.01", "perturb=none"], monkeypatch, capsys)
    shown = yaml.safe_load(out)
    expected = build_config("gym99", None, {}, ["optim.lr=0.01", "perturb=none"])
    assert shown == expected.to_dict() and config_from_dict(shown).to_dict() == expected.to_dict()
    assert shown["data"]["num_classes"] == 99 and shown["optim"]["lr"] == 0.01 and shown["method"]["perturb"] == "none"


def test_a_bad_key_is_one_line(monkeypatch, capsys):
    code, err = run_cli(["config", "show", "optim.lrr=3"], monkeypatch, capsys)
    assert code == 2 and "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
