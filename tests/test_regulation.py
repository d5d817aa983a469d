"""Adaptive Regulation against a direct numpy evaluation, and MC head sampling against full reruns."""

import math

import numpy as np
import pytest
import torch

from sefar_fast.errors import SefarError
from sefar_fast.train.regulation import head_dropout_masks, mc_full_probs, mc_head_probs, regulate


def numpy_regulation(probs):
    """The released code's formulas written out in float64 numpy."""
    u = probs.shape[0]
    mu = probs.mean(axis=0)
    sigma = probs.std(axis=0, ddof=1) if u > 1 else np.zeros_like(mu)
    yhat = mu.argmax(axis=1)
    p_star = mu.max(axis=1)
    sigma_star = sigma[np.arange(len(yhat)), yhat]
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    tau1 = 2 * sig(np.exp(p_star) - np.e)
    tau2 = 2 * (sig(1 / (20 * sigma_star + 1e-9)) - 0.5)
    return dict(pseudo_label=yhat, p_star=p_star, sigma_star=sigma_star, tau1=tau1, tau2=tau2, eta=tau1 * tau2,
                mean=mu, std=sigma)


def check_against_numpy(probs):
    got = regulate(torch.from_numpy(probs))
    want = numpy_regulation(probs)
    assert got.pseudo_label.tolist() == want["pseudo_label"].tolist()
    for key in ("p_star", "sigma_star", "tau1", "tau2", "eta", "mean", "std"):
        assert np.allclose(getattr(got, key).numpy(), want[key], atol=1e-6), key
    return got


@pytest.mark.parametrize("u,b,c", [(10, 16, 7), (10, 5, 2), (3, 8, 99), (2, 4, 3)])
def test_adaptive_matches_numpy_on_random_predictions(u, b, c):
    rng = np.random.default_rng(u * 100 + c)
    # Teacher-like samples: a per-clip Dirichlet mean, U noisy draws around it.
    base = rng.dirichlet(np.full(c, 0.3), size=b)
    probs = np.stack([[rng.dirichlet(base[i] * 30 + 1e-3) for i in range(b)] for _ in range(u)]).astype(np.float32)
    check_against_numpy(probs)


def test_single_sample_has_zero_spread():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(1, 6)).astype(np.float32)
    got = check_against_numpy(probs)
    assert torch.equal(got.std, torch.zeros(6, 5)) and torch.allclose(got.tau2, torch.ones(6))
    assert torch.allclose(got.eta, got.tau1)


def test_one_hot_and_uniform_predictions():
    one_hot = np.zeros((10, 3, 4), np.float32)
    one_hot[:, np.arange(3), [2, 0, 3]] = 1
    got = check_against_numpy(one_hot)
    assert got.pseudo_label.tolist() == [2, 0, 3]
    assert torch.allclose(got.eta, torch.ones(3))  # p* = 1 -> tau1 = 1; sigma* = 0 -> tau2 = 1
    uniform = np.full((10, 2, 4), 0.25, np.float32)
    got = check_against_numpy(uniform)
    assert torch.allclose(got.tau1, torch.full((2,), 2 / (1 + math.exp(math.e - math.exp(0.25)))))


def test_published_sample_values():
    """tau1 at p* = 0.2, 0.5, 0.8 and tau2 at sigma* = 0.01, 0.05, 0.1 (reference-code facts §5)."""
    for p, tau1 in [(0.2, 0.366), (0.5, 0.511), (0.8, 0.759)]:
        others = math.ceil((1 - p) / p) + 1  # enough other classes that each stays below p
        row = [p] + [(1 - p) / others] * others
        got = regulate(torch.tensor([[row]] * 3))  # three identical samples: sigma* = 0
        assert got.p_star.item() == pytest.approx(p, abs=1e-6)
        assert got.tau1.item() == pytest.approx(tau1, abs=1e-3)
        assert got.eta.item() == pytest.approx(tau1, abs=1e-3)
    for sigma, tau2 in [(0.01, 0.987), (0.05, 0.462), (0.1, 0.245)]:
        d = sigma / math.sqrt(2)  # two samples 0.7 +- d have unbiased std sigma
        got = regulate(torch.tensor([[[0.7 + d, 0.3 - d]], [[0.7 - d, 0.3 + d]]]))
        assert got.sigma_star.item() == pytest.approx(sigma, rel=1e-4)
        assert got.tau2.item() == pytest.approx(tau2, abs=1e-3)


def test_threshold_and_none_modes():
    probs = torch.tensor([[[0.96, 0.04], [0.90, 0.10], [0.5, 0.5]]]).expand(4, 3, 2)
    assert regulate(probs, "threshold", 0.95).eta.tolist() == [1.0, 0.0, 0.0]
    assert regulate(probs, "threshold", 0.9).eta.tolist() == [1.0, 1.0, 0.0]
    assert regulate(probs, "none").eta.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(SefarError):
        regulate(probs, "fixed")


def test_weights_carry_no_gradient():
    logits = torch.randn(5, 3, 4, requires_grad=True)
    reg = regulate(logits.softmax(-1))
    assert not reg.eta.requires_grad and not reg.mean.requires_grad


# ----------------------------------------------------------------------------- MC sampling


class TinyHead(torch.nn.Module):
    def __init__(self, d=8, c=5):
        super().__init__()
        self.fc = torch.nn.Linear(d, c)

    def forward(self, feat, keep_mask):
        return self.fc(feat * keep_mask)


def test_head_masks_are_dropout_scales():
    g = torch.Generator().manual_seed(0)
    m = head_dropout_masks(10, 40, 256, g, p=0.5)
    assert m.shape == (10, 40, 256) and set(m.unique().tolist()) == {0.0, 2.0}
    assert (m == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert set(head_dropout_masks(2, 3, 4, g, p=0.0).unique().tolist()) == {1.0}
    with pytest.raises(SefarError):
        head_dropout_masks(2, 3, 4, g, p=1.0)


def test_head_mode_equals_full_reruns_with_the_same_masks():
    torch.manual_seed(0)
    head = TinyHead()
    backbone = torch.nn.Linear(6, 8)
    x = torch.randn(4, 6)
    calls = []

    def features():
        calls.append(1)
        return backbone(x)

    head_probs = mc_head_probs(head, backbone(x), 10, torch.Generator().manual_seed(5))
    full_probs = mc_full_probs(features, head, 10, torch.Generator().manual_seed(5))
    assert len(calls) == 10
    assert head_probs.shape == (10, 4, 5)
    assert torch.allclose(head_probs, full_probs, atol=1e-6)
    # An explicit loop over the masks gives the same thing again.
    masks = head_dropout_masks(10, 4, 8, torch.Generator().manual_seed(5))
    loop = torch.stack([head(backbone(x), masks[u]).softmax(-1) for u in range(10)])
    assert torch.allclose(head_probs, loop, atol=1e-6)
    # The U samples differ (dropout is on) and another seed gives other samples.
    assert not torch.allclose(head_probs[0], head_probs[1])
    other = mc_head_probs(head, backbone(x), 10, torch.Generator().manual_seed(6))
    assert not torch.allclose(head_probs, other)
