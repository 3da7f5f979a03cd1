"""The formulas against independent computations (NumPy / float64 / autograd)."""

import math

import numpy as np
import pytest
import torch

from trl_margins.losses import (
    default_step_size,
    dynamic_target_margins,
    score_offsets,
    soft_target_loss,
    soft_target_probs,
    weighted_pair_mean,
)


def test_soft_target_probs_is_bradley_terry_of_the_margin():
    margins = torch.tensor([0.0, 0.5, 1.0, 3.0, 9.0])
    expected = 1 / (1 + np.exp(-2.2 * margins.numpy()))
    np.testing.assert_allclose(soft_target_probs(margins, 2.2).numpy(), expected, rtol=1e-6)


def test_soft_target_probs_none_gives_hard_labels_and_zero_gives_half():
    margins = torch.tensor([0.0, 2.0, 7.0])
    assert torch.equal(soft_target_probs(margins, None), torch.ones(3))
    assert torch.equal(soft_target_probs(margins, 0.0), torch.full((3,), 0.5))


@pytest.mark.parametrize("gamma", [-0.1, float("nan"), float("inf")])
def test_soft_target_probs_rejects_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        soft_target_probs(torch.ones(2), gamma)


def test_soft_target_loss_matches_float64_cross_entropy():
    z = torch.tensor([-3.0, -0.2, 0.0, 0.7, 4.0])
    p = torch.tensor([1.0, 0.6, 0.5, 0.9, 0.2])
    zz, pp = z.double().numpy(), p.double().numpy()
    sig = 1 / (1 + np.exp(-zz))
    expected = -(pp * np.log(sig) + (1 - pp) * np.log(1 - sig))
    np.testing.assert_allclose(soft_target_loss(z, p).numpy(), expected, rtol=1e-6)


def test_hard_target_loss_is_dpo_sigmoid_loss():
    z = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(soft_target_loss(z, torch.ones(11)), -torch.nn.functional.logsigmoid(z))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_soft_target_loss_finite_with_exact_gradient_for_huge_logits(dtype):
    z = torch.tensor([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4], dtype=dtype, requires_grad=True)
    p = torch.tensor([0.3, 1.0, 0.5, 0.7, 0.0, 0.2, 0.9])
    loss = soft_target_loss(z, p)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(z.grad).all()
    # d/dz = sigmoid(z) - p; at |z| = 1e4 sigmoid is exactly 0 or 1
    expected_grad = torch.sigmoid(z.detach().float()) - p
    torch.testing.assert_close(z.grad.float(), expected_grad.to(z.grad.dtype).float(), atol=1e-2, rtol=1e-2)
    # The loss itself is linear in |z| far out: (1 - p) * z for z -> +inf
    assert loss[-1].item() == pytest.approx(0.1 * 1e4, rel=1e-2)


def _reference_margins(gaps, gamma0, tau, iters=20, eta=None):
    """Eqs. 22-24 of the gamma-PO paper, literally: multiplicative weights on p in float64."""
    gaps = np.asarray(gaps, dtype=np.float64)
    n = len(gaps)
    eta = min(0.5 / tau, 1.0) if eta is None else eta
    p = np.full(n, 1.0 / n)
    for _ in range(iters):
        grad = gamma0 / (1 + np.exp(gaps - n * p * gamma0)) + tau * (1 + np.log(n * p))
        w = p * np.exp(-eta * grad)
        p = w / w.sum()
    return gamma0 * n * p


@pytest.mark.parametrize(("gamma0", "tau"), [(0.4 * 10.0, 10.0), (0.15 * 2.5, 10.0), (0.3, 3.0), (1.0, 0.5)])
def test_dynamic_target_margins_match_the_paper_update(gamma0, tau):
    gaps = torch.randn(256, generator=torch.Generator().manual_seed(0)) * 2
    got = dynamic_target_margins(gaps, gamma0, tau)
    np.testing.assert_allclose(got.numpy(), _reference_margins(gaps.numpy(), gamma0, tau), rtol=1e-4, atol=1e-6)


def test_dynamic_target_margins_mean_is_gamma0_and_grows_with_the_gap():
    gaps = torch.linspace(-3, 3, 64)
    gammas = dynamic_target_margins(gaps, gamma0=1.5, tau=5.0)
    assert gammas.mean().item() == pytest.approx(1.5, rel=1e-5)
    assert (gammas.diff() > 0).all(), "larger reward gaps must get larger margins"


def test_dynamic_target_margins_tend_to_gamma0_for_large_tau():
    gaps = torch.randn(128) * 3
    gammas = dynamic_target_margins(gaps, gamma0=0.8, tau=1e6)
    torch.testing.assert_close(gammas, torch.full_like(gammas, 0.8), atol=1e-5, rtol=0)


def test_dynamic_target_margins_carry_no_gradient_and_validate():
    gaps = torch.randn(8, requires_grad=True)
    assert not dynamic_target_margins(gaps, 1.0, 2.0).requires_grad
    assert dynamic_target_margins(torch.randn(5), 0.0, 2.0).abs().max().item() == 0.0
    with pytest.raises(ValueError, match="tau"):
        dynamic_target_margins(torch.randn(4), 1.0, 0.0)
    with pytest.raises(ValueError, match="1-D"):
        dynamic_target_margins(torch.randn(2, 2), 1.0, 1.0)
    assert default_step_size(0.25) == 1.0 and math.isclose(default_step_size(10.0), 0.05)


def test_weighted_pair_mean_is_the_mean_of_weighted_losses_and_splits_like_the_batch():
    losses = torch.tensor([0.3, 1.2, 0.7, 2.0])
    weights = torch.tensor([1.0, 0.0, 3.0, 0.5])
    expected = float(np.mean(losses.numpy() * weights.numpy()))
    assert weighted_pair_mean(losses, weights).item() == pytest.approx(expected, rel=1e-6)
    assert weighted_pair_mean(losses, None).item() == pytest.approx(float(losses.mean()), rel=1e-6)
    # Normalised by the number of pairs: two equal micro-batches average to the full batch (gradient accumulation)
    halves = (weighted_pair_mean(losses[:2], weights[:2]) + weighted_pair_mean(losses[2:], weights[2:])) / 2
    assert halves.item() == pytest.approx(expected, rel=1e-6)


def test_score_offsets_are_alpha_times_the_log_score_difference():
    margins = torch.tensor([0.25, 1.0, 1.65, 9.0])
    m = margins.double().numpy()
    np.testing.assert_allclose(score_offsets(margins, 0.5).numpy(), 0.5 * np.log(m), rtol=1e-6)
    np.testing.assert_allclose(score_offsets(margins, 2.0, "identity").numpy(), 2.0 * m, rtol=1e-6)
    assert torch.equal(score_offsets(margins, 0.0), torch.zeros(4))


@pytest.mark.parametrize(
    ("margins", "alpha", "scaling", "match"),
    [
        ([1.0, 0.0], 1.0, "log", "> 0"),
        ([1.0, -1.0], 1.0, "log", "> 0"),
        ([1.0], -0.5, "log", "alpha"),
        ([1.0], float("nan"), "log", "alpha"),
        ([1.0], 1.0, "sqrt", "scaling"),
    ],
)
def test_score_offsets_refuse_what_has_no_offset(margins, alpha, scaling, match):
    with pytest.raises(ValueError, match=match):
        score_offsets(torch.tensor(margins), alpha, scaling)
