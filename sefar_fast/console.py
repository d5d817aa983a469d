"""Rich progress bars and tables shared by the commands.

Only rank 0 of a distributed run draws; the others get a silent bar, so library
code can always call `advance` without checking the rank.
"""

from __future__ import annotations

import os
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


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class Bar:
    """One task of a rich Progress, with a free-text postfix (loss, accuracy, ...)."""

    def __init__(self, progress: Progress | None, task_id):
        self._progress, self._task = progress, task_id

    def advance(self, n: int = 1, **postfix) -> None:
        if self._progress is None:
            return
        text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in postfix.items())
        if postfix:
            self._progress.update(self._task, advance=n, postfix=text)
        else:
            self._progress.advance(self._task, n)

    def set_total(self, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[Bar]:
    """A bar with rate, elapsed time and ETA; a no-op off rank 0 or when disabled."""
    if not enabled or not is_main_process():
        yield Bar(None, None)
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


def results_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return table
