"""View kernels against the torch reference (`ops.views`), and the view dispatchers.

The Triton kernels run on the CPU under TRITON_INTERPRET=1. Triton decides between
interpreter and compiler when it is imported, so the interpreted checks run in a
child process (this file run as a script) and the pytest process never imports
triton: the other test modules are unaffected. The child builds every case with
poisoned (NaN) outputs and reports, per case, the largest error against the
reference and the number of values left unwritten; the tests below judge them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from interpreted import needs_triton

MEAN, STD = [0.45, 0.40, 0.50], [0.225, 0.30, 0.20]

# name: batch, elements, (H0, W0), S, patch, perturbation, output dtype, box style
CASES = {
    "b1-mod-odd": (1, [2, 2, 4], (7, 9), 6, 3, "mod", "float32", "drawn"),
    "b2-none-up": (2, [2, 4], (9, 11), 5, 5, "none", "float32", "outside"),
    "portrait-all-reverse": (2, [2, 2, 2, 4], (11, 8), 9, 3, "all-reverse", "float32", "drawn"),
    "b3-all-shuffle": (3, [2, 2, 6], (13, 17), 7, 7, "all-shuffle", "float32", "outside"),
    "upsample-local-shuffle": (2, [2, 2, 8], (5, 13), 10, 5, "local-shuffle", "float32", "drawn"),
    "one-element-warp": (1, [8], (9, 9), 3, 1, "warp", "float32", "outside"),
    "bf16-t-drop": (2, [2, 2, 4], (10, 15), 8, 4, "t-drop", "bfloat16", "drawn"),
    "t-half": (2, [2, 4], (6, 7), 6, 2, "t-half", "float32", "outside"),
}
ELEMENT_COMBOS = ([2, 2, 4], [2, 4], [2, 2, 2, 4], [2, 2, 6], [2, 2, 8], [8])
EVAL_CASES = list(CASES)[:3]  # spatial views 0, 1, 2 of 3; landscape and portrait frames


# ----------------------------------------------------------------------------- the child process


def _inputs(case, seed):
    from sefar_fast.ops import views as ref
    from sefar_fast.ops.mixing import tube_masks

    batch, elements, (h0, w0), size, patch, perturb, _, box_style = case
    rng = np.random.default_rng(seed)
    k = sum(elements)
    frames = torch.from_numpy(rng.integers(0, 256, (batch, 2, k, h0, w0, 3), dtype=np.uint8))[:, 1]
    if box_style == "drawn":  # the others stay a strided view, as the loader's frames[:, v]
        frames = frames.contiguous()
    params = ref.draw_view_params(batch, elements, (h0, w0), size, "strong", rng, perturb=perturb,
                                  channel_drop=0.5, ref_short=min(h0, w0))
    if box_style == "outside":  # boxes reaching past the frame: the clamped borders
        y0 = rng.uniform(-3, h0 - 1, batch)
        x0 = rng.uniform(-3, w0 - 1, batch)
        side = rng.uniform(1, 1.5 * max(h0, w0), batch)
        params.box = torch.tensor(np.stack([y0, x0, side, side], 1), dtype=torch.float32)
    grid = (size // patch, size // patch)
    masks = tube_masks(elements, grid, float(rng.uniform(0.2, 0.8)), rng)
    partner = rng.permutation(batch)
    while batch > 1 and (partner == np.arange(batch)).all():  # someone must lend to someone else
        partner = rng.permutation(batch)
    return frames, params, masks, torch.from_numpy(partner)


def _error(out, want, dtype):
    """Largest error beyond the dtype's tolerance (<= 0 passes), and the count of unwritten values."""
    if dtype == torch.bfloat16:  # one bf16 step: the interpreter truncates where torch rounds
        excess = (out.float() - want.float()).abs() - 2.0**-7 * want.float().abs() - 1e-6
    else:
        excess = (out - want).abs() - 1e-5
    return float(excess.nan_to_num(0.0).max()), int(out.float().isnan().sum())


