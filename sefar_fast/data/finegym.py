"""FineGym (gym99, gym288, their event and set subsets, Gym-New) from the files users have.

Three layouts are read, under one `--root` (files are looked up in root, root/annotations,
root/annotation and root/labels; clips anywhere under root):

- FineGym's own files (https://sdolivia.github.io/FineGym/): `gym99_categories.txt`,
  `gym99_train_element_v1.1.txt` (or `_v1.0`), `gym99_val_element.txt`,
  `finegym_annotation_info_v1.1.json` (or `_v1.0`); and likewise for gym288.
- mmaction2's prepared layout (tools/data/gym): `annotations/gym99_train_org.txt`,
  `gym99_val_org.txt` (FineGym's v1.0 element lists renamed), `annotation.json` (FineGym's v1.0
  annotation renamed), `event_annotation.json`, or just its `gym99_train.txt` / `gym99_val.txt`
  video lists; clips in `subactions/`, `events/`, `videos/` or frame folders in `subaction_frames/`.
- the authors' list folder (`gym99:lists=DIR`, e.g. `finegym/all99_5`): their labeled /
  unlabeled / val split, with each clip found by its id as below. Its labels are used; where the
  element lists give a clip another label, that is said in the source's notes.

The categories file is optional: without it the names come from a label map
(`label_map_gym99.txt` as mmaction2 ships it, or a plain `label_map.txt`), else they are
`gym99 class <i>`; event subsets then need the "(VT) ..." prefixes of a label map, set subsets
need the categories file.

A clip (`<ytid>_E_<s>_<e>_A_<s>_<e>`) is its own video or frame folder when one exists; else it
is cut from its event video `<ytid>_E_<s>_<e>.mp4` or its full video `<ytid>.mp4` with the
annotation's timestamps (segment times are relative to the event start; an element spans its
first stage's start to its last stage's end). A missing clip is not an error here: prepare
reports it and goes on. Every missing annotation file is an error naming the file and where
FineGym publishes it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

from sefar_fast.data.lists import (
    ANNOTATION_DIRS,
    VIDEO_SUFFIXES,
    find_annotation_file,
    read_splits,
    read_text_lines,
    walk_clip_files,
)
from sefar_fast.errors import SefarError

FINEGYM_FILES = "https://sdolivia.github.io/FineGym/resources/dataset/"
NUM_CLASSES = {"gym99": 99, "gym288": 288}
EVENTS = ("VT", "FX", "BB", "UB")

CATEGORY_RE = re.compile(r"Clabel:\s*(\d+);\s*set:\s*(\d+);\s*Glabel:\s*(\d+);\s*\((\w+)\)\s*(.*)")
EVENT_PREFIX_RE = re.compile(r"^\((VT|FX|BB|UB)\)\s*")
CLIP_ID_RE = re.compile(r"^(?P<ytid>.+)_(?P<event>E_\d+_\d+)_(?P<action>A_\d+_\d+)$")

# Gym-New: new label 2k / 2k+1 = these Gym288 labels (forward / backward direction pairs).
GYM_NEW_PAIRS = [(106, 117), (107, 118), (108, 122), (109, 123), (208, 216), (209, 217), (211, 225), (212, 222),
                 (213, 223), (234, 236), (237, 244), (239, 243), (241, 246), (248, 250), (249, 251), (254, 255),
                 (257, 259), (258, 260), (271, 272), (277, 278)]


def file_names(which: str) -> dict[str, tuple[str, ...]]:
    """The names each annotation file goes by, FineGym's own first (the one its error names)."""
    return {
        "categories": (f"{which}_categories.txt", f"label_map_{which}.txt")
                      + (("label_map.txt",) if which == "gym99" else ()),
        "train": (f"{which}_train_element_v1.1.txt", f"{which}_train_element_v1.0.txt",
                  f"{which}_train_element.txt", f"{which}_train_org.txt", f"{which}_train.txt"),
        "val": (f"{which}_val_element.txt", f"{which}_val_element_v1.1.txt", f"{which}_val_element_v1.0.txt",
                f"{which}_val_org.txt", f"{which}_val.txt"),
        "annotation": ("finegym_annotation_info_v1.1.json", "finegym_annotation_info_v1.0.json", "annotation.json"),
        "events": ("event_annotation.json",),
    }


def require_file(root: Path, names: tuple[str, ...], what: str) -> Path:
    found = find_annotation_file(root, names)
    if found is None:
        others = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
        raise SefarError(f"FineGym {what} {names[0]}{others} not found in {root} (looked in "
                         f"{', '.join(ANNOTATION_DIRS)}); FineGym publishes it at {FINEGYM_FILES}{names[0]}")
    return found


