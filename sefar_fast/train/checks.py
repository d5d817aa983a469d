"""Checks of a training run's inputs, made before any long work starts.

`preflight` runs before the data is opened (which may decode a whole dataset on
first use) and checks what needs no data: files and folders named on the command
line, and option combinations the model cannot take. `check_data` runs once the
clips are known. Each problem is one `SefarError` line; situations the method has
a defined answer for (clips shorter than the elements, no unlabeled clips) are
warnings, printed once.
"""

from __future__ import annotations

from pathlib import Path

from sefar_fast.config import Config, preset_names
from sefar_fast.data.direct import SOURCE_KINDS
from sefar_fast.data.lists import LIST_SUFFIXES
from sefar_fast.errors import SefarError
from sefar_fast.models.vit_files import read_vit_state
from sefar_fast.models.weights import resolve_weights


def preflight(cfg: Config) -> None:
    d, model = cfg.data, cfg.model
    if model.pretrained:  # fetched and read now, not after the data: a wrong file is named before any decoding
        read_vit_state(resolve_weights(model.pretrained))
    if d.root is not None and not Path(d.root).is_dir():
        raise SefarError(f"--root {d.root} is not a folder; give the folder that holds the dataset's videos or frames")
    kind, sep, where = d.name.partition(":")
    if sep and kind in ("store", "folder") and not Path(where).is_dir():
        raise SefarError(f"--data {d.name}: folder {where} does not exist")
    for path in where.split(",") if sep and kind in ("lists", "rawframes") else []:
        if not Path(path).exists():
            what = "list file" if Path(path).suffix.lower() in LIST_SUFFIXES else "folder"
            raise SefarError(f"--data {d.name}: {what} {path} does not exist")
    if d.store is not None and not Path(d.store).is_dir():
        raise SefarError(f"data.store {d.store} is not a folder; give a clip store written by `sefar prepare`")
    if sep and kind not in ("store", "video") and kind.lower() not in SOURCE_KINDS:
        raise SefarError(f"--data {d.name}: unknown source kind '{kind}'; use a preset or store:DIR, lists:DIR, "
                         "folder:DIR or video:SPEC")
    if not sep and d.name not in preset_names():
        raise SefarError(f"data.name '{d.name}' is neither a preset ({', '.join(preset_names())}) nor a source "
                         "such as store:DIR, lists:DIR, folder:DIR or video:SPEC")


def check_data(cfg: Config, data, warn) -> None:
    """Checks that need the clips: `warn(text)` prints a warning (on rank 0)."""
    k = cfg.num_frames
    train = list(data.labeled) + list(data.unlabeled)
    lengths = [data.store.records[i].num_frames for i in train]
    short = [n for n in lengths if n < k]
    if short:
        warn(f"{len(short)} of {len(train)} training clips have fewer than {k} frames (shortest {min(short)}): "
             f"their elements repeat frames (the reference code's fallback); shorter method.elements avoid it")
    if cfg.method.name != "supervised" and not data.unlabeled:
        warn(f"no unlabeled clips (label rate {cfg.data.label_rate}): --method {cfg.method.name} trains "
             "supervised only")