def _run_view_cases() -> dict:
    from sefar_fast import kernels
    from sefar_fast.ops import views as ref

    assert kernels.kernel_backend("cpu") == "triton"
    results = {}
    for i, (name, case) in enumerate(CASES.items()):
        batch, elements, _, size, patch, _, dtype_name, _ = case
        dtype = getattr(torch, dtype_name)
        frames, params, masks, partner = _inputs(case, seed=100 + i)
        k = sum(elements)
        shape = (batch, k, 3, size, size)
        # build_views into a slice of a poisoned batch: the rest must stay untouched.
        big = torch.full((batch + 2, *shape[1:]), float("nan"), dtype=dtype)
        kernels.build_views(frames, params, MEAN, STD, out=big[1:1 + batch])
        want = ref.build_views(frames, params, MEAN, STD, dtype)
        err, unwritten = _error(big[1:1 + batch], want, dtype)
        outside_nan = int(big[0].float().isnan().sum() + big[-1].float().isnan().sum())
        results[f"views/{name}"] = dict(err=err, unwritten=unwritten, outside_ok=outside_nan == 2 * big[0].numel())
        if name in EVAL_CASES:  # evaluation views: no order tensor (identity), no flip, no scale
            eval_params = ref.eval_view_params(batch, frames.shape[2:4], size, i, 3)
            out = kernels.build_views(frames, eval_params, MEAN, STD, dtype)
            err, unwritten = _error(out, ref.build_views(frames, eval_params, MEAN, STD, dtype), dtype)
            results[f"eval/{name}"] = dict(err=err, unwritten=unwritten, outside_ok=True)
        # Fused strong + mixed.
        strong = torch.full(shape, float("nan"), dtype=dtype)
        mixed = torch.full(shape, float("nan"), dtype=dtype)
        kernels.build_strong_mixed(frames, params, MEAN, STD, masks, partner, elements, patch,
                                   out_strong=strong, out_mixed=mixed)
        want_strong = ref.build_views(frames, params, MEAN, STD, dtype)
        clean = ref.build_views(frames, replace(params, channel_scale=torch.ones(batch, 3)), MEAN, STD, dtype)
        want_mixed = ref.mix_views(want_strong, clean, masks, partner, elements, patch)
        err_s, unwritten_s = _error(strong, want_strong, dtype)
        err_m, unwritten_m = _error(mixed, want_mixed, dtype)
        results[f"mixed/{name}"] = dict(err=max(err_s, err_m), unwritten=unwritten_s + unwritten_m, outside_ok=True)
    return results


# ----------------------------------------------------------------------------- the tests (parent process)


def test_cases_cover_every_element_combo_and_perturbation():
    from sefar_fast.ops.views import ELEMENT_PERTURBS, PERTURBS

    assert {tuple(c[1]) for c in CASES.values()} == {tuple(e) for e in ELEMENT_COMBOS}
    # The element-level variants' orders (permutations and resamplings inside each element) are a special
    # case of the whole-video ones', which move frames across elements: the kernel reads any order alike.
    assert {c[5] for c in CASES.values()} == set(PERTURBS) - set(ELEMENT_PERTURBS)


KINDS = [(kind, name) for name in CASES for kind in ("views", "mixed")] + [("eval", n) for n in EVAL_CASES]


@needs_triton
@pytest.mark.parametrize("kind,name", KINDS)
def test_triton_matches_reference(interpreted, kind, name):
    got = interpreted[f"{kind}/{name}"]
    assert got["unwritten"] == 0, "some output values were never written"
    assert got["err"] <= 0.0, f"error exceeds the dtype tolerance by {got['err']}"
    assert got["outside_ok"], "values outside the output slice were overwritten"


