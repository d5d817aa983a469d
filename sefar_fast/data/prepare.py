"""`sefar prepare`: decode every clip of a source once into a clip store, in parallel, resumably.

Each worker process decodes a clip (video.read_clip: short side downscaled to `short_side`,
optionally resampled to `fps`), JPEG-encodes its frames and appends them to its own shard
files `shard-<tag>-NNNNN.bin` in the output folder, flushing after every clip. The parent
appends one line per finished clip to `prepare-journal.jsonl` (the record, or why the clip
failed). At the end the index is written atomically from the journal and the journal is
removed.

Resuming: after an interruption the journal (and the index of an already finished store
made with the same settings) says which clips are done; those are skipped, every other clip
(failed ones included: the file may have been fixed) is decoded again. Records whose bytes
are not fully in their shard file are treated as not done. Changing the settings
(short side, fps, quality, class names) starts the store afresh.

A clip that cannot be read (missing file, undecodable, truncated, no frames) is reported
in the summary and in `prepare-report.json`, never silently dropped; the others go on.
`strict=True` raises a SefarError after writing the store if any clip failed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from sefar_fast.data.adapters import SourceClip, SourceSet, load_source
from sefar_fast.data.store import (
    INDEX_NAME,
    ClipRecord,
    ShardWriter,
    encode_jpeg,
    write_index,
)
from sefar_fast.data.video import read_clip
from sefar_fast.data.workers import drop_pending, quiet_worker
from sefar_fast.errors import SefarError
from sefar_fast.io import CACHE_ENV, atomic_write_json, cache_root, ensure_writable, write_elsewhere

JOURNAL_NAME = "prepare-journal.jsonl"
REPORT_NAME = "prepare-report.json"

_writers: dict[str, ShardWriter] = {}  # per process: output folder -> this process's shard writer


def _writer(out_root: str, shard_bytes: int) -> ShardWriter:
    w = _writers.get(out_root)
    if w is None:
        tag = f"{time.time_ns():x}-{os.getpid()}"  # unique per process and run: never append to old shards
        w = _writers[out_root] = ShardWriter(Path(out_root), shard_bytes, prefix=f"shard-{tag}")
    return w


def _close_writers() -> None:
    for w in _writers.values():
        w.close()
    _writers.clear()


def prepare_clip(clip: SourceClip, out_root: str, short_side: int | None, fps: float | None, quality: int,
                 shard_bytes: int) -> dict:
    """Decode, encode and store one clip. Returns {"record": {...}} or {"failed": {...}}; never raises."""
    try:
        frames = read_clip(clip.path, short_side=short_side, fps=fps, start=clip.start, end=clip.end)
        if len(frames) == 0:
            raise SefarError(f"clip {clip.clip_id!r} ({clip.path}) has zero frames")
        jpegs = [encode_jpeg(f, quality) for f in frames]
    except SefarError as e:
        return {"failed": {"clip_id": clip.clip_id, "path": str(clip.path), "error": str(e)}}
    except Exception as e:  # a decoder bug on one file must not stop the other clips
        return {"failed": {"clip_id": clip.clip_id, "path": str(clip.path), "error": f"{type(e).__name__}: {e}"}}
    writer = _writer(out_root, shard_bytes)
    shard, offsets, lengths = writer.append_clip(jpegs)
    writer.flush()
    t, h, w, _ = frames.shape
    record = ClipRecord(clip.clip_id, clip.label, clip.split, t, h, w, 0, offsets, lengths)
    return {"record": {**asdict(record), "shard_file": writer.shard_names[shard]}}


def _settings(sources: SourceSet, short_side, fps, quality) -> dict:
    return {"short_side": short_side, "fps": fps, "quality": quality, "class_names": list(sources.class_names)}


def _complete(rec: dict, root: Path, sizes: dict) -> bool:
    """All of a journal record's bytes are in its shard file."""
    name = rec.get("shard_file")
    if name not in sizes:
        p = root / name if name else None
        sizes[name] = p.stat().st_size if p is not None and p.is_file() else -1
    end = max((o + n for o, n in zip(rec["offsets"], rec["lengths"])), default=0)
    return sizes[name] >= end > 0


