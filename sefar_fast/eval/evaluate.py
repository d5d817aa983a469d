"""Multi-view evaluation: T temporal x S spatial deterministic views, softmax averaging.

    sefar eval runs/<run>/best.safetensors                     # teacher and student, the run's views
    sefar eval best.safetensors --views 5x3 --data store:/data/gym99-store
    sefar eval best.safetensors --protocol reference           # one random view of the student
    sefar eval best.safetensors --qa all99_5/val.json          # plus Gym-QA multiple-choice accuracy

Temporal view t takes, in every segment, the frame at (t + 0.5)/T of the segment
(`sampling.eval_frames`); spatial view s takes the s-th of S square crops along the
long side, the short side scaled to the crop size (`views.eval_view_params`). A
clip's score is the mean of its T*S softmax vectors. With the same data, views and
weights the numbers are identical to what training printed for that checkpoint,
because training validates through the same `score_views`.

`--protocol reference` reproduces how the released code tested (and so how the
published numbers were measured): the student only, one view per clip with random
frames inside the segments, the short side scaled to the crop size, a random crop
along the long side and a random horizontal flip. It is seeded, so it repeats, but
it is a single random draw; reports carry the label "reference-single-random-view".

Reports go to `<run>/eval/<model>/` (`student-reference/` for the reference
protocol): report.json, per_class.csv, confusion.png, confusion_pairs.csv.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as tdist

from sefar_fast import kernels
from sefar_fast.checkpoint import Checkpoint, load_weights
from sefar_fast.config import config_from_dict, eval_views, set_value, validate
from sefar_fast.console import console, err_console, progress_bar, results_table
from sefar_fast.data.datasets import open_dataset
from sefar_fast.data.loader import ClipLoader
from sefar_fast.data.sampling import eval_frames
from sefar_fast.distributed import pick_device
from sefar_fast.errors import SefarError
from sefar_fast.eval.metrics import ScoreAccumulator
from sefar_fast.eval.qa import score_qa_file
from sefar_fast.io import ensure_writable
from sefar_fast.lock import FolderLock
from sefar_fast.models import model_from_config
from sefar_fast.ops.views import draw_view_params, eval_view_params

REFERENCE_LABEL = "reference-single-random-view"
MULTIVIEW_LABEL = "multi-view"
SPLITS = ("val", "test", "train", "unlabeled")


@dataclass
class ViewBatch:
    """One batch of one view: model input x [B, K, 3, S, S], labels [B] and store record indices [B]."""

    x: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor


def view_batches(data, indices, cfg, device, *, views=(1, 1), protocol="multiview", out_dtype=torch.float32,
                 desc="eval", dist=None, seed=0, progress=True, frame_cache=None) -> Iterator[ViewBatch]:
    """Every view of every clip in `indices`, batched, with a progress bar.

    multiview: for each temporal view t a loader whose frames are eval_frames(.., t, T), and for
    each of its batches the S spatial crops. reference: one loader with random frames (seeded),
    one random crop covering the short side and a random flip per clip.
    Under `dist`, each rank gets its share (padding repeats a few clips: dedupe by `index`).
    `frame_cache`: the run's decoded frames in memory (`data.frame_cache`), or None.
    """
    if protocol not in ("multiview", "reference"):
        raise SefarError(f"protocol '{protocol}' must be multiview or reference")
    elements = cfg.method.elements
    d = cfg.data
    frame_size = tuple(d.frame_size)
    t_views, s_views = views if protocol == "multiview" else (1, 1)
    rank = dist.rank if dist is not None else 0
    world = dist.world_size if dist is not None else 1
    total = t_views * -(-len(indices) // (cfg.eval.batch_size * world))
    crop_rng = np.random.default_rng([seed, 11])
    common = dict(elements=elements, batch_size=cfg.eval.batch_size, frame_size=frame_size, views=1, shuffle=False,
                  drop_last=False, device=device, rank=rank, world_size=world, backend=d.backend,
                  frame_cache=frame_cache)
    with progress_bar(desc, total, enabled=progress) as bar:
        for t in range(t_views):
            if protocol == "multiview":
                loader = ClipLoader(data.store, indices, frame_fn=lambda n, t=t: eval_frames(n, elements, t, t_views),
                                    **common)
            else:
                loader = ClipLoader(data.store, indices, seed=seed, temporal="random", **common)
            try:
                for batch in loader:
                    frames = batch["frames"][:, 0]
                    b = frames.shape[0]
                    for s in range(s_views):
                        if protocol == "multiview":
                            params = eval_view_params(b, frame_size, d.crop, s, s_views)
                        else:
                            # The released test: short side scaled to the crop (scale = crop), a random
                            # position along the long side, a random flip.
                            params = draw_view_params(b, elements, frame_size, d.crop, "weak", crop_rng, flip=True,
                                                      scale_range=(d.crop, d.crop), ref_short=float(min(frame_size)))
                        yield ViewBatch(kernels.build_views(frames, params, d.mean, d.std, out_dtype), batch["labels"],
                                        batch["index"])
                    bar.advance(1)
            finally:
                loader.close()


@torch.no_grad()
def score_views(model, data, indices, cfg, device, *, views=(1, 1), protocol="multiview", amp=False,
                desc="eval", dist=None, seed=0, progress=True):
    """Run the model over every view of every clip; return a ScoreAccumulator of softmax scores keyed by
    store record index (each clip holds T*S views, or 1 for the reference protocol)."""
    return score_models({"model": model}, data, indices, cfg, device, views=views, protocol=protocol, amp=amp,
                        desc=desc, dist=dist, seed=seed, progress=progress)["model"]


@torch.no_grad()
def score_models(models: dict[str, Any], data, indices, cfg, device, *, views=(1, 1), protocol="multiview",
                 amp=False, desc="eval", dist=None, seed=0, progress=True,
                 frame_cache=None) -> dict[str, ScoreAccumulator]:
    """`score_views` of several models in one pass over the clips: every batch of views is read and
    built once and goes through each model in turn (the teacher and student of a run see the very
    same inputs, and the clips are decoded once, not once per model). {name: ScoreAccumulator}."""
    was_training = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.eval()
    accs = {name: ScoreAccumulator(len(data.class_names)) for name in models}
    dtype = torch.bfloat16 if amp else torch.float32
    try:
        for vb in view_batches(data, indices, cfg, device, views=views, protocol=protocol, out_dtype=dtype,
                               desc=desc, dist=dist, seed=seed, progress=progress, frame_cache=frame_cache):
            labels, index = vb.labels.cpu().numpy(), vb.index.cpu().numpy()
            for name, model in models.items():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(vb.x)
                accs[name].add(torch.softmax(logits.float(), -1).cpu().numpy(), labels, index)
    finally:
        for name, model in models.items():
            model.train(was_training[name])
    if dist is not None and dist.enabled:

        # Ranks pad their last round by repeating clips; a multi-view repeat scores exactly the same
        # views again, so it adds to the view count but leaves the clip's mean as it is.
        for name in models:
            parts = [None] * dist.world_size
            tdist.all_gather_object(parts, accs[name])
            accs[name] = ScoreAccumulator(len(data.class_names))
            for p in parts:
                accs[name].merge(p)
    return accs


def evaluate_models(models: dict[str, Any], data, indices, cfg, device, *, views=(1, 1), protocol="multiview",
                    seed=0, amp=False, desc="eval", dist=None, frame_cache=None) -> dict[str, dict]:
    """For each named model (scored in one pass, `score_models`): top1, top5 and mean class accuracy
    (what training logs per epoch) and its confusion matrix (int64 [C, C], rows = true classes)."""
    accs = score_models(models, data, indices, cfg, device, views=views, protocol=protocol, seed=seed, amp=amp,
                        desc=desc, dist=dist, frame_cache=frame_cache)
    out = {}
    for name, acc in accs.items():
        m = acc.metrics()
        out[name] = {"top1": float(m.top1), "top5": float(m.top5), "mean_class_acc": float(m.mean_class_acc),
                     "confusion": m.confusion}
    return out


def load_model(ckpt, which: str, device):
    """Rebuild the network of a checkpoint and load the teacher or student weights."""
    cfg = config_from_dict(ckpt.config)
    model = model_from_config(cfg, len(ckpt.class_names), temporal_kernel=kernels.element_attention)
    weights = ckpt.teacher if which == "teacher" else ckpt.student
    if weights is None:
        raise SefarError(f"checkpoint {ckpt.path} holds no {which} weights (the teacher exists once the "
                         "supervised warm-up has ended); use --model student or a later checkpoint")
    bad = [name for name, value in weights.items() if value.is_floating_point() and not value.isfinite().all()]
    if bad:
        raise SefarError(f"checkpoint {ckpt.path}: the {which} weights hold NaN or inf ({bad[0]}"
                         f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); use an earlier checkpoint")
    model.load_state_dict(weights)
    return cfg, model.to(device).eval()


def inference_model(ckpt, which: str, device):
    """(name, model) for predict/extract: "teacher" falls back to the student when the checkpoint has none."""
    if which not in ("teacher", "student"):
        raise SefarError(f"--model '{which}' must be teacher or student")
    if which == "teacher" and ckpt.teacher is None:
        err_console.print(f"[yellow]note[/] {ckpt.path} holds no teacher (saved before the warm-up ended); "
                      "using the student")
        which = "student"
    return which, load_model(ckpt, which, device)[1]


def use_amp(cfg, device) -> bool:
    """bf16 autocast as training used it: the run's `run.amp`, else on for CUDA."""
    return bool(cfg.run.amp) if cfg.run.amp is not None else device.type == "cuda"


