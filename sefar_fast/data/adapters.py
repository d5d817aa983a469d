"""Dataset adapters: a dataset's own files -> the clips to prepare, with labels, splits, class names.

`load_source(spec, root=...)` returns a `SourceSet`; `prepare.prepare` turns it into a
clip store. Specs:

    folder:DIR          DIR/<class>/<video or frame folder>; or DIR/<split>/<class>/... with
                        split folders train/ unlabel/ val/ test/. Classes sorted by name.
    lists:DIR           list folder: the released code's train.csv, unlabel.csv, val.csv, test.csv
    lists:FILE[,FILE]   (`<path> <label>`), or mmaction2's video / rawframe lists (`gym99_train.txt`,
                        `..._rawframes.txt`), or the list files themselves (see `data.lists`).
                        Paths remapped under `root` (lists.PathResolver). Class names from classes.txt
                        in the list folder or its parent (one name per line in label order, or
                        FineGym category lines), else class_0, class_1, ...
    rawframes:...       the same, every file read as an mmaction2 rawframe list (`dir frames label`).
    ucf101[:N]          root/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt, videos anywhere
                        under root (UCF-101/<class>/v_*.avi). N = official split 1..3 (default 1).
    hmdb51[:N]          root/testTrainMulti_7030_splits/<class>_test_splitN.txt; id 2 = test, 1 and 0
                        = train pool (the released lists use every non-test clip).
    gym99[:OPTS]        FineGym (`data.finegym`): the official annotation files or mmaction2's prepared
    gym288[:OPTS]       layout. OPTS, comma separated: an event (VT, FX, BB, UB) or one of its sets
                        (UB_S1, FX_S1, ...), classes renumbered in label order; `lists=DIR`: the
                        split of the authors' list folder DIR instead of the element lists.
    gym-new             Gym-New: the 40-class relabelled subset of Gym288 (forward/backward pairs).
    finediving          FineDiving: frame folders root/FINADiving_MTL_256s/<competition>/<index>/,
                        FineDiving_fine-grained_annotation.pkl (key -> action type) and
                        train_split.pkl / test_split.pkl (lists of keys). Classes: action types.
    ssv2                Something-Something v2: labels.json, train.json, validation.json, webm videos
                        `<id>.webm` under root (the unlabelled test set is not used).

Annotation files are looked up in root and its annotation folders (`lists.ANNOTATION_DIRS`).
Nothing is fetched from the network. A missing video is not an error here: prepare reports it and goes on.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

from sefar_fast.data.finegym import finegym_clips, gym_new_clips
from sefar_fast.data.lists import (
    ANNOTATION_DIRS,
    VIDEO_SUFFIXES,
    check_label_range,
    find_annotation_file,
    read_class_names,
    read_splits,
    walk_clip_files,
)
from sefar_fast.data.video import frame_files
from sefar_fast.errors import SefarError

SPLIT_DIRS = ("train", "unlabel", "val", "test")


@dataclass(frozen=True)
class SourceClip:
    """One clip to prepare: a video file or frame folder, optionally a time window of it (seconds)."""

    clip_id: str
    path: Path
    label: int
    split: str
    start: float | None = None
    end: float | None = None


@dataclass
class SourceSet:
    name: str
    clips: list[SourceClip]
    class_names: list[str]
    notes: list[str] = field(default_factory=list)  # what the reader decided for the user to know

    def check(self) -> None:
        """SefarError for a duplicate clip id or a label outside 0..C-1 (-1, unknown, is allowed)."""
        seen: dict[str, SourceClip] = {}
        for c in self.clips:
            if c.clip_id in seen:
                raise SefarError(f"{self.name}: duplicate clip id {c.clip_id!r} ({seen[c.clip_id].path} and {c.path})")
            seen[c.clip_id] = c
            if not (c.label == -1 or 0 <= c.label < len(self.class_names)):
                raise SefarError(
                    f"{self.name}: clip {c.clip_id!r} has label {c.label}, outside 0..{len(self.class_names) - 1}"
                )


# ---- helpers -----------------------------------------------------------------------------------------------------
def require_root(root, spec: str) -> Path:
    if root is None:
        raise SefarError(f"data source {spec!r} needs --root <dataset folder>")
    root = Path(root)
    if not root.is_dir():
        raise SefarError(f"dataset folder {root} does not exist")
    return root


def find_annotation(root: Path, *names: str) -> Path:
    found = find_annotation_file(root, names)
    if found is not None:
        return found
    raise SefarError(
        f"{names[0]} not found in {root} (looked in {', '.join(ANNOTATION_DIRS)}); download the annotations"
    )


def index_videos(root: Path) -> dict[str, Path]:
    """Video files under root keyed by file stem (first found wins, in walk order)."""
    found: dict[str, Path] = {}
    for p in walk_clip_files(root):
        if p.suffix.lower() in VIDEO_SUFFIXES and p.stem not in found and p.is_file():
            found[p.stem] = p
    return found


def is_clip_dir(p: Path) -> bool:
    return p.is_dir() and bool(frame_files(p))


def read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]


# ---- folder-per-class ----------------------------------------------------------------------------------------------
def folder_source(folder: Path) -> SourceSet:
    if not folder.is_dir():
        raise SefarError(f"folder {folder} does not exist")
    split_dirs = [(s, folder / s) for s in SPLIT_DIRS if (folder / s).is_dir()]
    layouts = split_dirs or [("train", folder)]
    classes = sorted({c.name for _, d in layouts for c in d.iterdir() if c.is_dir()})
    if not classes:
        raise SefarError(f"folder {folder} has no class folders (expected {folder}/<class>/<clip>)")
    label_of = {c: i for i, c in enumerate(classes)}
    clips = []
    for split, d in layouts:
        for cls_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            for item in sorted(cls_dir.iterdir()):
                if item.suffix.lower() in VIDEO_SUFFIXES or is_clip_dir(item):
                    prefix = f"{split}/" if split_dirs else ""
                    clips.append(SourceClip(f"{prefix}{cls_dir.name}/{item.stem}", item, label_of[cls_dir.name], split))
    return SourceSet(f"folder:{folder}", clips, classes)


# ---- list folders and files ---------------------------------------------------------------------------------------
def lists_source(spec: str, root=None, path_prefix=None, fmt: str = "auto") -> SourceSet:
    first = Path(spec.split(",")[0])
    folder = first if first.is_dir() else first.parent
    names_file = next((p for p in (folder / "classes.txt", folder.parent / "classes.txt") if p.is_file()), None)
    names = read_class_names(names_file) if names_file else None
    splits, notes = read_splits(spec, num_classes=len(names) if names else None, root=root, path_prefix=path_prefix,
                                fmt=fmt)
    if not names:
        check_label_range(splits)
    num_classes = len(names) if names else 1 + max(e.label for es in splits.values() for e in es)
    clips, id_of_path, used = [], {}, set()
    for split, entries in splits.items():
        for e in entries:
            if e.path in id_of_path:
                raise SefarError(f"{e.source}: duplicate clip id {id_of_path[e.path]!r} ({e.path} is listed twice)")
            clip_id = e.path.stem if e.path.stem not in used else str(e.path)  # same name, other folder
            used.add(clip_id)
            id_of_path[e.path] = clip_id
            clips.append(SourceClip(clip_id, e.path, e.label, split))
    kind = "rawframes" if fmt == "rawframes" else "lists"
    return SourceSet(f"{kind}:{spec}", clips, names or [f"class_{i}" for i in range(num_classes)], notes)


def finegym_source(root: Path, which: str, options: str = "") -> SourceSet:
    clips, names, notes = finegym_clips(root, which, options)
    return SourceSet(f"{which}:{options}" if options else which, [SourceClip(*c) for c in clips], names, notes)


def gym_new_source(root: Path) -> SourceSet:
    clips, names, notes = gym_new_clips(root)
    return SourceSet("gym-new", [SourceClip(*c) for c in clips], names, notes)


# ---- UCF101 / HMDB51 -----------------------------------------------------------------------------------------------
def ucf101_source(root: Path, split: int) -> SourceSet:
    lists_dir = next((d for d in (root / "ucfTrainTestlist", root) if (d / "classInd.txt").is_file()), None)
    if lists_dir is None:
        raise SefarError(f"ucfTrainTestlist/classInd.txt not found under {root}; download the UCF101 split files")
    classes = [ln.split()[1] for ln in read_lines(lists_dir / "classInd.txt")]
    label_of = {c.lower(): i for i, c in enumerate(classes)}  # the lists spell HandstandPushups two ways
    videos = index_videos(root)
    clips = []
    for split_name, file in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
        path = lists_dir / file
        if not path.is_file():
            raise SefarError(f"UCF101 split file {path} not found")
        for number, line in enumerate(read_lines(path), 1):
            rel = line.split()[0]
            cls = rel.split("/")[0].lower()
            if cls not in label_of:
                raise SefarError(f"{path}:{number}: class {rel.split('/')[0]!r} is not in classInd.txt")
            stem = Path(rel).stem
            clips.append(SourceClip(stem, videos.get(stem, root / "UCF-101" / rel), label_of[cls], split_name))
    return SourceSet(f"ucf101:{split}", clips, classes)


def hmdb51_source(root: Path, split: int) -> SourceSet:
    pattern = f"*_test_split{split}.txt"
    split_dir = next((d for d in (root / "testTrainMulti_7030_splits", root) if list(d.glob(pattern))), None)
    if split_dir is None:
        raise SefarError(f"testTrainMulti_7030_splits/*_test_split{split}.txt not found under {root}")
    files = sorted(split_dir.glob(f"*_test_split{split}.txt"))
    classes = [f.name[: -len(f"_test_split{split}.txt")] for f in files]
    videos = index_videos(root)
    clips, used = [], set()
    for label, (cls, f) in enumerate(zip(classes, files)):
        for line in read_lines(f):
            name, tag = line.rsplit(None, 1)
            stem = Path(name).stem
            clip_id = stem if stem not in used else f"{cls}/{stem}"
            used.add(clip_id)
            path = videos.get(stem, root / "hmdb51" / cls / name)
            clips.append(SourceClip(clip_id, path, label, "test" if tag == "2" else "train"))
    return SourceSet(f"hmdb51:{split}", clips, classes)


# ---- FineDiving ----------------------------------------------------------------------------------------------------
def load_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)  # the dataset's own annotation files
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise SefarError(f"{path} is not a readable pickle ({e})") from None


def finediving_source(root: Path) -> SourceSet:
    annotation = load_pickle(find_annotation(root, "FineDiving_fine-grained_annotation.pkl",
                                             "FineDiving_coarse_annotation.pkl"))

    def action_type(value) -> str:
        if isinstance(value, dict):
            return str(value["action_type"])
        return str(value[0])

    try:
        types = {key: action_type(v) for key, v in annotation.items()}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise SefarError(f"FineDiving annotation in {root} has no action types") from None
    classes = sorted(set(types.values()))
    label_of = {c: i for i, c in enumerate(classes)}
    frames_root = next((d for d in (root / "FINADiving_MTL_256s", root / "FineDiving_MTL_256s") if d.is_dir()), root)
    clips = []
    for split, name in (("train", "train_split.pkl"), ("test", "test_split.pkl")):
        for key in load_pickle(find_annotation(root, name)):
            key = tuple(key)
            if key not in types:
                raise SefarError(f"FineDiving {name}: clip {key} has no annotation")
            folder = frames_root.joinpath(*(str(k) for k in key))
            clips.append(SourceClip("_".join(str(k) for k in key), folder, label_of[types[key]], split))
    return SourceSet("finediving", clips, classes)


# ---- Something-Something v2 ----------------------------------------------------------------------------------------
def ssv2_source(root: Path) -> SourceSet:
    labels = json.loads(find_annotation(root, "labels.json", "something-something-v2-labels.json").read_text())
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    label_of = {name: int(i) for name, i in labels.items()}
    videos = index_videos(root)
    clips = []
    for split, names in (("train", ("train.json", "something-something-v2-train.json")),
                         ("val", ("validation.json", "something-something-v2-validation.json"))):
        path = find_annotation(root, *names)
        for item in json.loads(path.read_text()):
            template = item["template"].replace("[", "").replace("]", "")
            if template not in label_of:
                raise SefarError(f"{path}: clip {item['id']} has template {template!r}, not in labels.json")
            vid = str(item["id"])
            clips.append(SourceClip(vid, videos.get(vid, root / f"{vid}.webm"), label_of[template], split))
    return SourceSet("ssv2", clips, classes)


# ---- dispatch ------------------------------------------------------------------------------------------------------
def load_source(spec: str, *, root=None, path_prefix: str | None = None) -> SourceSet:
    """The clips of a data source spec (see the module docstring); checked for duplicate ids and labels."""
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "folder":
        source = folder_source(Path(arg or require_root(root, spec)))
    elif kind in ("lists", "rawframes"):
        if not arg:
            raise SefarError(f"{kind}:DIR needs the list folder or files, e.g. {kind}:splits/finegym/all99_5")
        fmt = "rawframes" if kind == "rawframes" else "auto"
        source = lists_source(arg, root=root, path_prefix=path_prefix, fmt=fmt)
    elif kind in ("ucf101", "hmdb51"):
        split = int(arg) if arg.isdigit() else 1
        if not 1 <= split <= 3:
            raise SefarError(f"{kind} has official splits 1, 2 and 3, not {arg!r}")
        source = (ucf101_source if kind == "ucf101" else hmdb51_source)(require_root(root, spec), split)
    elif kind in ("gym99", "gym288"):
        source = finegym_source(require_root(root, spec), kind, arg)
    elif kind in ("gym-new", "gymnew", "finegym-new"):
        source = gym_new_source(require_root(root, spec))
    elif kind == "finediving":
        source = finediving_source(require_root(root, spec))
    elif kind in ("ssv2", "something-something-v2"):
        source = ssv2_source(require_root(root, spec))
    else:
        raise SefarError(
            f"unknown data source {spec!r}; use folder:DIR, lists:DIR, rawframes:DIR, ucf101, hmdb51, gym99, gym288, "
            "gym-new, finediving or ssv2"
        )
    source.check()
    return source
