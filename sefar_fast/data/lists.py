"""List files: one clip per line, in the formats the released SeFAR code and mmaction2 write.

Formats (each file's is detected from its lines, or named by the source spec):

    video       `<path> <label>`: the released SeFAR lists (`finegym/all99_5/train.csv`, absolute
                paths from the authors' machines such as `/root/video/<id>.mp4`) and mmaction2's
                video lists (`gym99_train.txt`, paths relative to the data folder). The separator is
                a run of whitespace or a comma (the shipped `list_ucf_5` is comma separated); the
                label is the integer at the end, so paths may hold spaces and commas.
    rawframes   `<frame folder> <total frames> <label>`: mmaction2's rawframe lists. The frame count
                is not used: sefar counts the frames it finds in the folder.

A file is read as rawframes when every line ends in two integers; `rawframes:` names the
format when a video list's paths could look like that. CRLF or LF line ends, a BOM, blank
lines and a missing final newline are all fine; anything else is a SefarError naming file
and line. Labels are integers in 0..num_classes-1 (when num_classes is known).

Split files (`read_splits`): a folder holding the reference names train.csv, unlabel.csv
(also the shipped misspelling unlabe.csv), val.csv and test.csv, or list files whose names
carry the split as a word (`gym99_train.txt`, `ucf101_val_split_1_rawframes.txt`); or the
files themselves, comma separated, a lone train file bringing its val/test/unlabel siblings
(the same name with the split word replaced). In every split the authors ship, test.csv is
the same file as val.csv: a test list holding exactly the val list's clips is read once, as val.

Paths are resolved by `PathResolver` (see there for the remapping rule). Class names
(`read_class_names`): one per line, or FineGym category lines (`Clabel: 0; set: 1; ...; (VT) name`).
Annotation files are looked up in a dataset folder and its ANNOTATION_DIRS (`find_annotation_file`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sefar_fast.errors import SefarError

SPLITS = ("train", "unlabel", "val", "test")
REFERENCE_FILES = {"train": ("train.csv",), "unlabel": ("unlabel.csv", "unlabe.csv"), "val": ("val.csv",),
                   "test": ("test.csv",)}
# Words naming a split inside a list file's name (split at non-alphanumerics).
SPLIT_WORDS = {"train": ("train",), "unlabel": ("unlabel", "unlabe", "unlabeled", "unlabelled"),
               "val": ("val", "validation"), "test": ("test",)}
LIST_SUFFIXES = (".csv", ".txt", ".lst")
LIST_FORMATS = ("auto", "video", "rawframes")
ANNOTATION_DIRS = (".", "annotations", "annotation", "labels")  # where dataset folders keep their annotations
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")

VIDEO_LINE = re.compile(r"^(?P<path>.*[^\s,])(?:\s*,\s*|\s+)(?P<label>-?\d+)$")
RAWFRAME_LINE = re.compile(r"^(?P<path>.*\S)\s+(?P<frames>\d+)\s+(?P<label>-?\d+)$")
CATEGORY_LINE = re.compile(r"^Clabel:\s*\d+;\s*set:\s*\d+;\s*Glabel:\s*\d+;\s*(?P<name>.+)$")


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file: the resolved path, its label, and where it came from."""

    path: Path
    label: int
    source: str  # "file:line", for error messages


