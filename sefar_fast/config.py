"""Typed configuration: dataclasses, YAML presets, dotted overrides, validation.

A run's configuration is built in layers, later ones winning:

    defaults (the dataclasses below)  <  preset (configs/<name>.yaml)  <  --config FILE
      <  command-line flags (--arch, --epochs, ...)  <  free overrides (key=value)

Overrides use dotted keys (``method.perturb=none``) or, when the field name is
unique across sections, the bare name (``perturb=none``). Values are parsed as
YAML, so ``elements=[2,4]`` and ``compile=false`` work. A misspelt key gets a
"did you mean". The resolved config is written to every run folder and into
every checkpoint, so a run can be reproduced from either.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sefar_fast.errors import SefarError
from sefar_fast.models.sizes import ARCHS, arch_spec
from sefar_fast.models.timesformer import ATTN_IMPLS
from sefar_fast.ops.losses import MIX_LOSSES
from sefar_fast.ops.regulation import REGULATIONS
from sefar_fast.ops.views import PERTURBS

METHODS = ("sefar", "supervised", "fixmatch")
TEACHER_MC = ("head", "full")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("sgd", "adamw")
PROTOCOLS = ("multiview", "reference")
HEADLINES = ("student", "teacher")
BACKENDS = ("auto", "dali", "pil")
LOGGERS = ("tensorboard", "wandb", "none")


@dataclass
class DataConfig:
    name: str = "synth"  # preset name, or a source spec such as lists:DIR / store:DIR
    root: str | None = None  # where the clips live (remaps the absolute paths in list files)
    store: str | None = None  # a prepared clip store; set by presets or `sefar prepare`
    num_classes: int = 0  # 0: take it from the data
    label_rate: float = 0.1
    split_seed: int = 0
    frame_size: list[int] = field(default_factory=lambda: [256, 340])  # H0, W0 of decoded frames
    crop: int = 224  # model input side S
    scale_range: list[int] = field(default_factory=lambda: [256, 320])  # short-side jitter (H0 = its 256)
    mean: list[float] = field(default_factory=lambda: [0.45, 0.45, 0.45])
    std: list[float] = field(default_factory=lambda: [0.225, 0.225, 0.225])
    backend: str = "auto"  # auto | dali | pil
    # On the CPU, keep decoded frames in memory when all of the store's fit in this many MB
    # (`data.frame_cache`; the built-in synth data takes about 530); 0: decode every batch.
    frame_cache_mb: int = 1024
    synth_clips_per_class: int = 240  # data.synth.DEFAULT_CLIPS_PER_CLASS (config may not import data)
    synth_seed: int = 0


@dataclass
class ModelConfig:
    arch: str = "vit-s"
    patch_size: int | None = None  # None: the arch's own
    drop_path: float = 0.1
    head_dropout: float = 0.5
    pretrained: str | None = None  # ViT weights: timm:NAME.TAG, hf:OWNER/REPO[/FILE], synth:vit-pico or a local file
    attn: str = "sdpa"  # sdpa | manual
    checkpoint_activations: bool = False
    # init std of the position and time embeddings (timm: 0.02 and none); larger values help
    # training from scratch on little data (see SefarNet.reset_parameters)
    pos_embed_std: float = 0.02
    time_embed_std: float = 0.0


@dataclass
class MethodConfig:
    name: str = "sefar"
    elements: list[int] = field(default_factory=lambda: [2, 2, 4])
    perturb: str = "mod"
    regulation: str = "adaptive"
    threshold: float = 0.95
    teacher_mc: str = "head"
    mc_samples: int = 10
    mix: bool = True
    mix_alpha: float = 10.0
    mix_loss: str = "mse"
    w_un: float = 2.0
    w_mix: float = 2.0
    channel_drop: float = 0.2
    ema_decay: float = 0.9999  # per labeled clip seen
    warmup_epochs: int = 5
    unlabeled_ratio: int = 3


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd (the paper) | adamw (for models trained from scratch, e.g. the synth preset)
    epochs: int = 30
    batch_size: int = 8  # labeled clips per step per process
    accum_steps: int = 1  # micro-steps per optimizer step (computed when global_batch is set)
    # Labeled clips per optimizer step, reached by gradient accumulation over whatever batch_size and
    # process count are given (the paper's 64; the nearest multiple when it does not divide). 0: off,
    # accum_steps as given. Setting accum_steps explicitly turns it off.
    global_batch: int = 64
    lr: float = 0.005  # for an effective labeled batch of ref_batch; scaled linearly
    ref_batch: int = 64
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-3
    milestones: list[float] = field(default_factory=lambda: [25 / 30, 28 / 30])  # fractions of the run
    lr_factors: list[float] = field(default_factory=lambda: [0.1, 0.01])
    # linear lr warm-up from 0 over this many (fractional) epochs; 0 = none (the paper has none).
    # Not method.warmup_epochs, the supervised-only epochs before the teacher exists.
    lr_warmup_epochs: float = 0.0


@dataclass
class EvalConfig:
    views: str = "5x3"  # temporal x spatial
    every: int = 1  # epochs between validations
    batch_size: int = 16
    # multiview: deterministic TxS views; reference: one random view per clip, as the released code
    protocol: str = "multiview"
    # The model whose val top-1 is the run's headline and picks best.safetensors (both are always
    # reported): the student, as the paper reports; before the teacher exists, the student.
    headline: str = "student"


@dataclass
class RunConfig:
    out: str | None = None  # run folder; default runs/<data>-<method>-<time>
    seed: int = 0
    device: str = "auto"
    compile: bool | None = None  # None: on for CUDA
    amp: bool | None = None  # bf16 autocast; None: on for CUDA
    log_every: int = 20
    keep: int = 1  # epoch-NNN.safetensors checkpoints kept besides last/best (0: none)
    ckpt_every_steps: int = 0  # also write last.* every N optimizer steps (0: only at epoch ends)
    loggers: list[str] = field(default_factory=list)  # experiment trackers: tensorboard, wandb


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def num_frames(self) -> int:
        return sum(self.method.elements)


def fixmatch_method_keys(num_frames: int) -> dict[str, Any]:
    return {"method": {"elements": [num_frames], "perturb": "warp", "regulation": "threshold"}}


SECTIONS = [f.name for f in dataclasses.fields(Config)]
# Init options for training from scratch; off (timm's init) under --pretrained unless set explicitly.
FROM_SCRATCH_INIT = ("model.pos_embed_std", "model.time_embed_std")
SECTION_TYPES = {f.name: type(f.default_factory()) for f in dataclasses.fields(Config)}
TYPE_WORDS = {"str": "a text", "int": "an integer", "float": "a number", "bool": "true or false",
              "list[int]": "integers", "list[float]": "numbers", "list[str]": "names"}


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("sefar_fast.configs").iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    path = resources.files("sefar_fast.configs") / f"{name}.yaml"
    if not path.is_file():
        hint = _did_you_mean(name, preset_names())
        raise SefarError(f"unknown data preset '{name}'{hint}; presets: {', '.join(preset_names())}")
    return yaml.safe_load(path.read_text()) or {}


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SefarError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SefarError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SefarError(f"config file {p} must hold a mapping of sections (data:, model:, ...)")
    return data


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _all_keys() -> dict[str, list[str]]:
    """Bare field name -> the dotted keys that carry it."""
    keys: dict[str, list[str]] = {}
    for sec in SECTIONS:
        for f in dataclasses.fields(getattr(Config, "__dataclass_fields__")[sec].default_factory()):
            keys.setdefault(f.name, []).append(f"{sec}.{f.name}")
    return keys


def resolve_key(key: str) -> tuple[str, str]:
    """'method.perturb' or 'perturb' -> ('method', 'perturb'); SefarError with a suggestion otherwise."""
    keys = _all_keys()
    dotted = sorted(k for ks in keys.values() for k in ks)
    if "." in key:
        sec, name = key.split(".", 1)
        if f"{sec}.{name}" in dotted:
            return sec, name
        raise SefarError(f"unknown config key '{key}'{_did_you_mean(key, dotted)}")
    if key in keys:
        if len(keys[key]) > 1:
            raise SefarError(f"config key '{key}' is ambiguous: write one of {', '.join(keys[key])}")
        sec, name = keys[key][0].split(".")
        return sec, name
    raise SefarError(f"unknown config key '{key}'{_did_you_mean(key, list(keys) + dotted)}")


def _annotation(sec: str, name: str) -> str:
    """The field's type as written in its dataclass ("int", "list[float]", "str | None", ...)."""
    return next(f.type for f in dataclasses.fields(SECTION_TYPES[sec]) if f.name == name)


