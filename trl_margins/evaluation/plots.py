"""Plots of a model's preference predictions (need matplotlib, the `plot` extra): a reliability diagram of
`preference_metrics`' table and a histogram of reward margins. Built without pyplot, so no global backend or state
is touched. Imports `calibration` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .calibration import reward_pairs

__all__ = ["plot_margin_histogram", "plot_reliability_diagram"]


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
    chosen, rejected = reward_pairs(chosen_rewards, rejected_rewards)
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
