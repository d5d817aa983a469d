"""`sefar data info`: split counts from the list and annotation files alone, at the preset's label rate."""

import sys

import pytest

import sefar_fast.data.prepare as prepare_module
import sefar_fast.data.video as video_module
from sefar_fast.config import build_config
from sefar_fast.data.info import source_info


@pytest.fixture
def no_decoding(monkeypatch, tmp_path):
    """Any decode or prepare fails the test; the cache must stay empty."""
    def refuse(*args, **kwargs):
        raise AssertionError("data info decoded a clip")

    monkeypatch.setattr(video_module, "read_clip", refuse)
    monkeypatch.setattr(prepare_module, "prepare", refuse)
    monkeypatch.setenv("SEFAR_CACHE", str(tmp_path / "cache"))
    yield
    assert not (tmp_path / "cache").exists()


def authors_folder(root, counts):
    """A list folder as the authors ship it (CRLF, /root/video paths, test.csv = val.csv); clip i of a split
    has label i % 3; the first clip of each split exists under root/subactions."""
    folder = root / "all99_5"
    folder.mkdir(parents=True)
    for split, n in counts.items():
        rows = [f"/root/video/{split}{i}_E_000001_000002_A_0000_0001.mp4 {i % 3}" for i in range(n)]
        (folder / f"{split}.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
        video = root / "subactions" / f"{split}0_E_000001_000002_A_0000_0001.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(b"")
    (folder / "test.csv").write_bytes((folder / "val.csv").read_bytes())
    return folder


def test_the_authors_lists_are_counted_as_they_split(tmp_path, no_decoding):
    folder = authors_folder(tmp_path, {"train": 13, "unlabel": 250, "val": 85})
    info = source_info(build_config(f"lists:{folder}", None, {"data.root": str(tmp_path)}, []))
    assert info.counts == {"labeled": 13, "unlabeled": 250, "val": 85}  # test.csv is val.csv: counted once
    assert info.label_rate is None and len(info.class_names) == 3
    assert info.missing == {"labeled": 12, "unlabeled": 249, "val": 84}  # one file of each split is there
    assert info.notes == ["test.csv lists the same clips as val.csv (as the authors ship it): read once, as val"]


def test_a_preset_splits_at_its_own_label_rate(tmp_path, no_decoding):
    ann = tmp_path / "annotations"
    ann.mkdir()
    # 40 train clips of 2 classes: 5% labels one clip per class, 10% two
    (ann / "gym99_train_element_v1.1.txt").write_text("".join(f"y{i}_E_000001_000002_A_0000_0001 {i % 2}\n"
                                                              for i in range(40)))
    (ann / "gym99_val_element.txt").write_text("v_E_000001_000002_A_0000_0001 0\n")
    cfg = build_config("gym99", None, {"data.root": str(tmp_path)}, [])
    assert cfg.data.label_rate == 0.05
    info = source_info(cfg)
    assert info.counts == {"labeled": 2, "unlabeled": 38, "val": 1} and info.label_rate == 0.05
    assert len(info.class_names) == 99
    assert source_info(build_config("gym99", None, {"data.root": str(tmp_path), "data.label_rate": 0.1},
                                    [])).counts["labeled"] == 4


def test_the_command_prints_the_counts_and_notes(tmp_path, no_decoding, monkeypatch, capsys):
    folder = authors_folder(tmp_path, {"train": 4, "unlabel": 8, "val": 3})
    monkeypatch.setattr(sys, "argv", ["sefar", "data", "info", "--data", f"lists:{folder}", "--root", str(tmp_path)])
    monkeypatch.setenv("COLUMNS", "200")
    from sefar_fast.cli.app import main

    main()
    out = capsys.readouterr().out
    assert "3 classes, labeled as the lists say" in out
    cells = [[c.strip() for c in line.strip("│ ").split("│")] for line in out.splitlines()]
    rows = {c[0]: c[1:] for c in cells if c[0] in ("labeled", "unlabeled", "val")}
    assert rows == {"labeled": ["4", "3"], "unlabeled": ["8", "7"], "val": ["3", "2"]}
    assert "note: test.csv lists the same clips as val.csv" in out
