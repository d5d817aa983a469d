"""Dataset adapters on small hand-made fixture trees (no network), plus one end-to-end prepare."""

import json
import pickle

import av
import numpy as np
import pytest
from PIL import Image

from sefar_fast.data.adapters import GYM_NEW_PAIRS, load_source
from sefar_fast.data.prepare import prepare_from_spec
from sefar_fast.data.store import ClipStore
from sefar_fast.errors import SefarError


def write_video(path, n=10, size=(16, 16), codec="libx264", rate=10):
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


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_per_class_with_and_without_split_dirs(tmp_path):
    for cls, n in (("jump", 2), ("run", 1)):
        for i in range(n):
            touch(tmp_path / "plain" / cls / f"c{i}.mp4")
    (tmp_path / "plain" / "run" / "notes.txt").write_text("ignored")
    frames = tmp_path / "plain" / "run" / "framesclip"
    frames.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(frames / "0001.jpg")
    src = load_source(f"folder:{tmp_path / 'plain'}")
    assert src.class_names == ["jump", "run"]
    assert sorted((c.clip_id, c.label, c.split) for c in src.clips) == [
        ("jump/c0", 0, "train"), ("jump/c1", 0, "train"), ("run/c0", 1, "train"), ("run/framesclip", 1, "train")]
    touch(tmp_path / "split" / "train" / "a" / "x.mp4")
    touch(tmp_path / "split" / "val" / "b" / "x.mp4")
    src = load_source(f"folder:{tmp_path / 'split'}")
    assert sorted((c.clip_id, c.label, c.split) for c in src.clips) == [
        ("train/a/x", 0, "train"), ("val/b/x", 1, "val")]


def test_lists_folder_with_class_names(tmp_path):
    lists = tmp_path / "all99_5"
    lists.mkdir()
    (lists / "train.csv").write_bytes(b"/root/video/a.mp4 1\r\n/root/video/b.mp4 0\r\n")
    (lists / "unlabel.csv").write_bytes(b"/root/video/c.mp4 2")
    (lists / "val.csv").write_bytes(b"/root/video/d.mp4 2\n")
    src = load_source(f"lists:{lists}", root=tmp_path / "data", path_prefix="/root/video")
    assert [(c.clip_id, c.label, c.split) for c in src.clips] == [
        ("a", 1, "train"), ("b", 0, "train"), ("c", 2, "unlabel"), ("d", 2, "val")]
    assert src.clips[0].path == tmp_path / "data" / "a.mp4"
    assert src.class_names == ["class_0", "class_1", "class_2"]
    (lists / "classes.txt").write_text("x\ny\n")
    with pytest.raises(SefarError, match="unlabel.csv:1: label 2 is out of range"):
        load_source(f"lists:{lists}", root=tmp_path)
    (lists / "val.csv").write_text("/root/video/a.mp4 1\n")
    (lists / "classes.txt").write_text("x\ny\nz\n")
    with pytest.raises(SefarError, match="duplicate clip id"):
        load_source(f"lists:{lists}", root=tmp_path)


