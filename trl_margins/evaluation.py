"""Preference accuracy and calibration of reward gaps: the numbers behind MMPO's calibration claims.

Pure functions over tensors of rewards and target probabilities (the trainers log their evaluation through
`expected_calibration_error` and `brier_score`), RewardBench's section scores, and two matplotlib plots: a reliability
diagram and a histogram of reward margins. `trl_margins.rewards_extraction` computes the rewards these take.

The predicted probability of a pair is the Bradley-Terry `sigmoid(r_chosen - r_rejected)`; its target is either a
soft target `p` (MMPO's `sigmoid(gamma * m)`, or a column of the data) or the hard label 1.

Pure torch (matplotlib only inside the plot functions); imports `losses` only: no trainer, no TRL, no command line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .losses import soft_target_loss

__all__ = [
    "REWARDBENCH_EXAMPLE_COUNTS",
    "REWARDBENCH_SUBSET_MAPPING",
    "brier_score",
    "ece_label",
    "expected_calibration_error",
    "plot_margin_histogram",
    "plot_reliability_diagram",
    "preference_metrics",
    "reliability_bins",
    "rewardbench_section_scores",
    "subset_metrics",
]


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
    pred_probs: torch.Tensor, target_probs: torch.Tensor, n_bins: int = 15, symmetric: bool = True
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
    return f"ECE ({orders}, {metrics.get('n_bins', 15)} bins)"


def brier_score(pred_probs: torch.Tensor, target_probs: torch.Tensor) -> float:
    """Mean squared difference between predicted and target preference probabilities (the same in either order)."""
    pred, target = _probs(pred_probs, target_probs, symmetric=False)
    return float(((pred - target) ** 2).mean())


def reliability_bins(
    pred_probs: torch.Tensor, target_probs: torch.Tensor, n_bins: int = 15, symmetric: bool = True
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
def _rewards(chosen_rewards, rejected_rewards) -> tuple[torch.Tensor, torch.Tensor]:
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
    n_bins: int = 15,
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
    chosen, rejected = _rewards(chosen_rewards, rejected_rewards)
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
    chosen, rejected = _rewards(chosen_rewards, rejected_rewards)
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


# ---- RewardBench ---------------------------------------------------------------------------------------------------
# From allenai/reward-bench, `rewardbench/constants.py` (`SUBSET_MAPPING` and `EXAMPLE_COUNTS`): the sections of
# RewardBench v1 and the weights of their subsets. `math-prm` is weighted 984 (it has 447 pairs) so that math counts
# as much as the six `hep-*` code subsets together.
REWARDBENCH_SUBSET_MAPPING: dict[str, list[str]] = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": [
        "mt-bench-hard",
        "llmbar-natural",
        "llmbar-adver-neighbor",
        "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut",
        "llmbar-adver-manual",
    ],
    "Safety": [
        "refusals-dangerous",
        "refusals-offensive",
        "xstest-should-refuse",
        "xstest-should-respond",
        "donotanswer",
    ],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}
REWARDBENCH_EXAMPLE_COUNTS: dict[str, int] = {
    "alpacaeval-easy": 100,
    "alpacaeval-length": 95,
    "alpacaeval-hard": 95,
    "mt-bench-easy": 28,
    "mt-bench-med": 40,
    "mt-bench-hard": 37,
    "math-prm": 984,
    "refusals-dangerous": 100,
    "refusals-offensive": 100,
    "llmbar-natural": 100,
    "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92,
    "llmbar-adver-GPTOut": 47,
    "llmbar-adver-manual": 46,
    "xstest-should-refuse": 250,
    "xstest-should-respond": 154,
    "donotanswer": 136,
    "hep-cpp": 164,
    "hep-go": 164,
    "hep-java": 164,
    "hep-js": 164,
    "hep-python": 164,
    "hep-rust": 164,
}


def rewardbench_section_scores(subset_accuracy: Mapping[str, float]) -> dict[str, float] | None:
    """RewardBench's section scores from per-subset accuracies, as `calculate_scores_per_section` in reward-bench.

    Each section is the average of its subsets' accuracies weighted by `REWARDBENCH_EXAMPLE_COUNTS`, over the subsets
    present (as reward-bench does); ``Score`` is the plain mean of the sections present. Accuracies stay fractions in
    ``[0, 1]`` (reward-bench prints percentages).

    Returns:
        ``{section: accuracy, ..., "Score": mean}``, or ``None`` when no subset name is one of RewardBench's.
    """
    sections = {}
    for section, names in REWARDBENCH_SUBSET_MAPPING.items():
        present = [n for n in names if n in subset_accuracy]
        if present:
            total = sum(REWARDBENCH_EXAMPLE_COUNTS[n] for n in present)
            sections[section] = sum(subset_accuracy[n] * REWARDBENCH_EXAMPLE_COUNTS[n] for n in present) / total
    if not sections:
        return None
    sections["Score"] = sum(sections.values()) / len(sections)
    return sections


# ---- plots ---------------------------------------------------------------------------------------------------------
def _figure(**kwargs):
    """A matplotlib `Figure` built without pyplot, so no global backend or state is touched."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "Plots need matplotlib: `pip install 'trl-margins[plot]'` (or `pip install matplotlib`)."
        ) from e
    return Figure(**kwargs)


