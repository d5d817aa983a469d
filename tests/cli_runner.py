"""Run the `sefar` command in the test process (shared by the CLI-level tests)."""

import signal
import sys
import time


def run_cli_output(args, monkeypatch, capsys) -> tuple[int, str, str]:
    """`sefar <args>` in this process: (exit status, stdout text, stderr text)."""
    from sefar_fast.cli.app import main

    monkeypatch.setattr(sys, "argv", ["sefar", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli(args, monkeypatch, capsys) -> tuple[int, str]:
    """`sefar <args>` in this process: (exit status, stderr text)."""
    code, _, err = run_cli_output(args, monkeypatch, capsys)
    return code, err


def kill_when_hung(proc, marker, timeout: float = 300.0) -> None:
    """Wait until `proc` hangs in a write (SEFAR_TEST_HANG_IN_WRITE creates `marker`), then kill it hard."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    marker.unlink()
