"""One line of help for every config key (`sefar config keys`), and the table that lists them.

Every key of `sefar_fast.config.Config` has a line here (a test keeps the two in step).
"""

from __future__ import annotations

import dataclasses

from sefar_fast.config import Config

HELP = {
    "data.name": "preset (synth, gym99, ...) or a source: store:DIR, lists:DIR, folder:DIR, video:SPEC",
    "data.root": "folder holding the dataset's videos or frames (remaps the paths in list files)",
    "data.store": "a clip store written by `sefar prepare` for a preset",
    "data.num_classes": "class count the data must have; 0 takes it from the data",
    "data.label_rate": "fraction of the training clips that keep their labels, in (0, 1]",
    "data.split_seed": "seed of the labeled / unlabeled split",
    "data.frame_size": "[height, width] frames are decoded to, before the crops",
    "data.crop": "side of the model's input views, a multiple of the patch size",
    "data.scale_range": "[low, high] short-side jitter of training crops (the frames' short side plays 256)",
    "data.mean": "per-channel mean of the normalisation (x / 255 - mean) / std",
    "data.std": "per-channel std of the normalisation",
    "data.backend": "frame decoder: auto, dali (nvJPEG on a GPU) or pil",
    "data.frame_cache_mb": "on the CPU, keep decoded frames in memory when all of them fit in this many MB (0: off)",
    "data.synth_clips_per_class": "clips per class of the built-in synthetic data",
    "data.synth_seed": "seed of the built-in synthetic data",
    "model.arch": "model size: vit-t, vit-s, vit-b; vit-pico and vit-test for the CPU",
    "model.patch_size": "patch side (null: the arch's own)",
    "model.drop_path": "stochastic depth rate of the last block (0 at the first, linear between)",
    "model.head_dropout": "dropout before the classifier; the teacher's MC samples draw masks of it",
    "model.pretrained": "ViT weights to start from: a local file, timm:/hf: names, synth:vit-pico, or none",
    "model.attn": "attention: sdpa, or manual (the reference code's explicit softmax)",
    "model.checkpoint_activations": "recompute block activations in the backward pass to save memory",
    "model.pos_embed_std": "init std of the position embedding (timm: 0.02; larger helps from scratch)",
    "model.time_embed_std": "init std of the time embeddings (0: zero, as for ImageNet weights; synth: 0.5)",
    "method.name": "sefar, supervised, or fixmatch (the paper's baseline)",
    "method.elements": "frames of each temporal element, the context element last, e.g. [2, 2, 4]",
    "method.perturb": "strong view's temporal perturbation: mod (reverse inside fine elements), whole-clip "
                      "or element-*",
    "method.regulation": "pseudo-label weights: adaptive (Ada-Reg), threshold, or none",
    "method.threshold": "confidence threshold of regulation=threshold",
    "method.teacher_mc": "teacher MC samples: head (dropout masks on one feature) or full (U forwards)",
    "method.mc_samples": "number U of the teacher's MC-dropout samples",
    "method.mix": "tube mixing of unlabeled clips on or off",
    "method.mix_alpha": "alpha of the Beta(alpha, alpha) mixing ratio",
    "method.mix_loss": "loss on mixed clips: mse (the released code) or soft-ce",
    "method.w_un": "weight of the unlabeled (pseudo-label) loss",
    "method.w_mix": "weight of the mixing loss",
    "method.channel_drop": "probability of dropping a colour channel plane in the strong view",
    "method.ema_decay": "EMA decay of the teacher per labeled clip seen",
    "method.warmup_epochs": "supervised epochs before the teacher is created",
    "method.unlabeled_ratio": "unlabeled clips per labeled clip in a step",
    "optim.name": "optimizer: sgd (Nesterov momentum, the paper) or adamw",
    "optim.epochs": "epochs; an epoch is one pass over the labeled clips",
    "optim.batch_size": "labeled clips per process per accumulation micro-step",
    "optim.accum_steps": "micro-steps accumulated per optimizer step (set by optim.global_batch unless given)",
    "optim.global_batch": "labeled clips per optimizer step reached by automatic accumulation (0: off)",
    "optim.lr": "learning rate for a global batch of optim.ref_batch labeled clips (scaled linearly)",
    "optim.ref_batch": "global labeled batch that optim.lr is given for",
    "optim.momentum": "SGD momentum",
    "optim.nesterov": "Nesterov momentum for SGD",
    "optim.weight_decay": "weight decay",
    "optim.milestones": "fractions of the run at which the lr decays",
    "optim.lr_factors": "lr multipliers from each milestone on",
    "optim.lr_warmup_epochs": "linear lr warm-up over this many (fractional) epochs; 0: none",
    "eval.views": "evaluation views, temporal x spatial, e.g. 5x3",
    "eval.every": "epochs between validations (the last epoch always validates)",
    "eval.batch_size": "clips per evaluation batch",
    "eval.protocol": "multiview (deterministic TxS views) or reference (one random view)",
    "eval.headline": "student or teacher: whose val top-1 is the run's headline and picks best.safetensors",
    "run.out": "run folder (null: runs/DATA-METHOD-TIME)",
    "run.seed": "seed of the model's init, the sampling and the augmentations",
    "run.device": "auto (CUDA when available), cpu or cuda",
    "run.compile": "torch.compile the step (null: on for CUDA)",
    "run.amp": "bf16 autocast (null: on for CUDA)",
    "run.log_every": "optimizer steps between logged step records",
    "run.keep": "epoch checkpoints kept besides last and best",
    "run.ckpt_every_steps": "also checkpoint every N optimizer steps (0: epoch ends only)",
    "run.loggers": "experiment trackers fed with the metrics: tensorboard, wandb",
}


def config_keys() -> list[tuple[str, str, object, str]]:
    """(dotted key, type, default, help) of every config key, in config order."""
    defaults = Config()
    rows = []
    for sec in dataclasses.fields(Config):
        section = getattr(defaults, sec.name)
        for f in dataclasses.fields(section):
            key = f"{sec.name}.{f.name}"
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            rows.append((key, kind, getattr(section, f.name), HELP.get(key, "")))
    return rows
