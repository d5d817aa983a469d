"""Adaptive Regulation against a direct numpy evaluation, and MC head sampling against full reruns."""

import math

import numpy as np
import pytest
import torch

from sefar_fast.errors import SefarError
from sefar_fast.ops.regulation import regulate


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
