"""FineGym from the files users have: FineGym's own annotation files (v1.0 and v1.1 names),
mmaction2's prepared layout (tools/data/gym), and the authors' list folders; built here as
those tools write them, with tiny videos, and prepared end to end once."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from video_files import write_video

from sefar_fast.data.adapters import load_source
from sefar_fast.data.finegym import FINEGYM_FILES, GYM_NEW_PAIRS
from sefar_fast.data.prepare import prepare_from_spec
from sefar_fast.data.store import ClipStore
from sefar_fast.errors import SefarError

# (event, set id) of gym99's classes, as gym99_categories.txt assigns them
GYM99_SETS = ([("VT", 1)] * 6 + [("FX", 21)] * 11 + [("FX", 22)] * 7 + [("FX", 24)] * 7 + [("FX", 25)] * 10
              + [("BB", 31)] * 12 + [("BB", 32)] * 4 + [("BB", 33)] * 8 + [("BB", 34)] * 4 + [("BB", 35)] * 5
              + [("UB", 41)] * 15 + [("UB", 42)] * 5 + [("UB", 43)] * 2 + [("UB", 44)] * 3)
TRAIN = [("yt1_E_000010_000020_A_0001_0002", 76), ("yt1_E_000010_000020_A_0003_0004", 90),
         ("yt2_E_000005_000009_A_0000_0001", 7)]
VAL = [("yt2_E_000005_000009_A_0002_0003", 0), ("yt3_E_000100_000110_A_0000_0001", 80)]
# FineGym's annotation: event times in the video, element stages relative to the event start
ANNOTATION = {
    "yt1": {"E_000010_000020": {"event": 4, "timestamps": [[10.0, 20.0]], "segments": {
        "A_0001_0002": {"stages": 1, "timestamps": [[0.2, 0.5]]},
        "A_0003_0004": {"stages": 2, "timestamps": [[0.6, 0.7], [0.75, 0.9]]}}}},  # first start .. last end
    "yt3": {"E_000100_000110": {"event": 4, "timestamps": [[0.5, 1.5]], "segments": {
        "A_0000_0001": {"stages": 1, "timestamps": [[0.1, 0.4]]}}}},
}


def category_lines():
    return "".join(f"Clabel: {label:3d}; set: {set_id:2d}; Glabel: {label + 1:3d}; ({event}) move {label}\n"
                   for label, (event, set_id) in enumerate(GYM99_SETS))


def element_lines(rows, suffix=""):
    return "".join(f"{clip}{suffix} {label}\n" for clip, label in rows)


def official_layout(root):
    """FineGym's own file names (v1.1), an element's own clip, an event video and a full video."""
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "gym99_categories.txt").write_text(category_lines())
    (root / "annotations" / "gym99_train_element_v1.1.txt").write_text(element_lines(TRAIN))
    (root / "annotations" / "gym99_val_element.txt").write_text(element_lines(VAL))
    (root / "finegym_annotation_info_v1.1.json").write_text(json.dumps(ANNOTATION))
    write_video(root / "clips" / "yt2_E_000005_000009_A_0000_0001.mp4")  # an element's own clip
    write_video(root / "events" / "yt1_E_000010_000020.mp4")  # an event video: elements cut by time
    write_video(root / "full" / "yt3.mp4", n=20)  # a full video: event start + element time


def mmaction2_layout(root):
    """data/gym as mmaction2's tools/data/gym scripts leave it (no categories file: it is not fetched)."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "gym99_train_org.txt").write_text(element_lines(TRAIN))  # FineGym's v1.0 list, renamed
    (ann / "gym99_val_org.txt").write_text(element_lines(VAL))
    (ann / "annotation.json").write_text(json.dumps(ANNOTATION))  # FineGym's v1.0 annotation, renamed
    events = {f"{ytid}_{event}": value["segments"] for ytid, v in ANNOTATION.items() for event, value in v.items()}
    (ann / "event_annotation.json").write_text(json.dumps(events))
    write_video(root / "videos" / "yt3.mp4", n=20)
    write_video(root / "events" / "yt1_E_000010_000020.mp4")
    write_video(root / "subactions" / "yt2_E_000005_000009_A_0000_0001.mp4")
    frames = root / "subaction_frames" / "yt2_E_000005_000009_A_0002_0003"  # extracted frames, flow beside
    frames.mkdir(parents=True)
    for i in range(1, 5):
        for prefix in ("img", "flow_x", "flow_y"):
            Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(frames / f"{prefix}_{i:05d}.jpg")


def by_id(src):
    return {c.clip_id: c for c in src.clips}