def _load_done(root: Path, settings: dict) -> dict[str, dict]:
    """Clips already stored under the same settings (from a finished index and/or the journal)."""
    done: dict[str, dict] = {}
    index_path, journal = root / INDEX_NAME, root / JOURNAL_NAME
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            if (index.get("extra") or {}).get("prepare") == settings:
                for r in index["records"]:
                    done[r["clip_id"]] = {**r, "shard_file": index["shards"][r["shard"]]}
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            pass
    if journal.is_file():
        lines = journal.read_text().splitlines()
        try:
            head = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            head = {}
        if head.get("settings") == settings:
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed run may be cut short
                    continue
                if "record" in entry:
                    done[entry["record"]["clip_id"]] = entry["record"]
        else:
            done = {}
    sizes: dict = {}
    return {cid: r for cid, r in done.items() if _complete(r, root, sizes)}


def _start_fresh(root: Path) -> None:
    (root / INDEX_NAME).unlink(missing_ok=True)
    (root / JOURNAL_NAME).unlink(missing_ok=True)
    for p in root.glob("shard-*.bin"):
        p.unlink()


def prepare(sources: SourceSet, out_root, *, short_side: int | None = 256, fps: float | None = None,
            workers: int | None = None, strict: bool = False, progress: Callable[[int, int], None] | None = None,
            quality: int = 90, shard_bytes: int = 256 << 20) -> dict:
    """Write (or finish) the clip store of `sources` at `out_root`.

    Returns {"store", "clips", "written", "skipped", "failed": [{"clip_id", "path", "error"}],
    "frames", "seconds"}. `workers` processes decode in parallel (default: all cores; 0 or 1 =
    in this process). `progress(done, total)` is called after every clip.
    """
    if Path(out_root).exists() and not Path(out_root).is_dir():
        raise SefarError(f"{out_root} is a file; give a folder for the clip store")
    try:
        return _prepare(sources, Path(out_root), short_side=short_side, fps=fps, workers=workers, strict=strict,
                        progress=progress, quality=quality, shard_bytes=shard_bytes)
    except OSError as e:  # a full or read-only file system, in this process or a worker
        raise SefarError(f"cannot write the clip store {out_root} ({e.strerror or e}); {write_elsewhere(out_root)}; "
                         "running the same command again continues where this one stopped") from None


