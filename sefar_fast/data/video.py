"""Decode one clip source to frames on the host: a video file (PyAV) or a folder of JPEG frames.

PyAV wraps FFmpeg, so any codec FFmpeg has (H.264, HEVC, MPEG-4, VP8/9, AV1, ...) decodes
on the CPU; DALI's CPU video decoder reads only VP8/VP9/MJPEG. `sefar prepare` uses this
module once per clip; the frame count is what actually decodes, never the container's
estimate (which the released code trusted and then read past the end of).

Frames are downscaled so the short side is `short_side` (never upscaled: the loader
resizes to the model's size anyway, and upscaled JPEGs only cost space and time).
With `fps`, frames are kept at that rate by timestamp (the first frame always).

Every failure is a one-line SefarError naming the file (and the codec when known). A video
that decodes clearly fewer frames than its container declares (more than 5% and 2 frames
short) is reported as truncated rather than silently shortened.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from sefar_fast.errors import SefarError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
FLOW_IMAGE = re.compile(r"^(flow_)?[xy]_\d", re.IGNORECASE)  # flow_x_00001.jpg, x_00001.jpg


def scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(h, w) with the short side at most `short_side`, aspect ratio kept, each side at least 1."""
    short = min(height, width)
    if not short_side or short <= short_side:
        return height, width
    scale = short_side / short
    return max(1, round(height * scale)), max(1, round(width * scale))


def first_video_stream(container, path):
    """(stream, codec name) of the first video stream, set up for threaded decoding; SefarError if none."""
    if not container.streams.video:
        raise SefarError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream, stream.codec_context.name or "unknown"


def probe_codec(path) -> str:
    """The codec name of the first video stream ("h264", "vp9", ...), or "unknown" if none can be read."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
            return container.streams.video[0].codec_context.name or "unknown"
    except (av.FFmpegError, OSError, ValueError):
        return "unknown"


def _keep_by_fps(fps: float | None):
    """A predicate on frame time (seconds) that keeps frames at `fps` (all frames when fps is None)."""
    if not fps:
        return lambda t: True
    step, state = 1.0 / fps, {"next": None}

    def keep(t: float) -> bool:
        if state["next"] is None:
            state["next"] = t + step
            return True
        if t + 1e-6 >= state["next"]:
            while state["next"] <= t + 1e-6:
                state["next"] += step
            return True
        return False

    return keep


def decode_video(path, *, short_side: int | None = None, fps: float | None = None,
                 start: float | None = None, end: float | None = None) -> np.ndarray:
    """All (or fps-sampled) frames of a video file: uint8 [T, H, W, 3] RGB.

    `start` / `end` (seconds) keep only frames with start <= time < end (a clip cut from a
    longer video, e.g. a FineGym element inside its event video); decoding seeks near `start`.

    SefarError if the file is missing, cannot be opened or decoded (truncated, corrupt,
    a codec FFmpeg lacks), or yields no frame.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise SefarError(f"video {path} does not exist")
    frames: list[np.ndarray] = []
    codec = "unknown"
    try:
        with av.open(str(path)) as container:
            stream, codec = first_video_stream(container, path)
            keep = _keep_by_fps(fps)
            rate = float(stream.average_rate or 0) or 25.0
            windowed = start is not None or end is not None
            declared = 0 if windowed else int(stream.frames or 0)
            if start and stream.time_base:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            decoded = 0
            for i, frame in enumerate(container.decode(stream)):
                decoded += 1
                t = frame.time if frame.time is not None else i / rate
                if start is not None and t < start - 1e-6:
                    continue
                if end is not None and t >= end - 1e-6:
                    break
                if not keep(t):
                    continue
                h, w = scaled_size(frame.height, frame.width, short_side)
                if (h, w) != (frame.height, frame.width):
                    frame = frame.reformat(width=w, height=h, interpolation="AREA")
                frames.append(frame.to_ndarray(format="rgb24"))
    except SefarError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as e:
        what = "truncated or corrupt" if frames else "cannot be decoded"
        raise SefarError(f"video {path} (codec {codec}) {what}: {e}") from None
    if not frames:
        raise SefarError(f"video {path} (codec {codec}) has no decodable frames")
    if declared and decoded < declared - max(2, declared // 20):
        raise SefarError(
            f"video {path} (codec {codec}) is truncated: {decoded} of the {declared} frames it declares decode; "
            "re-encode or re-download it"
        )
    return np.stack(frames)


def _natural_key(name: str):
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def frame_files(folder) -> list[Path]:
    """The image files of a frame folder in natural order (img_2 before img_10), without the optical
    flow images that mmaction2's extraction (denseflow) writes beside the RGB frames."""
    folder = Path(folder)
    frames = (p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not FLOW_IMAGE.match(p.name))
    return sorted(frames, key=lambda p: _natural_key(p.name))


def read_frame_folder(folder, *, short_side: int | None = None) -> np.ndarray:
    """The frames of a JPEG frame folder (FineDiving ships these): uint8 [T, H, W, 3].

    Frames of different sizes are resized to the first frame's size. SefarError for a
    missing or empty folder or an unreadable image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SefarError(f"frame folder {folder} does not exist")
    files = frame_files(folder)
    if not files:
        raise SefarError(f"frame folder {folder} has no .jpg/.png frames")
    frames, size = [], None
    for p in files:
        try:
            with Image.open(p) as img:
                img = img.convert("RGB")
                if size is None:
                    h, w = scaled_size(img.height, img.width, short_side)
                    size = (w, h)
                if img.size != size:
                    img = img.resize(size, Image.BILINEAR)
                frames.append(np.asarray(img))
        except (OSError, ValueError) as e:
            raise SefarError(f"frame {p} cannot be read: {e}") from None
    return np.stack(frames)


def read_clip(path, *, short_side: int | None = None, fps: float | None = None, start: float | None = None,
              end: float | None = None) -> np.ndarray:
    """Frames of a clip source: a frame folder or a video file (optionally a time window of it)."""
    path = Path(path)
    if path.is_dir():
        return read_frame_folder(path, short_side=short_side)
    return decode_video(path, short_side=short_side, fps=fps, start=start, end=end)