def test_official_files_clips_windows_and_prepare(tmp_path):
    official_layout(tmp_path)
    src = load_source("gym99", root=tmp_path)
    assert len(src.class_names) == 99 and src.class_names[76] == "(UB) move 76"
    clips = by_id(src)
    assert [(c, clips[c].label, clips[c].split) for c, _ in TRAIN + VAL] == \
        [(c, label, "train") for c, label in TRAIN] + [(c, label, "val") for c, label in VAL]
    own = clips["yt2_E_000005_000009_A_0000_0001"]
    assert own.path.name == "yt2_E_000005_000009_A_0000_0001.mp4" and own.start is None
    cut = clips["yt1_E_000010_000020_A_0003_0004"]  # two stages: the first's start to the last's end
    assert cut.path.name == "yt1_E_000010_000020.mp4" and (cut.start, cut.end) == (0.6, 0.9)
    full = clips["yt3_E_000100_000110_A_0000_0001"]
    assert full.path.name == "yt3.mp4" and (full.start, full.end) == pytest.approx((0.6, 0.9))
    missing = clips["yt2_E_000005_000009_A_0002_0003"]
    assert missing.path == tmp_path / "yt2_E_000005_000009_A_0002_0003.mp4"
    # prepare decodes the own clip and the cut windows, and reports the missing one
    summary = prepare_from_spec("gym99", tmp_path / "store", root=tmp_path, workers=1)
    assert [f["clip_id"] for f in summary["failed"]] == ["yt2_E_000005_000009_A_0002_0003"]
    frames = {r.clip_id: r.num_frames for r in ClipStore.open(tmp_path / "store").records}
    assert frames["yt2_E_000005_000009_A_0000_0001"] == 10
    assert frames["yt1_E_000010_000020_A_0003_0004"] == 3  # 0.6, 0.7, 0.8 s at 10 fps
    assert frames["yt3_E_000100_000110_A_0000_0001"] == 3


def test_v10_names_and_subsets(tmp_path):
    official_layout(tmp_path)
    ann = tmp_path / "annotations"
    (ann / "gym99_train_element_v1.1.txt").rename(ann / "gym99_train_element_v1.0.txt")
    (tmp_path / "finegym_annotation_info_v1.1.json").rename(tmp_path / "finegym_annotation_info_v1.0.json")
    ub = load_source("gym99:UB", root=tmp_path)
    assert len(ub.class_names) == 25 and ub.class_names[0] == "(UB) move 74"
    assert sorted((c.clip_id[:3], c.label) for c in ub.clips) == [("yt1", 2), ("yt1", 16), ("yt3", 6)]
    assert by_id(ub)["yt1_E_000010_000020_A_0003_0004"].start == 0.6  # cut with the v1.0 annotation
    ub_s1 = load_source("gym99:UB_S1", root=tmp_path)
    assert len(ub_s1.class_names) == 15 and sorted(c.label for c in ub_s1.clips) == [2, 6]
    with pytest.raises(SefarError, match="sets S1..S4"):
        load_source("gym99:UB_S5", root=tmp_path)
    with pytest.raises(SefarError, match="the event must be one of VT, FX, BB, UB"):
        load_source("gym99:XX", root=tmp_path)


def test_mmaction2_layout_without_categories(tmp_path):
    mmaction2_layout(tmp_path)
    src = load_source("gym99", root=tmp_path)
    assert src.class_names[:2] == ["gym99 class 0", "gym99 class 1"] and len(src.class_names) == 99
    clips = by_id(src)
    own, frames = "yt2_E_000005_000009_A_0000_0001", "yt2_E_000005_000009_A_0002_0003"
    assert clips[own].path == tmp_path / "subactions" / f"{own}.mp4"
    assert clips[frames].path == tmp_path / "subaction_frames" / frames
    cut = clips["yt1_E_000010_000020_A_0003_0004"]
    assert cut.path == tmp_path / "events/yt1_E_000010_000020.mp4" and (cut.start, cut.end) == (0.6, 0.9)
    full = clips["yt3_E_000100_000110_A_0000_0001"]
    assert full.path == tmp_path / "videos/yt3.mp4" and (full.start, full.end) == pytest.approx((0.6, 0.9))
    with pytest.raises(SefarError, match=r"subset 'UB' needs the events of the classes: put gym99_categories.txt"):
        load_source("gym99:UB", root=tmp_path)
    # mmaction2's plain label map gives names and events, not sets
    (tmp_path / "annotations" / "label_map.txt").write_text("".join(
        f"({event}) move {label}\n" for label, (event, _) in enumerate(GYM99_SETS)))
    assert load_source("gym99", root=tmp_path).class_names[98] == "(UB) move 98"
    assert len(load_source("gym99:UB", root=tmp_path).class_names) == 25
    with pytest.raises(SefarError, match="needs the set ids of gym99_categories.txt"):
        load_source("gym99:UB_S1", root=tmp_path)
    # its category-format label map (label_map_gym99.txt) gives the sets too
    (tmp_path / "annotations" / "label_map_gym99.txt").write_text(category_lines())
    assert len(load_source("gym99:UB_S1", root=tmp_path).class_names) == 15
    summary = prepare_from_spec("gym99", tmp_path / "store", root=tmp_path, workers=1)
    assert summary["failed"] == []
    frames = {r.clip_id: r.num_frames for r in ClipStore.open(tmp_path / "store").records}
    assert frames["yt2_E_000005_000009_A_0002_0003"] == 4  # the RGB frames, not the flow images