class PathResolver:
    """Turn a path from a list file into a path on this machine.

    In order:
    1. `path_prefix` given and the path starts with it: replace that prefix with `root`.
    2. A relative path: `root / path` (root defaults to the list file's folder) if it exists,
       else the list file's folder / path if that exists.
    3. An absolute path that exists: kept.
    4. With `root`: drop leading directories one at a time, fewest first, and take the first
       remainder that exists under `root`. `/root/UCF-101/Fencing/v_1.avi` with root
       `/data/ucf` finds `/data/ucf/UCF-101/Fencing/v_1.avi`, else `/data/ucf/Fencing/v_1.avi`,
       else `/data/ucf/v_1.avi`. The number of directories dropped is remembered and tried
       first for the next path (a list's paths share one foreign prefix), so long lists resolve
       with one file check per line.
    5. With `root`: the file or folder of that name anywhere under `root` (mmaction2 keeps
       FineGym's clips in `subactions/`, its frames in `subaction_frames/<clip>/`), else one
       with the same stem (another extension, or the clip's frame folder). Indexed once, on first need,
       without descending into frame folders; once a list's paths are found this way, the
       index is asked first.
    6. Nothing exists: the path from rule 1/2/4 with the list's foreign prefix dropped as
       remembered (or as given; else only the name kept), so that the error reported later
       names a plausible file.
    """

    def __init__(self, root=None, path_prefix: str | None = None):
        self.root = Path(root) if root is not None else None
        self.path_prefix = path_prefix.rstrip("/") if path_prefix else None
        self._dropped: int | None = None
        self._by_name: dict[str, Path | None] | None = None  # rule 5; None marks a name found twice

    def __call__(self, raw: str, list_dir: Path | None = None) -> Path:
        raw = raw.replace("\\", "/")
        base = self.root or list_dir or Path(".")
        if self.path_prefix and (raw == self.path_prefix or raw.startswith(self.path_prefix + "/")):
            return base / raw[len(self.path_prefix):].lstrip("/")
        path = PurePosixPath(raw)
        if not path.is_absolute():
            if self._by_name is None or (found := self._by_name_under_root(path)) is None:
                for candidate in (base / path, (list_dir or base) / path):
                    if candidate.exists():
                        return candidate
                found = self._by_name_under_root(path)
            return found or base / path
        if Path(raw).exists() or self.root is None:
            return Path(raw)
        if self._by_name is not None and self._dropped is None and (found := self._by_name_under_root(path)):
            return found  # this list's paths are found by name: skip the directory-dropping checks
        parts = path.parts[1:]  # without the leading "/"
        tries = range(len(parts))
        if self._dropped is not None and self._dropped < len(parts):
            tries = [self._dropped] + [d for d in tries if d != self._dropped]
        for dropped in tries:
            candidate = self.root.joinpath(*parts[dropped:])
            if candidate.exists():
                self._dropped = dropped
                return candidate
        found = self._by_name_under_root(path)
        if found is not None:
            return found
        guess = self._dropped if self._dropped is not None and self._dropped < len(parts) else len(parts) - 1
        return self.root.joinpath(*parts[guess:])

    def _by_name_under_root(self, path: PurePosixPath) -> Path | None:
        if self.root is None or not self.root.is_dir():
            return None
        if self._by_name is None:
            self._by_name = index_names(self.root)
        return self._by_name.get(path.name) or self._by_name.get(path.stem)


def walk_clip_files(root: Path):
    """The files and frame folders (`is_frame_folder`) under `root`, in sorted order. Frame folders
    are not descended into, so a tree of extracted frames costs one listing per clip."""
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:  # an unreadable folder holds no clips we can read either
            continue
        below = []
        for entry in entries:
            if entry.is_dir() and not is_frame_folder(entry.path):
                below.append(Path(entry.path))
            else:
                yield Path(entry.path)
        stack.extend(reversed(below))


def is_frame_folder(path) -> bool:
    """A folder of images and nothing that needs a walk (no videos, no subfolders)."""
    try:
        with os.scandir(path) as entries:
            names = [(e.name.lower(), e.is_dir()) for e in entries]
    except OSError:
        return False
    return (any(name.endswith(IMAGE_SUFFIXES) for name, _ in names)
            and not any(is_dir or name.endswith(VIDEO_SUFFIXES) for name, is_dir in names))


def index_names(root: Path) -> dict[str, Path | None]:
    """Files and frame folders under `root` by name; a name found twice maps to None."""
    found: dict[str, Path | None] = {}
    for path in walk_clip_files(root):
        found[path.name] = None if path.name in found else path
    return found


# ---- lines ---------------------------------------------------------------------------------------------------------
def is_rawframe_list(lines: list[str]) -> bool:
    """Every line ends in two integers (mmaction2's `frame_dir total_frames label`)."""
    return bool(lines) and all(RAWFRAME_LINE.match(line.strip()) for line in lines)


