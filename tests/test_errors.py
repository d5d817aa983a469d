"""The bad-input table of docs/errors.md: every row's command gets exactly the message the table shows.

Each row runs in a scratch folder laid out by `scratch` (the files the commands name), through the CLI
entry point in this process; `VAR=value` words in front of a command set its environment. Training rows get `--device cpu data.synth_clips_per_class=4` in front of
their own arguments, which only makes them find the test session's small synth store (and never
changes the message); everything after that is the row's command as written.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli as run_sefar

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
FAST = ["--device", "cpu", "data.synth_clips_per_class=4"]
ROW = re.compile(r"^\|\s*(\d+)\s*\|(.*)\|\s*`((?:[A-Z_]+=\S+ )*sefar [^`]+)`\s*\|\s*(.*?)\s*\|\s*$")


def table_rows() -> list[tuple[int, str, str]]:
    """(number, command, message or 'warning: ...') from the doc's table."""
    rows = []
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m:
            code = re.fullmatch(r"(`+) ?(.*?) ?\1", m.group(4).strip())  # `text`, or `` text `` if it holds a `
            assert code, line
            rows.append((int(m.group(1)), m.group(3), code.group(2)))
    return rows


def make_scratch(root: Path) -> None:
    """The files and folders the table's commands name."""
    from safetensors.torch import save_file

    from sefar_fast.checkpoint import save_weights
    from sefar_fast.config import build_config
    from sefar_fast.data.store import ClipData, ClipStore

    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run\n")
    (root / "videos").mkdir()
    for name, bad_line in (("lists-text-label", "/x/b.mp4 x"), ("lists-negative-label", "/x/b.mp4 -3")):
        (root / name).mkdir()
        (root / name / "train.csv").write_text(f"/x/a.mp4 0\r\n{bad_line}\r\n")
        (root / name / "val.csv").write_text("/x/c.mp4 0\n")
    (root / "two-train-lists").mkdir()
    for name in ("gym99_train.txt", "gym99_train_org.txt", "gym99_val.txt"):
        (root / "two-train-lists" / name).write_text("a_E_000001_000002_A_0000_0001 0\n")
    (root / "broken.yaml").write_text("optim: [1\n")
    (root / "list.yaml").write_text("- optim\n- model\n")
    (root / "typo.yaml").write_text("optim:\n  lrr: 0.1\n")
    lists = {"lists-label-typo": {"train": ["/x/a.mp4 0", "/x/b.mp4 1", "/x/c.mp4 19"], "val": ["/x/d.mp4 1"]},
             "lists-own-split": {"train": ["/x/a.mp4 0", "/x/b.mp4 1"], "unlabel": [f"/x/u{i}.mp4 0" for i in range(6)],
                                 "val": ["/x/d.mp4 1"]},
             "lists-bad-line": {"train": ["/x/a.mp4 0", "just-a-path"], "val": ["/x/d.mp4 0"]}}
    for name, files in lists.items():
        (root / name).mkdir()
        for split, lines in files.items():
            (root / name / f"{split}.csv").write_text("".join(f"{line}\n" for line in lines))
    (root / "broken.safetensors").write_bytes(b"not a checkpoint")
    # timm-layout ViT weights 64 wide (vit-test is 32)
    save_file({"patch_embed.proj.weight": torch.zeros(64, 3, 8, 8), "norm.weight": torch.ones(64),
               "norm.bias": torch.zeros(64), "blocks.0.norm1.weight": torch.ones(64)}, str(root / "vit-w64.safetensors"))
    rng = np.random.default_rng(0)
    clips = [ClipData(f"c{i}", i % 3, "train" if i < 6 else "val", rng.integers(0, 255, (10, 32, 32, 3), np.uint8))
             for i in range(9)]
    ClipStore.write(root / "store-3-classes", clips, ["a", "b", "c"]).close()

    # Run folders: config.yaml as `sefar train` writes it, and the marker files that matter.
    def run_folder(name: str, epochs: int) -> tuple[Path, dict]:
        folder = root / "runs" / name
        folder.mkdir(parents=True)
        cfg = build_config("synth", None, {"optim.epochs": epochs, "run.out": f"runs/{name}", "run.device": "cpu"},
                           ["data.synth_clips_per_class=4", "method.warmup_epochs=1"])
        (folder / "config.yaml").write_text(cfg.to_yaml())
        return folder, cfg.to_dict()

    finished, _ = run_folder("finished", 6)
    (finished / "finished").write_text("{}\n")
    unfinished, config = run_folder("unfinished", 6)
    meta = {"config": config, "class_names": [f"c{i}" for i in range(20)]}
    save_weights(unfinished / "last.safetensors", {"w": torch.zeros(1)}, None, meta)
    save_weights(root / "synth-20-classes.safetensors", {"w": torch.zeros(1)}, None, meta)
    make_checkpoints_and_stores(root)


