"""`sefar data info`: what a run would read, counted from the lists and annotations, decoding nothing.

For a source spec or preset (`lists:DIR`, `gym99` with a root, `video:...`) the clips come
from `adapters.load_source` (list files and annotation files only; each path is checked to
exist, so a wrong --root shows as missing files); for a clip store or the synth set, from the
store's index. The labeled / unlabeled counts follow `datasets.open_dataset`'s rule: an
`unlabel` split (the authors' lists carry one) is used as it is, otherwise the train pool is
split at the config's label rate (the preset's, e.g. 0.05 for gym99) with
`splits.stratified_split`, as training will.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from sefar_fast.data.adapters import load_source
from sefar_fast.data.datasets import synth_store
from sefar_fast.data.direct import video_spec
from sefar_fast.data.splits import stratified_split
from sefar_fast.data.store import ClipStore


@dataclass
class SourceInfo:
    name: str
    class_names: list[str]
    counts: dict[str, int]  # labeled, unlabeled, val
    label_rate: float | None  # None: the lists say which clips are labeled
    missing: dict[str, int] = field(default_factory=dict)  # split -> clips whose file is not there
    notes: list[str] = field(default_factory=list)

    def table(self) -> Table:
        how = f"label rate {self.label_rate}" if self.label_rate is not None else "labeled as the lists say"
        title = f"{self.name}: {len(self.class_names)} classes, {how}"
        t = Table(title=title, min_width=len(title) + 4)  # the title on one line where the terminal allows
        t.add_column("split")
        t.add_column("clips", justify="right")
        if self.missing:
            t.add_column("files missing", justify="right")
        for split, n in self.counts.items():
            t.add_row(split, f"{n:,}", *([f"{self.missing.get(split, 0):,}"] if self.missing else []))
        return t


def split_counts(splits: list[str], labels: list[int], label_rate: float, split_seed: int):
    """(counts, the rate used or None, positions per count) of clips with these splits and labels."""
    train = [i for i, s in enumerate(splits) if s == "train"]
    unlabel = [i for i, s in enumerate(splits) if s == "unlabel"]
    val = [i for i, s in enumerate(splits) if s == "val"] or [i for i, s in enumerate(splits) if s == "test"]
    if unlabel:
        labeled, unlabeled, rate = train, unlabel, None
    else:
        lab, unl = stratified_split([labels[i] for i in train], label_rate, split_seed) if train else ([], [])
        labeled, unlabeled, rate = [train[i] for i in lab], [train[i] for i in unl], label_rate
    members = {"labeled": labeled, "unlabeled": unlabeled, "val": val}
    return {k: len(v) for k, v in members.items()}, rate, members


def source_info(cfg) -> SourceInfo:
    """The classes and split sizes `cfg`'s data gives, without decoding a clip."""
    d = cfg.data
    spec = video_spec(d.name) or d.name
    store_dir = (Path(spec[len("store:"):]) if spec.startswith("store:")
                 else Path(d.store) if d.store else None)
    if spec == "synth" or store_dir is not None:
        if store_dir is None:  # the built-in set, generated on first use
            store_dir = synth_store(seed=d.synth_seed, clips_per_class=d.synth_clips_per_class)
        store = ClipStore.open(store_dir)
        records = store.records
        counts, rate, _ = split_counts([r.split for r in records], [r.label for r in records], d.label_rate,
                                       d.split_seed)
        return SourceInfo(d.name, list(store.class_names), counts, rate)
    source = load_source(spec, root=d.root)
    clips = source.clips
    counts, rate, members = split_counts([c.split for c in clips], [c.label for c in clips], d.label_rate,
                                         d.split_seed)
    missing = {split: sum(not clips[i].path.exists() for i in idx) for split, idx in members.items()}
    return SourceInfo(d.name, source.class_names, counts, rate, missing, list(source.notes))
