"""`sefar bench data`: how fast the loader delivers clips from a store on this device.

The number that matters is clips/s of K frames at the training size with the trainer's
batch shape; it must stay well above what the training step consumes. Without a store a
small synthetic one (smooth random frames at a typical prepared size, 256 x 340) is
written to a temporary folder first, so the benchmark runs anywhere.

Direct video mode (no store) is measured the same way on the same kind of frames written
as video files of a chosen codec (`bench_direct_video`, or `bench_data(direct_codecs=...)`
for both side by side): the route each clip took (DALI video decode, PyAV, ...) is reported.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sefar_fast.data.adapters import SourceClip, SourceSet
from sefar_fast.data.direct import VideoSource
from sefar_fast.data.loader import ClipLoader
from sefar_fast.data.store import ClipData, ClipStore
from sefar_fast.errors import SefarError

# codec -> (PyAV encoder, container suffix, pixel format, encoder options): quick settings, 1 s GOPs
VIDEO_ENCODERS = {
    "h264": ("libx264", ".mp4", "yuv420p", {"preset": "veryfast", "g": "30"}),
    "hevc": ("libx265", ".mp4", "yuv420p", {"preset": "veryfast", "x265-params": "keyint=30:log-level=error"}),
    "vp8": ("libvpx", ".webm", "yuv420p", {"g": "30", "deadline": "realtime", "cpu-used": "8"}),
    "vp9": ("libvpx-vp9", ".webm", "yuv420p", {"g": "30", "deadline": "realtime", "cpu-used": "8"}),
    "mjpeg": ("mjpeg", ".avi", "yuvj420p", {}),
}


def _smooth_clips(clips: int, frames: int, size, seed: int, moving: bool = False):
    """(index, uint8 [frames, H, W, 3]) of smooth random clips (compress like real frames, unlike noise).

    Frame t, channel c is 128 + 100 sin(3 wave + phase[t, c]) over a fixed wave pattern, phases
    independent per frame. With `moving`, a camera pan instead: frame t shows the pattern (channel
    phases fixed) shifted by a few pixels per frame, so consecutive frames are alike, as in real video."""
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(clips):
        phase = rng.uniform(0, 2 * np.pi, (frames, 3))
        freq = rng.uniform(0.01, 0.08, 2)
        if moving:
            step = int(rng.integers(1, 4))  # pixels per frame
            yy, xx = np.mgrid[0:h, 0:w + step * frames].astype(np.float32)
            wave3 = 3 * np.sin(xx * freq[0] + yy * freq[1])
            pattern = (128 + 100 * np.sin(wave3[:, :, None] + phase[0].astype(np.float32))).astype(np.uint8)
            yield i, np.stack([pattern[:, t * step:t * step + w] for t in range(frames)])
            continue
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wave = np.sin(xx * freq[0] + yy * freq[1])
        data = 128 + 100 * np.sin(wave[None, :, :, None] * 3 + phase[:, None, None, :])
        yield i, data.astype(np.uint8)


def synthetic_store(root, *, clips: int = 32, frames: int = 16, size=(256, 340), seed: int = 0) -> ClipStore:
    """A store of smooth random clips (JPEG sizes like real video frames, unlike noise)."""
    return ClipStore.write(root, (ClipData(f"bench{i:04d}", i % 4, "train", data)
                                  for i, data in _smooth_clips(clips, frames, size, seed)), ["a", "b", "c", "d"])


def write_video(path, frames: np.ndarray, codec: str = "h264", rate: int = 30) -> Path:
    """Encode uint8 [T, H, W, 3] frames as a video file (codec: a key of VIDEO_ENCODERS; the container
    follows the path's suffix)."""
    import av

    encoder, _, pix_fmt, options = VIDEO_ENCODERS[codec]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        stream.options = dict(options)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def synthetic_videos(folder, *, clips: int = 16, frames: int = 48, size=(256, 340), codec: str = "h264",
                     seed: int = 0):
    """Smooth random clips written as `codec` video files in `folder`; returns their adapters.SourceSet."""
    if codec not in VIDEO_ENCODERS:

        raise SefarError(f"no benchmark encoder for codec {codec!r}; use one of {', '.join(VIDEO_ENCODERS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = VIDEO_ENCODERS[codec][1]
    items = [SourceClip(f"bench{i:04d}", write_video(folder / f"bench{i:04d}{suffix}", data, codec), i % 4, "train")
             for i, data in _smooth_clips(clips, frames, size, seed, moving=True)]
    return SourceSet(f"synthetic {codec} videos", items, ["a", "b", "c", "d"])


def _time_loader(loader: ClipLoader, device: torch.device, batches: int, warmup: int) -> tuple[int, int, float]:
    """(clips, batches timed, seconds) for `batches` batches after `warmup` ones, wrapping epochs."""
    clips = 0
    it, t0, timed = None, 0.0, 0
    for step in range(warmup + batches):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        try:
            batch = next(it) if it is not None else None
        except StopIteration:
            batch = None
        if batch is None:  # start (or wrap to) the next epoch
            it = iter(loader)
            batch = next(it)
        if step >= warmup:
            clips += batch["frames"].shape[0]
            timed += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clips, timed, time.perf_counter() - t0


def bench_data(store_root=None, *, device="cpu", batches: int = 20, batch_size: int = 32, elements=(2, 2, 4),
               frame_size=(224, 224), views: int = 1, backend: str = "auto", workers: int = 2, prefetch: int = 4,
               num_threads: int | None = None, warmup: int = 2, direct_codecs: Sequence[str] = ()) -> dict:
    """Time `batches` batches from the loader (after `warmup` batches). Returns a dict with
    clips_per_s, frames_per_s, seconds, batches, batch_size, frames_per_clip, views, frame_size,
    backend, device, store; with `direct_codecs` (e.g. ("h264", "vp9")) also "direct_video":
    {codec: bench_direct_video(...) with the same settings}."""
    device = torch.device(device)
    tmp = None
    if store_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="sefar-bench-")
        store = synthetic_store(Path(tmp.name) / "store")
    else:
        store = ClipStore.open(store_root)
    try:
        loader = ClipLoader(store, store.indices(), elements=list(elements), batch_size=batch_size,
                            frame_size=tuple(frame_size), views=views, shuffle=True, drop_last=False, seed=0,
                            device=device, backend=backend, workers=workers, prefetch=prefetch,
                            num_threads=num_threads)
        clips, timed, seconds = _time_loader(loader, device, batches, warmup)
        loader.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    result = _rates(clips, seconds, timed, batch_size, elements, views, frame_size, loader, device)
    result["store"] = str(store_root) if store_root is not None else "synthetic"
    if direct_codecs:
        result["direct_video"] = {
            codec: bench_direct_video(codec=codec, device=device, batches=batches, batch_size=batch_size,
                                      elements=elements, frame_size=frame_size, views=views, backend=backend,
                                      workers=workers, prefetch=prefetch, num_threads=num_threads, warmup=warmup)
            for codec in direct_codecs}
    return result


def _rates(clips, seconds, timed, batch_size, elements, views, frame_size, loader, device) -> dict:
    """The throughput record shared by the store and direct-video measurements."""
    k = sum(elements)
    return {"clips_per_s": clips / seconds, "frames_per_s": clips * k * views / seconds, "seconds": seconds,
            "batches": timed, "batch_size": batch_size, "frames_per_clip": k, "views": views,
            "frame_size": list(frame_size), "backend": loader.backend, "device": str(device)}


def bench_direct_video(sources=None, *, codec: str = "h264", device="cpu", batches: int = 20, batch_size: int = 32,
                       elements=(2, 2, 4), frame_size=(224, 224), views: int = 1, backend: str = "auto",
                       workers: int = 2, prefetch: int = 4, num_threads: int | None = None, warmup: int = 2,
                       clips: int = 16, frames: int = 48, size=(256, 340)) -> dict:
    """Direct video mode's throughput: like bench_data, reading clips straight from video files.

    `sources`: an adapters.SourceSet to read; None writes `clips` synthetic `codec` videos of `frames`
    frames at `size` into a temporary folder first (not timed). The dict adds "codec" (the first clip's),
    "routes" (clips decoded per route: dali / pyav / images) and "source"."""
    device = torch.device(device)
    with tempfile.TemporaryDirectory(prefix="sefar-bench-video-") as tmp:
        made = sources is None
        if made:
            sources = synthetic_videos(Path(tmp) / "videos", clips=clips, frames=frames, size=size, codec=codec)
        source = VideoSource.from_sources(sources, cache_path=Path(tmp) / "index.json", workers=workers)
        loader = ClipLoader(source, source.indices(), elements=list(elements), batch_size=batch_size,
                            frame_size=tuple(frame_size), views=views, shuffle=True, drop_last=False, seed=0,
                            device=device, backend=backend, workers=workers, prefetch=prefetch,
                            num_threads=num_threads)
        try:
            n_clips, timed, seconds = _time_loader(loader, device, batches, warmup)
            routes: dict[str, int] = {}
            for dec in loader._decoders:  # noqa: SLF001 - the loader's per-thread decoders hold the counts
                for route, count in dec.routes.items():
                    routes[route] = routes.get(route, 0) + count
        finally:
            loader.close()
    return {
        **_rates(n_clips, seconds, timed, batch_size, elements, views, frame_size, loader, device),
        "codec": source.file_of(0).codec,
        "routes": routes,
        "source": f"synthetic: {clips} {codec} videos of {frames} frames at {size[0]}x{size[1]}" if made
        else sources.name,
    }


def check_dali_gpu(device="cuda", *, batch_size: int = 8, frame_size=(224, 224), elements=(2, 2, 4)) -> dict:
    """Decode the same batch with DALI on `device` (nvJPEG, "mixed") and with PIL on the host and compare.

    Returns max_abs_diff, mean_abs_diff, same_shape and ok (mean difference under 2 grey levels: the
    decoders' IDCT and chroma upsampling differ slightly, the frames and crops must not).
    """
    with tempfile.TemporaryDirectory(prefix="sefar-check-") as tmp:
        store = synthetic_store(Path(tmp) / "store", clips=batch_size, frames=16)
        outs = {}
        for backend, dev in (("dali", device), ("pil", "cpu")):
            loader = ClipLoader(store, store.indices(), elements=list(elements), batch_size=batch_size,
                                frame_size=tuple(frame_size), views=2, shuffle=True, seed=1, device=dev,
                                backend=backend)
            outs[backend] = next(iter(loader))["frames"].cpu()
            loader.close()
    a, b = outs["dali"].int(), outs["pil"].int()
    same = a.shape == b.shape
    diff = (a - b).abs() if same else torch.tensor([255])
    return {"same_shape": same, "max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.float().mean()),
            "ok": bool(same and diff.float().mean() < 2.0), "device": str(device)}


def check_video_decode(device="cuda", *, batch_size: int = 8, frame_size=(224, 224), elements=(2, 2, 4),
                       codecs: Sequence[str] = ("h264", "vp9")) -> dict:
    """Decode the same direct-video batch with the DALI graph on `device` (NVDEC "mixed" on a GPU) and
    with PyAV + PIL on the host, and compare, one entry per codec.

    Returns {codec: {same_shape, max_abs_diff, mean_abs_diff, routes, dali_failed}, "ok", "device"}; ok
    when every mean difference is under 3 grey levels (decoders convert YUV to RGB slightly differently;
    a wrong frame or crop differs by tens) and, on a GPU, DALI decoded every clip itself.
    """
    device = torch.device(device)
    out: dict = {"device": str(device)}
    ok = True
    with tempfile.TemporaryDirectory(prefix="sefar-check-video-") as tmp:
        for codec in codecs:
            sources = synthetic_videos(Path(tmp) / codec, clips=batch_size, frames=24, codec=codec)
            source = VideoSource.from_sources(sources, cache_path=Path(tmp) / f"{codec}.json", workers=1)
            frames, info = {}, {}
            for backend, dev in (("dali", device), ("pil", torch.device("cpu"))):
                loader = ClipLoader(source, source.indices(), elements=list(elements), batch_size=batch_size,
                                    frame_size=tuple(frame_size), views=2, shuffle=True, seed=1, device=dev,
                                    backend=backend)
                try:
                    frames[backend] = next(iter(loader))["frames"].cpu()
                    dec = loader._decoders[0]  # noqa: SLF001 - the one producer thread's decoder
                    info[backend] = (dict(dec.routes), sorted(dec.dali_failed))
                finally:
                    loader.close()
            a, b = frames["dali"].int(), frames["pil"].int()
            same = a.shape == b.shape
            diff = (a - b).abs() if same else torch.tensor([255])
            routes, failed = info["dali"]
            entry = {"same_shape": same, "max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.float().mean()),
                     "routes": routes, "dali_failed": failed}
            ok = ok and same and entry["mean_abs_diff"] < 3.0
            if device.type == "cuda":
                ok = ok and not failed and routes.get("pyav", 0) == 0
            out[codec] = entry
    out["ok"] = bool(ok)
    return out
