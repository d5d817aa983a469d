"""The clip store: every frame of every clip as one baseline JPEG in large shard files.

Sparse random frame access from a video costs a run of decoding from the previous
keyframe; from the store it costs one JPEG decode (nvJPEG on a GPU). `sefar prepare`
decodes each source clip once and writes a store; the loader reads it.

Layout of a store folder:

    index.json          {"format": "sefar-clip-store", "version": 1, "class_names": [...],
                         "shards": ["shard-00000.bin", ...], "records": [{...}, ...]}
    shard-00000.bin     concatenated JPEG bytes, ~`shard_bytes` each
    shard-00001.bin     ...

A record locates frame f of a clip at `offsets[f]` with `lengths[f]` bytes in shard
file `shards[record.shard]`. `index.json` is written last, through a temporary file
and `os.replace`, so a store whose writing was interrupted has no index and
`ClipStore.open` refuses it instead of reading half a shard.

Labels are 0..C-1, or -1 for a clip whose label is unknown (an unlabeled pool
without ground truth, a test split without annotations).
"""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from sefar_fast.errors import SefarError
from sefar_fast.io import atomic_write_json

FORMAT_NAME = "sefar-clip-store"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
UNKNOWN_LABEL = -1


@dataclass
class ClipData:
    """One decoded clip to be written: frames uint8 [T, H, W, 3] RGB."""

    clip_id: str
    label: int
    split: str
    frames: np.ndarray


@dataclass
class ClipRecord:
    """Where one stored clip's frames live, and what it is."""

    clip_id: str
    label: int
    split: str
    num_frames: int
    height: int
    width: int
    shard: int
    offsets: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """One RGB uint8 [H, W, 3] frame as baseline JPEG bytes (4:2:0, like most video)."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes as an RGB uint8 [H, W, 3] array."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def check_clip(clip: ClipData, num_classes: int) -> None:
    """Raise SefarError if a clip cannot be stored (names the clip and the fault)."""
    frames = clip.frames
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise SefarError(f"clip {clip.clip_id!r}: frames must be uint8 [T,H,W,3], got {dtype} {shape}")
    if frames.shape[0] == 0:
        raise SefarError(f"clip {clip.clip_id!r} has zero frames; remove it from the source list or re-encode it")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise SefarError(f"clip {clip.clip_id!r} has empty frames of size {frames.shape[1]}x{frames.shape[2]}")
    label = int(clip.label)
    if not (label == UNKNOWN_LABEL or 0 <= label < num_classes):
        raise SefarError(
            f"clip {clip.clip_id!r}: label {label} is out of range for {num_classes} classes (0..{num_classes - 1})"
        )
    if not clip.split:
        raise SefarError(f"clip {clip.clip_id!r} has an empty split name")


class ShardWriter:
    """Appends JPEG frames to numbered shard files in one folder, starting a new shard
    once the current one passes `shard_bytes`. A clip never straddles two shards."""

    def __init__(self, root: Path, shard_bytes: int, first_shard: int = 0, prefix: str = "shard"):
        self.root = root
        self.shard_bytes = int(shard_bytes)
        self.prefix = prefix
        self.shard_names: list[str] = []
        self._next = first_shard
        self._file = None
        self._size = 0

    def _open_new(self) -> None:
        self.close()
        name = f"{self.prefix}-{self._next:05d}.bin"
        self._next += 1
        self.shard_names.append(name)
        self._file = open(self.root / name, "wb")
        self._size = 0

    def append_clip(self, jpegs: Sequence[bytes]) -> tuple[int, list[int], list[int]]:
        """Write one clip's frames; return (shard position in shard_names, offsets, lengths)."""
        if self._file is None or self._size >= self.shard_bytes:
            self._open_new()
        offsets, lengths = [], []
        for data in jpegs:
            offsets.append(self._size)
            lengths.append(len(data))
            self._file.write(data)
            self._size += len(data)
        return len(self.shard_names) - 1, offsets, lengths

    def flush(self) -> None:
        """Hand written bytes to the OS, so they survive this process being killed."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def write_index(root: Path, class_names: Sequence[str], shard_names: Sequence[str], records: Sequence[ClipRecord],
                extra: dict | None = None) -> None:
    """Write index.json atomically (temp file + os.replace): readers see the old index or the whole new one."""
    index = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "class_names": list(class_names),
        "shards": list(shard_names),
        "records": [asdict(r) for r in records],
    }
    if extra:
        index["extra"] = extra
    atomic_write_json(root / INDEX_NAME, index, separators=(",", ":"))


def remove_store_files(root: Path) -> None:
    """Delete a previous store's index and shards in `root` (index first, so a crash leaves no valid store)."""
    (root / INDEX_NAME).unlink(missing_ok=True)
    for p in root.glob("shard-*.bin"):
        p.unlink()


