"""`fit_gamma`: the maximum-likelihood MMPO gamma for empirical preference probabilities or votes."""

import math

import pytest
import torch

import trl_margins
from trl_margins.errors import DataError
from trl_margins.pairs.fit_gamma import fit_gamma, preference_probs_from_votes, soft_target_nll


def _margins(n: int = 400, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=generator, dtype=torch.float64) * 3


def test_exported():
    assert trl_margins.fit_gamma is fit_gamma and "fit_gamma" in trl_margins.__all__


@pytest.mark.parametrize("gamma", [0.02, 0.3, 1.35, 8.0])
def test_recovers_gamma_from_exact_probabilities(gamma):
    margins = _margins()
    assert fit_gamma(margins, torch.sigmoid(gamma * margins)) == pytest.approx(gamma, abs=1e-6)
    # Plain lists and a shift of scale: gamma scales inversely with the margins
    assert fit_gamma((10 * margins).tolist(), torch.sigmoid(gamma * margins).tolist()) == pytest.approx(gamma / 10)


def test_recovers_gamma_from_sampled_votes():
    gamma, margins = 0.8, _margins(n=2000, seed=1)
    generator = torch.Generator().manual_seed(2)
    votes = torch.full_like(margins, 20)
    votes_chosen = torch.binomial(votes, torch.sigmoid(gamma * margins), generator=generator)
    probs = preference_probs_from_votes(votes_chosen, votes - votes_chosen)
    assert fit_gamma(margins, probs) == pytest.approx(gamma, rel=0.05)
    assert fit_gamma(margins, probs, weights=votes) == pytest.approx(fit_gamma(margins, probs))  # equal totals


def test_matches_a_grid_minimum():
    margins = _margins(seed=3)
    generator = torch.Generator().manual_seed(4)
    probs = torch.sigmoid(0.5 * margins) + 0.2 * torch.rand(margins.shape, generator=generator, dtype=torch.float64)
    probs = probs.clamp(0, 1)
    weights = torch.rand(margins.shape, generator=generator, dtype=torch.float64)
    fitted = fit_gamma(margins, probs, weights=weights)
    # A coarse grid, then a fine one around its minimum (the NLL is convex, so the grid minimum is the global one)
    coarse = min((i / 100 for i in range(1, 300)), key=lambda g: soft_target_nll(margins, probs, g, weights))
    fine = [coarse + i / 100000 for i in range(-1000, 1001)]
    best = min(fine, key=lambda g: soft_target_nll(margins, probs, g, weights))
    assert abs(fitted - best) <= 1e-5
    assert soft_target_nll(margins, probs, fitted, weights) <= soft_target_nll(margins, probs, best, weights)


def test_uninformative_margins_give_zero(caplog):
    margins = _margins(n=50)
    assert fit_gamma(margins, torch.sigmoid(-margins)) == 0.0  # larger margins preferred less often
    assert "not preferred more often" in caplog.text


def test_soft_target_nll_is_the_cross_entropy():
    margins, probs = [2.0, -1.0], [0.75, 0.5]
    expected = sum(
        -(q * math.log(1 / (1 + math.exp(-0.5 * m))) + (1 - q) * math.log(1 / (1 + math.exp(0.5 * m))))
        for m, q in zip(margins, probs)
    ) / len(margins)
    assert soft_target_nll(margins, probs, 0.5) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "margins, probs, message",
    [
        ([1.0, float("nan")], [0.6, 0.7], "non-finite value"),
        ([1.0, 2.0], [0.6, float("inf")], "non-finite value"),
        ([1.0, 2.0], [0.6, 1.2], r"\[0, 1\]; row 1"),
        ([1.0, 2.0, 3.0], [0.6, 0.7], "3 margins but 2"),
        ([], [], "No pairs"),
        ([0.0, 0.0], [0.6, 0.7], "All margins are 0"),
        ([1.0, 2.0, -1.0], [1.0, 1.0, 0.0], "hard labels"),
        ([[1.0, 2.0]], [[0.6, 0.7]], "1-D"),
    ],
)
def test_errors(margins, probs, message):
    with pytest.raises(DataError, match=message):
        fit_gamma(margins, probs)


def test_errors_are_value_errors():
    with pytest.raises(ValueError, match="hard labels carry no information|are hard labels"):
        fit_gamma([1.0, 2.0], [1.0, 1.0])


def test_vote_errors():
    assert preference_probs_from_votes([3, 0.5], [1, 0.5]).tolist() == [0.75, 0.5]
    with pytest.raises(DataError, match="no votes"):
        preference_probs_from_votes([1, 0], [1, 0])
    with pytest.raises(DataError, match=">= 0"):
        preference_probs_from_votes([1, -1], [1, 2])
    with pytest.raises(DataError, match="2 chosen vote counts but 1"):
        preference_probs_from_votes([1, 1], [1])
    with pytest.raises(DataError, match="weights"):
        fit_gamma([1.0, 2.0], [0.6, 0.7], weights=[0.0, 0.0])