def parse_line(line: str, where: str, fmt: str = "video") -> tuple[str, int]:
    """(path, label) of one line in format `fmt` ("video" or "rawframes")."""
    text = line.strip()
    m = (RAWFRAME_LINE if fmt == "rawframes" else VIDEO_LINE).match(text)
    if m:
        return m["path"], int(m["label"])
    if fmt == "rawframes":
        raise SefarError(f"{where}: expected '<frame folder> <total frames> <label>' (an mmaction2 rawframe "
                         f"list), got {text!r}")
    fields = text.rsplit(None, 1)
    if len(fields) != 2 and "," in text:
        fields = [f.strip() for f in text.rsplit(",", 1)]
    if len(fields) == 2 and fields[0]:
        raise SefarError(f"{where}: label {fields[1]!r} is not an integer (line {text!r})")
    raise SefarError(f"{where}: expected '<path> <label>', got {text!r}")


def read_text_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """(line number, line) of the non-blank lines of a text file; SefarError if missing or not UTF-8."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise SefarError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise SefarError(f"{what} {path} is a folder, not a file") from None
    except UnicodeDecodeError as e:
        raise SefarError(f"{what} {path} is not UTF-8 text ({e})") from None
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_list(path, *, num_classes: int | None = None, root=None, path_prefix: str | None = None,
              resolver: PathResolver | None = None, fmt: str = "auto") -> list[ListEntry]:
    """Entries of one list file, in file order. SefarError for a missing file, a bad line or a bad label."""
    if fmt not in LIST_FORMATS:
        raise SefarError(f"list format {fmt!r} is not one of {', '.join(LIST_FORMATS)}")
    path = Path(path)
    lines = read_text_lines(path, "list file")
    if fmt == "auto":
        fmt = "rawframes" if is_rawframe_list([line for _, line in lines]) else "video"
    resolver = resolver or PathResolver(root, path_prefix)
    entries = []
    for number, line in lines:
        where = f"{path}:{number}"
        raw, label = parse_line(line, where, fmt)
        if label < 0 or (num_classes is not None and label >= num_classes):
            limit = f"0..{num_classes - 1}" if num_classes is not None else "non-negative"
            raise SefarError(f"{where}: label {label} is out of range (labels must be {limit})")
        entries.append(ListEntry(resolver(raw, path.parent), label, where))
    return entries


# ---- split files ---------------------------------------------------------------------------------------------------
def split_of_name(path: Path) -> str | None:
    """The split a list file's name names (`gym99_val.txt` -> "val"), or None."""
    words = re.split(r"[^a-z0-9]+", path.name.lower())
    for split in SPLITS:
        if any(w in words for w in SPLIT_WORDS[split]):
            return split
    return None


def find_split_files(spec: str) -> dict[str, Path]:
    """Split name -> list file, for a folder or comma-separated files (see the module docstring)."""
    paths = [Path(p) for p in spec.split(",") if p]
    if not paths:
        raise SefarError("lists: needs a list folder or list files, e.g. lists:splits/finegym/all99_5")
    if len(paths) == 1 and paths[0].is_dir():
        return _split_files_in(paths[0])
    files: dict[str, Path] = {}
    for p in paths:
        if not p.is_file():
            raise SefarError(f"list file {p} does not exist")
        split = split_of_name(p)
        if split is None:
            raise SefarError(f"cannot tell which split list file {p} holds: its name should contain train, "
                             "unlabel, val or test (as train.csv or gym99_val.txt do)")
        if split in files:
            raise SefarError(f"list files {files[split]} and {p} both name the {split} split; give one of them")
        files[split] = p
    if len(paths) == 1 and "train" in files:
        files.update(_siblings(files["train"]))
    return files


def _siblings(train: Path) -> dict[str, Path]:
    """val / test / unlabel lists named like a train list (`gym99_train.txt` -> `gym99_val.txt`)."""
    out = {}
    for split in ("unlabel", "val", "test"):
        for word in SPLIT_WORDS[split]:
            name = re.sub(r"(?<![a-z0-9])train(?![a-z0-9])", word, train.name, count=1, flags=re.IGNORECASE)
            if (train.parent / name).is_file() and name != train.name:
                out[split] = train.parent / name
                break
    return out


