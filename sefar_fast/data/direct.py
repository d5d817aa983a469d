"""Direct video mode: train and evaluate from video files (or JPEG frame folders) with no clip store.

`--data video:SPEC` reads the clips of any source spec (`video:lists:DIR`, `video:folder:DIR`,
`video:ucf101` with `--root`, ...; a bare `video:DIR` means `video:folder:DIR`) straight from
their files. `VideoSource` offers the small interface the loader needs from a clip store
(records with clip_id / label / split / num_frames / height / width, `class_names`,
`indices(split)`) plus `frame_decoder(...)`, which replaces the store's JPEG reads: the
same `ClipLoader` (order, frame sampling, ranks, resume) then serves both.

Frame counts come from decoding every frame once with PyAV (containers' frame counts are
estimates, and wrong for cut or damaged files). That pass also records the decoded frame
size, the codec, keyframe positions (so later reads can seek) and, for clips that are a
time window of a longer video, the window's first frame and length. The results are
cached in `$SEFAR_CACHE/video-index/<source>-<hash>.json`, per file keyed by path, size
and modification time, so a changed file is decoded again and an unchanged one never.

A file that cannot be read (missing, no video stream, undecodable, truncated, no frames,
an empty time window) is never dropped: after indexing every file, a SefarError names
the first failure (file and codec) and how many there are; all are listed in a report
next to the cache file. `sefar prepare` is the way to train while skipping such files.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from sefar_fast.data.adapters import load_source
from sefar_fast.data.video import first_video_stream, frame_files
from sefar_fast.data.video_pipeline import VideoFrameDecoder
from sefar_fast.data.workers import drop_pending, quiet_worker
from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write_json, cache_root

VIDEO_PREFIX = "video:"
INDEX_FORMAT, INDEX_VERSION = "sefar-video-index", 1
# Source kinds `adapters.load_source` knows; anything else after "video:" is a folder-per-class path.
SOURCE_KINDS = ("folder", "lists", "rawframes", "ucf101", "hmdb51", "gym99", "gym288", "gym-new", "gymnew",
                "finegym-new", "finediving", "ssv2", "something-something-v2")
# Keep a keyframe for seeking only this many frames after the previous kept one: a read then
# decodes at most this many frames too many, and the index stays small for all-intra codecs.
KEYFRAME_MIN_GAP = 8
WINDOW_EPS = 1e-6  # seconds; the same tolerance video.decode_video applies to time windows


@dataclass(frozen=True)
class VideoFile:
    """One decoded-once file: a video ("video") or a JPEG/PNG frame folder ("frames")."""

    path: str
    kind: str
    codec: str
    num_frames: int
    height: int
    width: int
    size: int = 0  # bytes of a video file (0 for a frame folder)
    keyframes: tuple[tuple[int, int], ...] = ()  # (frame index, pts) a seek may start from; () = never seek
    frame_files: tuple[str, ...] = ()  # frame folders: the image files in frame order


@dataclass
class VideoRecord:
    """One clip: frames [first, first + num_frames) of `path` (first > 0 for a time window)."""

    clip_id: str
    label: int
    split: str
    num_frames: int
    height: int
    width: int
    path: str
    first: int = 0


@dataclass
class VideoSource:
    """Clips read straight from their files; the loader's view of a store, without the store."""

    name: str
    class_names: list[str]
    records: list[VideoRecord]
    files: dict[str, VideoFile] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def splits(self) -> list[str]:
        return sorted({r.split for r in self.records})

    def indices(self, split: str | None = None) -> list[int]:
        return [i for i, r in enumerate(self.records) if split is None or r.split == split]

    def file_of(self, i: int) -> VideoFile:
        return self.files[self.records[i].path]

    def frame_decoder(self, backend: str, frame_size: tuple[int, int], device, max_clips: int,
                      num_threads: int = 4):
        """The loader's decoder for this source (see video_pipeline.VideoFrameDecoder)."""
        return VideoFrameDecoder(self, backend, frame_size, device, max_clips, num_threads)

    @classmethod
    def from_sources(cls, sources, *, cache_path=None, workers: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> "VideoSource":
        """Index every file of an adapters.SourceSet (decoding each once, or reading the cache)."""
        return build_video_source(sources, cache_path=cache_path, workers=workers, progress=progress)


# ---- the --data switch ---------------------------------------------------------------------------------------------
def video_spec(name: str) -> str | None:
    """The source spec inside a `video:` data name ("video:lists:D" -> "lists:D", "video:D" -> "folder:D"),
    or None when the name does not ask for direct video."""
    if not name.lower().startswith(VIDEO_PREFIX):
        return None
    inner = name[len(VIDEO_PREFIX):]
    if not inner:
        raise SefarError("video: needs a source, e.g. video:lists:DIR, video:folder:DIR or video:ucf101 --root R")
    kind = inner.partition(":")[0].lower()
    return inner if kind in SOURCE_KINDS else f"folder:{inner}"


def open_video_source(spec: str, *, root=None, path_prefix: str | None = None, cache_dir=None,
                      workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> VideoSource:
    """The VideoSource of a source spec (`lists:DIR`, `folder:DIR`, `ucf101`, ...; a `video:` prefix is
    accepted). The file index is cached in cache_dir (default `$SEFAR_CACHE/video-index`, see `io.cache_root`)."""
    spec = video_spec(spec) or spec
    sources = load_source(spec, root=root, path_prefix=path_prefix)
    if not sources.clips:
        raise SefarError(f"data source {spec!r} has no clips; check --root and the list files")
    key = json.dumps([spec, str(Path(root).resolve()) if root else None, path_prefix])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    kind = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in spec.split(":")[0])
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "video-index"
    source = build_video_source(sources, cache_path=cache / f"{kind}-{digest}.json", workers=workers,
                                progress=progress)
    source.name = f"{VIDEO_PREFIX}{spec}"
    return source


# ---- indexing: decode each file once -------------------------------------------------------------------------------
def _window_key(start, end) -> str:
    return "|".join("None" if v is None else repr(float(v)) for v in (start, end))


def _parse_window_key(key: str) -> tuple[float | None, float | None]:
    start, end = (None if v == "None" else float(v) for v in key.split("|"))
    return start, end


def probe_video(path, windows: Sequence[tuple[float | None, float | None]] = ()) -> dict:
    """Decode every frame of a video once (no colour conversion). Returns {"codec", "frames", "height",
    "width", "keyframes": [[index, pts], ...], "windows": {"start|end": [first, count]}}.

    A window keeps the frames with start <= time < end, as video.decode_video does. SefarError
    naming the file and codec: missing, no video stream, cannot be decoded, truncated (clearly fewer
    frames than the container declares, the rule of video.decode_video), or no frames.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise SefarError(f"video {path} does not exist")
    codec, count, height, width = "unknown", 0, 0, 0
    keyframes: list[list[int]] = []
    seekable, last_pts = True, None
    times: list[float] = []
    try:
        with av.open(str(path)) as container:
            stream, codec = first_video_stream(container, path)
            declared = int(stream.frames or 0)
            rate = float(stream.average_rate or 0) or 25.0
            for frame in container.decode(stream):
                if count == 0:
                    height, width = frame.height, frame.width
                pts = frame.pts
                if pts is None or (last_pts is not None and pts <= last_pts):
                    seekable = False  # frame positions cannot be recognised after a seek
                elif frame.key_frame and (not keyframes or count - keyframes[-1][0] >= KEYFRAME_MIN_GAP):
                    keyframes.append([count, int(pts)])
                last_pts = pts
                if windows:
                    times.append(frame.time if frame.time is not None else count / rate)
                count += 1
    except SefarError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as e:
        what = "truncated or corrupt" if count else "cannot be decoded"
        raise SefarError(f"video {path} (codec {codec}) {what}: {e}") from None
    if count == 0:
        raise SefarError(f"video {path} (codec {codec}) has no decodable frames")
    if declared and count < declared - max(2, declared // 20):
        raise SefarError(f"video {path} (codec {codec}) is truncated: {count} of the {declared} frames it declares "
                         "decode; re-encode or re-download it")
    spans = {}
    for start, end in windows:
        inside = [i for i, t in enumerate(times)
                  if (start is None or t >= start - WINDOW_EPS) and (end is None or t < end - WINDOW_EPS)]
        spans[_window_key(start, end)] = [inside[0], inside[-1] - inside[0] + 1] if inside else [0, 0]
    return {"codec": codec, "frames": count, "height": height, "width": width,
            "keyframes": keyframes if seekable else [], "windows": spans}


def probe_frame_folder(path) -> VideoFile:
    """A JPEG/PNG frame folder as a VideoFile (frame size from the first image's header)."""
    files = frame_files(path)
    if not files:
        raise SefarError(f"frame folder {path} has no .jpg/.png frames")
    try:
        with Image.open(files[0]) as img:
            width, height = img.size
    except (OSError, ValueError) as e:
        raise SefarError(f"frame {files[0]} cannot be read: {e}") from None
    return VideoFile(str(path), "frames", "jpeg-frames", len(files), height, width,
                     frame_files=tuple(str(p) for p in files))


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _load_index(cache_path: Path | None) -> dict:
    if cache_path is None or not cache_path.is_file():
        return {}
    try:
        data = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache is only lost time: index again
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
        return {}
    return data.get("files", {})


def _probe_job(path: str, windows: list) -> dict:
    """One file's probe for a worker process: the result or the error message (never raises)."""
    try:
        return {"ok": probe_video(path, [tuple(w) for w in windows])}
    except SefarError as e:
        return {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - a decoder bug on one file must not hide the others' results
        return {"error": f"video {path}: {type(e).__name__}: {e}"}


def build_video_source(sources, *, cache_path=None, workers: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> VideoSource:
    """Index the files of an adapters.SourceSet into a VideoSource (see the module docstring)."""
    cache_path = Path(cache_path) if cache_path is not None else None
    cached = _load_index(cache_path)
    windows_of: dict[str, set] = {}
    for clip in sources.clips:
        windows_of.setdefault(str(clip.path), set())
        if clip.start is not None or clip.end is not None:
            windows_of[str(clip.path)].add((clip.start, clip.end))

    entries: dict[str, dict] = {}
    files: dict[str, VideoFile] = {}
    failures: list[tuple[str, str]] = []  # (path, message)
    todo: list[tuple[str, list]] = []
    for path, windows in windows_of.items():
        p = Path(path)
        if p.is_dir():
            try:
                files[path] = probe_frame_folder(p)
            except SefarError as e:
                failures.append((path, str(e)))
            continue
        if not p.is_file():
            failures.append((path, f"video {p} does not exist"))
            continue
        old = cached.get(path)
        unchanged = bool(old) and old.get("stat") == _stat_key(p)
        if unchanged and {_window_key(*w) for w in windows} <= set(old["windows"]):
            entries[path] = old
        else:
            # an unchanged file's known windows are measured again with the new ones (one pass)
            known = [_parse_window_key(k) for k in old["windows"]] if unchanged else []
            todo.append((path, sorted(set(windows) | set(known), key=str)))

    total, done = len(windows_of), len(windows_of) - len(todo)
    if progress is not None and todo:
        progress(done, total)
    for path, result in _run_probes(todo, workers):
        if "ok" in result:
            entries[path] = {"stat": _stat_key(Path(path)), **result["ok"]}
        else:
            failures.append((path, result["error"]))
        done += 1
        if progress is not None:
            progress(done, total)
    if cache_path is not None and todo:
        atomic_write_json(cache_path, {"format": INDEX_FORMAT, "version": INDEX_VERSION, "files": {**cached, **entries}},
                          separators=(",", ":"))

    for path, e in entries.items():
        files[path] = VideoFile(path, "video", e["codec"], int(e["frames"]), int(e["height"]), int(e["width"]),
                                int(e["stat"][0]), tuple((int(i), int(t)) for i, t in e["keyframes"]))
    records: list[VideoRecord] = []
    for clip in sources.clips:
        path = str(clip.path)
        f = files.get(path)
        if f is None:
            continue  # reported below with the file's own error
        first, count = 0, f.num_frames
        if f.kind == "video" and (clip.start is not None or clip.end is not None):
            first, count = entries[path]["windows"][_window_key(clip.start, clip.end)]
            if count == 0:
                failures.append((path, f"clip {clip.clip_id!r}: video {path} (codec {f.codec}) has no frames "
                                       f"between {clip.start}s and {clip.end}s; check the annotation's timestamps"))
                continue
        records.append(VideoRecord(clip.clip_id, int(clip.label), clip.split, int(count), f.height, f.width, path,
                                   int(first)))
    if failures:
        _raise_failures(failures, len(windows_of), cache_path)
    return VideoSource(sources.name, list(sources.class_names), records, files)


def _run_probes(todo: list[tuple[str, list]], workers: int | None):
    """Yield (path, probe result) for each job; in spawned processes when there are several files."""
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers <= 1 or len(todo) < 2 * workers:
        for path, windows in todo:
            yield path, _probe_job(path, windows)
        return

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=quiet_worker) as pool:
        try:
            futures = [(path, pool.submit(_probe_job, path, windows)) for path, windows in todo]
            for path, fut in futures:
                yield path, fut.result()
        except BaseException:
            drop_pending(pool)
            raise


def _raise_failures(failures: list[tuple[str, str]], total: int, cache_path: Path | None) -> None:
    """One SefarError for every clip that cannot be read: the first one's message, the count, the report."""
    messages = [message for _, message in failures]
    where = ""
    if cache_path is not None:
        report = cache_path.with_name(cache_path.stem + "-failures.json")
        atomic_write_json(report, [{"path": path, "error": message} for path, message in failures],
                          separators=(",", ":"))
        where = f"; see {report}"
    advice = "or train from a store made by `sefar prepare` (which skips and reports unreadable clips)"
    if len(messages) == 1:
        raise SefarError(f"{messages[0]}{where}; fix or remove it from the source, {advice}")
    raise SefarError(f"{len(messages)} unreadable clips in {total} files (first: {messages[0]}){where}; "
                     f"fix or remove them, {advice}")
