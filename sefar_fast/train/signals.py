"""Graceful interruption: SIGINT / SIGTERM finish the current step, checkpoint, and exit.

The first signal only raises a flag; the trainer looks at it after every optimizer
step (all ranks agree on it through `distributed.any_rank`), writes `last.*` with
the position inside the epoch, and raises `Interrupted`, which the CLI turns into
a message with the exact resume command and exit status 128 + signal (130 for
SIGINT, 143 for SIGTERM). A second signal ends the process at once with the
default action; the checkpoint files are replaced atomically, so the previous
pair survives even then.

A launcher can deliver one request twice: on Ctrl-C the terminal signals the whole
process group, and torchrun then forwards the signal to its workers again. A repeat
within `REPEAT_WINDOW_S` of the first therefore counts as the same request.

Test hook: SEFAR_TEST_SIGNAL_AT_STEP=N[:TERM] makes the process signal itself after
optimizer step N (1-based over the run) completes.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from sefar_fast.console import err_console

REPEAT_WINDOW_S = 1.0
_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint; `exit_code` is 128 + signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    """Installs the SIGINT/SIGTERM handlers for the duration of a `with` block."""

    def __init__(self, announce: bool = True):
        self.signum: int | None = None
        self.first_at = 0.0
        self.announce = announce
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self.first_at = signum, now
            if self.announce:
                err_console.print(f"[yellow]{_NAMES.get(signum, signum)}: finishing this step and writing a "
                                  "checkpoint; signal again to exit at once[/]")
            return
        if now - self.first_at < REPEAT_WINDOW_S:
            return  # the same request delivered twice (terminal + launcher)
        err_console.print(f"[red]{_NAMES.get(signum, signum)} again: exiting at once[/] (the last checkpoint is kept)")
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def signal_self_for_tests(global_step: int) -> None:
    """SEFAR_TEST_SIGNAL_AT_STEP=N[:TERM]: signal this process after optimizer step N."""
    spec = os.environ.get("SEFAR_TEST_SIGNAL_AT_STEP")
    if not spec:
        return
    step, _, name = spec.partition(":")
    if global_step == int(step):
        os.kill(os.getpid(), signal.SIGTERM if name.upper() in ("TERM", "SIGTERM") else signal.SIGINT)
