"""Inputs mean what they say: a label beyond the classes is an error at its file:line, a source's own
unlabeled list and --label-rate follow one rule, clips the source could not read are listed (and refused
with --strict), classes no labeled clip teaches are warned about; the run folder records what was used.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sefar_fast.config import build_config
from sefar_fast.data.adapters import SourceClip, SourceSet, load_source
from sefar_fast.data.datasets import open_dataset
from sefar_fast.data.prepare import prepare
from sefar_fast.errors import SefarError
from sefar_fast.train.checks import check_data, check_list_folder


def write_lists(folder, **lists: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in lists.items():
        (folder / f"{name}.csv").write_text("".join(f"{line}\n" for line in lines))


def test_a_label_beyond_the_others_is_refused_at_its_line(tmp_path):
    write_lists(tmp_path / "l", train=["a.mp4 0", "b.mp4 1", "c.mp4 19"], val=["d.mp4 1"])
    with pytest.raises(SefarError) as e:
        load_source(f"lists:{tmp_path / 'l'}")
    assert str(e.value) == (f"{tmp_path / 'l' / 'train.csv'}:3: label 19 leaves classes 2..18 with no clip in any "
                            "list; labels are 0..C-1 with every class used: fix the label, or name the classes in a "
                            "classes.txt next to the lists (one per line)")
    # a class missing in the middle is named as such; a class present only in val is fine here
    write_lists(tmp_path / "m", train=["a.mp4 0", "b.mp4 2"], val=["d.mp4 3"])
    with pytest.raises(SefarError, match=r"train.csv:2: label 2 leaves class 1 with no clip"):
        load_source(f"lists:{tmp_path / 'm'}")
    write_lists(tmp_path / "ok", train=["a.mp4 0", "b.mp4 1"], val=["d.mp4 2"])
    assert load_source(f"lists:{tmp_path / 'ok'}").class_names == ["class_0", "class_1", "class_2"]
    # with classes.txt the count is declared: 5 classes, 3 unused, accepted
    write_lists(tmp_path / "named", train=["a.mp4 0", "b.mp4 4"], val=["d.mp4 0"])
    (tmp_path / "named" / "classes.txt").write_text("a\nb\nc\nd\ne\n")
    assert len(load_source(f"lists:{tmp_path / 'named'}").class_names) == 5


def test_the_configs_class_count_bounds_the_list_labels_before_any_decoding(tmp_path):
    write_lists(tmp_path / "l", train=["a.mp4 0", "b.mp4 1", "c.mp4 2"], val=["d.mp4 1"])
    cfg = build_config(f"lists:{tmp_path / 'l'}", None, {"data.num_classes": 2}, [])
    with pytest.raises(SefarError, match=r"train.csv:3: label 2 is out of range \(labels must be 0\.\.1\)"):
        check_list_folder(cfg)


def test_a_label_rate_must_state_the_lists_own_split(tmp_path):
    write_lists(tmp_path / "l", train=["a.mp4 0", "b.mp4 1"], unlabel=[f"u{i}.mp4 0" for i in range(6)],
                val=["d.mp4 1"])
    source = f"lists:{tmp_path / 'l'}"
    with pytest.raises(SefarError) as e:
        check_list_folder(build_config(source, None, {"data.label_rate": 0.1}, []))
    assert str(e.value) == (f"{source} has its own split, 2 labeled and 6 unlabeled clips (its unlabel list): a label "
                            "rate of 0.25, but data.label_rate is 0.1; pass --label-rate 0.25 to train on that split, "
                            "or remove the unlabel list to split the labeled list at 0.1")
    check_list_folder(build_config(source, None, {"data.label_rate": 0.25}, []))
    check_list_folder(build_config(source, None, {"data.label_rate": 0.253}, []))  # within half a point


def frames_folder(folder, value: int):
    folder.mkdir(parents=True)
    for f in range(4):
        Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(folder / f"{f:05d}.jpg")
    return folder


@pytest.fixture
def store_with_gaps(tmp_path):
    """A prepared store: 3 classes; class 2 only in val; one unlabel clip and one val clip unreadable."""
    clips = [SourceClip(f"t{i}", frames_folder(tmp_path / "src" / f"t{i}", 10 * i), i % 2, "train") for i in range(4)]
    clips += [SourceClip(f"u{i}", frames_folder(tmp_path / "src" / f"u{i}", 50 + i), 0, "unlabel") for i in range(3)]
    clips += [SourceClip("u-gone", tmp_path / "src" / "missing", 0, "unlabel"),
              SourceClip("v0", frames_folder(tmp_path / "src" / "v0", 90), 2, "val")]
    prepare(SourceSet("gaps", clips, ["a", "b", "c"]), tmp_path / "store", short_side=None, workers=1)
    return tmp_path / "store"


def test_dropped_clips_and_untaught_classes_are_warned_recorded_and_strict_refuses(store_with_gaps, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = build_config(f"store:{store_with_gaps}", None, {"data.label_rate": 0.571}, ["method.elements=[4]"])
    ds = open_dataset(cfg, run)
    warnings: list[str] = []
    check_data(cfg, ds, warnings.append, record=str(run / "split.json"))
    assert len(warnings) == 2, warnings
    assert warnings[0] == (f"1 clip(s) of store:{store_with_gaps} could not be read and are left out ("
                           f"{tmp_path / 'src' / 'missing'}: {ds.dropped[0]['error']}); all are listed in "
                           f"{run / 'split.json'} (--strict refuses such data)")
    assert warnings[1] == (f"1 of 3 classes have no labeled clip (c): nothing teaches the model these classes; they "
                           f"are listed in {run / 'split.json'}")
    record = json.loads((run / "split.json").read_text())
    assert record["split_from"] == "the source's unlabel list" and record["requested_label_rate"] == 0.571
    assert record["label_rate"] == pytest.approx(4 / 7)  # 4 labeled of the 7 training clips actually there
    assert record["classes_without_labeled_clips"] == ["c"]
    assert [d["clip_id"] for d in record["dropped_clips"]] == ["u-gone"]
    with pytest.raises(SefarError, match=r"^1 clip\(s\) of .* --strict refuses to train without them"):
        check_data(cfg, ds, warnings.append, strict=True)
    with pytest.raises(SefarError, match="has its own split, 4 labeled and 3 unlabeled clips"):
        check_data(build_config(f"store:{store_with_gaps}", None, {"data.label_rate": 0.1}, []), ds, print)
