"""Files that are whole or absent: atomic writes, hard links, and the cache folder.

Every file sefar writes for later reading (checkpoints, states, configs, reports, indexes,
splits, features) goes through `atomic_write`: the bytes go to a temporary file in the
target's folder (named `.<name>.<pid>.<random>.tmp`, so `clean_temporaries` can find
leftovers), are flushed to disk, and the temporary is renamed over the target. A crash
at any moment leaves the previous file or the new one, never half of one.

Test hook: SEFAR_TEST_HANG_IN_WRITE=<file name>:<n> makes the n-th write of that file in
this process stop after the temporary is complete but before the rename: it creates
`<target>.hang` and sleeps, so a test can kill the process mid-write.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from sefar_fast.errors import SefarError

CACHE_ENV = "SEFAR_CACHE"


def cache_root() -> Path:
    """Where sefar keeps generated data: $SEFAR_CACHE when set and not empty, else ~/.cache/sefar."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sefar")


def temporary_name(path: Path) -> Path:
    """A fresh temporary next to `path` (a plain name, so the file gets the usual umask permissions)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def is_temporary(path: Path) -> bool:
    """A temporary of `atomic_write` (a write that never finished, if its process is gone)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path), fsync the temporary, rename it over `path`, fsync the folder.

    A file system that refuses (full, read-only, no permission) is a SefarError naming the file; the
    previous file, if any, is left as it was."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _hang_for_tests(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_error(path: Path, e: OSError) -> SefarError:
    """The one line for a write the file system refused."""
    kept = " (the previous file is intact)" if path.is_file() else ""
    return SefarError(f"cannot write {path} ({e.strerror or e}){kept}; {write_elsewhere(path)}")


def write_elsewhere(path: str | Path) -> str:
    """What to do when `path` cannot be written: free space, or (in the cache) move the cache."""
    if Path(path).resolve().is_relative_to(cache_root().resolve()):
        return f"free space there or set {CACHE_ENV} to a writable folder with space"
    return "free space there or use a writable folder"


def ensure_writable(folder: str | Path, fix: str) -> Path:
    """Create `folder` and write a file there, before long work whose results go there; SefarError
    naming the folder and `fix` (what else the user can do) when the file system refuses."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SefarError(f"{folder} is a file, not a folder; {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(folder / "write-check")
        try:
            probe.write_bytes(b"sefar")
        finally:
            probe.unlink(missing_ok=True)
    except OSError as e:
        raise SefarError(f"cannot write to {folder} ({e.strerror or e}); {fix}") from None
    return folder


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, **dumps_args) -> Path:
    return atomic_write_text(path, json.dumps(data, **dumps_args))


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Make `dst` hold `src`'s bytes, atomically: a hard link when the file system allows, else a copy.

    A hard link costs no I/O; it stays valid because sefar only ever replaces files by rename,
    never rewrites them in place."""
    src, dst = Path(src), Path(dst)
    tmp = temporary_name(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dst.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_WRITES: dict[str, int] = {}


def _hang_for_tests(path: Path) -> None:
    spec = os.environ.get("SEFAR_TEST_HANG_IN_WRITE")
    if not spec:
        return
    name, _, nth = spec.rpartition(":")
    if path.name != name:
        return
    _WRITES[name] = _WRITES.get(name, 0) + 1
    if _WRITES[name] == int(nth):
        Path(f"{path}.hang").write_text(str(os.getpid()))
        while True:
            time.sleep(60)
