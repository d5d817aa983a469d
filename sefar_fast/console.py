"""Rich progress bars and tables shared by the commands.

Only rank 0 of a distributed run draws; the others get a silent bar, so library
code can always call `advance` without checking the rank. When stdout is not a
terminal (a log file, a pipe, a batch job), bars become plain lines: one every
`PLAIN_EVERY_S` seconds and one at the end, each with the count, rate, elapsed
time, ETA and the bar's latest values (loss, lr, ...).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)
PLAIN_EVERY_S = 30.0


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def postfix_text(postfix: dict) -> str:
    """A bar's free-text postfix: `loss 0.1234  acc 51`."""
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in postfix.items())


class Bar:
    """One task of a rich Progress, with a free-text postfix (loss, accuracy, ...)."""

    def __init__(self, progress: Progress | None, task_id):
        self._progress, self._task = progress, task_id

    def advance(self, n: int = 1, **postfix) -> None:
        if self._progress is None:
            return
        text = postfix_text(postfix)
        if postfix:
            self._progress.update(self._task, advance=n, postfix=text)
        else:
            self._progress.advance(self._task, n)

    def set_total(self, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def start_at(self, done: int) -> None:
        """Count `done` items as done before this bar started (a resumed epoch): not in the rate."""
        if self._progress is not None:
            self._progress.update(self._task, completed=done)


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[Bar]:
    """A bar with rate, elapsed time and ETA; a no-op off rank 0 or when disabled."""
    if not enabled or not is_main_process():
        yield Bar(None, None)
        return
    if not console.is_terminal:
        bar = PlainBar(description, total)
        yield bar
        bar.finish()
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[postfix]}"),
        console=console,
        transient=False,
        refresh_per_second=4,
    )
    with progress:
        task = progress.add_task(description, total=total, postfix="", rate="")
        bar = _RateBar(progress, task)
        yield bar


class _RateBar(Bar):
    """Bar that shows items/s computed by rich's own speed estimate."""

    def advance(self, n: int = 1, **postfix) -> None:
        super().advance(n, **postfix)
        speed = self._progress.tasks[self._task].speed if self._progress else None
        if speed:
            self._progress.update(self._task, rate=f"{speed:.1f} it/s")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainBar(Bar):
    """A bar for logs: a plain line every PLAIN_EVERY_S seconds and at the end."""

    def __init__(self, description: str, total: int | None, every_s: float | None = None):
        super().__init__(None, None)
        self.description, self.total, self.done, self.base = description, total, 0, 0
        self.every_s = PLAIN_EVERY_S if every_s is None else every_s
        self.start = self.last = time.monotonic()
        self.postfix = ""
        self.shown = -1  # `done` at the last line

    def advance(self, n: int = 1, **postfix) -> None:
        self.done += n
        if postfix:
            self.postfix = postfix_text(postfix)
        if time.monotonic() - self.last >= self.every_s:
            self.line()

    def set_total(self, total: int) -> None:
        self.total = total

    def start_at(self, done: int) -> None:
        self.done = self.base = done

    def line(self) -> None:
        now = time.monotonic()
        self.last, self.shown = now, self.done
        elapsed = now - self.start
        rate = (self.done - self.base) / elapsed if elapsed > 0 else 0.0
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        eta = (f"  eta {_clock((self.total - self.done) / rate)}" if self.total and rate > 0 and self.done < self.total
               else "")
        post = f"  {self.postfix}" if self.postfix else ""
        console.print(f"{self.description}: {count}  {rate:.2f} it/s  elapsed {_clock(elapsed)}{eta}{post}",
                      markup=False, highlight=False, soft_wrap=True)

    def finish(self) -> None:
        if self.done > self.base and self.done != self.shown:
            self.line()


def results_table(title: str, rows: list[tuple[str, str]], justify: str = "right") -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify=justify, overflow="fold")  # fold long paths, never cut them
    for k, v in rows:
        table.add_row(k, v)
    return table
