"""Preference accuracy and calibration of reward gaps: the numbers behind MMPO's calibration claims.

Pure functions over tensors of rewards and target probabilities: the trainers log their evaluation through
`expected_calibration_error` and `brier_score`, and `trl-margins evaluate` and the before/after tables through
`preference_metrics`. `trl_margins.evaluation.rewards` computes the rewards these take.

The predicted probability of a pair is the Bradley-Terry `sigmoid(r_chosen - r_rejected)`; its target is either a
soft target `p` (MMPO's `sigmoid(gamma * m)`, or a column of the data) or the hard label 1.

Pure torch; imports `losses` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..losses import soft_target_loss

__all__ = [
    "CALIBRATION_BINS",
    "brier_score",
    "ece_label",
    "expected_calibration_error",
    "preference_metrics",
    "reliability_bins",
    "subset_metrics",
]

CALIBRATION_BINS = 15
"""The number of equal-width bins of every ECE this package reports, unless one is asked for (MMPO's Figure 4 and
the usual reliability diagrams use 10 to 20)."""


# ---- calibration ---------------------------------------------------------------------------------------------------
def _probs(pred_probs, target_probs, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    pred = torch.as_tensor(pred_probs).detach().double().flatten().cpu()
    target = torch.as_tensor(target_probs).detach().double().flatten().cpu()
    if pred.shape != target.shape:
        raise ValueError(f"pred_probs and target_probs differ in size: {pred.numel()} vs {target.numel()}.")
    if symmetric:
        # A pair read in the other order has prediction 1 - p and target 1 - t; counting both orders makes the result
        # independent of which response is listed first.
        pred, target = torch.cat([pred, 1 - pred]), torch.cat([target, 1 - target])
    return pred, target


def _bin_sums(pred: torch.Tensor, target: torch.Tensor, n_bins: int) -> tuple[torch.Tensor, ...]:
    """The one binning of this module: count, sum of predictions and sum of targets in each equal-width bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}.")
    # Bins are [k/n, (k+1)/n); the right edge 1 belongs to the last bin, as in the usual reliability diagrams
    bins = torch.clamp((pred * n_bins).long(), min=0, max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins)
    pred_sum = torch.bincount(bins, weights=pred, minlength=n_bins)
    target_sum = torch.bincount(bins, weights=target, minlength=n_bins)
    return count, pred_sum, target_sum


def expected_calibration_error(
    pred_probs: torch.Tensor, target_probs: torch.Tensor, n_bins: int = CALIBRATION_BINS, symmetric: bool = True
) -> float:
    """Expected calibration error (Naeini et al., 2015; MMPO Section 4.2, Figure 4).

    Predictions are grouped into ``n_bins`` equal-width bins over ``[0, 1]``; ECE is the mean over bins, weighted by
    bin size, of ``|mean predicted probability - mean target probability|``.

    With ``symmetric=True`` (the default, and the one ECE that this package reports everywhere: the trainers'
    ``mmpo/ece``, the commands' before/after tables, ``trl-margins evaluate`` and the benchmarks) every pair also
    enters in the other order (prediction ``1 - p``, target ``1 - t``), so the result does not depend on which
    response is listed first. Against hard labels the one-order form (``symmetric=False``) reduces to
    ``1 - mean(p)``, which rewards confidence whether or not it is right, while the symmetric form is the usual
    confidence-versus-accuracy ECE (a bin of pairs predicted at 0.8 is calibrated when 80% of them rank the chosen
    response first).
    """
    pred, target = _probs(pred_probs, target_probs, symmetric)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}.")
    if pred.numel() == 0:
        return float("nan")
    _, pred_sum, target_sum = _bin_sums(pred, target, n_bins)
    gap = (pred_sum - target_sum).abs()  # == count * |mean pred - mean target| per bin
    return float(gap.sum() / pred.numel())


def ece_label(metrics: Mapping[str, Any]) -> str:
    """How a `preference_metrics` result's ECE was computed, for printed reports: "ECE (both orders, 15 bins)"."""
    orders = "both orders" if metrics.get("symmetric", True) else "one order"
    return f"ECE ({orders}, {metrics.get('n_bins', CALIBRATION_BINS)} bins)"


def brier_score(pred_probs: torch.Tensor, target_probs: torch.Tensor) -> float:
    """Mean squared difference between predicted and target preference probabilities (the same in either order)."""
    pred, target = _probs(pred_probs, target_probs, symmetric=False)
    return float(((pred - target) ** 2).mean())


def reliability_bins(
    pred_probs: torch.Tensor, target_probs: torch.Tensor, n_bins: int = CALIBRATION_BINS, symmetric: bool = True
) -> dict[str, list]:
    """The table behind a reliability diagram, with the binning of `expected_calibration_error`.

    Returns:
        A dict of lists: ``bin_edges`` (``n_bins + 1`` values), and per bin ``count``, ``mean_pred`` and
        ``mean_target`` (``None`` for an empty bin, so that the table is valid JSON). ``ECE = sum(count * |mean_pred -
        mean_target|) / sum(count)``.
    """
    pred, target = _probs(pred_probs, target_probs, symmetric)
    count, pred_sum, target_sum = _bin_sums(pred, target, n_bins)
    counts = count.tolist()
    return {
        "bin_edges": torch.linspace(0, 1, n_bins + 1, dtype=torch.float64).tolist(),
        "count": counts,
        "mean_pred": [s / c if c else None for s, c in zip(pred_sum.tolist(), counts)],
        "mean_target": [s / c if c else None for s, c in zip(target_sum.tolist(), counts)],
    }


