"""Frame decoders for the loader: JPEG bytes + a source crop box -> uint8 [N, H0, W0, 3] on the device.

Two interchangeable backends with the same synchronous `decode(jpegs, boxes)`; the loader
runs them on its producer threads to keep a few batches in flight (prefetch):

- `DaliFrameDecoder`: one DALI graph. `fn.external_source` feeds the JPEG bytes and the
  per-frame crop box, `fn.decoders.image` decodes (nvJPEG through `device="mixed"` on a GPU,
  libjpeg-turbo on the CPU with `device_id=None`), `fn.resize` with a region of interest
  crops and resizes in one step on the same device.
- `PilFrameDecoder`: PIL on a thread pool; the reference the DALI path is checked against
  and the fallback where DALI is not installed.

The crop box comes from `cover_box`: scale the frame so it covers H0 x W0 (short side to
H0 for landscape frames, to W0 for portrait ones, whichever keeps both sides large
enough), then take the centre. Both backends apply the same box with bilinear,
antialiased resampling, so they agree within JPEG-decoder and rounding differences.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from sefar_fast.errors import SefarError


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def cover_box(height: int, width: int, out_h: int, out_w: int) -> tuple[float, float, float, float]:
    """Source box (y0, x0, y1, x1) whose resize to out_h x out_w is a centre crop of the frame
    scaled just enough to cover out_h x out_w (aspect ratio kept)."""
    scale = max(out_h / height, out_w / width)
    crop_h, crop_w = out_h / scale, out_w / scale
    y0, x0 = (height - crop_h) / 2.0, (width - crop_w) / 2.0
    return y0, x0, y0 + crop_h, x0 + crop_w


def resize_box_pil(frame_jpeg: bytes, box: Sequence[float], out_h: int, out_w: int) -> np.ndarray:
    """Decode one JPEG and resize its (y0, x0, y1, x1) box to out_h x out_w with PIL (bilinear, antialiased)."""
    y0, x0, y1, x1 = box
    with Image.open(io.BytesIO(frame_jpeg)) as img:
        img = img.convert("RGB")
        out = img.resize((out_w, out_h), Image.BILINEAR, box=(x0, y0, x1, y1))
    return np.asarray(out)


class PilFrameDecoder:
    """Host decoding on a thread pool (PIL releases the GIL while decoding and resizing)."""

    name = "pil"

    def __init__(self, frame_size: tuple[int, int], device: torch.device, num_threads: int = 4):
        self.out_h, self.out_w = frame_size
        self.device = torch.device(device)
        self.num_threads = max(1, num_threads)
        self.pool = ThreadPoolExecutor(max_workers=self.num_threads, thread_name_prefix="sefar-pil")

    def _decode_into(self, out: np.ndarray, start: int, jpegs, boxes) -> None:
        for j, (data, box) in enumerate(zip(jpegs, boxes)):
            out[start + j] = resize_box_pil(data, box, self.out_h, self.out_w)

    def decode(self, jpegs: Sequence[bytes], boxes: np.ndarray) -> torch.Tensor:
        """Decode one batch of frames; boxes float [N, 4] as (y0, x0, y1, x1). Returns uint8 [N, H0, W0, 3]."""
        n = len(jpegs)
        out = np.empty((n, self.out_h, self.out_w, 3), np.uint8)
        chunk = max(1, -(-n // (self.num_threads * 2)))  # a few chunks per thread balance the load
        futures = [self.pool.submit(self._decode_into, out, s, jpegs[s:s + chunk], boxes[s:s + chunk])
                   for s in range(0, n, chunk)]
        for f in futures:
            f.result()
        frames = torch.from_numpy(out)
        if self.device.type == "cpu":
            return frames
        return frames.pin_memory().to(self.device, non_blocking=True)  # on the caller's (loader's) stream

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaliFrameDecoder:
    """The DALI graph: external JPEG bytes and boxes -> decode -> ROI resize, on CPU or GPU.

    Runs synchronously (`pipe.run()`); the loader overlaps it with training by calling it from
    its producer threads, each with its own graph.
    """

    name = "dali"

    def __init__(self, frame_size: tuple[int, int], device: torch.device, max_frames: int, num_threads: int = 4):
        from nvidia.dali import fn, types
        from nvidia.dali.pipeline import Pipeline

        self.out_h, self.out_w = frame_size
        self.device = torch.device(device)
        on_gpu = self.device.type == "cuda"
        if on_gpu and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.stream = torch.cuda.Stream(self.device) if on_gpu else None
        # queue depth 1: the first run() of a pipelined DALI graph otherwise wants `depth` batches fed
        self.pipe = Pipeline(batch_size=max_frames, num_threads=max(1, num_threads),
                             device_id=self.device.index if on_gpu else None, prefetch_queue_depth=1)
        with self.pipe:
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT, ndim=1)
            roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT, ndim=1)
            images = fn.decoders.image(jpegs, device="mixed" if on_gpu else "cpu", output_type=types.RGB)
            frames = fn.resize(images, size=[self.out_h, self.out_w], roi_start=roi_start, roi_end=roi_end,
                               roi_relative=False, interp_type=types.INTERP_LINEAR, antialias=True)
            self.pipe.set_outputs(frames)
        self.pipe.build()

    def decode(self, jpegs: Sequence[bytes], boxes: np.ndarray) -> torch.Tensor:
        boxes = np.asarray(boxes, np.float32)
        self.pipe.feed_input("jpegs", [np.frombuffer(b, np.uint8) for b in jpegs])
        self.pipe.feed_input("roi_start", list(np.ascontiguousarray(boxes[:, :2])))
        self.pipe.feed_input("roi_end", list(np.ascontiguousarray(boxes[:, 2:])))
        (frames,) = self.pipe.run()
        dense = frames.as_tensor()
        if self.stream is not None:
            from nvidia.dali.plugin.pytorch import feed_ndarray

            with torch.cuda.stream(self.stream):
                out = torch.empty(dense.shape(), dtype=torch.uint8, device=self.device)
                feed_ndarray(dense, out, cuda_stream=self.stream)
            self.stream.synchronize()  # the copy is done before DALI reuses its buffer and the consumer reads
            return out
        return torch.from_numpy(np.array(dense))  # copy: DALI reuses its output buffers

    def close(self) -> None:
        del self.pipe


def make_decoder(backend: str, frame_size: tuple[int, int], device, max_frames: int, num_threads: int = 4):
    """Build the decoder for `backend` ("dali" or "pil"; see `resolve_backend` for "auto")."""
    backend = resolve_backend(backend, device)
    if backend == "dali":
        return DaliFrameDecoder(frame_size, device, max_frames, num_threads)
    return PilFrameDecoder(frame_size, device, num_threads)


def resolve_backend(backend: str, device) -> str:
    """"auto" is DALI when importable (on the CPU too: at 64x64 frames DALI's CPU graph decodes
    about twice as fast as PIL on a thread pool), else PIL; "dali" without DALI is a SefarError."""
    device = torch.device(device)
    if backend == "auto":
        return "dali" if dali_available() else "pil"
    if backend == "dali" and not dali_available():
        raise SefarError(
            "data backend 'dali' asked for but nvidia-dali is not installed; pip install nvidia-dali-cuda130"
        )
    if backend not in ("dali", "pil"):
        raise SefarError(f"unknown data backend {backend!r}; use auto, dali or pil")
    return backend