def _coerce(sec: str, name: str, value: Any, current: Any) -> Any:
    """Check a value against the field's declared type; element types of lists too."""
    where = f"{sec}.{name}"
    annotation = _annotation(sec, name)
    optional = annotation.endswith("| None")
    kind = annotation.removesuffix("| None").strip()
    if value is None:
        if optional:
            return None
        raise SefarError(f"{where} needs a value ({TYPE_WORDS[kind]}), got null")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise SefarError(f"{where} must be true or false, got {value!r}")
    if kind == "int":
        return _as_int(where, value)
    if kind == "float":
        return _as_float(where, value)
    if kind.startswith("list["):
        example = current if isinstance(current, list) and current else ([2, 2, 4] if kind != "list[str]" else
                                                                         ["tensorboard"])
        if not isinstance(value, (list, tuple)):
            raise SefarError(f"{where} must be a list like {example}, got {value!r}")
        convert = {"list[int]": _as_int, "list[float]": _as_float, "list[str]": _as_name}[kind]
        try:
            return [convert(where, v) for v in value]
        except SefarError:
            raise SefarError(f"{where} must be a list of {TYPE_WORDS[kind]} like {example}, got {value!r}") from None
    if isinstance(value, (dict, list)):
        raise SefarError(f"{where} must be a single value, got {value!r}")
    return value if isinstance(value, str) else str(value)


