"""Worker processes of the data layer (synth rendering, `sefar prepare`, video indexing).

Ctrl-C in a terminal signals the whole process group, workers included. They leave it to
the parent (`quiet_worker` as the pool's initializer), which stops the pool and reports the
interruption in one line, instead of every worker printing its own traceback.
"""

from __future__ import annotations

import signal
from concurrent.futures import Executor


def quiet_worker() -> None:
    """Pool initializer: ignore SIGINT; the parent process answers it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def drop_pending(pool: Executor) -> None:
    """On an interruption: cancel the work not yet started instead of waiting for all of it."""
    pool.shutdown(wait=False, cancel_futures=True)
