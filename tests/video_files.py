"""Small video files written for the data tests (shared by the adapter tests)."""

import av
import numpy as np


def write_video(path, n=10, size=(16, 16), codec="libx264", rate=10):
    """A video of n flat frames, frame i at grey level (20 * i) % 250."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        for i in range(n):
            pixels = np.full((*size, 3), (20 * i) % 250, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
