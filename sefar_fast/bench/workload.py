"""What `sefar bench` runs: sizes per device, the trainer's config, synthetic batches, models.

Defaults: the paper's batch, 3 unlabeled clips per labeled clip: on CUDA vit-s at 8
frames of 224 x 224 from 256 x 340 stored frames, 8 labeled + 24 unlabeled clips per
iteration (56 student rows: labeled, strong, mixed), bf16 and torch.compile; on the CPU
the tiny vit-test at a 32 x 32 crop from 36 x 48 frames, 2 + 6 clips, fp32, no compile,
one torch thread, so the whole benchmark runs in a few minutes on two cores
while every path still does all of its work (views, teacher, regulation, mixing,
losses, backward, EMA). One thread because the tiny model's operations gain
nothing from more, and because on a machine shared with other jobs OpenMP
threads that wait for each other at every operation turn milliseconds into
seconds; a single thread measures the code, not the neighbours.

Batches are built like the loader's (`frames` uint8 [B, V, K, H0, W0, 3] on the
device, `labels`, `index`), from random bytes drawn on the device: the step's
cost does not depend on the pixel values, and no decoding is timed with it.
Models are built the trainer's way (`models.model_from_config`, same seed).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from sefar_fast import kernels
from sefar_fast.config import build_config
from sefar_fast.errors import SefarError
from sefar_fast.models import model_from_config
from sefar_fast.train.update import make_optimizer

SECTIONS = ("data", "model", "iteration", "overhead", "memory")


@dataclass
class BenchSettings:
    """Everything a benchmark run depends on; recorded in the JSON as `settings`."""

    device: torch.device
    arch: str
    crop: int
    frame_size: tuple[int, int]
    scale_range: tuple[float, float]
    labeled: int  # labeled clips per iteration
    unlabeled: int  # unlabeled clips per iteration (the iteration comparison)
    train_unlabeled: int  # unlabeled clips of the memory section's training setting (3 x labeled)
    model_batch: int  # clips per student step in the model section (= the fast step's student rows)
    amp: bool
    compile: bool
    warmup: int
    repeats: int
    quick: bool
    num_classes: int = 99
    elements: tuple[int, ...] = (2, 2, 4)
    drop_path: float = 0.1
    data_clips: int = 32
    data_batches: int = 10
    data_batch_size: int = 32
    data_source_size: tuple[int, int] = (256, 340)
    threads: int | None = None  # torch CPU threads during the run (None: leave as is)
    seed: int = 0

    def record(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "device"}
        d["device"] = str(self.device)
        for k in ("frame_size", "scale_range", "elements", "data_source_size"):
            d[k] = list(d[k])
        return d


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SefarError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise SefarError(f"--device {name!r} must be auto, cpu or cuda")
    return torch.device(name)


def default_settings(device: torch.device, *, arch: str | None = None, batch: int | None = None,
                     unlabeled: int | None = None, quick: bool = False, compile: bool | None = None,
                     **overrides) -> BenchSettings:
    """The device's defaults (module docstring), then the given values, then `overrides` (field=value)."""
    cuda = device.type == "cuda"
    labeled = int(batch) if batch is not None else (8 if cuda else 2)
    unl = int(unlabeled) if unlabeled is not None else 3 * labeled  # the paper's ratio
    if labeled < 1 or unl < 2:
        raise SefarError(f"--batch {labeled} / unlabeled {unl}: need at least 1 labeled and 2 unlabeled clips "
                         "(tube mixing pairs unlabeled clips)")
    if cuda:
        base = dict(arch=arch or "vit-s", crop=224, frame_size=(256, 340), scale_range=(256.0, 320.0),
                    amp=True, compile=True if compile is None else compile,
                    warmup=2 if quick else 3, repeats=5 if quick else 10,
                    data_clips=32, data_batches=8 if quick else 20, data_batch_size=32)
    else:
        base = dict(arch=arch or "vit-test", crop=32, frame_size=(36, 48), scale_range=(36.0, 45.0),
                    amp=False, compile=bool(compile),
                    warmup=1 if quick else 2, repeats=3 if quick else 7,
                    data_clips=8 if quick else 16, data_batches=3 if quick else 8, data_batch_size=8,
                    threads=1)
    settings = BenchSettings(device=device, labeled=labeled, unlabeled=unl, train_unlabeled=3 * labeled,
                             model_batch=labeled + 2 * unl, quick=quick, **base)
    for key, value in overrides.items():
        if value is None:
            continue
        if not hasattr(settings, key):
            raise SefarError(f"unknown benchmark setting {key!r}")
        setattr(settings, key, value)
    return settings


def bench_config(s: BenchSettings):
    """The trainer's Config for these settings (defaults elsewhere, as `sefar train` would use)."""
    flags = {
        "model.arch": s.arch, "data.crop": s.crop, "data.frame_size": list(s.frame_size),
        "data.scale_range": list(s.scale_range), "optim.batch_size": s.labeled, "model.drop_path": s.drop_path,
        "method.elements": list(s.elements), "run.device": s.device.type, "run.amp": s.amp, "run.compile": s.compile,
        "run.seed": s.seed,
    }
    return build_config("store:bench", None, flags)


def synthetic_batches(s: BenchSettings, labeled: int, unlabeled: int, seed: int = 0) -> tuple[dict, dict]:
    """(labeled batch with 1 view, unlabeled batch with 2 views) of random uint8 frames on the device."""
    dev = s.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    k = sum(s.elements)
    h0, w0 = s.frame_size

    def batch(n: int, views: int) -> dict:
        frames = torch.randint(0, 256, (n, views, k, h0, w0, 3), generator=gen, device=dev, dtype=torch.uint8)
        labels = torch.randint(0, s.num_classes, (n,), generator=gen, device=dev)
        return {"frames": frames, "labels": labels, "index": torch.arange(n, device=dev)}

    return batch(labeled, 1), batch(unlabeled, 2)


def build_student(cfg, s: BenchSettings):
    """The trainer's student model on the device, in train mode."""
    model = model_from_config(cfg, s.num_classes, temporal_kernel=kernels.element_attention).to(s.device)
    return model.train()


def reference_copy(model):
    """A copy of `model` with the hand-written attention of the reference code."""
    ref = copy.deepcopy(model)
    ref.set_attention("manual")
    return ref


def sgd(cfg, model, *, fused: bool = False) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum and weight decay at the config's lr for its batch: fused, as the trainer
    builds it (`train.update.make_optimizer`), or torch's default kernels for the reference style."""
    o = cfg.optim
    lr = o.lr * o.batch_size / o.ref_batch
    if fused:
        return make_optimizer("sgd", model.parameters(), lr=lr, weight_decay=o.weight_decay, momentum=o.momentum,
                              nesterov=o.nesterov)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=o.momentum, nesterov=o.nesterov,
                           weight_decay=o.weight_decay)
