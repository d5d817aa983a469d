"""Two gloo processes under torchrun train like one process with two accumulation micro-steps.

The global batch is split into shards (rank r, micro-step m -> shard r + world*m), and every random
draw of a shard comes from (seed, step, shard); so 2 ranks x batch 2 x accum 1 and 1 process x batch 2 x
accum 2 see the same clips with the same randomness per shard, and differ only in how the gradient sum
is formed (all-reduce vs accumulation). Both ranks must end with identical weights, equal to the
single-process run's (bit for bit here: see the comparison); validation gathers both ranks' clips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sefar_fast import distributed
from sefar_fast.checkpoint import load_weights

OVERRIDES = ["data.synth_clips_per_class=4", "method.warmup_epochs=1", "eval.views=1x1", "eval.every=2",
             "data.frame_size=[32,32]", "data.crop=32", "data.scale_range=[32,36]", "method.unlabeled_ratio=1",
             "method.mc_samples=2", "run.log_every=1"]
FLAGS = {"model.arch": "vit-test", "model.pretrained": "none", "optim.batch_size": 2, "optim.epochs": 2,
         "run.device": "cpu"}

# Each rank trains, then saves the weights it holds (only rank 0 writes the run folder).
WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    from sefar_fast.config import build_config
    from sefar_fast.train.loop import Trainer

    flags, overrides, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    cfg = build_config("synth", None, flags, overrides)
    trainer = Trainer(cfg)
    result = trainer.run()
    torch.save({"student": trainer.state.model.state_dict(), "teacher": trainer.state.teacher.state_dict(),
                "val": result["last"]}, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
""")


@pytest.mark.slow
def test_two_gloo_ranks_match_each_other_and_one_process_with_accumulation(synth_cache, tmp_path, monkeypatch,
                                                                          one_thread):  # as the ranks run
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ddp_run = tmp_path / "ddp"
    flags = {**FLAGS, "run.out": str(ddp_run)}
    env = {**os.environ, "SEFAR_CACHE": str(synth_cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), json.dumps(flags), json.dumps(OVERRIDES), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for part in ("student", "teacher"):
        for k, v in ranks[0][part].items():
            assert torch.equal(v, ranks[1][part][k]), f"ranks differ in {part}.{k}"
    written = load_weights(ddp_run / "last.safetensors")  # rank 0's files hold rank 0's weights
    assert all(torch.equal(written.student[k], v) for k, v in ranks[0]["student"].items())
    assert written.meta["global_step"] == 10  # 20 labeled clips / global batch 4, two epochs

    # The same global batches on one process: batch 2 x accum 2.
    from sefar_fast.config import build_config
    from sefar_fast.train.loop import Trainer

    monkeypatch.setenv("SEFAR_CACHE", str(synth_cache))
    cfg = build_config("synth", None, {**FLAGS, "run.out": str(tmp_path / "single")},
                       OVERRIDES + ["optim.accum_steps=2"])
    single = Trainer(cfg)
    result = single.run()
    for part, module in (("student", single.state.model), ("teacher", single.state.teacher.module)):
        for k, v in module.state_dict().items():
            # Bit for bit: halving is exact in floating point, so sum-then-halve (all-reduce) and
            # halve-then-sum (accumulation with loss x 1/2) give the same gradients.
            assert torch.equal(ranks[0][part][k], v), f"{part}.{k}: {float((ranks[0][part][k] - v).abs().max())}"
    # Validation gathered all 20 val clips on both ranks: the same accuracy as the single process.
    for key in ("val_top1_student", "val_top1_teacher", "val_mca_student"):
        assert ranks[0]["val"][key] == pytest.approx(result["last"][key], abs=1 / 20 + 1e-9)
        assert ranks[0]["val"][key] == ranks[1]["val"][key]


def test_cpu_threads_are_the_cores_split_among_local_processes(monkeypatch):
    # All cores for one process (not a core less for the loader: measured faster on 2 cores);
    # torchrun's LOCAL_WORLD_SIZE processes share them, never fewer than one thread each.
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert distributed.cpu_threads() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert distributed.cpu_threads() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert distributed.cpu_threads() == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert distributed.cpu_threads() == 1
