"""List files: line formats, prefix remapping, bad lines and labels, split folders and files.

The authors' folders are built here byte for byte as the released code ships them (CRLF, absolute
`/root/...` paths, test.csv the same file as val.csv, `list_ucf_5`'s commas and `unlabe.csv`,
finegym-new's LF and missing final newline), and mmaction2's lists as its tools write them.
"""

import pytest

from sefar_fast.data.lists import (
    PathResolver,
    find_split_files,
    index_names,
    read_class_names,
    read_list,
    read_splits,
    split_of_name,
)
from sefar_fast.errors import SefarError


def make_files(root, names):
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_crlf_missing_final_newline_and_prefix_remap(tmp_path):
    data = tmp_path / "data"
    make_files(data, ["video/a_E_1_2_A_3_4.mp4", "video/b c.mp4"])
    lst = tmp_path / "train.csv"
    lst.write_bytes(b"/root/video/a_E_1_2_A_3_4.mp4 3\r\n\r\n/root/video/b c.mp4 0")  # CRLF, blank line, no final \n
    entries = read_list(lst, num_classes=4, root=data)
    assert [(e.path, e.label) for e in entries] == [(data / "video/a_E_1_2_A_3_4.mp4", 3), (data / "video/b c.mp4", 0)]
    assert entries[1].source == f"{lst}:3"


def test_remap_keeps_the_longest_existing_remainder(tmp_path):
    make_files(tmp_path, ["UCF-101/Fencing/v_1.avi", "Fencing/v_1.avi", "v_2.avi"])
    resolve = PathResolver(tmp_path)
    assert resolve("/root/UCF-101/Fencing/v_1.avi") == tmp_path / "UCF-101/Fencing/v_1.avi"
    assert resolve("/media/x/Fencing/v_1.avi") == tmp_path / "Fencing/v_1.avi"
    assert resolve("/root/a/b/v_2.avi") == tmp_path / "v_2.avi"
    # explicit prefix wins, even when the file is missing; relative paths go under root
    explicit = PathResolver(tmp_path, path_prefix="/root/")
    assert explicit("/root/video/zz.mp4") == tmp_path / "video/zz.mp4"
    assert explicit("rel/v.mp4") == tmp_path / "rel/v.mp4"
    # an absolute path that exists is kept as is
    assert PathResolver(tmp_path / "elsewhere")(str(tmp_path / "v_2.avi")) == tmp_path / "v_2.avi"


def test_a_clip_anywhere_under_root_is_found_by_name(tmp_path):
    # mmaction2 keeps FineGym's clips in subactions/ and its frames in subaction_frames/<clip>/
    make_files(tmp_path, ["subactions/a_E_1_2_A_3_4.mp4", "subaction_frames/b_E_1_2_A_0_1/img_00001.jpg",
                          "x/dup.mp4", "y/dup.mp4"])
    resolve = PathResolver(tmp_path)
    assert resolve("/root/video/a_E_1_2_A_3_4.mp4") == tmp_path / "subactions/a_E_1_2_A_3_4.mp4"
    assert resolve("a_E_1_2_A_3_4.mp4") == tmp_path / "subactions/a_E_1_2_A_3_4.mp4"  # relative, as mmaction2 writes
    # a frame folder answers for a video name with its stem
    assert resolve("/root/video/b_E_1_2_A_0_1.mp4") == tmp_path / "subaction_frames/b_E_1_2_A_0_1"
    # a name found twice is not guessed: the plausible path is returned for the error to name
    assert resolve("/root/video/dup.mp4") == tmp_path / "dup.mp4"
    # frame folders are indexed, not walked: their images are not clips
    assert "img_00001.jpg" not in index_names(tmp_path)


def test_comma_separated_lines_and_paths_with_spaces_and_commas(tmp_path):
    lst = tmp_path / "train.csv"
    lst.write_text("a/v.avi,1\nb/w.avi, 0\nc/my clip, take 2.avi 12\n")
    entries = read_list(lst, root=tmp_path)
    assert [(e.path.name, e.label) for e in entries] == [("v.avi", 1), ("w.avi", 0), ("my clip, take 2.avi", 12)]