# ---- metrics of a set of pairs -------------------------------------------------------------------------------------
def reward_pairs(chosen_rewards, rejected_rewards) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = torch.as_tensor(chosen_rewards).detach().double().flatten().cpu()
    rejected = torch.as_tensor(rejected_rewards).detach().double().flatten().cpu()
    if chosen.shape != rejected.shape:
        raise ValueError(
            f"chosen_rewards and rejected_rewards differ in size: {chosen.numel()} vs {rejected.numel()}."
        )
    if chosen.numel() == 0:
        raise ValueError("No pairs to evaluate: the rewards are empty.")
    if not (torch.isfinite(chosen).all() and torch.isfinite(rejected).all()):
        raise ValueError("The rewards contain NaN or infinite values.")
    return chosen, rejected


def _accuracy(gaps: torch.Tensor) -> float:
    # A tie is a coin flip: half right. (RewardBench counts ties as wrong; with float rewards ties are rare.)
    return float(((gaps > 0).double() + 0.5 * (gaps == 0).double()).mean())


def preference_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    target_probs: torch.Tensor | None = None,
    n_bins: int = CALIBRATION_BINS,
    symmetric: bool = True,
) -> dict[str, Any]:
    """Accuracy, margin and calibration of a model's rewards on preference pairs.

    Args:
        chosen_rewards / rejected_rewards: one reward per pair (a reward model's scores, or DPO / SimPO implicit
            rewards).
        target_probs: the target probability that the chosen response is preferred, per pair (e.g. MMPO's
            ``sigmoid(gamma * m)``). ``None`` measures calibration against hard labels (all ones).
        n_bins: number of equal-width bins over the predicted probability ``sigmoid(r_chosen - r_rejected)``.
        symmetric: count each pair in both orders for the ECE and the reliability table (see
            `expected_calibration_error`). The default, because against hard labels only the symmetric form measures
            calibration; the Brier score and the NLL are the same either way.

    Returns:
        A JSON-serialisable dict: ``num_pairs``; ``accuracy`` (ties count as half); ``mean_margin``,
        ``mean_chosen_reward`` and ``mean_rejected_reward``; ``ece``, ``brier`` and ``nll`` (the soft-target
        cross-entropy ``soft_target_loss(r_chosen - r_rejected, p)``, i.e. the MMPO loss, or the Bradley-Terry / DPO
        loss with hard labels); ``mean_pred_prob`` and ``mean_target_prob``; ``hard_labels``; ``n_bins``,
        ``symmetric``; and ``reliability``, the table of `reliability_bins`.
    """
    chosen, rejected = reward_pairs(chosen_rewards, rejected_rewards)
    gaps = chosen - rejected
    if target_probs is None:
        targets = torch.ones_like(gaps)
    else:
        targets = torch.as_tensor(target_probs).detach().double().flatten().cpu()
        if targets.shape != gaps.shape:
            raise ValueError(f"target_probs has {targets.numel()} values for {gaps.numel()} pairs.")
        if not (torch.isfinite(targets).all() and ((targets >= 0) & (targets <= 1)).all()):
            raise ValueError("target_probs must be probabilities in [0, 1].")
    pred = torch.sigmoid(gaps)
    return {
        "num_pairs": gaps.numel(),
        "accuracy": _accuracy(gaps),
        "mean_margin": float(gaps.mean()),
        "mean_chosen_reward": float(chosen.mean()),
        "mean_rejected_reward": float(rejected.mean()),
        "ece": expected_calibration_error(pred, targets, n_bins, symmetric=symmetric),
        "brier": brier_score(pred, targets),
        "nll": float(soft_target_loss(gaps, targets).double().mean()),
        "mean_pred_prob": float(pred.mean()),
        "mean_target_prob": float(targets.mean()),
        "hard_labels": target_probs is None,
        "n_bins": n_bins,
        "symmetric": symmetric,
        "reliability": reliability_bins(pred, targets, n_bins, symmetric=symmetric),
    }


def subset_metrics(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, subsets: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Accuracy, mean margin and size of each subset (e.g. RewardBench's ``subset`` column), sorted by name."""
    chosen, rejected = reward_pairs(chosen_rewards, rejected_rewards)
    if len(subsets) != chosen.numel():
        raise ValueError(f"Got {len(subsets)} subset names for {chosen.numel()} pairs.")
    gaps = chosen - rejected
    result = {}
    for name in sorted(set(subsets)):
        rows = torch.tensor([s == name for s in subsets])
        result[name] = {
            "num_pairs": int(rows.sum()),
            "accuracy": _accuracy(gaps[rows]),
            "mean_margin": float(gaps[rows].mean()),
        }
    return result
