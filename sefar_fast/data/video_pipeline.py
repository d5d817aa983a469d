"""Direct-video decoding for the loader: (clip, frame indices) -> uint8 [N, H0, W0, 3] on the device.

`VideoFrameDecoder.decode_clips` stands in for the store path's JPEG decode when the loader
reads a `direct.VideoSource`. Each clip takes one of three routes, by codec and device:

- DALI video graph: `fn.decoders.video(encoded, frames=idx)` then the cover-box `fn.resize`,
  in one graph. `device="mixed"` (NVDEC) on a GPU for H.264, HEVC, VP8, VP9, AV1, MPEG-4 and
  MJPEG; on the CPU (`device_id=None`) for VP8, VP9 and MJPEG, all DALI 2.4's CPU decoder reads.
  DALI's reader would skip files it cannot read; the decoder op on our own bytes cannot.
  Files over DALI_MAX_FILE_BYTES (long videos that clips are windows of) take the PyAV route.
- PyAV (FFmpeg on the CPU) for every other codec and for any clip the DALI graph fails on:
  seek to the last indexed keyframe at or before the first wanted frame, decode forward, keep
  the wanted frames. They then go through a DALI resize graph on the device, the same resize
  as above (or through PIL with backend "pil").
- Frame folders: the image files go to the store path's image decoder (pipeline.make_decoder).

Every route applies `pipeline.cover_box` (scale to cover H0 x W0, centre crop) with bilinear,
antialiased resampling, as the store path does. A clip no route can decode raises a SefarError
naming the file and codec.
"""

from __future__ import annotations

import warnings
from bisect import bisect_right
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from sefar_fast.data.pipeline import cover_box, make_decoder, resolve_backend
from sefar_fast.errors import SefarError

DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg"})
# DALI decodes from the whole file in memory, read again for every clip; past this size (a long
# video a clip is a short window of) PyAV's seek-and-read is cheaper.
DALI_MAX_FILE_BYTES = 256 << 20