class ClipStore:
    """A read-only view of a written store. Thread-safe reads (os.pread on per-process fds)."""

    def __init__(self, root: Path, class_names: list[str], shard_names: list[str], records: list[ClipRecord],
                 extra: dict | None = None):
        self.root = Path(root)
        self.class_names = class_names
        self.shard_names = shard_names
        self.records = records
        self.extra = extra or {}
        self._fds: dict[int, int] = {}
        self._fd_pid = os.getpid()
        self._lock = threading.Lock()

    # ---- writing -------------------------------------------------------------------------------------------------
    @classmethod
    def write(cls, root, clips: Iterable[ClipData], class_names: Sequence[str], *, shard_bytes: int = 256 << 20,
              quality: int = 90) -> "ClipStore":
        """Encode `clips` into a new store at `root` (replacing any store there) and return it opened.

        Raises SefarError (naming the clip) for a zero-frame clip, a duplicate clip id, a label out of
        range or frames that are not uint8 [T,H,W,3]; nothing valid is left at `root` then.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        remove_store_files(root)
        num_classes = len(class_names)
        writer = ShardWriter(root, shard_bytes)
        records: list[ClipRecord] = []
        seen: set[str] = set()
        try:
            for clip in clips:
                check_clip(clip, num_classes)
                if clip.clip_id in seen:
                    raise SefarError(f"duplicate clip id {clip.clip_id!r}; clip ids in a store must be unique")
                seen.add(clip.clip_id)
                jpegs = [encode_jpeg(frame, quality) for frame in clip.frames]
                shard, offsets, lengths = writer.append_clip(jpegs)
                t, h, w, _ = clip.frames.shape
                records.append(ClipRecord(clip.clip_id, int(clip.label), clip.split, t, h, w, shard, offsets, lengths))
        finally:
            writer.close()
        write_index(root, class_names, writer.shard_names, records)
        return cls.open(root)

    # ---- reading -------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, root) -> "ClipStore":
        """Open the store at `root`; SefarError if the folder, index or shards are missing or malformed."""
        root = Path(root)
        if not root.is_dir():
            raise SefarError(f"clip store {root} does not exist; create it with `sefar prepare`")
        index_path = root / INDEX_NAME
        if not index_path.is_file():
            raise SefarError(f"{index_path} is missing: the store was never finished; rerun `sefar prepare`")
        try:
            with open(index_path) as f:
                index = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SefarError(f"{index_path} is corrupt ({e}); rerun `sefar prepare`") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
            raise SefarError(f"{index_path} is not a sefar clip store index")
        if index.get("version") != FORMAT_VERSION:
            raise SefarError(
                f"{index_path} has store format version {index.get('version')}, this sefar reads version "
                f"{FORMAT_VERSION}; rerun `sefar prepare`"
            )
        try:
            class_names = [str(c) for c in index["class_names"]]
            shard_names = [str(s) for s in index["shards"]]
            records = [ClipRecord(**r) for r in index["records"]]
        except (KeyError, TypeError) as e:
            raise SefarError(f"{index_path} is corrupt (bad field: {e}); rerun `sefar prepare`") from None
        for name in shard_names:
            if not (root / name).is_file():
                raise SefarError(f"clip store shard {root / name} is missing; rerun `sefar prepare`")
        for r in records:
            if len(r.offsets) != r.num_frames or len(r.lengths) != r.num_frames or not 0 <= r.shard < len(shard_names):
                raise SefarError(
                    f"{index_path} is corrupt (record {r.clip_id!r} is inconsistent); rerun `sefar prepare`"
                )
        return cls(root, class_names, shard_names, records, index.get("extra"))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def splits(self) -> list[str]:
        """The split names present, in first-seen order."""
        return list(dict.fromkeys(r.split for r in self.records))

    def indices(self, split: str | None = None) -> list[int]:
        """Record indices of one split (all records if split is None)."""
        if split is None:
            return list(range(len(self.records)))
        return [i for i, r in enumerate(self.records) if r.split == split]

    def _fd(self, shard: int) -> int:
        if self._fd_pid != os.getpid():  # forked: descriptors are shared with the parent, start afresh
            self._fds, self._fd_pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            with self._lock:
                fd = self._fds.get(shard)
                if fd is None:
                    fd = os.open(self.root / self.shard_names[shard], os.O_RDONLY)
                    self._fds[shard] = fd
        return fd

    def read_jpeg(self, i: int, frame: int) -> bytes:
        """The JPEG bytes of frame `frame` of record `i`."""
        r = self.records[i]
        if not 0 <= frame < r.num_frames:
            raise SefarError(f"clip {r.clip_id!r} has {r.num_frames} frames; frame {frame} does not exist")
        length = r.lengths[frame]
        data = os.pread(self._fd(r.shard), length, r.offsets[frame])
        if len(data) != length:
            shard = self.root / self.shard_names[r.shard]
            raise SefarError(f"clip store shard {shard} is truncated; rerun `sefar prepare`")
        return data

    def read_frames(self, i: int, frames: Sequence[int]) -> np.ndarray:
        """Frames of record `i` decoded on the host: uint8 [len(frames), H, W, 3]."""
        r = self.records[i]
        out = np.empty((len(frames), r.height, r.width, 3), np.uint8)
        for j, f in enumerate(frames):
            out[j] = decode_jpeg(self.read_jpeg(i, int(f)))
        return out

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __del__(self):
        try:
            if self._fd_pid == os.getpid():
                self.close()
        except Exception:
            pass
