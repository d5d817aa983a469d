"""Reference-format list files: line ends, prefix remapping, bad lines and labels, split folders."""

import pytest

from sefar_fast.data.lists import PathResolver, read_list, read_split_folder
from sefar_fast.errors import SefarError


def make_videos(root, names):
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_crlf_missing_final_newline_and_prefix_remap(tmp_path):
    data = tmp_path / "data"
    make_videos(data, ["video/a_E_1_2_A_3_4.mp4", "video/b c.mp4"])
    lst = tmp_path / "train.csv"
    lst.write_bytes(b"/root/video/a_E_1_2_A_3_4.mp4 3\r\n\r\n/root/video/b c.mp4 0")  # CRLF, blank line, no final \n
    entries = read_list(lst, num_classes=4, root=data)
    assert [(e.path, e.label) for e in entries] == [(data / "video/a_E_1_2_A_3_4.mp4", 3), (data / "video/b c.mp4", 0)]
    assert entries[1].source == f"{lst}:3"


def test_remap_keeps_the_longest_existing_remainder(tmp_path):
    make_videos(tmp_path, ["UCF-101/Fencing/v_1.avi", "Fencing/v_1.avi", "v_2.avi"])
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


def test_comma_separated_lines_are_read(tmp_path):
    lst = tmp_path / "train.csv"
    lst.write_text("a/v.avi,1\nb/w.avi,0\n")
    assert [e.label for e in read_list(lst, root=tmp_path)] == [1, 0]


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


def test_split_folder(tmp_path):
    for name, text in [("train.csv", "a.mp4 0\n"), ("unlabe.csv", "b.mp4 1\n"), ("val.csv", "c.mp4 1\n")]:
        (tmp_path / name).write_text(text)
    splits = read_split_folder(tmp_path, num_classes=2)
    assert sorted(splits) == ["train", "unlabel", "val"]
    assert splits["unlabel"][0].path == tmp_path / "b.mp4"
    (tmp_path / "val.csv").unlink()
    with pytest.raises(SefarError, match="neither val.csv nor test.csv"):
        read_split_folder(tmp_path)
    with pytest.raises(SefarError, match="does not exist"):
        read_list(tmp_path / "nope.csv")