def read_lines(path: Path) -> list[tuple[int, str]]:
    return [(number, line.strip()) for number, line in read_text_lines(path, "FineGym file")]


# ---- categories ----------------------------------------------------------------------------------------------------
def read_categories(path: Path, which: str) -> list[tuple[int, int | None, str | None, str]]:
    """(label, set id, event, name) per class: category lines give all four, plain label-map lines
    the name (and the event from a "(VT) " prefix); names keep their event prefix."""
    out = []
    for number, line in read_lines(path):
        m = CATEGORY_RE.match(line)
        if m:
            out.append((int(m[1]), int(m[2]), m[4], f"({m[4]}) {m[5].strip()}"))
        elif line.startswith("Clabel"):
            raise SefarError(f"{path}:{number}: not a FineGym category line: {line!r}")
        else:
            event = EVENT_PREFIX_RE.match(line)
            out.append((len(out), None, event[1] if event else None, line))
    if len(out) != NUM_CLASSES[which]:
        raise SefarError(f"{path} names {len(out)} classes but {which} has {NUM_CLASSES[which]}; "
                         f"use {which}'s own file ({FINEGYM_FILES}{which}_categories.txt)")
    return out


def subset_mapping(categories, subset: str | None, categories_file: str) -> dict[int, int]:
    """Old label -> new label for an event subset ("UB") or one of its sets ("UB_S1")."""
    if not subset:
        return {c[0]: c[0] for c in categories}
    event, _, set_part = subset.upper().partition("_")
    if event not in EVENTS:
        raise SefarError(f"FineGym subset {subset!r}: the event must be one of {', '.join(EVENTS)}")
    if any(c[2] is None for c in categories):
        raise SefarError(f"FineGym subset {subset!r} needs the events of the classes: put {categories_file} "
                         f"({FINEGYM_FILES}{categories_file}) in the dataset folder")
    chosen = [c for c in categories if c[2] == event]
    if not chosen:
        raise SefarError(f"FineGym subset {subset!r}: no classes of event {event!r}")
    if set_part:
        if any(c[1] is None for c in chosen):
            raise SefarError(f"FineGym subset {subset!r} needs the set ids of {categories_file} "
                             f"({FINEGYM_FILES}{categories_file}); a label map has none")
        sets = sorted({c[1] for c in chosen})
        k = int(set_part[1:]) if set_part[:1] == "S" and set_part[1:].isdigit() else 0
        if not 1 <= k <= len(sets):
            raise SefarError(f"FineGym subset {subset!r}: event {event} has sets S1..S{len(sets)}")
        chosen = [c for c in chosen if c[1] == sets[k - 1]]
    return {c[0]: i for i, c in enumerate(sorted(chosen))}


# ---- where a clip lives --------------------------------------------------------------------------------------------
def index_clips(root: Path) -> dict[str, Path]:
    """Video files by stem and frame folders by name, anywhere under root (first found wins)."""
    found: dict[str, Path] = {}
    for p in walk_clip_files(root):
        key = p.name if p.is_dir() else (p.stem if p.suffix.lower() in VIDEO_SUFFIXES else None)
        if key is not None and key not in found:
            found[key] = p
    return found