def open_checkpoint_data(checkpoint, *, data=None, root=None, views=None, device=None):
    """Load a checkpoint and the dataset to score it on: (ckpt, cfg, dataset, device).

    The data defaults to the checkpoint's own; another one must have the same class count.
    `checkpoint`: a path, or a Checkpoint already loaded.
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_weights(checkpoint)
    cfg = config_from_dict(ckpt.config)
    if data is not None:
        cfg.data.name = data
        cfg.data.num_classes = 0
        cfg.data.store = None
    if root is not None:
        cfg.data.root = root
    if views is not None:
        set_value(cfg, "eval.views", views)
    validate(cfg)
    dev = pick_device(device or cfg.run.device)
    ds = open_dataset(cfg)
    if ds.num_classes != len(ckpt.class_names):
        raise SefarError(f"checkpoint {ckpt.path} has {len(ckpt.class_names)} classes but data '{cfg.data.name}' "
                         f"has {ds.num_classes}; evaluate on the data it was trained on")
    return ckpt, cfg, ds, dev


def split_indices(ds, split: str) -> list[int]:
    """Store record indices of a split: val (= test: the val or test clips), train (labeled), unlabeled."""
    table = {"val": ds.val, "test": ds.val, "train": ds.labeled, "unlabeled": ds.unlabeled}
    if split not in table:
        raise SefarError(f"--split '{split}' must be one of {', '.join(SPLITS)}")
    if not table[split]:
        raise SefarError(f"split '{split}' of data '{ds.name}' holds no clips")
    return table[split]


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.2f}%"


def evaluate_checkpoint(checkpoint, *, data=None, root=None, split="val", views=None, protocol="multiview",
                        which="both", device=None, out=None, qa=None, seed=0, show=True) -> dict[str, Any]:
    """`sefar eval`: score a checkpoint on a dataset, write the reports, print a table; returns the numbers.

    which: teacher, student or both (both = the teacher too when the checkpoint has one). The reference
    protocol scores the student only. out: report folder (default <checkpoint folder>/eval), one
    subfolder per model. qa: a Gym-QA json scored from the same clip probabilities. show=False: no
    progress bars and no table (e.g. when the JSON goes to stdout).
    """
    if protocol not in ("multiview", "reference"):
        raise SefarError(f"--protocol '{protocol}' must be multiview or reference")
    if which not in ("both", "teacher", "student"):
        raise SefarError(f"--model '{which}' must be teacher, student or both")
    if protocol == "reference" and which == "teacher":
        raise SefarError("--protocol reference scores the student (as the released code); drop --model teacher")
    if split not in SPLITS:
        raise SefarError(f"--split '{split}' must be one of {', '.join(SPLITS)}")
    ckpt = load_weights(checkpoint)  # a missing or broken checkpoint is told before anything is written
    out_dir = Path(out) if out else Path(checkpoint).parent / "eval"
    with reports_folder(Path(checkpoint), out_dir):
        return _evaluate(ckpt, out_dir, data=data, root=root, split=split, views=views, protocol=protocol,
                         which=which, device=device, qa=qa, seed=seed, show=show)


@contextmanager
def reports_folder(checkpoint: Path, out_dir: Path):
    """Hold the run folder's lock while the reports are written into it (a `sefar train` or another
    eval there is refused, and refuses this one), and check that the reports can be written, both
    before any clip is scored."""
    run_dir = checkpoint.parent
    inside = (run_dir / "config.yaml").is_file() and out_dir.resolve().is_relative_to(run_dir.resolve())
    lock = FolderLock(run_dir, "sefar eval")
    if inside:
        lock.acquire("write the reports elsewhere with --out")
    try:
        ensure_writable(out_dir, "write the reports elsewhere with --out")
        yield
    finally:
        lock.release()


def _evaluate(ckpt: Checkpoint, out_dir: Path, *, data, root, split, views, protocol, which, device, qa, seed,
              show) -> dict[str, Any]:
    from sefar_fast.eval.reports import write_report

    checkpoint = ckpt.path
    ckpt, cfg, ds, dev = open_checkpoint_data(ckpt, data=data, root=root, views=views, device=device)
    indices = split_indices(ds, split)
    notes = []
    if protocol == "reference":
        models = ["student"]
    elif which == "both":
        models = ["teacher", "student"] if ckpt.teacher is not None else ["student"]
        if ckpt.teacher is None:
            notes.append(("teacher", "not in this checkpoint (saved before the warm-up ended)"))
    else:
        models = [which]
    t_s = eval_views(cfg) if protocol == "multiview" else (1, 1)
    views_text = f"{t_s[0]}x{t_s[1]}" if protocol == "multiview" else "1x1 random"
    label = MULTIVIEW_LABEL if protocol == "multiview" else REFERENCE_LABEL
    amp = use_amp(cfg, dev)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "data": cfg.data.name, "split": split,
                              "protocol": label, "views": views_text, "clips": len(indices), "out": str(out_dir)}
    rows = []
    loaded = {name: load_model(ckpt, name, dev)[1] for name in models}
    accs = score_models(loaded, ds, indices, cfg, dev, views=t_s, protocol=protocol, amp=amp,
                        desc=f"{split} {' + '.join(models)}", seed=seed, progress=show)
    for name in models:
        acc = accs[name]
        metrics = acc.metrics()
        extra: dict[str, Any] = {"data": cfg.data.name, "split": split}
        if protocol == "reference":
            extra["seed"] = seed
        if qa is not None:

            by_clip = {ds.store.records[i].clip_id: s for i, s in acc.scores_by_id().items()}
            extra["qa"] = score_qa_file(qa, ckpt.class_names, by_clip)
        folder = out_dir / (name if protocol == "multiview" else f"{name}-reference")
        rep = write_report(folder, metrics, ckpt.class_names, model=name, views=views_text, protocol=label,
                           checkpoint=checkpoint, extra=extra)
        entry = {"top1": rep["top1"], "top5": rep["top5"], "mean_class_acc": rep["mean_class_acc"],
                 "report": str(folder / "report.json")}
        rows += [(f"{name} top-1", _pct(rep["top1"])), (f"{name} top-{rep['top5_k']}", _pct(rep["top5"])),
                 (f"{name} mean class acc", _pct(rep["mean_class_acc"]))]
        if qa is not None:
            q = extra["qa"]
            entry["qa"] = q
            rows += [(f"{name} Gym-QA accuracy", f"{_pct(q['qa_accuracy'])} of {q['qa_scored']} questions"),
                     (f"{name} Gym-QA chance", _pct(q["qa_chance"]))]
            if q["qa_missing_videos"]:
                notes.append((f"{name} Gym-QA", f"{q['qa_missing_videos']} videos of {qa} are not among the "
                                                f"{len(indices)} scored {split} clips (not counted)"))
        result[name] = entry
    rows += notes
    rows.append(("reports", str(out_dir)))
    what = (f"{views_text} views" if protocol == "multiview"
            else "reference protocol: 1 random view, student")
    title = f"eval {Path(checkpoint).name} on {cfg.data.name} {split}, {len(indices)} clips ({what})"
    table = results_table(title, rows)
    table.min_width = len(title) + 4  # keep the title on one line where the terminal allows
    if show:
        console.print(table)
    return result