# ---- PyAV: sparse frames of one file -------------------------------------------------------------------------------
def read_video_frames(path, frames: Sequence[int], *, codec: str = "unknown",
                      keyframes: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """Frames `frames` (indices in decode order, any order, repeats allowed) of a video: uint8 [N, H, W, 3] RGB.

    `keyframes` ((index, pts) pairs from direct.probe_video) lets the read start at the last keyframe
    at or before the first wanted frame; if the seek does not land on that keyframe the file is decoded
    from its start instead. SefarError naming the file and codec if it cannot be decoded or ends early.
    """
    import av

    wanted = np.asarray(frames, np.int64)
    unique = np.unique(wanted)
    lo = int(unique[0])
    k = bisect_right([i for i, _ in keyframes], lo) - 1
    start = keyframes[k] if k >= 0 and keyframes[k][0] > 0 else None
    try:
        found = _decode_from(path, unique, start)
        if found is None:  # the seek landed elsewhere: the positions are unknown, start over
            found = _decode_from(path, unique, None)
    except (av.FFmpegError, OSError, ValueError, EOFError) as e:
        raise SefarError(f"video {path} (codec {codec}) cannot be decoded at frames {lo}..{int(unique[-1])}: "
                         f"{e}") from None
    missing = [int(f) for f in unique if int(f) not in found]
    if missing:
        raise SefarError(f"video {path} (codec {codec}) ends before frame {missing[0]}, which its index lists; "
                         "the file changed since it was indexed: restart to index it again")
    return np.stack([found[int(f)] for f in wanted])


def _decode_from(path, unique: np.ndarray, start: tuple[int, int] | None) -> dict[int, np.ndarray] | None:
    """Decode from frame 0, or from the keyframe `start` = (index, pts) after a seek; None if the seek missed."""
    import av

    wanted, last = {int(f) for f in unique}, int(unique[-1])
    found: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        position, synced = 0, True
        if start is not None:
            position, start_pts, synced = start[0], start[1], False
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if not synced:
                if frame.pts is None:
                    return None
                if frame.pts < start_pts:  # an earlier GOP's frames: the seek landed before our keyframe
                    continue
                if frame.pts != start_pts:
                    return None
                synced = True
            if position in wanted:
                found[position] = frame.to_ndarray(format="rgb24")
            position += 1
            if position > last:
                break
    return found


def resize_array_pil(frame: np.ndarray, box: Sequence[float], out_h: int, out_w: int) -> np.ndarray:
    """Resize the (y0, x0, y1, x1) box of an RGB frame to out_h x out_w with PIL (bilinear, antialiased),
    the host twin of the DALI resize (pipeline.resize_box_pil does the same from JPEG bytes)."""
    y0, x0, y1, x1 = box
    out = Image.fromarray(frame).resize((out_w, out_h), Image.BILINEAR, box=(x0, y0, x1, y1))
    return np.asarray(out)


# ---- DALI graphs ---------------------------------------------------------------------------------------------------
def _dali_to_torch(dense, device: torch.device, stream) -> torch.Tensor:
    """A dense DALI tensor (CPU or GPU) as a torch tensor on `device`, copied (DALI reuses its buffers)."""
    if stream is None:
        return torch.from_numpy(np.array(dense))
    from nvidia.dali.plugin.pytorch import feed_ndarray

    with torch.cuda.stream(stream):
        out = torch.empty(dense.shape(), dtype=torch.uint8, device=device)
        feed_ndarray(dense, out, cuda_stream=stream)
    stream.synchronize()  # the copy is done before DALI reuses its buffer and the consumer reads
    return out


class _DaliGraph:
    """Shared set-up: a DALI pipeline of up to `max_clips` samples on the CPU or the loader's GPU."""

    def __init__(self, frame_size, device: torch.device, max_clips: int, num_threads: int):
        from nvidia.dali.pipeline import Pipeline

        self.out_h, self.out_w = frame_size
        self.device = device
        self.on_gpu = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.on_gpu else None
        # queue depth 1: the first run() of a pipelined DALI graph otherwise wants `depth` batches fed
        self.pipe = Pipeline(batch_size=max_clips, num_threads=max(1, num_threads),
                             device_id=device.index if self.on_gpu else None, prefetch_queue_depth=1)
        with self.pipe:
            self.pipe.set_outputs(self._graph())
        self.pipe.build()

    def _resize(self, frames):
        from nvidia.dali import fn, types

        roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT, ndim=1)
        roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT, ndim=1)
        return fn.resize(frames, size=[self.out_h, self.out_w], roi_start=roi_start, roi_end=roi_end,
                         roi_relative=False, interp_type=types.INTERP_LINEAR, antialias=True)

    def _run(self, boxes: np.ndarray) -> torch.Tensor:
        boxes = np.asarray(boxes, np.float32)
        self.pipe.feed_input("roi_start", list(np.ascontiguousarray(boxes[:, :2])))
        self.pipe.feed_input("roi_end", list(np.ascontiguousarray(boxes[:, 2:])))
        (frames,) = self.pipe.run()
        return _dali_to_torch(frames.as_tensor(), self.device, self.stream)

    def close(self) -> None:
        del self.pipe


