"""Run the `sefar` command in the test process (shared by the CLI-level tests)."""

import sys


def run_cli(args, monkeypatch, capsys) -> tuple[int, str]:
    """`sefar <args>` in this process: (exit status, stderr text)."""
    from sefar_fast.cli.app import main

    monkeypatch.setattr(sys, "argv", ["sefar", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    return code, capsys.readouterr().err
