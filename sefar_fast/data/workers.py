"""Worker processes of the data layer (synth rendering, `sefar prepare`, video indexing).

Ctrl-C in a terminal signals the whole process group, workers included. They leave it to
the parent (`quiet_worker` as the pool's initializer), which stops the pool and reports the
interruption in one line, instead of every worker printing its own traceback.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def quiet_worker() -> None:
    """Pool initializer: ignore SIGINT; the parent process answers it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def drop_pending(pool: Executor) -> None:
    """On an interruption: cancel the work not yet started instead of waiting for all of it."""
    pool.shutdown(wait=False, cancel_futures=True)


def ordered_map(fn: Callable[[T], R], jobs: list[T], workers: int, min_jobs: int = 64) -> Iterator[R]:
    """fn over jobs, results in job order: in `workers` spawned processes (SIGINT left to this one),
    or here when there are few jobs (a pool costs more than it saves)."""
    if workers <= 1 or len(jobs) < min_jobs:
        yield from map(fn, jobs)
        return
    # spawn, not fork: the caller may hold threads (torch, DALI) that a forked child would inherit locked
    with multiprocessing.get_context("spawn").Pool(workers, initializer=quiet_worker) as pool:
        yield from pool.imap(fn, jobs, chunksize=16)