def test_auto_backend_on_cpu_is_the_reference(monkeypatch):
    from sefar_fast import kernels
    from sefar_fast.ops import views as ref

    monkeypatch.delenv("SEFAR_KERNELS", raising=False)
    assert kernels.kernel_backend("cpu") == "torch"
    frames, params, _, _ = _inputs(CASES["b2-none-up"], seed=1)
    out = kernels.build_views(frames, params, MEAN, STD)
    assert out.dtype == torch.float32
    assert torch.equal(out, ref.build_views(frames, params, MEAN, STD))


def test_backend_choice_is_validated(monkeypatch):
    from sefar_fast import kernels
    from sefar_fast.errors import SefarError

    monkeypatch.setenv("SEFAR_KERNELS", "fast")
    with pytest.raises(SefarError, match="SEFAR_KERNELS"):
        kernels.kernel_backend("cpu")
    monkeypatch.setenv("SEFAR_KERNELS", "torch")
    assert kernels.kernel_backend("cuda") == "torch"
    if importlib.util.find_spec("triton") is not None:
        monkeypatch.setenv("SEFAR_KERNELS", "triton")
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(SefarError, match="CUDA"):
            kernels.kernel_backend("cpu")


def test_torch_strong_mixed_shows_own_patches_and_the_partners_clean_view(monkeypatch):
    """Hand-checked property: per patch, the mixed clip is either its own dropped view or the
    partner's view rebuilt from the partner's frames without channel dropout."""
    from sefar_fast import kernels
    from sefar_fast.ops import views as ref

    monkeypatch.setenv("SEFAR_KERNELS", "torch")
    batch, elements, _, size, patch = CASES["b3-all-shuffle"][:5]
    frames, params, masks, partner = _inputs(CASES["b3-all-shuffle"], seed=7)
    strong, mixed = kernels.build_strong_mixed(frames, params, MEAN, STD, masks, partner, elements, patch)
    assert torch.equal(strong, ref.build_views(frames, params, MEAN, STD))
    starts = np.cumsum([0, *elements[:-1]])
    for b in range(batch):
        p = int(partner[b])
        partner_clean = ref.build_views(frames[p:p + 1], _one_clean_view(params, p), MEAN, STD)[0]
        for e, (start, n) in enumerate(zip(starts, elements)):
            for i in range(size // patch):
                for j in range(size // patch):
                    sl = (slice(start, start + n), slice(None), slice(i * patch, (i + 1) * patch),
                          slice(j * patch, (j + 1) * patch))
                    want = strong[b][sl] if masks[e, i, j] else partner_clean[sl]
                    assert torch.equal(mixed[b][sl], want)


def _one_clean_view(params, b):
    """Sample b's view parameters alone, without channel dropout."""
    from sefar_fast.ops.views import ViewParams

    return ViewParams(params.box[b:b + 1], params.flip[b:b + 1], params.order[b:b + 1], torch.ones(1, 3),
                      params.out_size)


def test_strong_mixed_checks_partner_and_patch_grid(monkeypatch):
    from sefar_fast import kernels
    from sefar_fast.errors import SefarError

    monkeypatch.setenv("SEFAR_KERNELS", "torch")
    batch, elements, _, size, patch = CASES["b2-none-up"][:5]
    frames, params, masks, _ = _inputs(CASES["b2-none-up"], seed=3)
    with pytest.raises(ValueError, match="permutation"):
        kernels.build_strong_mixed(frames, params, MEAN, STD, masks, torch.tensor([0, 0]), elements, patch)
    with pytest.raises(SefarError, match="patch"):
        kernels.build_strong_mixed(frames, params, MEAN, STD, masks, torch.tensor([1, 0]), elements, patch + 1)


if __name__ == "__main__":
    # Child process: TRITON_INTERPRET=1 and SEFAR_KERNELS=triton come from the parent's environment.
    assert os.environ.get("TRITON_INTERPRET") == "1"
    print(json.dumps(_run_view_cases()))
