"""Dataset adapters on small hand-made fixture trees (no network), plus one end-to-end prepare."""

import json
import pickle

import numpy as np
import pytest
from PIL import Image
from video_files import write_video

from sefar_fast.data.adapters import load_source
from sefar_fast.data.prepare import prepare_from_spec
from sefar_fast.data.store import ClipStore
from sefar_fast.errors import SefarError


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
    (lists / "test.csv").write_bytes(b"/root/video/d.mp4 2\n")  # the authors' test.csv is their val.csv
    src = load_source(f"lists:{lists}", root=tmp_path / "data", path_prefix="/root/video")
    assert [(c.clip_id, c.label, c.split) for c in src.clips] == [
        ("a", 1, "train"), ("b", 0, "train"), ("c", 2, "unlabel"), ("d", 2, "val")]
    assert src.clips[0].path == tmp_path / "data" / "a.mp4"
    assert src.class_names == ["class_0", "class_1", "class_2"]
    assert src.notes == ["test.csv lists the same clips as val.csv (as the authors ship it): read once, as val"]
    (tmp_path / "classes.txt").write_text("jump\nspin\nturn\n")  # beside the list folder: shared by its splits
    assert load_source(f"lists:{lists}", root=tmp_path).class_names == ["jump", "spin", "turn"]
    (lists / "classes.txt").write_text("x\ny\n")  # the list folder's own wins
    with pytest.raises(SefarError, match="unlabel.csv:1: label 2 is out of range"):
        load_source(f"lists:{lists}", root=tmp_path)
    (lists / "val.csv").write_text("/root/video/a.mp4 1\n")
    (lists / "test.csv").unlink()
    (lists / "classes.txt").write_text("x\ny\nz\n")
    with pytest.raises(SefarError, match="duplicate clip id"):
        load_source(f"lists:{lists}", root=tmp_path)


def test_mmaction2_rawframe_lists_as_a_source(tmp_path):
    for clip, label in (("v_a", 0), ("v_b", 1), ("v_c", 1)):
        folder = tmp_path / "rawframes" / clip
        folder.mkdir(parents=True)
        for i in (1, 2):  # RGB frames and the flow images mmaction2's extraction writes beside them
            for prefix in ("img", "flow_x", "flow_y"):
                Image.fromarray(np.full((8, 8, 3), 40 * label, np.uint8)).save(folder / f"{prefix}_{i:05d}.jpg")
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "hmdb51_train_split_1_rawframes.txt").write_text("v_a 2 0\nv_b 2 1\n")
    (ann / "hmdb51_val_split_1_rawframes.txt").write_text("v_c 2 1\n")
    for spec in (f"lists:{ann}", f"rawframes:{ann / 'hmdb51_train_split_1_rawframes.txt'}"):
        src = load_source(spec, root=tmp_path)
        assert [(c.clip_id, c.path, c.split) for c in src.clips] == [
            ("v_a", tmp_path / "rawframes/v_a", "train"), ("v_b", tmp_path / "rawframes/v_b", "train"),
            ("v_c", tmp_path / "rawframes/v_c", "val")]
    summary = prepare_from_spec(f"lists:{ann}", tmp_path / "store", root=tmp_path, workers=1)
    assert not summary["failed"]
    assert [r.num_frames for r in ClipStore.open(tmp_path / "store").records] == [2, 2, 2]  # flow images left out


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