def _prepare(sources: SourceSet, root: Path, *, short_side, fps, workers, strict, progress, quality,
             shard_bytes) -> dict:
    t0 = time.perf_counter()
    sources.check()
    root.mkdir(parents=True, exist_ok=True)
    settings = _settings(sources, short_side, fps, quality)
    done = _load_done(root, settings)
    if not done:
        _start_fresh(root)
    wanted = {c.clip_id for c in sources.clips}
    todo = [c for c in sources.clips if c.clip_id not in done]
    skipped = len(wanted & done.keys())
    failed: list[dict] = []
    total = len(sources.clips)
    journal = open(root / JOURNAL_NAME, "a")
    if journal.tell() == 0:
        journal.write(json.dumps({"settings": settings}) + "\n")
    count = skipped
    if progress:
        progress(count, total)

    def record(result: dict) -> None:
        nonlocal count
        journal.write(json.dumps(result) + "\n")
        journal.flush()
        if "record" in result:
            done[result["record"]["clip_id"]] = result["record"]
        else:
            failed.append(result["failed"])
        count += 1
        if progress:
            progress(count, total)

    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    args = (str(root), short_side, fps, quality, shard_bytes)
    try:
        if workers <= 1 or len(todo) <= 1:
            for clip in todo:
                record(prepare_clip(clip, *args))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                     initializer=quiet_worker) as pool:
                try:
                    pending = set()
                    queue = iter(todo)
                    for clip in queue:  # keep a bounded number of clips in flight
                        pending.add(pool.submit(prepare_clip, clip, *args))
                        if len(pending) >= 4 * workers:
                            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for f in finished:
                                record(f.result())
                    for f in pending:
                        record(f.result())
                except BaseException:
                    drop_pending(pool)
                    raise
    finally:
        _close_writers()
        journal.close()

    order = [c.clip_id for c in sources.clips if c.clip_id in done]
    shard_files = sorted({done[cid]["shard_file"] for cid in order})
    shard_of = {name: i for i, name in enumerate(shard_files)}
    records = []
    for cid in order:
        r = {k: v for k, v in done[cid].items() if k != "shard_file"}
        r["shard"] = shard_of[done[cid]["shard_file"]]
        records.append(ClipRecord(**r))
    write_index(root, sources.class_names, shard_files, records, extra={"prepare": settings, "source": sources.name})
    for p in root.glob("shard-*.bin"):  # bytes of clips that were redone or dropped
        if p.name not in shard_of:
            p.unlink()
    (root / JOURNAL_NAME).unlink(missing_ok=True)
    atomic_write_json(root / REPORT_NAME, {"source": sources.name, "failed": failed}, indent=1)
    summary = {"store": str(root), "clips": total, "written": len(todo) - len(failed), "skipped": skipped,
               "failed": failed, "frames": sum(r.num_frames for r in records),
               "seconds": round(time.perf_counter() - t0, 3)}
    if strict and failed:
        raise SefarError(f"{len(failed)} of {total} clips could not be read (first: {failed[0]['error']}); "
                         f"see {root / REPORT_NAME}")
    return summary


def dropped_clips(root) -> list[dict]:
    """The clips the last `prepare` of the store at `root` could not read ({"clip_id", "path", "error"}):
    left out of the store, and so out of every run that trains on it."""
    report = Path(root) / REPORT_NAME
    try:
        return list(json.loads(report.read_text()).get("failed") or [])
    except (OSError, ValueError, AttributeError):
        return []  # a store written directly (synth, ClipStore.write) has no report: nothing was dropped


def prepare_from_spec(spec: str, out, *, root=None, path_prefix: str | None = None, short_side: int | None = 256,
                      fps: float | None = None, workers: int | None = None, strict: bool = False,
                      progress: Callable[[int, int], None] | None = None) -> dict:
    """`sefar prepare SPEC --root R --out OUT`: adapters.load_source(SPEC) then prepare()."""
    sources = load_source(spec, root=root, path_prefix=path_prefix)
    if not sources.clips:
        raise SefarError(f"data source {spec!r} has no clips; check --root and the annotation files")
    return prepare(sources, out, short_side=short_side, fps=fps, workers=workers, strict=strict, progress=progress)


def store_for_source(spec: str, *, root=None, path_prefix: str | None = None, cache_dir=None,
                     short_side: int | None = 256, fps: float | None = None, workers: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Path:
    """The store of a source spec in the cache (`$SEFAR_CACHE/stores/<name>-<hash>`), prepared on first use.

    Lets `--data lists:DIR --root R` train directly: the first run decodes the clips once (resumable),
    later runs open the finished store. The hash covers the spec, root, prefix and settings.
    """
    key = json.dumps([spec, str(Path(root).resolve()) if root else None, path_prefix, short_side, fps])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in spec.split(":")[0])
    out = Path(cache_dir) if cache_dir is not None else cache_root() / "stores"
    if not (out / f"{name}-{digest}" / INDEX_NAME).is_file():  # to be prepared: the cache must take it
        ensure_writable(out, f"set {CACHE_ENV} to a writable folder with space")
    out = out / f"{name}-{digest}"
    if not (out / INDEX_NAME).is_file():
        prepare_from_spec(spec, out, root=root, path_prefix=path_prefix, short_side=short_side, fps=fps,
                          workers=workers, progress=progress)
    return out