def test_ucf101_official_split(tmp_path):
    ucf = tmp_path / "ucf"
    (ucf / "ucfTrainTestlist").mkdir(parents=True)
    (ucf / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    (ucf / "ucfTrainTestlist" / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n")
    (ucf / "ucfTrainTestlist" / "testlist01.txt").write_text("HandStandPushups/v_HandStandPushups_g01_c01.avi\r\n")
    video = touch(ucf / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    src = load_source("ucf101", root=ucf)
    assert [(c.clip_id, c.label, c.split) for c in src.clips] == [
        ("v_ApplyEyeMakeup_g08_c01", 0, "train"), ("v_HandStandPushups_g08_c01", 1, "train"),
        ("v_HandStandPushups_g01_c01", 1, "test")]
    assert src.clips[2].path == video
    with pytest.raises(SefarError, match="needs --root"):
        load_source("ucf101")


def test_hmdb51_official_split(tmp_path):
    d = tmp_path / "testTrainMulti_7030_splits"
    d.mkdir()
    (d / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (d / "cartwheel_test_split1.txt").write_text("e.avi 2 \n")
    src = load_source("hmdb51:1", root=tmp_path)
    assert src.class_names == ["brush_hair", "cartwheel"]
    assert [(c.clip_id, c.label, c.split) for c in src.clips] == [
        ("a", 0, "train"), ("b", 0, "test"), ("c", 0, "train"), ("e", 1, "test")]


GYM_CATEGORIES = """Clabel:   0; set:  1; Glabel:   1; (VT) round-off, flic-flac 0.5 turn on
Clabel:   1; set: 21; Glabel:  67; (FX) switch leap 0.5 turn
Clabel:   2; set: 22; Glabel: 134; (FX) 2 turn
Clabel:   3; set: 41; Glabel: 398; (UB) pike sole circle
Clabel:   4; set: 41; Glabel: 399; (UB) giant circle
Clabel:   5; set: 42; Glabel: 453; (UB) counter straddle
"""


def make_finegym(root):
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "gym99_categories.txt").write_text(GYM_CATEGORIES)
    ids = {"train": [("yt1_E_000010_000020_A_0001_0002", 3), ("yt1_E_000010_000020_A_0003_0004", 5),
                     ("yt2_E_000005_000009_A_0000_0001", 1)],
           "val": [("yt2_E_000005_000009_A_0002_0003", 0), ("yt3_E_000100_000110_A_0000_0001", 4)]}
    (root / "annotations" / "gym99_train_element_v1.1.txt").write_text(
        "".join(f"{i} {label}\n" for i, label in ids["train"]))
    (root / "annotations" / "gym99_val_element.txt").write_text("".join(f"{i} {label}\n" for i, label in ids["val"]))
    annotation = {
        "yt1": {"E_000010_000020": {"event": 4, "timestamps": [[10.0, 20.0]], "segments": {
            "A_0001_0002": {"timestamps": [[0.2, 0.5]]}, "A_0003_0004": {"timestamps": [[0.6, 0.9]]}}}},
        "yt3": {"E_000100_000110": {"event": 4, "timestamps": [[0.5, 1.5]], "segments": {
            "A_0000_0001": {"timestamps": [[0.1, 0.4]]}}}},
    }
    (root / "finegym_annotation_info_v1.1.json").write_text(json.dumps(annotation))
    write_video(root / "clips" / "yt2_E_000005_000009_A_0000_0001.mp4")  # an element's own clip
    write_video(root / "events" / "yt1_E_000010_000020.mp4")  # an event video, elements cut by time
    write_video(root / "full" / "yt3.mp4", n=20)  # a full video: event start + element time
    return ids


def test_finegym_clips_windows_and_subsets(tmp_path):
    make_finegym(tmp_path)
    src = load_source("gym99", root=tmp_path)
    assert len(src.class_names) == 6 and src.class_names[3] == "(UB) pike sole circle"
    by_id = {c.clip_id: c for c in src.clips}
    own = by_id["yt2_E_000005_000009_A_0000_0001"]
    assert own.path.name == "yt2_E_000005_000009_A_0000_0001.mp4" and own.start is None
    cut = by_id["yt1_E_000010_000020_A_0003_0004"]
    assert cut.path.name == "yt1_E_000010_000020.mp4" and (cut.start, cut.end) == (0.6, 0.9)
    full = by_id["yt3_E_000100_000110_A_0000_0001"]
    assert full.path.name == "yt3.mp4" and (full.start, full.end) == pytest.approx((0.6, 0.9))
    missing = by_id["yt2_E_000005_000009_A_0002_0003"]
    assert missing.path == tmp_path / "yt2_E_000005_000009_A_0002_0003.mp4"
    ub = load_source("gym99:UB", root=tmp_path)
    assert ub.class_names == ["(UB) pike sole circle", "(UB) giant circle", "(UB) counter straddle"]
    assert sorted((c.clip_id[:3], c.label) for c in ub.clips) == [("yt1", 0), ("yt1", 2), ("yt3", 1)]
    ub_s1 = load_source("gym99:UB_S1", root=tmp_path)
    assert len(ub_s1.class_names) == 2 and sorted(c.label for c in ub_s1.clips) == [0, 1]
    with pytest.raises(SefarError, match="sets S1..S2"):
        load_source("gym99:UB_S3", root=tmp_path)
    # prepare decodes the own clip, the cut windows, and reports the missing one
    summary = prepare_from_spec("gym99", tmp_path / "store", root=tmp_path, workers=1)
    assert [f["clip_id"] for f in summary["failed"]] == ["yt2_E_000005_000009_A_0002_0003"]
    store = ClipStore.open(tmp_path / "store")
    frames = {r.clip_id: r.num_frames for r in store.records}
    assert frames["yt2_E_000005_000009_A_0000_0001"] == 10
    assert frames["yt1_E_000010_000020_A_0003_0004"] == 3  # 0.6, 0.7, 0.8 s at 10 fps
    assert frames["yt3_E_000100_000110_A_0000_0001"] == 3


def test_gym_new_relabels_gym288_pairs(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    olds = [106, 117, 241, 5]
    ann.joinpath("gym288_categories.txt").write_text("".join(
        f"Clabel: {c}; set: 41; Glabel: {c}; (UB) move {c}\n" for c in olds))
    ann.joinpath("gym288_train_element_v1.1.txt").write_text("a_E_1_2_A_1_2 106\nb_E_1_2_A_1_2 117\nc_E_1_2_A_1_2 5\n")
    ann.joinpath("gym288_val_element.txt").write_text("d_E_1_2_A_1_2 241\n")
    src = load_source("gym-new", root=tmp_path)
    assert len(src.class_names) == 40 == 2 * len(GYM_NEW_PAIRS)
    assert src.class_names[:2] == ["move 106", "move 117"] and src.class_names[24] == "move 241"
    assert [(c.clip_id[0], c.label, c.split) for c in src.clips] == [("a", 0, "train"), ("b", 1, "train"),
                                                                     ("d", 24, "val")]


def test_finediving_frame_folders_and_pickles(tmp_path):
    keys = [("01", 1), ("01", 2), ("FINAWorldChampionships2019_Women10m_final_r1", 3)]
    annotation = {keys[0]: {"action_type": "107B", "dive_score": 80.0}, keys[1]: ("5253B", 70.0),
                  keys[2]: {"action_type": "107B"}}
    (tmp_path / "annotations").mkdir()
    for path, data in ((tmp_path / "annotations" / "FineDiving_fine-grained_annotation.pkl", annotation),
                       (tmp_path / "train_split.pkl", keys[:2]), (tmp_path / "test_split.pkl", [list(keys[2])])):
        with open(path, "wb") as f:
            pickle.dump(data, f)
    for comp, idx in keys:
        folder = tmp_path / "FINADiving_MTL_256s" / comp / str(idx)
        folder.mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((8, 8, 3), 50 * k, np.uint8)).save(folder / f"{k:05d}.jpg")
    src = load_source("finediving", root=tmp_path)
    assert src.class_names == ["107B", "5253B"]
    assert [(c.clip_id, c.label, c.split) for c in src.clips] == [
        ("01_1", 0, "train"), ("01_2", 1, "train"), ("FINAWorldChampionships2019_Women10m_final_r1_3", 0, "test")]
    summary = prepare_from_spec("finediving", tmp_path / "store", root=tmp_path, workers=1)
    assert summary["written"] == 3 and not summary["failed"]
    assert [r.num_frames for r in ClipStore.open(tmp_path / "store").records] == [3, 3, 3]


def test_ssv2_json_and_webm(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "labels.json").write_text(json.dumps({"Pushing something": "1", "Holding something": "0"}))
    (tmp_path / "labels" / "train.json").write_text(json.dumps(
        [{"id": "11", "label": "pushing a cup", "template": "Pushing [something]", "placeholders": ["a cup"]}]))
    (tmp_path / "labels" / "validation.json").write_text(json.dumps(
        [{"id": "12", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]}]))
    write_video(tmp_path / "20bn-something-something-v2" / "11.webm", n=4, codec="libvpx-vp9")
    write_video(tmp_path / "20bn-something-something-v2" / "12.webm", n=5, codec="libvpx-vp9")
    src = load_source("ssv2", root=tmp_path)
    assert src.class_names == ["Holding something", "Pushing something"]
    assert [(c.clip_id, c.label, c.split) for c in src.clips] == [("11", 1, "train"), ("12", 0, "val")]
    summary = prepare_from_spec("ssv2", tmp_path / "store", root=tmp_path, workers=1)
    assert [r.num_frames for r in ClipStore.open(tmp_path / "store").records] == [4, 5] and not summary["failed"]


def test_unknown_spec(tmp_path):
    with pytest.raises(SefarError, match="unknown data source 'kinetics'"):
        load_source("kinetics", root=tmp_path)