def test_mmaction2_video_lists_alone(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "gym99_train.txt").write_text(element_lines(TRAIN, ".mp4"))  # generate_file_list.py's output
    (ann / "gym99_val.txt").write_text(element_lines(VAL, ".mp4"))
    src = load_source("gym99", root=tmp_path)
    assert sorted(c.clip_id for c in src.clips) == sorted(c for c, _ in TRAIN + VAL)


def test_missing_files_name_the_file_and_where_finegym_publishes_it(tmp_path):
    official_layout(tmp_path)
    (tmp_path / "annotations" / "gym99_train_element_v1.1.txt").unlink()
    with pytest.raises(SefarError) as err:
        load_source("gym99", root=tmp_path)
    message = str(err.value)
    assert message.startswith("FineGym train element list gym99_train_element_v1.1.txt (or gym99_train_element_v1.0")
    assert "gym99_train_org.txt" in message and f"not found in {tmp_path}" in message
    assert message.endswith(f"FineGym publishes it at {FINEGYM_FILES}gym99_train_element_v1.1.txt")
    (tmp_path / "annotations" / "gym99_train_element_v1.1.txt").write_text("yt9_E_000001_000002_A_0000_0001 99\n")
    with pytest.raises(SefarError, match=r"gym99_train_element_v1\.1\.txt:1: label 99 is out of range "
                                         r"\(labels must be 0\.\.98\)"):
        load_source("gym99", root=tmp_path)
    (tmp_path / "annotations" / "gym99_categories.txt").write_text("".join(category_lines().splitlines(True)[:3]))
    with pytest.raises(SefarError, match="names 3 classes but gym99 has 99"):
        load_source("gym99", root=tmp_path)


def test_the_authors_lists_with_finegym_files(tmp_path):
    mmaction2_layout(tmp_path)
    (tmp_path / "annotations" / "label_map_gym99.txt").write_text(category_lines())
    lists = tmp_path / "SeFAR" / "dataset" / "finegym" / "all99_5"
    lists.mkdir(parents=True)
    rows = {"train": TRAIN[:1], "unlabel": TRAIN[1:], "val": VAL}
    for split, clips in rows.items():
        (lists / f"{split}.csv").write_bytes("".join(f"/root/video/{c}.mp4 {label}\r\n" for c, label in clips).encode())
    (lists / "test.csv").write_bytes((lists / "val.csv").read_bytes())
    src = load_source(f"gym99:lists={lists}", root=tmp_path)
    assert [(c.clip_id, c.label, c.split) for c in src.clips] == [
        (c, label, split) for split, clips in rows.items() for c, label in clips]
    assert src.class_names[76] == "(UB) move 76"
    assert by_id(src)["yt1_E_000010_000020_A_0003_0004"].start == 0.6  # cut from its event like any clip
    assert src.notes == ["test.csv lists the same clips as val.csv (as the authors ship it): read once, as val"]
    # a label the element lists disagree with is the list's, and said
    for name in ("val.csv", "test.csv"):
        (lists / name).write_bytes(b"/root/video/yt2_E_000005_000009_A_0002_0003.mp4 5\r\n")
    src = load_source(f"gym99:lists={lists}", root=tmp_path)
    assert by_id(src)["yt2_E_000005_000009_A_0002_0003"].label == 5
    assert src.notes[-1].startswith(f"1 clips of {lists} carry another label in FineGym's element lists (first: "
                                    f"{lists / 'val.csv'}:1: yt2_E_000005_000009_A_0002_0003 5, 0 in ")
    # without FineGym's files at all, the lists and the videos are enough
    shutil.rmtree(tmp_path / "annotations")
    src = load_source(f"gym99:lists={lists}", root=tmp_path)
    assert by_id(src)["yt2_E_000005_000009_A_0000_0001"].path.parent == tmp_path / "subactions"
    with pytest.raises(SefarError, match="options are an event or set"):
        load_source(f"gym99:list={lists}", root=tmp_path)


def test_gym_new_relabels_gym288_pairs(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    ann.joinpath("gym288_categories.txt").write_text("".join(
        f"Clabel: {c}; set: 41; Glabel: {c}; (UB) move {c}\n" for c in range(288)))
    ann.joinpath("gym288_train_element_v1.1.txt").write_text("a_E_1_2_A_1_2 106\nb_E_1_2_A_1_2 117\nc_E_1_2_A_1_2 5\n")
    ann.joinpath("gym288_val_element.txt").write_text("d_E_1_2_A_1_2 241\n")
    src = load_source("gym-new", root=tmp_path)
    assert len(src.class_names) == 40 == 2 * len(GYM_NEW_PAIRS)
    assert src.class_names[:2] == ["move 106", "move 117"] and src.class_names[24] == "move 241"
    assert [(c.clip_id[0], c.label, c.split) for c in src.clips] == [("a", 0, "train"), ("b", 1, "train"),
                                                                     ("d", 24, "val")]