class DaliVideoGraph(_DaliGraph):
    """Encoded files + frame indices + crop boxes -> decoders.video (cpu | mixed) -> resize: [b, N, H0, W0, 3]."""

    def _graph(self):
        from nvidia.dali import fn, types

        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
        # pad_mode "none": an index past the end is an error (then PyAV decides), never a silent black frame
        # affine=False: pinned decoder threads of several graphs (producer threads, DDP ranks) would share cores
        video = fn.decoders.video(encoded, device="mixed" if self.on_gpu else "cpu", frames=frames, pad_mode="none",
                                  affine=False)
        return self._resize(video)

    def decode(self, encoded: list[np.ndarray], frames: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
        self.pipe.feed_input("encoded", encoded)
        self.pipe.feed_input("frames", [np.ascontiguousarray(f, np.int32) for f in frames])
        return self._run(boxes)


class DaliResizeGraph(_DaliGraph):
    """Host frames [N, H, W, 3] per clip + crop boxes -> (to the GPU) -> resize: [b, N, H0, W0, 3]."""

    def _graph(self):
        from nvidia.dali import fn, types

        frames = fn.external_source(name="raw", dtype=types.UINT8, ndim=4, layout="FHWC")
        return self._resize(frames.gpu() if self.on_gpu else frames)

    def decode(self, clips: list[np.ndarray], boxes: np.ndarray) -> torch.Tensor:
        self.pipe.feed_input("raw", [np.ascontiguousarray(c) for c in clips])
        return self._run(boxes)


# ---- the loader's decoder ------------------------------------------------------------------------------------------
class VideoFrameDecoder:
    """Decode batches of clips of a direct.VideoSource; one per loader producer thread (not thread-safe)."""

    name = "video"

    def __init__(self, source, backend: str, frame_size: tuple[int, int], device, max_clips: int,
                 num_threads: int = 4):
        self.source = source
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.backend = resolve_backend(backend, self.device)
        self.out_h, self.out_w = int(frame_size[0]), int(frame_size[1])
        self.max_clips, self.num_threads = int(max_clips), max(1, int(num_threads))
        if self.backend != "dali":
            self.dali_codecs: frozenset = frozenset()
        else:
            self.dali_codecs = DALI_GPU_CODECS if self.device.type == "cuda" else DALI_CPU_CODECS
        self.dali_failed: set[str] = set()  # files the DALI video graph could not decode: PyAV from now on
        self.routes = {"dali": 0, "pyav": 0, "images": 0}  # clips decoded per route (bench, tests)
        self._video_graph: DaliVideoGraph | None = None
        self._resize_graph: DaliResizeGraph | None = None
        self._image_decoder = None
        self._pool = ThreadPoolExecutor(max_workers=self.num_threads, thread_name_prefix="sefar-pyav")

    def route(self, record: int) -> str:
        """"dali", "pyav" or "images": how clip `record` is decoded."""
        f = self.source.file_of(record)
        if f.kind == "frames":
            return "images"
        if f.codec in self.dali_codecs and f.size <= DALI_MAX_FILE_BYTES and f.path not in self.dali_failed:
            return "dali"
        return "pyav"

    def decode_clips(self, records: Sequence[int], frame_ids: np.ndarray) -> torch.Tensor:
        """Frames frame_ids[j] (int [B, N], clip-relative) of clips records[j]: uint8 [B * N, H0, W0, 3]."""
        frame_ids = np.asarray(frame_ids, np.int64)
        b, n = frame_ids.shape
        out = torch.empty((b, n, self.out_h, self.out_w, 3), dtype=torch.uint8, device=self.device)
        groups: dict[str, list[int]] = {"dali": [], "pyav": [], "images": []}
        for j, r in enumerate(records):
            groups[self.route(int(r))].append(j)
        if groups["dali"]:
            groups["pyav"] += self._decode_dali(out, records, frame_ids, groups["dali"])
        if groups["pyav"]:
            self._decode_pyav(out, records, frame_ids, sorted(groups["pyav"]))
        if groups["images"]:
            self._decode_images(out, records, frame_ids, groups["images"])
        return out.view(b * n, self.out_h, self.out_w, 3)

    def _box(self, record: int) -> tuple[float, float, float, float]:
        rec = self.source.records[record]
        return cover_box(rec.height, rec.width, self.out_h, self.out_w)

    # ---- routes ----------------------------------------------------------------------------------------------------
    def _decode_dali(self, out, records, frame_ids, rows: list[int]) -> list[int]:
        """Decode `rows` with the DALI video graph; returns the rows it could not decode (for PyAV)."""
        try:
            self._dali_batch(out, records, frame_ids, rows)
            return []
        except Exception:  # noqa: BLE001 - one bad file fails DALI's whole batch: find it clip by clip
            self._reset_video_graph()
        failed = []
        for j in rows:
            try:
                self._dali_batch(out, records, frame_ids, [j])
            except Exception as e:  # noqa: BLE001 - DALI raises RuntimeError with C++ context
                path = self.source.records[int(records[j])].path
                self.dali_failed.add(path)
                reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
                warnings.warn(f"DALI cannot decode {path} ({reason}); reading it with PyAV", stacklevel=2)
                self._reset_video_graph()
                failed.append(j)
        return failed

    def _dali_batch(self, out, records, frame_ids, rows: list[int]) -> None:
        if self._video_graph is None:
            self._video_graph = DaliVideoGraph((self.out_h, self.out_w), self.device, self.max_clips,
                                               self.num_threads)
        recs = [self.source.records[int(records[j])] for j in rows]
        encoded = [np.fromfile(rec.path, np.uint8) for rec in recs]
        frames = np.stack([frame_ids[j] + rec.first for j, rec in zip(rows, recs)])
        boxes = np.array([self._box(int(records[j])) for j in rows], np.float32)
        clips = self._video_graph.decode(encoded, frames, boxes)
        if tuple(clips.shape) != (len(rows), frame_ids.shape[1], self.out_h, self.out_w, 3):
            raise RuntimeError(f"DALI returned clips of shape {tuple(clips.shape)}")
        out[rows] = clips
        self.routes["dali"] += len(rows)

    def _reset_video_graph(self) -> None:
        if self._video_graph is not None:
            self._video_graph.close()
            self._video_graph = None

    def _read_pyav(self, record: int, ids: np.ndarray) -> np.ndarray:
        rec = self.source.records[record]
        f = self.source.files[rec.path]
        return read_video_frames(rec.path, ids + rec.first, codec=f.codec, keyframes=f.keyframes)

    def _decode_pyav(self, out, records, frame_ids, rows: list[int]) -> None:
        host = list(self._pool.map(lambda j: self._read_pyav(int(records[j]), frame_ids[j]), rows))
        boxes = [self._box(int(records[j])) for j in rows]
        # a frame may differ in size from the indexed first frame (rare): its own cover box then
        boxes = [box if clip.shape[1:3] == (self.source.records[int(records[j])].height,
                                            self.source.records[int(records[j])].width)
                 else cover_box(clip.shape[1], clip.shape[2], self.out_h, self.out_w)
                 for j, box, clip in zip(rows, boxes, host)]
        if self.backend == "dali":
            if self._resize_graph is None:
                self._resize_graph = DaliResizeGraph((self.out_h, self.out_w), self.device, self.max_clips,
                                                     self.num_threads)
            out[rows] = self._resize_graph.decode(host, np.asarray(boxes, np.float32))
        else:
            def resize(pair):
                clip, box = pair
                return np.stack([resize_array_pil(f, box, self.out_h, self.out_w) for f in clip])

            resized = np.stack(list(self._pool.map(resize, zip(host, boxes))))
            out[rows] = torch.from_numpy(resized).to(self.device)
        self.routes["pyav"] += len(rows)

    def _decode_images(self, out, records, frame_ids, rows: list[int]) -> None:
        n = frame_ids.shape[1]
        if self._image_decoder is None:
            self._image_decoder = make_decoder(self.backend, (self.out_h, self.out_w), self.device,
                                               self.max_clips * n, self.num_threads)
        blobs, boxes = [], []
        for j in rows:
            rec = self.source.records[int(records[j])]
            names = self.source.files[rec.path].frame_files
            box = self._box(int(records[j]))
            for f in frame_ids[j]:
                try:
                    with open(names[rec.first + int(f)], "rb") as fh:
                        blobs.append(fh.read())
                except OSError as e:
                    raise SefarError(f"frame {names[rec.first + int(f)]} cannot be read: {e}") from None
                boxes.append(box)
        frames = self._image_decoder.decode(blobs, np.asarray(boxes, np.float32))
        out[rows] = frames.view(len(rows), n, self.out_h, self.out_w, 3)
        self.routes["images"] += len(rows)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._reset_video_graph()
        for dec in (self._resize_graph, self._image_decoder):
            if dec is not None:
                dec.close()
        self._resize_graph = self._image_decoder = None
