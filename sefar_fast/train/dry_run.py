"""`sefar train --dry-run`: what a run would do, resolved and counted, without doing it.

    sefar train --data gym99 --root /data/finegym --arch vit-b --dry-run

Everything comes from the same code a run uses: the resolved config and run folder (the
trainer's own plan; nothing is written), the clips of each split counted from the lists and
annotations (`data.info`, nothing decoded), the global batch with its automatic accumulation,
the steps of an epoch, the model built on the meta device (no memory) for its parameter count,
and the analytic FLOPs (`models.sizes.count_flops`).

Peak memory per process is an estimate: the float32 weights, gradients and optimizer state of
the student, the teacher (and its bf16 forward copy on CUDA), plus the activations one
semi-supervised micro-step keeps for the backward pass, counted on the meta device in float32
for the step's student rows ([labeled; strong; mixed]). Under bf16 autocast most activations
are kept at half size, so there the activation part is an upper bound.
"""

from __future__ import annotations

from typing import Any

import torch

from sefar_fast.data.info import source_info
from sefar_fast.data.loader import batches_per_rank, drops_last
from sefar_fast.models import model_from_config
from sefar_fast.models.sizes import count_flops

GIB = 2**30


def saved_activation_bytes(model: torch.nn.Module, clip_shape: tuple[int, ...]) -> int:
    """Bytes one clip's forward keeps for the backward pass (distinct tensors; the model on the meta device)."""
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        kept[id(base)] = base.numel() * base.element_size()
        return t

    x = torch.empty((1, *clip_shape), device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(kept.values())


def plan_summary(trainer) -> dict[str, Any]:
    """The run's facts as plain values (see the module docstring); `trainer` is a set-up-free Trainer."""
    cfg = trainer.cfg
    m, o, d = cfg.method, cfg.optim, cfg.data
    info = source_info(cfg)
    labeled, unlabeled, val = (info.counts.get(k, 0) for k in ("labeled", "unlabeled", "val"))
    classes = len(info.class_names)
    batch, world = o.batch_size * o.accum_steps, trainer.dist.world_size
    steps = batches_per_rank(labeled, batch, world, drops_last(labeled, batch, world))
    ssl = m.name != "supervised" and unlabeled > 0
    unlabeled_rows = o.batch_size * m.unlabeled_ratio if ssl else 0
    rows = o.batch_size + unlabeled_rows * (2 if m.mix else 1)  # [labeled; strong; mixed]
    model = model_from_config(cfg, max(classes, 1), device="meta").train()
    params = sum(p.numel() for p in model.parameters())
    k = sum(m.elements)
    flops = count_flops(cfg.model.arch, d.crop, m.elements, patch_size=cfg.model.patch_size,
                        num_classes=max(classes, 1))
    optimizer_copies = 2 if o.name == "adamw" else 1
    teacher_copies = (1.5 if trainer.amp else 1.0) if ssl else 0.0
    state_bytes = params * 4 * (2 + optimizer_copies + teacher_copies)  # weights, grads, optimizer, teacher
    activation_bytes = saved_activation_bytes(model, (k, 3, d.crop, d.crop)) * rows
    return {
        "run": str(trainer.run_dir), "resume": trainer.resuming, "method": m.name, "data": d.name,
        "classes": classes, "labeled": labeled, "unlabeled": unlabeled, "val": val,
        "label_rate": info.label_rate, "notes": info.notes,
        "processes": trainer.dist.world_size, "batch_size": o.batch_size, "accum_steps": o.accum_steps,
        "global_batch": trainer.global_batch, "unlabeled_per_step": trainer.global_batch * m.unlabeled_ratio if ssl
        else 0, "lr": trainer.base_lr, "epochs": o.epochs, "steps_per_epoch": steps, "steps": steps * o.epochs,
        "arch": cfg.model.arch, "params": params, "frames_per_clip": k, "crop": d.crop,
        "forward_gflop_per_clip": flops / 1e9, "student_rows_per_micro_step": rows,
        "device": str(trainer.device), "amp": trainer.amp,
        "memory_states_gib": state_bytes / GIB, "memory_activations_gib": activation_bytes / GIB,
        "memory_peak_estimate_gib": (state_bytes + activation_bytes) / GIB,
    }


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) rows for the console."""
    how = f"label rate {s['label_rate']}" if s["label_rate"] is not None else "labeled as the lists say"
    amp = "bf16 autocast: activations are an upper bound" if s["amp"] else "float32"
    return [
        ("run folder", s["run"] + (" (continues the run there)" if s["resume"] else "")),
        ("data", f"{s['data']}: {s['classes']} classes, {how}"),
        ("clips", f"{s['labeled']:,} labeled, {s['unlabeled']:,} unlabeled, {s['val']:,} val"),
        ("global batch", f"{s['global_batch']} labeled (+{s['unlabeled_per_step']} unlabeled) = {s['processes']} "
                         f"process(es) x {s['accum_steps']} accumulation x {s['batch_size']}; lr {s['lr']:.3g}"),
        ("schedule", f"{s['epochs']} epochs x {s['steps_per_epoch']} steps = {s['steps']:,} optimizer steps"),
        ("model", f"{s['arch']}, {s['params'] / 1e6:.2f} M parameters, {s['frames_per_clip']} frames of "
                  f"{s['crop']}x{s['crop']}, {s['forward_gflop_per_clip']:.2f} GFLOP per clip forward"),
        ("peak memory (estimate)", f"{s['memory_peak_estimate_gib']:.2f} GiB per process on {s['device']}: "
                                   f"{s['memory_states_gib']:.2f} weights, gradients, optimizer and teacher + "
                                   f"{s['memory_activations_gib']:.2f} activations of {s['student_rows_per_micro_step']} "
                                   f"student rows ({amp})"),
    ] + [("note", n) for n in s["notes"]]