def _split_files_in(folder: Path) -> dict[str, Path]:
    reference = {}
    for split, names in REFERENCE_FILES.items():
        found = next((folder / name for name in names if (folder / name).is_file()), None)
        if found is not None:
            reference[split] = found
    if reference:
        return reference
    candidates: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        split = split_of_name(p) if p.is_file() and p.suffix.lower() in LIST_SUFFIXES else None
        if split is not None:
            candidates.setdefault(split, []).append(p)
    for split, found in candidates.items():
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise SefarError(f"list folder {folder} has several {split} lists ({names}); name the files, "
                             f"e.g. lists:{found[0]}")
    return {split: found[0] for split, found in candidates.items()}


def read_splits(spec: str, *, num_classes: int | None = None, root=None, path_prefix: str | None = None,
                fmt: str = "auto") -> tuple[dict[str, list[ListEntry]], list[str]]:
    """(split name -> entries, notes) of a list folder or list files (see the module docstring).

    SefarError when there is no train list, or neither a val nor a test list."""
    where = spec.split(",")[0]
    if "," not in spec and not Path(spec).exists():
        what = "list file" if Path(spec).suffix.lower() in LIST_SUFFIXES else "list folder"
        raise SefarError(f"{what} {spec} does not exist")
    files = find_split_files(spec)
    if "train" not in files:
        raise SefarError(f"{where} has no train list (train.csv, or a *_train.txt list file)")
    if "val" not in files and "test" not in files:
        raise SefarError(f"{where} has neither a val nor a test list (val.csv / test.csv, or *_val.txt)")
    resolver = PathResolver(root, path_prefix)
    same_file = "val" in files and "test" in files and files["val"].read_bytes() == files["test"].read_bytes()
    splits = {split: read_list(files[split], num_classes=num_classes, resolver=resolver, fmt=fmt)
              for split in SPLITS if split in files and not (split == "test" and same_file)}
    notes = []
    if same_file or ("val" in splits and "test" in splits and same_clips(splits["val"], splits["test"])):
        splits.pop("test", None)
        notes.append(f"{files['test'].name} lists the same clips as {files['val'].name} (as the authors ship "
                     "it): read once, as val")
    return splits, notes


def same_clips(a: list[ListEntry], b: list[ListEntry]) -> bool:
    return sorted((str(e.path), e.label) for e in a) == sorted((str(e.path), e.label) for e in b)


# ---- class names and annotation files ------------------------------------------------------------------------------
def find_annotation_file(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` found in root or its annotation folders (ANNOTATION_DIRS), or None."""
    for d in ANNOTATION_DIRS:
        for name in names:
            if (root / d / name).is_file():
                return root / d / name
    return None


def read_class_names(path: Path) -> list[str]:
    """Class names, one per line in label order; FineGym category lines give their name part."""
    names = []
    for _, line in read_text_lines(path, "class names file"):
        m = CATEGORY_LINE.match(line.strip())
        names.append(m["name"].strip() if m else line.strip())
    return names


def check_label_range(splits: dict[str, list[ListEntry]]) -> None:
    """Without a classes.txt the class count is 1 + the largest label, so a mistyped label (99 in a
    20-class list) would silently make a 100-class model. Every class below the largest label must
    therefore have a clip in some list; SefarError naming the file:line of the first label beyond a
    class that has none."""
    entries = [e for es in splits.values() for e in es]
    used = {e.label for e in entries}
    missing = sorted(set(range(max(used, default=-1) + 1)) - used)
    if not missing:
        return
    first = next(e for e in entries if e.label > missing[0])
    below = [m for m in missing if m < first.label]
    classes = f"class {below[0]}" if len(below) == 1 else f"classes {below[0]}..{below[-1]}"
    if len(below) > 1 and below != list(range(below[0], below[-1] + 1)):
        classes = f"{len(below)} classes ({below[0]}, {below[1]}, ...)"
    raise SefarError(f"{first.source}: label {first.label} leaves {classes} with no clip in any list; labels are "
                     f"0..C-1 with every class used: fix the label, or name the classes in a classes.txt next to "
                     f"the lists (one per line)")
