"""Checks of a training run's inputs, made before any long work starts.

`preflight` runs before the data is opened (which may decode a whole dataset on
first use) and checks what needs no data: files and folders named on the command
line, the source's name, and what a list folder's files alone tell (labels in range,
a label rate that states the lists' own split). `check_data` runs once the clips are
known: the split, clips the source could not read (`--strict`), classes without a
labeled clip. Each problem is one `SefarError` line; situations the method has
a defined answer for (clips shorter than the elements, no unlabeled clips) are
warnings, printed once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sefar_fast.config import Config, preset_names
from sefar_fast.data.adapters import load_source
from sefar_fast.data.direct import SOURCE_KINDS, video_spec
from sefar_fast.data.lists import LIST_SUFFIXES, read_splits
from sefar_fast.errors import SefarError
from sefar_fast.models.packaged import check_packaged_arch
from sefar_fast.models.vit_files import read_vit_state
from sefar_fast.models.weights import resolve_weights

OWN_SPLIT_TOLERANCE = 0.005  # a label rate this close to a source's own split states it
DROPPED_SHOWN = 5  # unreadable clips named in the warning (split.json lists them all)


def preflight(cfg: Config) -> None:
    d, model = cfg.data, cfg.model
    if model.pretrained:  # fetched and read now, not after the data: a wrong file is named before any decoding
        check_packaged_arch(model.pretrained, model.arch)
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
    check_list_folder(cfg)


def check_list_folder(cfg: Config) -> None:
    """`--data lists:DIR` (or list files, or gym99:lists=DIR): what the list files alone tell, before their
    clips are decoded (which may take hours): labels within data.num_classes (file:line), and a label rate
    that states the lists' own split."""
    spec = video_spec(cfg.data.name) or cfg.data.name
    kind, _, where = spec.partition(":")
    if kind not in ("lists", "rawframes") and "lists=" not in where:  # (gym99:lists=DIR: the authors' lists)
        return
    if cfg.data.num_classes and kind in ("lists", "rawframes"):  # labels below the config's class count
        read_splits(where, num_classes=cfg.data.num_classes, root=cfg.data.root,
                    fmt="rawframes" if kind == "rawframes" else "auto")
    clips = Counter(c.split for c in load_source(spec, root=cfg.data.root).clips)
    if clips["unlabel"]:
        check_own_split(cfg, spec, clips["train"], clips["unlabel"])


def check_own_split(cfg: Config, source: str, labeled: int, unlabeled: int) -> None:
    """A source with an unlabel list is trained on that split, so --label-rate must state its rate
    (within half a percentage point): the run's config.yaml then says what was trained."""
    actual = labeled / max(1, labeled + unlabeled)
    if abs(actual - cfg.data.label_rate) > OWN_SPLIT_TOLERANCE:
        raise SefarError(f"{source} has its own split, {labeled} labeled and {unlabeled} unlabeled clips (its "
                         f"unlabel list): a label rate of {actual:.3g}, but data.label_rate is {cfg.data.label_rate}; "
                         f"pass --label-rate {actual:.3g} to train on that split, or remove the unlabel list to split "
                         f"the labeled list at {cfg.data.label_rate}")


def check_data(cfg: Config, data, warn, *, strict: bool = False, record: str = "split.json") -> None:
    """Checks that need the clips: `warn(text)` prints a warning (on rank 0). strict: clips the source
    could not read are an error, not a warning. record: where the run lists them."""
    if data.own_split:
        check_own_split(cfg, data.name, len(data.labeled), len(data.unlabeled))
    if data.dropped:
        listed = "; ".join(f"{d['path']}: {d['error']}" for d in data.dropped[:DROPPED_SHOWN])
        more = f"; and {len(data.dropped) - DROPPED_SHOWN} more" if len(data.dropped) > DROPPED_SHOWN else ""
        what = f"{len(data.dropped)} clip(s) of {data.name} could not be read and are left out ({listed}{more})"
        if strict:
            raise SefarError(f"{what}; --strict refuses to train without them: fix or remove them and run "
                             "`sefar prepare` again, or drop --strict")
        warn(f"{what}; all are listed in {record} (--strict refuses such data)")
    untaught = data.classes_without_labels()
    if untaught:
        shown = ", ".join(untaught[:5]) + (f" and {len(untaught) - 5} more" if len(untaught) > 5 else "")
        warn(f"{len(untaught)} of {data.num_classes} classes have no labeled clip ({shown}): nothing teaches the "
             f"model these classes; they are listed in {record}")
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