def test_mmaction2_rawframe_lists_are_detected_or_named(tmp_path):
    make_files(tmp_path, ["frames/clip_a/img_00001.jpg", "frames/clip b/img_00001.jpg"])
    lst = tmp_path / "ucf101_train_split_1_rawframes.txt"
    lst.write_text("clip_a 163 1\nclip b 20 0\n")  # frame_dir total_frames label; a folder name with a space
    entries = read_list(lst, root=tmp_path)
    assert [(e.path, e.label) for e in entries] == [(tmp_path / "frames/clip_a", 1), (tmp_path / "frames/clip b", 0)]
    # one line that is not rawframe-shaped makes it a video list...
    mixed = tmp_path / "mixed_train.txt"
    mixed.write_text("clip_a 163 1\nv.mp4 0\n")
    assert [e.label for e in read_list(mixed, root=tmp_path)] == [1, 0]
    assert read_list(mixed, root=tmp_path)[0].path.name == "clip_a 163"
    # ...unless the format is named
    with pytest.raises(SefarError, match=r"mixed_train\.txt:2: expected '<frame folder> <total frames> <label>'"):
        read_list(mixed, root=tmp_path, fmt="rawframes")


@pytest.mark.parametrize("content, line, message", [
    ("a.mp4 1\nonlyonefield\n", 2, "expected '<path> <label>'"),
    ("a.mp4 1\r\nb.mp4 x\r\n", 2, "label 'x' is not an integer"),
    ("a.mp4 1\nb.mp4 2\nc.mp4 5", 3, "label 5 is out of range"),
    ("a.mp4 -1\n", 1, "label -1 is out of range"),
])
def test_bad_lines_name_file_and_line(tmp_path, content, line, message):
    lst = tmp_path / "val.csv"
    lst.write_text(content)
    with pytest.raises(SefarError, match=f"val.csv:{line}: {message}"):
        read_list(lst, num_classes=5)


def authors_all99_5(folder):
    """A FineGym split folder as the authors ship it: CRLF, /root/video paths, test.csv == val.csv."""
    folder.mkdir(parents=True)
    rows = {"train": [("yt1_E_000010_000020_A_0001_0002", 3)], "unlabel": [("yt1_E_000010_000020_A_0003_0004", 5)],
            "val": [("yt2_E_000005_000009_A_0002_0003", 0), ("yt3_E_000100_000110_A_0000_0001", 4)]}
    for split, clips in rows.items():
        text = "".join(f"/root/video/{clip}.mp4 {label}\r\n" for clip, label in clips).encode()
        (folder / f"{split}.csv").write_bytes(text)
    (folder / "test.csv").write_bytes((folder / "val.csv").read_bytes())
    return rows


def test_the_authors_finegym_folder_reads_as_shipped(tmp_path):
    rows = authors_all99_5(tmp_path / "finegym" / "all99_5")
    splits, notes = read_splits(str(tmp_path / "finegym" / "all99_5"), root=tmp_path / "videos")
    assert sorted(splits) == ["train", "unlabel", "val"]  # test.csv is val.csv: read once
    for split, clips in rows.items():
        assert [(e.path.stem, e.label) for e in splits[split]] == clips
    assert notes == ["test.csv lists the same clips as val.csv (as the authors ship it): read once, as val"]


def test_the_authors_ucf_and_gym_new_folders_read_as_shipped(tmp_path):
    ucf = tmp_path / "list_ucf_5"
    ucf.mkdir()
    (ucf / "train.csv").write_bytes(b"/root/UCF-101/Fencing/v_Fencing_g01_c01.avi,27\r\n")
    (ucf / "unlabe.csv").write_bytes(b"/root/UCF-101/Fencing/v_Fencing_g02_c01.avi,27\r\n")  # the misspelling
    (ucf / "val.csv").write_bytes(b"/root/UCF-101/Diving/v_Diving_g01_c01.avi 25\r\n")
    (ucf / "test.csv").write_bytes((ucf / "val.csv").read_bytes())
    splits, _ = read_splits(str(ucf), root=tmp_path)
    assert {s: [(e.path.name, e.label) for e in es] for s, es in splits.items()} == {
        "train": [("v_Fencing_g01_c01.avi", 27)], "unlabel": [("v_Fencing_g02_c01.avi", 27)],
        "val": [("v_Diving_g01_c01.avi", 25)]}
    new = tmp_path / "finegym-new" / "list_finegym_new_10"
    new.mkdir(parents=True)
    (new / "train.csv").write_text("/root/video/a.mp4 0\n/root/video/b.mp4 1\n")
    (new / "unlabel.csv").write_text("/root/video/c.mp4 1")  # no final newline
    (new / "val.csv").write_text("/root/video/d.mp4 0\n")
    (new / "total.csv").write_text("/media/hyl/x.mp4 0\n")  # shipped beside UB_10's lists, never read
    splits, notes = read_splits(str(new), root=tmp_path)
    assert {s: len(es) for s, es in splits.items()} == {"train": 2, "unlabel": 1, "val": 1} and notes == []


