"""Fitting MMPO's rationality coefficient `mmpo_gamma` to one's own data.

MMPO's target for a pair with quality margin `m = score_chosen - score_rejected` is `p = sigmoid(gamma * m)`: the
Bradley-Terry probability that a rater prefers the chosen response (Kim et al., Section 3.2). Where the data says how
often people actually preferred it (a preference probability per pair, or the votes cast for each side), gamma can
be fitted by maximum likelihood, which minimises the soft-target cross-entropy between the empirical probabilities
`q_i` and the model's:

    NLL(gamma) = sum_i w_i * [-q_i log sigmoid(gamma m_i) - (1 - q_i) log sigmoid(-gamma m_i)] / sum_i w_i

Its derivative is `sum_i w_i m_i (sigmoid(gamma m_i) - q_i) / sum_i w_i` and its second derivative
`sum_i w_i m_i^2 s_i (1 - s_i) / sum_i w_i >= 0`: a convex problem in one variable, solved here by Newton steps kept
inside a bisection bracket, in float64.

The fit assumes what MMPO's targets assume: one gamma for the whole dataset, and raters who choose independently
with the Bradley-Terry probability of the margin. It says nothing about gamma when the labels are hard (every
`q_i` is 1): the likelihood then keeps improving as gamma grows, and `fit_gamma` refuses (see the README, "Choosing
`mmpo_gamma`", for the values the papers used instead).

Pure torch; imports `errors` only: no trainer, no TRL, no command line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import DataError, row_label

logger = logging.getLogger(__name__)

__all__ = ["fit_gamma", "preference_probs_from_votes", "soft_target_nll"]

_Values = Sequence[float] | torch.Tensor
_MAX_DOUBLINGS = 60  # the bracket search stops at 2**60 / mean |m|: beyond that the labels are hard in all but name


def _as_vector(values: _Values, name: str) -> torch.Tensor:
    vector = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if vector.dim() != 1:
        raise DataError(f"`{name}` must be one value per pair (1-D), got shape {tuple(vector.shape)}.")
    if not bool(torch.isfinite(vector).all()):
        row = int((~torch.isfinite(vector)).nonzero()[0])
        raise DataError(f"`{name}` holds a non-finite value ({float(vector[row])}) at {row_label(row)}.")
    return vector


def _checked(
    margins: _Values, target_probs: _Values, weights: _Values | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, q = _as_vector(margins, "margins"), _as_vector(target_probs, "target_probs")
    if m.numel() != q.numel():
        raise DataError(f"{m.numel()} margins but {q.numel()} target probabilities: give one of each per pair.")
    if m.numel() == 0:
        raise DataError("No pairs to fit gamma to.")
    if not bool(((q >= 0) & (q <= 1)).all()):
        row = int(((q < 0) | (q > 1)).nonzero()[0])
        raise DataError(f"`target_probs` must be probabilities in [0, 1]; {row_label(row)} holds {float(q[row])}.")
    if weights is None:
        w = torch.ones_like(m)
    else:
        w = _as_vector(weights, "weights")
        if w.numel() != m.numel():
            raise DataError(f"{w.numel()} weights for {m.numel()} pairs: give one per pair.")
        if bool((w < 0).any()) or float(w.sum()) <= 0:
            raise DataError("`weights` must be >= 0 and not all 0.")
    return m, q, w / w.sum()


def preference_probs_from_votes(votes_chosen: _Values, votes_rejected: _Values) -> torch.Tensor:
    """Each pair's empirical preference probability `votes_chosen / (votes_chosen + votes_rejected)`, in float64.

    A vote is one rater's choice of one side. Individual ratings reduce to votes: count the raters who rated the
    chosen response higher and those who rated the rejected one higher (a tie can count 1/2 to each side, as the
    bundled VADER pairs do). Use the vote totals as `fit_gamma`'s `weights` to fit the likelihood of the individual
    votes rather than one probability per pair.
    """
    chosen, rejected = _as_vector(votes_chosen, "votes_chosen"), _as_vector(votes_rejected, "votes_rejected")
    if chosen.numel() != rejected.numel():
        raise DataError(f"{chosen.numel()} chosen vote counts but {rejected.numel()} rejected ones.")
    if bool((chosen < 0).any() or (rejected < 0).any()):
        raise DataError("Vote counts must be >= 0.")
    total = chosen + rejected
    if bool((total == 0).any()):
        row = int((total == 0).nonzero()[0])
        raise DataError(f"Pair {row} has no votes on either side, so no preference probability: drop such pairs.")
    return chosen / total


def soft_target_nll(margins: _Values, target_probs: _Values, gamma: float, weights: _Values | None = None) -> float:
    """The (weighted) mean soft-target cross-entropy of `sigmoid(gamma * margins)` against `target_probs`, in nats."""
    m, q, w = _checked(margins, target_probs, weights)
    z = gamma * m
    return float((w * -(q * F.logsigmoid(z) + (1 - q) * F.logsigmoid(-z))).sum())


def fit_gamma(margins: _Values, target_probs: _Values, *, weights: _Values | None = None, tol: float = 1e-12) -> float:
    """The maximum-likelihood `mmpo_gamma >= 0` of `sigmoid(gamma * margins)` for the empirical `target_probs`.

    Args:
        margins: each pair's quality margin `score_chosen - score_rejected` (any sign), on the scale training uses.
        target_probs: each pair's empirical probability that the chosen response is preferred (e.g. the share of
            raters preferring it; `preference_probs_from_votes` turns vote counts into these).
        weights: optional per-pair weights (e.g. the number of votes behind each probability); by default every pair
            counts once.
        tol: relative tolerance on gamma.

    Returns:
        The fitted gamma, a float. It is 0 (with a warning) when larger margins are not preferred more often.

    Raises:
        DataError (a ValueError): non-finite values, probabilities outside [0, 1], lengths that differ, all margins
            0 (no gamma changes any target), or hard labels (every pair's probability agrees with its margin's sign,
            so the likelihood grows without end as gamma does and the data carry no information about gamma).
    """
    m, q, w = _checked(margins, target_probs, weights)
    informative = (m != 0) & (w > 0)
    if not bool(informative.any()):
        raise DataError("All margins are 0: sigmoid(gamma * 0) = 1/2 whatever gamma is, so there is nothing to fit.")

    def slope(gamma: float) -> float:
        return float((w * m * (torch.sigmoid(gamma * m) - q)).sum())

    def curvature(gamma: float) -> float:
        s = torch.sigmoid(gamma * m)
        return float((w * m * m * s * (1 - s)).sum())

    if slope(0.0) >= 0:
        logger.warning(
            "Pairs with larger margins are not preferred more often (the likelihood is highest at gamma = 0): the "
            "margins don't predict the preferences."
        )
        return 0.0
    # As gamma grows, sigmoid(gamma * m) tends to 1 for m > 0 and 0 for m < 0: if the probabilities already are
    # those hard labels, the slope stays negative for every gamma and the maximum is at infinity
    hard = (m > 0).double()
    limit = float((w * m * (hard - q)).sum())
    scale = float((w * m.abs()).sum())
    if limit <= 1e-12 * scale:
        raise DataError(
            "The preference probabilities are hard labels (1 for every pair with a positive margin, 0 for a negative "
            "one): they carry no information about gamma, whose likelihood keeps growing without limit. Fit gamma "
            "on data with graded preferences (shares of raters, votes for each side), or take a value from the "
            "papers for your score scale (README, 'Choosing `mmpo_gamma`')."
        )

    # Bracket the root of the slope, starting at the scale where gamma * |m| is about 1
    low, high = 0.0, 1.0 / scale
    for _ in range(_MAX_DOUBLINGS):
        if slope(high) >= 0:
            break
        low, high = high, 2 * high
    else:
        raise DataError(
            f"The fitted gamma exceeds {high:.3g}: the preference probabilities are hard labels in all but a few "
            "pairs, which carry almost no information about gamma."
        )
    gamma = (low + high) / 2
    for _ in range(200):
        d = slope(gamma)
        if d < 0:
            low = gamma
        else:
            high = gamma
        c = curvature(gamma)
        step = gamma - d / c if c > 0 else math.nan
        # A Newton step that leaves the bracket (or a flat curvature) falls back to bisection
        new = step if low < step < high else (low + high) / 2
        if abs(new - gamma) <= tol * max(new, 1e-300) or high - low <= tol * high:
            return float(new)
        gamma = new
    return float(gamma)
