"""Preference accuracy and calibration of reward gaps: the numbers behind MMPO's calibration claims.

Pure functions over tensors of rewards and target probabilities; the trainers log their evaluation through them.
"""

from __future__ import annotations

import torch

__all__ = ["expected_calibration_error", "brier_score"]


def expected_calibration_error(pred_probs: torch.Tensor, target_probs: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error (Naeini et al., 2015; MMPO Section 4.2, Figure 4).

    Predictions are grouped into ``n_bins`` equal-width bins over ``[0, 1]``; ECE is the mean over bins, weighted by
    bin size, of ``|mean predicted probability - mean target probability|``. With hard targets (all ones) this is the
    usual confidence-versus-accuracy ECE of ``sigmoid(r_w - r_l)``.
    """
    pred = torch.as_tensor(pred_probs).detach().double().flatten()
    target = torch.as_tensor(target_probs).detach().double().flatten().to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"pred_probs and target_probs differ in size: {pred.numel()} vs {target.numel()}.")
    if pred.numel() == 0:
        return float("nan")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}.")
    # The right edge belongs to the last bin, as in the usual reliability diagrams
    bins = torch.clamp((pred * n_bins).long(), max=n_bins - 1)
    pred_sum = torch.bincount(bins, weights=pred, minlength=n_bins)
    target_sum = torch.bincount(bins, weights=target, minlength=n_bins)
    gap = (pred_sum - target_sum).abs()  # == count * |mean pred - mean target| per bin
    return float(gap.sum() / pred.numel())


def brier_score(pred_probs: torch.Tensor, target_probs: torch.Tensor) -> float:
    """Mean squared difference between predicted and target preference probabilities."""
    pred = torch.as_tensor(pred_probs).detach().double().flatten()
    target = torch.as_tensor(target_probs).detach().double().flatten().to(pred.device)
    return float(((pred - target) ** 2).mean())
