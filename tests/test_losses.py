"""The SeFAR losses against hand-computed values."""

import math

import pytest
import torch

from sefar_fast.errors import SefarError
from sefar_fast.ops.losses import combine, mix_loss, supervised_loss, unlabeled_loss


def test_supervised_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 0])
    # ln 2 and ln(4/3): softmax [1/2, 1/2] and [3/4, 1/4].
    assert supervised_loss(logits, labels).item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)


def test_unlabeled_loss_weights_each_sample_by_eta():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 1.0]])
    pseudo = torch.tensor([1, 1, 0])
    eta = torch.tensor([1.0, 0.5, 0.0])
    expected = (1.0 * math.log(2) + 0.5 * math.log(4) + 0.0) / 3  # the zero-weight sample still counts in the mean
    assert unlabeled_loss(logits, pseudo, eta).item() == pytest.approx(expected)


def test_mix_loss_mse_on_logits_and_soft_ce():
    logits = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    y_mix = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    eta_mix = torch.tensor([0.8, 0.4])
    # MSE per sample: mean((0.5)^2, (0.5)^2) = 0.25; mean((0.25)^2, (0.75)^2) = 0.3125.
    assert mix_loss(logits, y_mix, eta_mix, "mse").item() == pytest.approx((0.8 * 0.25 + 0.4 * 0.3125) / 2)
    # Soft CE: sample 2 has uniform softmax -> ln 2; sample 1: -(0.5 ln s1 + 0.5 ln s0), s = softmax([1, 0]).
    s1 = math.e / (math.e + 1)
    ce1 = -(0.5 * math.log(s1) + 0.5 * math.log(1 - s1))
    assert mix_loss(logits, y_mix, eta_mix, "soft-ce").item() == pytest.approx((0.8 * ce1 + 0.4 * math.log(2)) / 2)
    with pytest.raises(SefarError):
        mix_loss(logits, y_mix, eta_mix, "l1")


def test_combine_and_gradients_flow_only_through_logits():
    terms = combine(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), xi=0.5)
    assert terms.total.item() == pytest.approx(1 + 0.5 * (2 * 2 + 2 * 3))
    assert combine(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), 0.5, 1.0, 0.0).total.item() == 2.0
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = unlabeled_loss(logits, torch.tensor([0, 1]), torch.tensor([1.0, 1.0]))
    loss.backward()
    # d/dlogits of mean CE with uniform softmax: (softmax - onehot) / B.
    assert torch.allclose(logits.grad, (torch.full((2, 3), 1 / 3) - torch.eye(3)[:2]) / 2)


def test_bf16_logits_are_computed_in_float32():
    logits = torch.tensor([[0.0, 0.0]], dtype=torch.bfloat16)
    assert supervised_loss(logits, torch.tensor([0])).dtype == torch.float32