def test_a_test_list_with_other_clips_stays_a_split(tmp_path):
    (tmp_path / "train.csv").write_text("a.mp4 0\n")
    (tmp_path / "val.csv").write_text("b.mp4 1\nd.mp4 0\n")
    (tmp_path / "test.csv").write_bytes(b"d.mp4 0\r\nb.mp4 1\r\n")  # the same clips, other order and line ends
    splits, notes = read_splits(str(tmp_path))
    assert sorted(splits) == ["train", "val"] and len(notes) == 1
    (tmp_path / "test.csv").write_text("c.mp4 1\n")
    splits, notes = read_splits(str(tmp_path))
    assert sorted(splits) == ["test", "train", "val"] and notes == []


def test_mmaction2_folders_and_files(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    for name in ("gym99_train.txt", "gym99_val.txt"):
        (ann / name).write_text("x_E_1_2_A_0_1.mp4 3\n")
    assert find_split_files(str(ann)) == {"train": ann / "gym99_train.txt", "val": ann / "gym99_val.txt"}
    # a lone train file brings its siblings; files name their split
    assert find_split_files(str(ann / "gym99_train.txt")) == {"train": ann / "gym99_train.txt",
                                                              "val": ann / "gym99_val.txt"}
    (ann / "gym99_train_org.txt").write_text("x_E_1_2_A_0_1 3\n")
    with pytest.raises(SefarError, match=r"several train lists \(gym99_train\.txt, gym99_train_org\.txt\); "
                                         r"name the files"):
        find_split_files(str(ann))
    both = f"{ann / 'gym99_train_org.txt'},{ann / 'gym99_val.txt'}"
    assert find_split_files(both) == {"train": ann / "gym99_train_org.txt", "val": ann / "gym99_val.txt"}
    (ann / "notes.txt").write_text("x 1\n")
    with pytest.raises(SefarError, match="cannot tell which split list file .*notes.txt holds"):
        find_split_files(f"{ann / 'gym99_train.txt'},{ann / 'notes.txt'}")


def test_split_words_in_names():
    from pathlib import Path

    cases = {"gym99_val_org.txt": "val", "ucf101_train_split_1_videos.txt": "train", "unlabe.csv": "unlabel",
             "kinetics400_val_list_rawframes.txt": "val", "trainlist01.txt": None, "validation.csv": "val"}
    assert {name: split_of_name(Path(name)) for name in cases} == cases


def test_split_folder_errors(tmp_path):
    for name, text in [("train.csv", "a.mp4 0\n"), ("unlabe.csv", "b.mp4 1\n"), ("val.csv", "c.mp4 1\n")]:
        (tmp_path / name).write_text(text)
    splits, _ = read_splits(str(tmp_path), num_classes=2)
    assert sorted(splits) == ["train", "unlabel", "val"]
    assert splits["unlabel"][0].path == tmp_path / "b.mp4"
    (tmp_path / "val.csv").unlink()
    with pytest.raises(SefarError, match="has neither a val nor a test list"):
        read_splits(str(tmp_path))
    with pytest.raises(SefarError, match="list folder .*nope does not exist"):
        read_splits(str(tmp_path / "nope"))
    with pytest.raises(SefarError, match="does not exist"):
        read_list(tmp_path / "nope.csv")


def test_class_names_plain_or_finegym_category_lines(tmp_path):
    plain = tmp_path / "classes.txt"
    plain.write_bytes(b"\xef\xbb\xbfjump\r\nspin\r\n")  # BOM and CRLF
    assert read_class_names(plain) == ["jump", "spin"]
    gym = tmp_path / "label_map_gym99.txt"
    gym.write_text("Clabel:   0; set:  1; Glabel:   1; (VT) round-off, flic-flac with 0.5 turn on\n"
                   "Clabel:   1; set: 21; Glabel:  67; (FX) switch leap with 0.5 turn\n")
    assert read_class_names(gym) == ["(VT) round-off, flic-flac with 0.5 turn on", "(FX) switch leap with 0.5 turn"]
