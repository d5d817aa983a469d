"""Reference-format list files: one clip per line, `<path> <label>`.

The released SeFAR code ships lists such as `finegym/all99_5/{train,unlabel,val,test}.csv`
with absolute paths from the authors' machines (`/root/video/<id>.mp4`), CRLF or LF line
ends, and sometimes no newline after the last line. We read them as they are:

- a line is split at its last run of whitespace (paths may contain spaces); a line with no
  whitespace but a comma is split at its last comma (the shipped `list_ucf_5` is comma
  separated); blank lines are skipped; anything else is a SefarError naming file and line;
- labels must be integers in 0..num_classes-1 (when num_classes is known);
- paths are resolved by `PathResolver` (see there for the remapping rule).

`read_split_folder(DIR)` reads the split lists found in DIR: train.csv, unlabel.csv
(also the shipped misspelling unlabe.csv), val.csv and test.csv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sefar_fast.errors import SefarError

SPLIT_FILES = {"train": ("train.csv",), "unlabel": ("unlabel.csv", "unlabe.csv"), "val": ("val.csv",),
               "test": ("test.csv",)}


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
    2. A relative path: `root / path` (root defaults to the list file's folder).
    3. An absolute path that exists: kept.
    4. With `root`: drop leading directories one at a time, fewest first, and take the first
       remainder that exists under `root`. `/root/UCF-101/Fencing/v_1.avi` with root
       `/data/ucf` finds `/data/ucf/UCF-101/Fencing/v_1.avi`, else `/data/ucf/Fencing/v_1.avi`,
       else `/data/ucf/v_1.avi`. The number of directories dropped is remembered and tried
       first for the next path (a list's paths share one foreign prefix), so long lists resolve
       with one file check per line.
    5. Nothing exists: the path from rule 1/4 with the list's foreign prefix dropped as
       remembered (or as given), so that the error reported later names a plausible file.
    """

    def __init__(self, root=None, path_prefix: str | None = None):
        self.root = Path(root) if root is not None else None
        self.path_prefix = path_prefix.rstrip("/") if path_prefix else None
        self._dropped: int | None = None

    def __call__(self, raw: str, list_dir: Path | None = None) -> Path:
        raw = raw.replace("\\", "/")
        if self.path_prefix and (raw == self.path_prefix or raw.startswith(self.path_prefix + "/")):
            rest = raw[len(self.path_prefix):].lstrip("/")
            return (self.root or list_dir or Path(".")) / rest
        path = PurePosixPath(raw)
        if not path.is_absolute():
            return (self.root or list_dir or Path(".")) / path
        if Path(raw).exists() or self.root is None:
            return Path(raw)
        parts = path.parts[1:]  # without the leading "/"
        tries = range(len(parts))
        if self._dropped is not None and self._dropped < len(parts):
            tries = [self._dropped] + [d for d in tries if d != self._dropped]
        for dropped in tries:
            candidate = self.root.joinpath(*parts[dropped:])
            if candidate.exists():
                self._dropped = dropped
                return candidate
        guess = self._dropped if self._dropped is not None and self._dropped < len(parts) else 0
        return self.root.joinpath(*parts[guess:])


def parse_line(line: str, where: str) -> tuple[str, int]:
    text = line.strip()
    fields = text.rsplit(None, 1)
    if len(fields) != 2 and "," in text:
        fields = [f.strip() for f in text.rsplit(",", 1)]
    if len(fields) != 2 or not fields[0]:
        raise SefarError(f"{where}: expected '<path> <label>', got {text!r}")
    try:
        label = int(fields[1])
    except ValueError:
        raise SefarError(f"{where}: label {fields[1]!r} is not an integer (line {text!r})") from None
    return fields[0], label


def read_list(path, *, num_classes: int | None = None, root=None, path_prefix: str | None = None,
              resolver: PathResolver | None = None) -> list[ListEntry]:
    """Entries of one list file, in file order. SefarError for a missing file, a bad line or a bad label."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise SefarError(f"list file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise SefarError(f"list file {path} is not UTF-8 text ({e})") from None
    resolver = resolver or PathResolver(root, path_prefix)
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        raw, label = parse_line(line, where)
        if label < 0 or (num_classes is not None and label >= num_classes):
            limit = f"0..{num_classes - 1}" if num_classes is not None else "non-negative"
            raise SefarError(f"{where}: label {label} is out of range (labels must be {limit})")
        entries.append(ListEntry(resolver(raw, path.parent), label, where))
    return entries


def read_split_folder(folder, *, num_classes: int | None = None, root=None,
                      path_prefix: str | None = None) -> dict[str, list[ListEntry]]:
    """The split lists in `folder` keyed by split name (train, unlabel, val, test; those present).

    SefarError if the folder has no train.csv, or neither val.csv nor test.csv.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SefarError(f"list folder {folder} does not exist")
    resolver = PathResolver(root, path_prefix)
    splits = {}
    for split, names in SPLIT_FILES.items():
        for name in names:
            if (folder / name).is_file():
                splits[split] = read_list(folder / name, num_classes=num_classes, resolver=resolver)
                break
    if "train" not in splits:
        raise SefarError(f"list folder {folder} has no train.csv")
    if "val" not in splits and "test" not in splits:
        raise SefarError(f"list folder {folder} has neither val.csv nor test.csv")
    return splits