def element_window(clip_id: str, annotation: dict | None, event_segments: dict | None):
    """(event start in its video or None, element start, element end) from the annotation; None if unknown."""
    m = CLIP_ID_RE.match(clip_id)
    if not m:
        return None
    try:
        if annotation is not None and m["ytid"] in annotation:
            event = annotation[m["ytid"]][m["event"]]
            stages = event["segments"][m["action"]]["timestamps"]
            return float(event["timestamps"][0][0]), float(stages[0][0]), float(stages[-1][1])
        if event_segments is not None:
            stages = event_segments[f"{m['ytid']}_{m['event']}"][m["action"]]["timestamps"]
            return None, float(stages[0][0]), float(stages[-1][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None


def clip_location(clip_id: str, clips: dict[str, Path], annotation, event_segments, root: Path):
    """(path, start, end) of an element: its own clip, else a window of its event or full video."""
    if clip_id in clips:
        return clips[clip_id], None, None
    window = element_window(clip_id, annotation, event_segments)
    if window is not None:
        event_start, start, end = window
        ytid, event = CLIP_ID_RE.match(clip_id).group("ytid", "event")
        if f"{ytid}_{event}" in clips:
            return clips[f"{ytid}_{event}"], start, end
        if event_start is not None and ytid in clips:
            return clips[ytid], event_start + start, event_start + end
    return root / f"{clip_id}.mp4", None, None


def load_json(path: Path | None):
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SefarError(f"{path} is not valid JSON ({e}); download it again from {FINEGYM_FILES}") from None


# ---- the source ----------------------------------------------------------------------------------------------------
def read_elements(path: Path) -> list[tuple[str, int, str]]:
    """(clip id, label, "file:line") per line of an element list (a `.mp4` on the id is dropped)."""
    out = []
    for number, line in read_lines(path):
        fields = line.split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise SefarError(f"{path}:{number}: expected '<clip id> <label>', got {line!r}")
        clip_id = fields[0][:-len(Path(fields[0]).suffix)] if fields[0].endswith(VIDEO_SUFFIXES) else fields[0]
        out.append((clip_id, int(fields[1]), f"{path}:{number}"))
    return out


def parse_options(which: str, arg: str) -> tuple[str | None, str | None]:
    """(subset, lists folder) of `gym99:UB,lists=DIR`."""
    subset = lists = None
    for part in filter(None, arg.split(",")):
        key, eq, value = part.partition("=")
        if eq and key.strip().lower() == "lists":
            lists = value
        elif not eq and subset is None:
            subset = part.strip()
        else:
            raise SefarError(f"{which}:{arg}: options are an event or set (UB, FX_S1) and lists=DIR")
    return subset, lists


class GymClip(NamedTuple):
    """One element clip, in `adapters.SourceClip`'s field order."""

    clip_id: str
    path: Path
    label: int
    split: str
    start: float | None
    end: float | None


def finegym_clips(root: Path, which: str, options: str = "", *, relabel: dict[int, int] | None = None,
                  names: list[str] | None = None) -> tuple[list[GymClip], list[str], list[str]]:
    """(clips, class names, notes) of FineGym `which` (gym99 or gym288) under root; see the module docstring."""
    subset, lists = parse_options(which, options)
    files = file_names(which)
    categories_file = find_annotation_file(root, files["categories"])
    categories = (read_categories(categories_file, which) if categories_file is not None
                  else [(i, None, None, f"{which} class {i}") for i in range(NUM_CLASSES[which])])
    mapping = relabel or subset_mapping(categories, subset, files["categories"][0])
    if names is None:
        by_label = {c[0]: c[3] for c in categories}
        names = [by_label[old] for old, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    annotation = load_json(find_annotation_file(root, files["annotation"]))
    event_segments = load_json(find_annotation_file(root, files["events"]))
    on_disk = index_clips(root)

    def clip(clip_id: str, label: int, split: str) -> GymClip:
        path, start, end = clip_location(clip_id, on_disk, annotation, event_segments, root)
        return GymClip(clip_id, path, label, split, start, end)

    elements = []  # (clip id, label, split, "file:line"); with the authors' lists only a cross-check
    for split in ("train", "val"):
        path = (find_annotation_file(root, files[split]) if lists
                else require_file(root, files[split], f"{split} element list"))
        if path is not None:
            elements += [(clip_id, label, split, where) for clip_id, label, where in read_elements(path)]
    if not lists:
        if relabel is None and subset is None:  # the whole set: every label must be one of its classes
            for _, label, _, where in elements:
                if label not in mapping:
                    raise SefarError(f"{where}: label {label} is out of range (labels must be 0..{len(names) - 1})")
        clips = [clip(clip_id, mapping[label], split) for clip_id, label, split, _ in elements if label in mapping]
        return clips, names, []
    splits, notes = read_splits(lists, num_classes=len(names))
    known = {clip_id: (label, where) for clip_id, label, _, where in elements}
    clips, differ = [], []
    for split, entries in splits.items():
        for e in entries:
            clip_id = e.path.stem
            if clip_id in known and mapping.get(known[clip_id][0]) != e.label:
                label, where = known[clip_id]
                differ.append(f"{e.source}: {clip_id} {e.label}, {mapping.get(label)} in {where}")
            clips.append(clip(clip_id, e.label, split))
    if differ:
        notes.append(f"{len(differ)} clips of {lists} carry another label in FineGym's element lists "
                     f"(first: {differ[0]}); the list's labels are used")
    return clips, names, notes


def gym_new_clips(root: Path) -> tuple[list[GymClip], list[str], list[str]]:
    """Gym-New: Gym288's forward/backward pairs, relabelled 2k / 2k+1 (see GYM_NEW_PAIRS)."""
    categories_file = find_annotation_file(root, file_names("gym288")["categories"])
    by_label = ({c[0]: EVENT_PREFIX_RE.sub("", c[3]) for c in read_categories(categories_file, "gym288")}
                if categories_file is not None else {})
    relabel, names = {}, []
    for k, pair in enumerate(GYM_NEW_PAIRS):
        for j, old in enumerate(pair):
            relabel[old] = 2 * k + j
            names.append(by_label.get(old, f"gym288 class {old}"))
    return finegym_clips(root, "gym288", relabel=relabel, names=names)