def make_checkpoints_and_stores(root: Path) -> None:
    """A real (untrained) vit-test checkpoint and one whose teacher holds a NaN; a store whose prepare could not
    read one clip; run folders with a pickled state and with a corrupt last checkpoint."""
    import contextlib

    from PIL import Image

    from sefar_fast.checkpoint import save_state, save_weights
    from sefar_fast.config import build_config
    from sefar_fast.data.adapters import SourceClip, SourceSet
    from sefar_fast.data.prepare import prepare
    from sefar_fast.models import model_from_config

    cfg = build_config("synth", None, {"model.arch": "vit-test", "model.pretrained": "none", "run.device": "cpu"},
                       ["data.synth_clips_per_class=4", "data.frame_size=[32,32]", "data.crop=32",
                        "data.scale_range=[32,36]", "eval.views=1x1"])
    torch.manual_seed(0)
    weights = model_from_config(cfg, 20).state_dict()
    meta = {"config": cfg.to_dict(), "class_names": [f"c{i}" for i in range(20)]}
    save_weights(root / "tiny-vit.safetensors", weights, {k: v.clone() for k, v in weights.items()}, meta)
    poisoned = {k: v.clone() for k, v in weights.items()}
    poisoned["head.classifier.weight"].view(-1)[0] = float("nan")
    save_weights(root / "nan-weights.safetensors", weights, poisoned, meta)
    with contextlib.chdir(root):  # relative paths, as a user would give them
        clips = []
        for i in range(4):
            folder = Path("frames") / f"clip{i}"
            folder.mkdir(parents=True)
            for f in range(8):
                Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(folder / f"{f:05d}.jpg")
            clips.append(SourceClip(f"clip{i}", folder, i % 2, "train" if i < 3 else "val"))
        clips.append(SourceClip("gone", Path("frames") / "missing", 0, "train"))
        prepare(SourceSet("frames", clips, ["a", "b"]), "store-dropped", short_side=None, workers=1)
    for name in ("pickled", "corrupt-last"):
        run = root / "runs" / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text((root / "runs" / "unfinished" / "config.yaml").read_text())
    save_weights(root / "runs" / "pickled" / "last.safetensors", {"w": torch.zeros(1)}, None,
                 {**meta, "checkpoint_id": "c1"})
    torch.save({"checkpoint_id": "c1"}, root / "runs" / "pickled" / "last.state")  # what an older sefar wrote
    save_weights(root / "runs" / "corrupt-last" / "epoch-001.safetensors", {"w": torch.zeros(1)}, None,
                 {**meta, "checkpoint_id": "c1", "global_step": 3})
    save_state(root / "runs" / "corrupt-last" / "last.state", {"checkpoint_id": "c1"})
    (root / "runs" / "corrupt-last" / "last.safetensors").write_bytes(b"cut short")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    make_scratch(root)
    return root


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """(exit status, the non-empty lines printed on stderr)."""
    code, err = run_sefar(args, monkeypatch, capsys)
    return code, [line for line in err.splitlines() if line.strip()]


ROWS = table_rows()


def test_the_table_is_there_and_numbered_in_order():
    assert len(ROWS) >= 30
    assert [n for n, _, _ in ROWS] == list(range(1, len(ROWS) + 1))


@pytest.mark.parametrize("number,command,message", ROWS, ids=[f"row{n}" for n, _, _ in ROWS])
def test_row(number, command, message, scratch, synth_cache, monkeypatch, capsys):
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    words = shlex.split(command)
    while "=" in words[0]:  # VAR=value in front of the command: its environment
        name, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(name, value)
    args = words[1:]
    if args[0] == "train":
        args = ["train", *FAST, *args[1:]]
    if message.startswith("warning:"):  # the run goes on: exit 0, and the warning among its output
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            code, lines = run_cli(args, monkeypatch, capsys)
        finally:
            torch.set_num_threads(before)
        assert code == 0, lines
        assert message in lines, lines
        return
    code, lines = run_cli(args, monkeypatch, capsys)
    assert code == 2
    assert lines == [message]