def _save_counts_figure(fig, ax, path: str | Path) -> Path:
    """Finish a figure whose `ax` counts things (a light grid, whole-number ticks) and save it as a PNG at `path`."""
    ax.grid(alpha=0.3, axis="y")
    ax.yaxis.get_major_locator().set_params(integer=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_reliability_diagram(metrics: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Save a reliability diagram of `preference_metrics`' output as a PNG (needs matplotlib).

    Top: the mean target of each bin against the diagonal of perfect calibration, the gap to the bin's mean
    prediction hatched, the ECE in the legend. Bottom: the number of predictions in each bin.
    """
    table = metrics["reliability"]
    edges, counts = table["bin_edges"], table["count"]
    width = edges[1] - edges[0]
    filled = [i for i, c in enumerate(counts) if c]
    lefts = [edges[i] for i in filled]
    mean_pred = [table["mean_pred"][i] for i in filled]
    mean_target = [table["mean_target"][i] for i in filled]
    hard = metrics.get("hard_labels", False)
    symmetric = metrics.get("symmetric", False)

    fig = _figure(figsize=(6.4, 7.4), layout="constrained")
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="Perfect calibration")
    observed = "fraction of pairs where a is preferred" if hard else "mean target probability"
    ax.bar(
        lefts, mean_target, width=width, align="edge", color="tab:blue", edgecolor="black", alpha=0.8,
        label=f"Observed: {observed}",
    )  # fmt: skip
    # Hatched without fill, so that a gap drawn over the blue bar (under-confidence) stays red, not a blend
    ax.bar(
        lefts, [p - t for p, t in zip(mean_pred, mean_target)], bottom=mean_target, width=width, align="edge",
        facecolor="none", edgecolor="tab:red", hatch="///", linewidth=1.2, label="Gap to the mean prediction",
    )  # fmt: skip
    ax.plot([], [], " ", label=f"ECE = {metrics['ece']:.4f}  (n = {metrics['num_pairs']} pairs)")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="Observed P(a preferred to b)")
    ax.set_aspect("equal", adjustable="box")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    against = "hard labels" if hard else "soft targets"
    orders = "(a, b) = (chosen, rejected) and (rejected, chosen)" if symmetric else "(a, b) = (chosen, rejected)"
    ax.set_title(f"{title or 'Reliability diagram'}\ncalibration against {against}; {orders}", fontsize=10)

    ax_count.bar(edges[:-1], counts, width=width, align="edge", color="tab:gray", edgecolor="black")
    for left, count in zip(edges[:-1], counts):
        if count:
            ax_count.annotate(str(count), (left + width / 2, count), ha="center", va="bottom", fontsize=7)
    ax_count.set(ylabel="Predictions\nper bin", ylim=(0, max(counts) * 1.25 or 1))
    ax_count.set_xlabel("Predicted P(a preferred to b) = sigmoid(r_a - r_b)")
    return _save_counts_figure(fig, ax_count, path)


def plot_margin_histogram(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    path: str | Path,
    title: str | None = None,
    bins: int | None = None,
) -> Path:
    """Save a histogram of the reward margins ``r_chosen - r_rejected`` as a PNG (needs matplotlib).

    Pairs ranked right (margin > 0) and wrong (margin < 0) are coloured apart, with their share in the legend.
    ``bins=None`` picks about ``2 * sqrt(pairs)`` bins, between 10 and 40.
    """
    chosen, rejected = _rewards(chosen_rewards, rejected_rewards)
    gaps = (chosen - rejected).tolist()
    n = len(gaps)
    bins = bins or min(40, max(10, round(2 * n**0.5)))
    low, high = min(gaps + [0.0]), max(gaps + [0.0])
    if high - low < 1e-12:  # all margins equal: give the bars some width
        low, high = low - 0.5, high + 0.5
    # Bins of equal width with 0 on an edge, so that no bar mixes pairs ranked right and wrong
    step = (high - low) / bins
    first = math.floor(low / step)
    edges = [(first + i) * step for i in range(math.ceil(high / step) - first + 1)]
    right = [g for g in gaps if g > 0]
    wrong = [g for g in gaps if g < 0]
    ties = n - len(right) - len(wrong)

    fig = _figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.hist(
        right,
        bins=edges,
        color="tab:green",
        alpha=0.75,
        edgecolor="black",
        label=f"chosen scored higher: {len(right)} ({len(right) / n:.1%})",
    )
    ax.hist(
        wrong,
        bins=edges,
        color="tab:red",
        alpha=0.75,
        edgecolor="black",
        label=f"rejected scored higher: {len(wrong)} ({len(wrong) / n:.1%})",
    )
    ax.axvline(0, color="black", linewidth=1)
    mean = sum(gaps) / n
    ax.axvline(mean, color="tab:blue", linestyle="--", label=f"mean margin = {mean:.4g}")
    if ties:
        ax.plot([], [], " ", label=f"ties: {ties}")
    ax.set(xlabel="Reward margin r_chosen - r_rejected", ylabel="Pairs")
    ax.set_title(f"{title or 'Reward margins'}\n{n} pairs", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    return _save_counts_figure(fig, ax, path)