def _as_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or int(value) != value:
        raise SefarError(f"{where} must be an integer, got {value!r}")
    return int(value)


def _as_name(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SefarError(f"{where} must be a list of names, got {value!r}")
    return value


def _as_float(where: str, value: Any) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string, in config files too
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SefarError(f"{where} must be a number, got {value!r}")
    return float(value)


def apply(cfg: Config, updates: dict[str, Any], source: str = "") -> Config:
    """Apply a nested ({section: {key: value}}) or flat ({'a.b': v}) mapping."""
    for key, value in updates.items():
        if key in SECTIONS and isinstance(value, dict):
            for sub, v in value.items():
                set_value(cfg, f"{key}.{sub}", v, source)
        else:
            set_value(cfg, key, value, source)
    return cfg


def set_value(cfg: Config, key: str, value: Any, source: str = "") -> None:
    try:
        sec, name = resolve_key(key)
    except SefarError as e:
        raise SefarError(f"{e} (in {source})" if source else str(e)) from None
    section = getattr(cfg, sec)
    setattr(section, name, _coerce(sec, name, value, getattr(section, name)))


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise SefarError(f"override '{text}' must look like key=value (e.g. method.perturb=none)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 as a string
            value = float(value)
        except ValueError:
            pass
    return key.strip(), value


def apply_override(cfg: Config, text: str) -> str:
    """One `key=value` from the command line, typed as YAML, except that a text key keeps the text as
    typed where YAML would turn it into something else (`run.out=010` is the folder 010, not 8;
    `eval.views=0x3` is not the number 3), and a number with leading zeros is decimal (010 is 10).
    Returns the dotted key it set."""
    key, value = parse_override(text)
    sec, name = resolve_key(key)
    raw = text.split("=", 1)[1].strip()
    if value is not None and not isinstance(value, str) and _annotation(sec, name).startswith("str"):
        value = raw
    elif re.fullmatch(r"[+-]?0\d+", raw):  # YAML 1.1 octal: 010 would be 8
        value = int(raw, 10)
    set_value(cfg, f"{sec}.{name}", value)
    return f"{sec}.{name}"


def build_config(
    data: str = "synth",
    config_file: str | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Layer defaults, preset, file, flags and overrides; validate; return the Config.

    With `model.pretrained` given by the user, the from-scratch init options (FROM_SCRATCH_INIT) go
    back to timm's init unless the config file, a flag or an override sets them too: a preset's values
    for training from scratch would move the loaded ViT's features. A preset that names its own
    weights (synth: the packaged backbone) keeps its values, chosen for those weights."""
    cfg = Config()
    cfg.data.name = data
    explicit: set[str] = set()  # dotted keys set by the user (file, flags, overrides), not by a preset
    preset = data if ":" not in data and not Path(data).exists() else None
    if preset is not None:
        apply(cfg, load_preset(preset), source=f"preset {preset}")
        cfg.data.name = data
    if config_file:
        values = load_yaml_file(config_file)
        apply(cfg, values, source=str(config_file))
        explicit |= {f"{k}.{sub}" for k, v in values.items() if k in SECTIONS and isinstance(v, dict) for sub in v}
        explicit |= {".".join(resolve_key(k)) for k, v in values.items() if not (k in SECTIONS and isinstance(v, dict))}
    for key, value in (flags or {}).items():
        if value is not None:
            set_value(cfg, key, value)
            explicit.add(".".join(resolve_key(key)))
    if cfg.method.name == "fixmatch":
        # The paper's Table 3 baseline: one element of all K frames, temporal warping as the
        # strong augmentation, a fixed confidence threshold. Later overrides still win.
        apply(cfg, fixmatch_method_keys(sum(cfg.method.elements)))
    for text in overrides or []:
        explicit.add(apply_override(cfg, text))
    if "optim.accum_steps" in explicit and "optim.global_batch" not in explicit:
        cfg.optim.global_batch = 0  # the accumulation the user asked for, not the automatic one
    if cfg.model.pretrained in ("", "none"):  # `--pretrained none`: from scratch, whatever the preset says
        cfg.model.pretrained = None
    if cfg.model.pretrained and "model.pretrained" in explicit:
        for key in FROM_SCRATCH_INIT:
            if key not in explicit:
                set_value(cfg, key, getattr(ModelConfig(), key.split(".")[1]))
    validate(cfg)
    return cfg


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config from its to_dict() form (checkpoints, run folders)."""
    cfg = Config()
    apply(cfg, copy.deepcopy(d))
    return cfg


def _choice(where: str, value: str, choices) -> None:
    if value not in choices:
        raise SefarError(f"{where} '{value}' is not one of {', '.join(choices)}{_did_you_mean(value, choices)}")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _seed(v) -> bool:
    return 0 <= v < 2**63  # what torch.manual_seed and numpy's SeedSequence both take


# What each key accepts, checked before anything is built: (test, the allowed range in words). Keys
# checked elsewhere: the choices below, data.label_rate and eval.views (own messages), the paths
# (data.root, data.store, model.pretrained, run.out: they must exist or be writable, `train.checks`),
# and the booleans (their type is the whole rule, `_coerce`). Cross-field rules follow in `validate`.
RANGES: dict[str, tuple[Any, str]] = {
    "data.name": (lambda v: v.strip() != "", "a preset or a source such as store:DIR"),
    "data.num_classes": (lambda v: v >= 0, "an integer >= 0 (0: take it from the data)"),
    "data.split_seed": (_seed, "an integer in [0, 2^63)"),
    "data.frame_size": (lambda v: len(v) == 2 and min(v) >= 1, "[height, width], two integers >= 1"),
    "data.crop": (lambda v: v >= 1, "an integer >= 1"),
    "data.scale_range": (lambda v: len(v) == 2 and 1 <= v[0] <= v[1], "[low, high] with 1 <= low <= high"),
    "data.mean": (lambda v: len(v) == 3 and all(map(_finite, v)), "three finite numbers (per RGB channel)"),
    "data.std": (lambda v: len(v) == 3 and all(_finite(x) and x > 0 for x in v),
                 "three finite numbers > 0 (per RGB channel)"),
    "data.synth_clips_per_class": (lambda v: v >= 2, "an integer >= 2 (one train and one val clip per class)"),
    "data.synth_seed": (_seed, "an integer in [0, 2^63)"),
    "data.frame_cache_mb": (lambda v: v >= 0, "an integer >= 0 (0: off)"),
    "model.patch_size": (lambda v: v is None or v >= 1, "an integer >= 1, or null for the arch's own"),
    "model.drop_path": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.head_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.pos_embed_std": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "model.time_embed_std": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "method.elements": (lambda v: len(v) >= 1 and min(v) >= 1, "a non-empty list of frame counts >= 1, e.g. [2,2,4]"),
    "method.threshold": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "method.mc_samples": (lambda v: v >= 1, "an integer >= 1"),
    "method.mix_alpha": (lambda v: _finite(v) and v > 0, "a finite number > 0 (tube mixing draws Beta(alpha, alpha))"),
    "method.w_un": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "method.w_mix": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "method.channel_drop": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "method.ema_decay": (lambda v: 0 < v < 1, "in (0, 1)"),
    "method.warmup_epochs": (lambda v: v >= 0, "an integer >= 0"),
    "method.unlabeled_ratio": (lambda v: v >= 1, "an integer >= 1 (unlabeled clips per labeled clip)"),
    "optim.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "optim.batch_size": (lambda v: v >= 1, "an integer >= 1 (--batch-size)"),
    "optim.accum_steps": (lambda v: v >= 1, "an integer >= 1"),
    "optim.global_batch": (lambda v: v >= 0, "0 (off) or a number of labeled clips, e.g. 64"),
    "optim.lr": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "optim.ref_batch": (lambda v: v >= 1, "an integer >= 1"),
    "optim.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optim.weight_decay": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "optim.milestones": (lambda v: all(0 < m < 1 for m in v) and list(v) == sorted(v),
                         "ascending fractions of the run, each in (0, 1)"),
    "optim.lr_factors": (lambda v: all(_finite(f) and f > 0 for f in v), "finite numbers > 0"),
    "optim.lr_warmup_epochs": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (epochs)"),
    "eval.every": (lambda v: v >= 1, "an integer >= 1 (epochs between validations)"),
    "eval.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "run.seed": (_seed, "an integer in [0, 2^63)"),
    "run.log_every": (lambda v: v >= 1, "an integer >= 1 (optimizer steps)"),
    "run.keep": (lambda v: v >= 0, "an integer >= 0"),
    "run.ckpt_every_steps": (lambda v: v >= 0, "an integer >= 0 (0: only at epoch ends)"),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "data.backend": BACKENDS, "model.arch": tuple(ARCHS), "model.attn": ATTN_IMPLS, "method.name": METHODS,
    "method.perturb": PERTURBS, "method.regulation": REGULATIONS, "method.teacher_mc": TEACHER_MC,
    "method.mix_loss": MIX_LOSSES, "optim.name": OPTIMIZERS, "eval.protocol": PROTOCOLS, "eval.headline": HEADLINES,
    "run.device": DEVICES,
}


def _shown(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def validate(cfg: Config) -> None:
    """Every key within its range, then the rules between keys; SefarError naming key, value and range."""
    for key, allowed in CHOICES.items():
        sec, name = key.split(".")
        _choice(key, getattr(getattr(cfg, sec), name), allowed)
    for name in cfg.run.loggers:
        _choice("run.loggers", name, LOGGERS)
    d, m, o = cfg.data, cfg.method, cfg.optim
    if not (0 < d.label_rate <= 1):
        raise SefarError(f"data.label_rate {d.label_rate} must be in (0, 1], e.g. --label-rate 0.05 for 5% labeled "
                         "clips")
    for key, (ok, allowed) in RANGES.items():
        sec, name = key.split(".")
        value = getattr(getattr(cfg, sec), name)
        if not ok(value):
            raise SefarError(f"{key} {_shown(value)} is out of range: it must be {allowed}")
    try:
        t, s = (int(v) for v in cfg.eval.views.lower().split("x"))
        assert t >= 1 and s >= 1
    except (ValueError, AssertionError):
        raise SefarError(f"eval views '{cfg.eval.views}' must look like TxS, e.g. 5x3 or 1x1") from None
    _validate_together(cfg, d, m, o)


def _validate_together(cfg: Config, d: DataConfig, m: MethodConfig, o: OptimConfig) -> None:
    """The rules between keys."""
    if len(m.elements) > 1 and max(m.elements[:-1]) > m.elements[-1]:
        raise SefarError(f"elements {m.elements}: the last (context) element must be the longest")
    if m.name != "supervised" and m.warmup_epochs >= o.epochs:
        raise SefarError(
            f"warmup_epochs {m.warmup_epochs} leaves no semi-supervised epoch out of {o.epochs}: "
            "raise --epochs or lower method.warmup_epochs"
        )
    if d.crop > min(d.frame_size):
        raise SefarError(f"data.crop {d.crop} is larger than the frames {d.frame_size}")
    patch = arch_spec(cfg.model.arch, cfg.model.patch_size).patch_size
    if d.crop % patch:
        raise SefarError(f"data.crop {d.crop} is not a multiple of the patch size {patch} of {cfg.model.arch}; "
                         f"use a crop such as {max(patch, d.crop // patch * patch)} or set model.patch_size")
    if d.scale_range[0] < d.crop:
        # The frame's short side is scaled to a size in the range, then cropped: below the crop the
        # crop box would not fit and the zoom would be clamped away.
        raise SefarError(f"data.scale_range {d.scale_range} starts below data.crop {d.crop}: the short side is "
                         f"scaled into this range before the crop; use a range from {d.crop} up")
    if len(o.milestones) != len(o.lr_factors):
        raise SefarError(f"optim.milestones {o.milestones} and optim.lr_factors {o.lr_factors} must have the same "
                         "length (one factor per milestone)")
    if o.lr_warmup_epochs >= o.epochs:
        raise SefarError(f"optim.lr_warmup_epochs {o.lr_warmup_epochs} must be in [0, epochs={o.epochs}): "
                         "lower it or raise --epochs")
    if o.name == "sgd" and o.nesterov and o.momentum == 0:
        raise SefarError("optim.nesterov needs optim.momentum > 0 (got 0); set a momentum or optim.nesterov=false")


def eval_views(cfg: Config) -> tuple[int, int]:
    t, s = (int(v) for v in cfg.eval.views.lower().split("x"))
    return t, s
