"""Regulation kernel against `ops.regulation.regulate` fed the same dropout masks; the Philox masks.

As in test_kernels_views, the Triton kernel runs under TRITON_INTERPRET=1 in a child
process (this file run as a script) so that the pytest process never imports triton.
The child asks the kernel for the masks it drew, feeds them to the torch reference,
and reports the differences; the parent judges them.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from interpreted import needs_triton

D = 256  # the fused feature width (models.sefar_net.FUSION_DIM)

# name: U samples, B clips, C classes, mode, logit scale, with bias
CASES = {
    "u10-c7": (10, 3, 7, "adaptive", 3.0, True),
    "u1-std0": (1, 2, 5, "adaptive", 3.0, True),
    "c2-threshold": (3, 3, 2, "threshold", 2.0, True),
    "b1": (5, 1, 11, "adaptive", 3.0, True),
    "u17-c37-none": (17, 2, 37, "none", 3.0, False),
    "c70-blocks-sharp": (4, 2, 70, "adaptive", 25.0, True),
}
STATS = ("p_star", "sigma_star", "tau1", "tau2", "eta", "mean", "std")


def _inputs(case, seed):
    samples, batch, classes, _, scale, with_bias = case
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(batch, D, generator=g)
    weight = torch.randn(classes, D, generator=g) * scale / math.sqrt(D)
    bias = torch.randn(classes, generator=g) if with_bias else None
    return feat, weight, bias


def _reference(feat, weight, bias, masks, mode, threshold):
    """ops.regulation.regulate on the softmaxes of the head with the given masks [U, B, D]."""
    from sefar_fast.ops.regulation import regulate

    logits = (feat[None] * masks) @ weight.T + (0.0 if bias is None else bias)
    return regulate(torch.softmax(logits, dim=-1), mode=mode, threshold=threshold)


def _threshold_between(p_star: torch.Tensor) -> float:
    """Half-way between the two lowest p* values, so rounding cannot flip the 0/1 weights."""
    values = sorted(p_star.tolist())
    return (values[0] + values[1]) / 2


# ----------------------------------------------------------------------------- the child process


def _run_cases() -> dict:
    from sefar_fast import kernels
    from sefar_fast.kernels.regulation import regulate_head_triton

    results = {}
    for i, (name, case) in enumerate(CASES.items()):
        samples, batch, _, mode, _, _ = case
        feat, weight, bias = _inputs(case, seed=i)
        seed = 2**40 + 977 * i
        threshold = 0.95
        if mode == "threshold":  # between the two lowest p*: one clip below, the others above
            masks = kernels.head_keep_masks(seed, samples, batch, D)
            threshold = _threshold_between(_reference(feat, weight, bias, masks, mode, 0.5).p_star)
        reg, masks = regulate_head_triton(feat, weight, bias, seed, samples, mode=mode, threshold=threshold,
                                          return_masks=True)
        want = _reference(feat, weight, bias, masks, mode, threshold)
        dispatched = kernels.regulate_head(feat, weight, bias, seed, samples, mode=mode, threshold=threshold)
        results[name] = dict(
            masks_equal=bool(torch.equal(masks, kernels.head_keep_masks(seed, samples, batch, D))),
            labels_equal=bool(torch.equal(reg.pseudo_label, want.pseudo_label)),
            dispatch_equal=all(torch.equal(getattr(dispatched, k), getattr(reg, k)) for k in (*STATS, "pseudo_label")),
            err={k: float((getattr(reg, k) - getattr(want, k)).abs().max()) for k in STATS},
            finite=all(bool(getattr(reg, k).isfinite().all()) for k in STATS),
            eta=reg.eta.tolist(),
        )
    return results


# ----------------------------------------------------------------------------- the tests (parent process)


@needs_triton
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_equals_reference_fed_the_same_masks(interpreted, name):
    got = interpreted[name]
    assert got["masks_equal"], "the kernel's masks differ from head_keep_masks"
    assert got["labels_equal"]
    assert got["finite"]
    for key, err in got["err"].items():
        assert err <= 2e-6, f"{key} differs by {err}"
    assert got["dispatch_equal"], "kernels.regulate_head did not run the kernel"


@needs_triton
def test_kernel_weights_follow_the_mode(interpreted):
    assert interpreted["u17-c37-none"]["eta"] == [1.0, 1.0]
    assert sorted(interpreted["c2-threshold"]["eta"]) == [0.0, 1.0, 1.0]
    u1 = interpreted["u1-std0"]
    assert u1["err"]["std"] == 0.0  # U = 1: sigma is 0 as in the reference, so tau2 = 1


def test_philox_known_answers():
    """Random123's published Philox4x32-10 test vectors."""
    from sefar_fast.kernels.philox import philox4x32

    def run(key, counter):
        return [int(w) for w in philox4x32(key, tuple(torch.tensor(c) for c in counter))]

    assert run((0, 0), (0, 0, 0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    ones = 0xFFFFFFFF
    assert run((ones, ones), (ones,) * 4) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert run((0xA4093822, 0x299F31D0), (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)) == [
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_keep_masks_are_dropout_masks_keyed_by_sample_and_feature():
    from sefar_fast.kernels import head_keep_masks

    masks = head_keep_masks(5, 20, 30, D, p=0.5)
    assert set(masks.unique().tolist()) == {0.0, 2.0}
    assert (masks > 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    # Each (u, b) row is its own draw; the mask of (u, b) does not depend on U or B.
    flat = masks.reshape(-1, D)
    assert len({tuple(r.tolist()) for r in flat}) == flat.shape[0]
    assert torch.equal(head_keep_masks(5, 7, 11, D)[:, :4], head_keep_masks(5, 7, 4, D)[:7])
    assert not torch.equal(head_keep_masks(6, 7, 4, D), head_keep_masks(5, 7, 4, D))
    scaled = head_keep_masks(1, 20, 20, D, p=0.2)
    assert set(scaled.unique().tolist()) == {0.0, 1.25}
    assert (scaled == 0).float().mean().item() == pytest.approx(0.2, abs=0.01)


def test_torch_path_against_float64_numpy(monkeypatch):
    """regulate_head on the torch path: the softmax statistics and weights recomputed in float64."""
    from sefar_fast import kernels

    monkeypatch.setenv("SEFAR_KERNELS", "torch")
    samples, batch = 6, 4
    feat, weight, bias = _inputs((samples, batch, 9, "adaptive", 4.0, True), seed=11)
    reg = kernels.regulate_head(feat, weight, bias, 123, samples)
    masks = kernels.head_keep_masks(123, samples, batch, D).double().numpy()
    logits = (feat.double().numpy()[None] * masks) @ weight.double().numpy().T + bias.double().numpy()
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    mu, sigma = probs.mean(0), probs.std(0, ddof=1)
    yhat = mu.argmax(1)
    p_star, s_star = mu.max(1), sigma[np.arange(batch), yhat]
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    tau1 = 2 * sig(np.exp(p_star) - np.e)
    tau2 = 2 * (sig(1 / (20 * s_star + 1e-9)) - 0.5)
    assert reg.pseudo_label.tolist() == yhat.tolist()
    for got, want in ((reg.mean, mu), (reg.std, sigma), (reg.tau1, tau1), (reg.tau2, tau2), (reg.eta, tau1 * tau2)):
        assert np.allclose(got.numpy(), want, atol=1e-6)


def test_regulate_head_validates_its_arguments(monkeypatch):
    from sefar_fast import kernels
    from sefar_fast.errors import SefarError

    monkeypatch.setenv("SEFAR_KERNELS", "torch")
    feat, weight, bias = _inputs((2, 2, 3, "adaptive", 1.0, True), seed=0)
    with pytest.raises(SefarError, match="regulation"):
        kernels.regulate_head(feat, weight, bias, 0, 2, mode="soft")
    with pytest.raises(SefarError, match="mc_samples"):
        kernels.regulate_head(feat, weight, bias, 0, 0)
    with pytest.raises(SefarError, match="seed"):
        kernels.regulate_head(feat, weight, bias, -1, 2)
    with pytest.raises(ValueError):
        kernels.regulate_head(feat, weight[:, :10], bias, 0, 2)


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1"
    print(json.dumps(_run_cases()))
