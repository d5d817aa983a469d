"""Shards of the global batch, and the random numbers each shard's micro-step draws.

One optimizer step consumes a global batch of batch_size x accum_steps x world_size
labeled clips (and unlabeled_ratio times as many unlabeled ones); with optim.global_batch
the trainer picks accum_steps to come nearest to it (`accumulation_for`). Each process's
loader yields its accum_steps micro-batches as one batch of batch_size x accum_steps;
micro-batch m holds samples m, m+A, m+2A, ... of it (A = accum_steps). The loader
deals positions to ranks round-robin (rank r takes r, r+W, ...), so micro-batch m of
rank r holds the global positions v, v+S, v+2S, ... with

    shard v = r + W*m,   S = W*A shards per global batch.

Every random draw of a micro-step comes from (seed, optimizer step, v): a numpy
Generator for the step's own draws (views, mixing, MC-dropout seed) and a torch seed
for the model's internal dropout. Which clips a shard holds and what it draws are
therefore the same for any split of S into processes and accumulation steps:
2 processes x accum 1 train like 1 process x accum 2 (bit for bit on a CPU, where
halving a gradient is exact and sum-then-halve equals halve-then-sum). Mixing
partners are drawn inside a shard.
"""

from __future__ import annotations

import numpy as np
import torch

STEP_STREAM, TORCH_STREAM = 7, 11  # keep a shard's numpy draws and its torch seed independent


def accumulation_for(global_batch: int, batch_size: int, world_size: int) -> int:
    """Micro-steps per optimizer step that bring batch_size x world_size labeled clips nearest to
    `global_batch` (ties: the larger batch), at least one."""
    per_step = batch_size * world_size
    return max(1, (2 * global_batch + per_step) // (2 * per_step))


def shard_of(batch: dict | None, m: int, accum_steps: int) -> dict | None:
    """Micro-batch m of a loader batch holding `accum_steps` micro-batches; None if it is empty."""
    if batch is None or accum_steps == 1:
        return batch
    part = {k: v[m::accum_steps].contiguous() for k, v in batch.items()}  # kernels may want dense inputs
    return part if part["labels"].shape[0] else None


def shard_id(rank: int, world_size: int, m: int) -> int:
    return rank + world_size * m


def seed_shard(seed: int, step: int, shard: int) -> np.random.Generator:
    """The micro-step's Generator; also reseeds torch's global generators (the model's own dropout)."""
    torch_seed = np.random.SeedSequence([seed, TORCH_STREAM, step, shard]).generate_state(1, np.uint64)[0]
    torch.manual_seed(int(torch_seed >> 1))
    return np.random.default_rng([seed, STEP_STREAM, step, shard])
