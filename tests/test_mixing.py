"""Tube mixing: mask counts and independence, one partner for all elements, targets against a loop."""

import numpy as np
import pytest
import torch

from sefar_fast.ops.mixing import draw_mix, kept_patches, mix_targets, tube_masks

ELEMENTS = [2, 2, 4]


@pytest.mark.parametrize("lam", [0.0, 0.31, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("grid", [(14, 14), (4, 4), (3, 5)])
def test_each_element_keeps_exactly_round_lambda_p_patches(lam, grid):
    masks = tube_masks(ELEMENTS, grid, lam, np.random.default_rng(0))
    p = grid[0] * grid[1]
    assert masks.dtype == torch.bool and masks.shape == (3, *grid)
    assert masks.flatten(1).sum(1).tolist() == [round(lam * p)] * 3


def test_element_patterns_are_independent_and_cover_every_patch():
    rng = np.random.default_rng(1)
    masks = tube_masks(ELEMENTS, (14, 14), 0.5, rng)
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    hits = sum(tube_masks(ELEMENTS, (4, 4), 0.5, rng).int() for _ in range(300))
    assert hits.min() > 0  # no patch position is favoured or excluded
    assert (hits.float() / 300).sub(0.5).abs().max() < 0.15


def test_draw_mix_lambda_partner_and_realised_fraction():
    rng = np.random.default_rng(2)
    plans = [draw_mix(6, ELEMENTS, (14, 14), rng) for _ in range(2000)]
    lams = np.array([p.lam_drawn for p in plans])
    # Beta(10, 10): mean 1/2, variance 1/(4 * 21).
    assert lams.mean() == pytest.approx(0.5, abs=0.01)
    assert lams.var() == pytest.approx(1 / 84, rel=0.1)
    for plan in plans[:50]:
        assert sorted(plan.partner.tolist()) == list(range(6))
        assert plan.lam == kept_patches(plan.lam_drawn, (14, 14)) / 196
        assert plan.masks.flatten(1).float().mean(1).tolist() == pytest.approx([plan.lam] * 3)


def test_mix_targets_match_a_loop_over_partners():
    torch.manual_seed(0)
    mu = torch.rand(5, 4).softmax(1)
    eta = torch.rand(5)
    partner = torch.tensor([3, 0, 4, 1, 2])
    lam = 0.625
    y_mix, eta_mix = mix_targets(mu, eta, lam, partner)
    for b in range(5):
        j = partner[b].item()
        assert torch.allclose(y_mix[b], lam * mu[b] + (1 - lam) * mu[j])
        assert eta_mix[b].item() == pytest.approx(lam * eta[b].item() + (1 - lam) * eta[j].item())
    assert torch.allclose(y_mix.sum(1), torch.ones(5))  # still distributions
