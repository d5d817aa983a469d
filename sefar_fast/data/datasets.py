"""From a config to the clips a run uses: store, class names, labeled / unlabeled / val.

Sources, by `data.name`:

    synth                 the built-in synthetic set (generated on first use)
    store:DIR             a clip store written by `sefar prepare`
    <preset> + data.store a preset (gym99, ...) whose prepared store is given
    video:SPEC            direct video: the clips of a source spec (video:lists:DIR, video:folder:DIR,
                          video:DIR, video:ucf101 with data.root, ...) read from their files, no store

A store that carries an `unlabel` split (reference list folders do) is used as
is (the trainer then checks that `data.label_rate` states its rate, `train.checks`);
otherwise the `train` split is divided at `data.label_rate`, class-stratified and
deterministic from `data.split_seed`. The run folder's split.json records the split
actually used: the clips, the labeled fraction, where the split came from, the classes
no labeled clip teaches and the clips the store left out unread.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sefar_fast.console import progress_bar
from sefar_fast.data.direct import open_video_source, video_spec
from sefar_fast.data.prepare import dropped_clips, prepare_from_spec, store_for_source
from sefar_fast.data.splits import load_split, save_split, stratified_split
from sefar_fast.data.store import ClipStore
from sefar_fast.data.synth import DEFAULT_CLIPS_PER_CLASS, ensure_synth
from sefar_fast.errors import SefarError


@dataclass
class Dataset:
    name: str
    store: object  # ClipStore
    class_names: list[str]
    labeled: list[int]
    unlabeled: list[int]
    val: list[int]
    own_split: bool = False  # the source's unlabel list made the split (not data.label_rate)
    dropped: list[dict] = field(default_factory=list)  # clips left out unread: {"clip_id", "path", "error"}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_rate(self) -> float:
        """The fraction of the training clips that are labeled."""
        return len(self.labeled) / max(1, len(self.labeled) + len(self.unlabeled))

    def classes_without_labels(self) -> list[str]:
        """Names of the classes no labeled clip teaches (present only in val or unlabeled, or nowhere)."""
        seen = set(self.labels(self.labeled).tolist())
        return [name for c, name in enumerate(self.class_names) if c not in seen]

    def labels(self, indices) -> np.ndarray:
        return np.array([self.store.records[i].label for i in indices], dtype=np.int64)


def synth_store(seed: int = 0, clips_per_class: int = DEFAULT_CLIPS_PER_CLASS, cache_dir=None) -> Path:
    """Path of the built-in synthetic store, generated (with a progress bar) on first use."""
    with ExitStack() as stack:
        progress = _progress_callback(stack, "generating synth data (once)")
        return Path(ensure_synth(cache_dir=cache_dir, seed=seed, clips_per_class=clips_per_class, progress=progress))


def _progress_callback(stack, title: str):
    """A progress(done, total) callback whose bar appears on its first call."""
    bars: list = []

    def progress(done, total):
        if not bars:
            bars.extend([stack.enter_context(progress_bar(title, total)), 0])
        bars[0].advance(done - bars[1])
        bars[1] = done

    return progress


def _store_root(cfg) -> Path:
    name = cfg.data.name
    if name == "synth":
        return synth_store(seed=cfg.data.synth_seed, clips_per_class=cfg.data.synth_clips_per_class)
    if name.startswith("store:"):
        return Path(name[len("store:"):])
    if cfg.data.store:
        return Path(cfg.data.store)
    if ":" in name or cfg.data.root:
        # lists:DIR, folder:DIR, or a preset with --root: decoded once into a cached store.
        spec = name
        with ExitStack() as stack:
            return store_for_source(spec, root=cfg.data.root,
                                    progress=_progress_callback(stack, f"preparing {spec} (once)"))
    raise SefarError(
        f"data '{name}' needs its dataset folder: pass --root <folder> (decoded once into a cached clip store), "
        f"or run `sefar prepare {name} --root <folder> --out <store>` and train with --data store:<store>"
    )


def _open_clips(cfg):
    """(clip source, where it lives): a ClipStore, or a direct.VideoSource for `video:` data names."""
    spec = video_spec(cfg.data.name)
    if spec is None:
        root = _store_root(cfg)
        return ClipStore.open(root), root
    with ExitStack() as stack:
        source = open_video_source(spec, root=cfg.data.root,
                                   progress=_progress_callback(stack, f"indexing {spec} videos (once)"))
    return source, cfg.data.name


def open_dataset(cfg, run_dir: Path | None = None) -> Dataset:
    store, where = _open_clips(cfg)
    names = list(store.class_names)
    if cfg.data.num_classes and cfg.data.num_classes != len(names):
        raise SefarError(
            f"data '{cfg.data.name}' has {len(names)} classes but the config says data.num_classes="
            f"{cfg.data.num_classes}; fix one of them"
        )
    train_pool = store.indices("train")
    val = store.indices("val") or store.indices("test")
    if not train_pool:
        raise SefarError(f"store {where} has no 'train' split")
    if not val:
        raise SefarError(f"store {where} has no 'val' or 'test' split to validate on")
    split_file = run_dir / "split.json" if run_dir else None
    unl = store.indices("unlabel")
    if unl:
        labeled, unlabeled = train_pool, unl
    elif split_file is not None and split_file.is_file():
        saved = load_split(split_file)
        labeled, unlabeled = saved["labeled"], saved["unlabeled"]
    else:
        labels = np.array([store.records[i].label for i in train_pool])
        lab_pos, unl_pos = stratified_split(labels, cfg.data.label_rate, cfg.data.split_seed)
        labeled = [train_pool[i] for i in lab_pos]
        unlabeled = [train_pool[i] for i in unl_pos]
    ds = Dataset(cfg.data.name, store, names, list(labeled), list(unlabeled), list(val), own_split=bool(unl),
                 dropped=dropped_clips(store.root) if isinstance(store, ClipStore) else [])
    if split_file is not None:  # what the run really trains on, whatever was asked
        save_split(split_file, labeled, unlabeled, label_rate=ds.label_rate, split_seed=cfg.data.split_seed,
                   clip_ids=[r.clip_id for r in store.records],
                   extra={"split_from": "the source's unlabel list" if unl else "data.label_rate",
                          "requested_label_rate": cfg.data.label_rate,
                          "classes_without_labeled_clips": ds.classes_without_labels(), "dropped_clips": ds.dropped})
    return ds


def prepare_source(source: str, out: Path, *, root=None, short_side=256, fps=None, workers=None) -> dict:
    """`sefar prepare`: decode a source once into a clip store; returns the summary."""
    with ExitStack() as stack:
        progress = _progress_callback(stack, f"preparing {source}")
        return prepare_from_spec(source, out, root=root, short_side=short_side, fps=fps, workers=workers,
                                 progress=progress)
