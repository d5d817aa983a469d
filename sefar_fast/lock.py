"""One process at a time in a run folder: an OS advisory lock held for the life of the process's work.

    lock = FolderLock(run_dir, "sefar train").acquire("choose another --out")
    ...                       # train, write checkpoints
    lock.release()            # or let the process end: the OS drops the lock with it

The lock is `flock(LOCK_EX | LOCK_NB)` on `<folder>/.lock`, which then holds the holder's PID,
host and command, so a second process is refused in one line that names them. The kernel
releases the lock when the process dies, however it dies (SIGKILL, a crash, the machine's
power), so a stale lock never blocks a run. The file itself stays: deleting it would let two
processes lock two different files of the same name.

Creating the folder and the lock file is the first write of a command into its folder: a
read-only or full file system is reported here, in one line, before any work.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from sefar_fast.errors import SefarError

LOCK_NAME = ".lock"


class FolderLock:
    """An exclusive lock on `folder` for one command (`holder`, e.g. "sefar train")."""

    def __init__(self, folder: str | Path, holder: str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.holder = holder
        self._fd: int | None = None

    def acquire(self, alternative: str) -> FolderLock:
        """Take the lock or raise SefarError naming who holds it; `alternative` says what else the user
        can do (e.g. "choose another --out")."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SefarError(f"cannot write to {self.folder} ({e.strerror}); {alternative} on a writable "
                             "file system") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse(fd, alternative)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._describe().encode(), 0)
        except OSError as e:
            os.close(fd)
            raise SefarError(f"cannot write to {self.folder} ({e.strerror}); free space there or "
                             f"{alternative}") from None
        self._fd = fd
        return self

    def check_free(self, alternative: str) -> None:
        """Refuse, as `acquire` would, when another process holds the lock; writes nothing (a first look,
        before deciding anything about the folder's contents)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return  # no lock file (yet), or none we can read: `acquire` will tell
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse(fd, alternative)
        os.close(fd)  # drops the shared lock

    def _refuse(self, fd: int, alternative: str) -> None:
        who = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process that is starting"
        os.close(fd)
        raise SefarError(f"{self.folder} is in use by {who}; wait for it to end, or {alternative}") from None

    def _describe(self) -> str:
        return f"{self.holder} (PID {os.getpid()} on {socket.gethostname()})\n"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
