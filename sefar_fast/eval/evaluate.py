"""Multi-view evaluation: T temporal x S spatial deterministic views, softmax averaging.

    sefar eval runs/<run>/best.safetensors                     # teacher and student, the run's views
    sefar eval best.safetensors --views 5x3 --data store:/data/gym99-store
    sefar eval best.safetensors --protocol reference           # one random view of the student

Temporal view t takes, in every segment, the frame at (t + 0.5)/T of the segment;
spatial view s takes the s-th of S crops along the long side (after scaling the
short side to the crop size). With the same data, views and weights the numbers
are identical to what training printed for that checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sefar_fast.cli.progress import console, progress_bar, results_table
from sefar_fast.errors import SefarError


@torch.no_grad()
def score_views(model, data, indices, cfg, device, *, views=(1, 1), protocol="multiview", amp=False,
                desc="eval", dist=None, seed=0):
    """Run the model over every view of every clip; return a ScoreAccumulator of softmax scores."""
    from sefar_fast.data.loader import ClipLoader
    from sefar_fast.data.sampling import eval_frames
    from sefar_fast.eval.metrics import ScoreAccumulator
    from sefar_fast.train.views import build_views, draw_view_params, eval_view_params

    elements = cfg.method.elements
    d = cfg.data
    t_views, s_views = views if protocol == "multiview" else (1, 1)
    was_training = model.training
    model.eval()
    acc = ScoreAccumulator(len(data.class_names))
    rank = dist.rank if dist is not None else 0
    world = dist.world_size if dist is not None else 1
    dtype = torch.bfloat16 if amp else torch.float32
    total = t_views * -(-len(indices) // (cfg.eval.batch_size * world))
    rng = np.random.default_rng([seed, 11])
    with progress_bar(desc, total) as bar:
        for t in range(t_views):
            if protocol == "multiview":
                frame_fn = (lambda n, t=t: eval_frames(n, elements, t, t_views))
                loader = ClipLoader(data.store, indices, elements=elements, batch_size=cfg.eval.batch_size,
                                    frame_size=tuple(d.frame_size), views=1, shuffle=False, drop_last=False,
                                    device=device, rank=rank, world_size=world, frame_fn=frame_fn, backend=d.backend)
            else:
                loader = ClipLoader(data.store, indices, elements=elements, batch_size=cfg.eval.batch_size,
                                    frame_size=tuple(d.frame_size), views=1, shuffle=False, drop_last=False,
                                    device=device, rank=rank, world_size=world, seed=seed, backend=d.backend)
            for batch in loader:
                frames = batch["frames"][:, 0]
                b = frames.shape[0]
                for s in range(s_views):
                    if protocol == "multiview":
                        params = eval_view_params(b, tuple(d.frame_size), d.crop, s, s_views)
                    else:
                        params = draw_view_params(b, elements, tuple(d.frame_size), d.crop, "weak", rng, flip=True,
                                                  scale_range=tuple(d.scale_range),
                                                  ref_short=float(min(d.frame_size)))
                    x = build_views(frames, params, d.mean, d.std, dtype)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        logits = model(x)
                    acc.add(torch.softmax(logits.float(), -1).cpu().numpy(), batch["labels"].cpu().numpy(),
                            batch["index"].cpu().numpy())
                bar.advance(1)
            loader.close()
    if dist is not None and dist.enabled:
        import torch.distributed as tdist

        parts = [None] * world
        tdist.all_gather_object(parts, acc)
        acc = ScoreAccumulator(len(data.class_names))
        for p in parts:
            acc.merge(p)
    model.train(was_training)
    return acc


def evaluate_model(model, data, indices, cfg, device, *, views=(1, 1), protocol="multiview", amp=False,
                   desc="eval", dist=None) -> dict[str, float]:
    m = score_views(model, data, indices, cfg, device, views=views, protocol=protocol, amp=amp, desc=desc,
                    dist=dist).metrics()
    return {"top1": float(m.top1), "top5": float(m.top5), "mean_class_acc": float(m.mean_class_acc)}


def load_model(ckpt, which: str, device):
    """Rebuild the network of a checkpoint and load the teacher or student weights."""
    from sefar_fast.config import config_from_dict
    from sefar_fast.train.loop import model_from_config

    cfg = config_from_dict(ckpt.config)
    model = model_from_config(cfg, len(ckpt.class_names))
    weights = ckpt.teacher if which == "teacher" else ckpt.student
    if weights is None:
        raise SefarError(f"checkpoint {ckpt.path} holds no {which} weights (the teacher exists after the warm-up)")
    model.load_state_dict(weights)
    return cfg, model.to(device).eval()


def evaluate_checkpoint(checkpoint, *, data=None, root=None, split="val", views=None, protocol="multiview",
                        which="both", device=None, out=None, qa=None) -> dict[str, Any]:
    """`sefar eval`: score a checkpoint on a dataset and write the reports."""
    from sefar_fast.checkpoint import load_weights
    from sefar_fast.config import config_from_dict, eval_views, set_value, validate
    from sefar_fast.data.datasets import open_dataset
    from sefar_fast.eval.reports import write_report
    from sefar_fast.train.distributed import pick_device

    if protocol not in ("multiview", "reference"):
        raise SefarError(f"--protocol '{protocol}' must be multiview or reference")
    if which not in ("both", "teacher", "student"):
        raise SefarError(f"--model '{which}' must be teacher, student or both")
    ckpt = load_weights(checkpoint)
    cfg = config_from_dict(ckpt.config)
    if data is not None:
        cfg.data.name = data
        cfg.data.num_classes = 0
    if root is not None:
        cfg.data.root = root
    if views is not None:
        set_value(cfg, "eval.views", views)
    validate(cfg)
    dev = pick_device(device or cfg.run.device)
    ds = open_dataset(cfg)
    if ds.num_classes != len(ckpt.class_names):
        raise SefarError(f"checkpoint {checkpoint} has {len(ckpt.class_names)} classes but data '{cfg.data.name}' "
                         f"has {ds.num_classes}; evaluate on the data it was trained on")
    indices = {"val": ds.val, "test": ds.val, "train": ds.labeled, "unlabeled": ds.unlabeled}.get(split)
    if indices is None:
        raise SefarError(f"--split '{split}' must be val, test, train or unlabeled")
    models = ["teacher", "student"] if which == "both" else [which]
    if protocol == "reference":
        models = ["student"]
    models = [m for m in models if m == "student" or ckpt.teacher is not None]
    out_dir = Path(out) if out else Path(checkpoint).parent / "eval"
    t_s = eval_views(cfg)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "protocol": protocol, "views": cfg.eval.views}
    rows = []
    for name in models:
        _, model = load_model(ckpt, name, dev)
        acc = score_views(model, ds, indices, cfg, dev, views=t_s, protocol=protocol,
                          amp=dev.type == "cuda", desc=f"{split} {name}")
        metrics = acc.metrics()
        label = "reference-single-random-view" if protocol == "reference" else "multi-view"
        rep = write_report(out_dir / name, metrics, ckpt.class_names, model=name, views=cfg.eval.views,
                           protocol=label, checkpoint=checkpoint)
        entry = {"top1": rep["top1"], "top5": rep["top5"], "mean_class_acc": rep["mean_class_acc"],
                 "report": str(out_dir / name / "report.json")}
        if qa is not None:
            from sefar_fast.eval.qa import score_qa_file

            by_clip = {ds.store.records[i].clip_id: s for i, s in acc.scores_by_id().items()}
            entry["qa"] = score_qa_file(qa, ckpt.class_names, by_clip)
        result[name] = entry
        rows.append((f"{name} top-1", f"{100 * rep['top1']:.2f}%"))
        rows.append((f"{name} top-5", f"{100 * rep['top5']:.2f}%"))
        rows.append((f"{name} mean class acc", f"{100 * rep['mean_class_acc']:.2f}%"))
    rows.append(("reports", str(out_dir)))
    console.print(results_table(f"eval {Path(checkpoint).name} on {cfg.data.name} {split} "
                                f"({'1 random view, student' if protocol == 'reference' else cfg.eval.views + ' views'})",
                                rows))
    return result
