"""Preference accuracy and calibration of reward gaps: the numbers behind MMPO's calibration claims.

Pure functions over tensors of rewards and target probabilities (the trainers log their evaluation through
`expected_calibration_error` and `brier_score`), RewardBench's section scores, RewardBench 2's best-of-4 and Ties
scores with a per-subset ECE, and two matplotlib plots: a reliability diagram and a histogram of reward margins.
`trl_margins.rewards_extraction` computes the rewards these take.

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
    "REWARDBENCH2_RANDOM_BASELINE",
    "REWARDBENCH2_SUBSETS",
    "REWARDBENCH_EXAMPLE_COUNTS",
    "REWARDBENCH_SUBSET_MAPPING",
    "best_of_n_result",
    "brier_score",
    "ece_label",
    "expected_calibration_error",
    "plot_margin_histogram",
    "plot_reliability_diagram",
    "preference_metrics",
    "reliability_bins",
    "rewardbench2_scores",
    "rewardbench_section_scores",
    "subset_metrics",
    "ties_score",
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


# ---- RewardBench 2 --------------------------------------------------------------------------------------------------
# RewardBench 2 (allenai/reward-bench-2; scoring in allenai/reward-bench, `scripts/run_v2.py` with
# `rewardbench/utils.py` at commit a0096928): each row is one prompt with a list of `chosen` and a list of `rejected`
# completions (`num_correct` = how many are chosen). The leaderboard's score is the plain mean of its six subsets
# (dataset card: "The RewardBench 2 leaderboard averages over these six subsets").
REWARDBENCH2_SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")
# Best of 4 (one chosen against three rejected), ranked at random: right 1 time in 4
REWARDBENCH2_RANDOM_BASELINE = 0.25


def best_of_n_result(scores: Sequence[float]) -> float:
    """One row's result outside Ties, as `reroll_and_score_dataset` in reward-bench's `rewardbench/utils.py`: the
    scores list the chosen completion first, then the rejected ones; the result is ``1 / k`` when the first score is
    the maximum and ``k`` completions share that maximum (a tie at the top shares the credit), else 0."""
    top = max(scores)
    return 1.0 / sum(s == top for s in scores) if scores[0] == top else 0.0


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")  # numpy's mean of nothing: nan


def ties_score(ids: Sequence[str], num_correct: Sequence[int], scores: Sequence[Sequence[float]]) -> dict[str, float]:
    """The Ties subset's score, as `process_single_model` (with `_compute_prompt_stats`) in reward-bench's
    `rewardbench/utils.py`.

    Rows have ids ``"ref:<prompt id>"`` (one correct answer) or ``"tied:<prompt id>"`` (several equally correct ones);
    the first ``num_correct`` scores of a row are its correct answers. Per prompt: *accurate* when the worst correct
    answer outscores the best incorrect one; ``spread`` = best minus worst correct score (tied prompts);
    ``gap`` = worst correct minus best incorrect. Over the prompts that have both a ref and a tied row:
    ``correctness_preferred`` = mean(tied gap > tied spread), ``correctness_preferred_hard`` = mean(min(ref gap, tied
    gap) > tied spread), ``margin_score`` = mean(tanh(min(ref gap, tied gap) / tied spread - 1)), a 0/0 counting 0.
    ``score = 0.3 * tied accuracy + 0.3 * ref accuracy + 0.2 * correctness_preferred + 0.2 *
    correctness_preferred_hard + 0.01 * margin_score``.
    """
    grouped: dict[tuple[str, int], list[tuple[bool, float]]] = {}
    for row_id, correct, row_scores in zip(ids, num_correct, scores):
        kind, prompt = str(row_id).split(":")
        grouped.setdefault((kind, int(prompt)), []).extend((i < correct, float(s)) for i, s in enumerate(row_scores))
    stats: dict[str, dict[int, tuple[bool, float | None, float]]] = {"ref": {}, "tied": {}}
    for (kind, prompt), samples in grouped.items():
        right = [s for ok, s in samples if ok]
        wrong = [s for ok, s in samples if not ok]
        if not right or not wrong:
            raise ValueError(f"Ties row {kind}:{prompt} needs correct and incorrect answers (check `num_correct`).")
        gap = min(right) - max(wrong)
        spread = max(right) - min(right) if len(right) > 1 else None
        stats["tied" if kind != "ref" else "ref"][prompt] = (gap > 0, spread, gap)
    ref, tied = stats["ref"], stats["tied"]
    both = sorted(set(ref) & set(tied))
    if any(tied[p][1] is None for p in both):
        raise ValueError("A tied Ties prompt has a single correct answer: its spread is undefined.")
    preferred = [tied[p][2] > tied[p][1] for p in both]
    preferred_hard = [min(ref[p][2], tied[p][2]) > tied[p][1] for p in both]

    def margin(p: int) -> float:  # numpy's tanh(x / 0 - 1): +-1 for x != 0, nan (then 0) for 0 / 0
        gap, spread = min(ref[p][2], tied[p][2]), tied[p][1]
        if spread == 0:
            return 0.0 if gap == 0 else math.copysign(1.0, gap)
        return math.tanh(gap / spread - 1)

    parts = {
        "ref_accuracy": _mean([s[0] for s in ref.values()]) if ref else 0.0,
        "tied_accuracy": _mean([s[0] for s in tied.values()]) if tied else 0.0,
        "correctness_preferred": _mean(preferred),
        "correctness_preferred_hard": _mean(preferred_hard),
        "margin_score": _mean([margin(p) for p in both]),
    }
    weights = {"tied_accuracy": 0.3, "ref_accuracy": 0.3, "correctness_preferred": 0.2}
    weights.update(correctness_preferred_hard=0.2, margin_score=0.01)
    return {**parts, "score": math.fsum(weights[k] * parts[k] for k in weights)}


def _pair_gaps(scores: Sequence[float], num_correct: int) -> list[float]:
    """Every chosen-minus-rejected score difference of one row: its best-of-n rows as preference pairs."""
    return [c - r for c in scores[:num_correct] for r in scores[num_correct:]]


def rewardbench2_scores(
    subsets: Sequence[str],
    ids: Sequence[str],
    num_correct: Sequence[int],
    scores: Sequence[Sequence[float]],
    n_bins: int = 15,
) -> dict[str, Any]:
    """RewardBench 2's official numbers, with an ECE beside them, from each row's completion scores.

    Args:
        subsets / ids / num_correct: the rows' ``subset``, ``id`` and ``num_correct`` columns.
        scores: per row, the scores of its ``chosen`` completions followed by those of its ``rejected`` ones.
        n_bins: bins of the ECE.

    Returns:
        ``{"subsets": {name: {...}}, "score": mean over the subsets present, "random_baseline": 0.25,
        "missing_subsets": [...], "ece": over every pair}``. Each subset has ``num_prompts``, ``score`` (the official
        number: best-of-n accuracy, `best_of_n_result`; for Ties, `ties_score`, whose parts it also lists),
        ``num_pairs`` and ``ece``. RewardBench 2 has no calibration metric (its issue #263 asks for one); here a row
        gives one pair per (chosen, rejected) combination, predicted ``sigmoid(s_chosen - s_rejected)`` against the
        hard label 1, with this package's symmetric ECE (`expected_calibration_error`), so a row of 1 chosen and 3
        rejected adds 3 pairs.
    """
    if not len(subsets) == len(ids) == len(num_correct) == len(scores):
        raise ValueError("subsets, ids, num_correct and scores must have one entry per row.")
    result: dict[str, Any] = {"subsets": {}}
    all_gaps: list[float] = []
    order = {name: i for i, name in enumerate(REWARDBENCH2_SUBSETS)}  # the official order, then others by name
    for name in sorted(set(subsets), key=lambda n: (order.get(n, len(order)), n)):
        rows = [i for i, s in enumerate(subsets) if s == name]
        gaps = [g for i in rows for g in _pair_gaps(scores[i], num_correct[i])]
        all_gaps += gaps
        entry: dict[str, Any] = {"num_prompts": len(rows)}
        if name.lower() == "ties":  # as run_v2.py: the Ties subset by name, case-insensitive
            entry.update(ties_score([ids[i] for i in rows], [num_correct[i] for i in rows], [scores[i] for i in rows]))
        else:
            entry["score"] = _mean([best_of_n_result(scores[i]) for i in rows])
        entry["num_pairs"] = len(gaps)
        entry["ece"] = _gaps_ece(gaps, n_bins)
        result["subsets"][name] = entry
    result["score"] = _mean([e["score"] for e in result["subsets"].values()])
    result["random_baseline"] = REWARDBENCH2_RANDOM_BASELINE
    result["missing_subsets"] = [n for n in REWARDBENCH2_SUBSETS if n not in result["subsets"]]
    result["ece"] = _gaps_ece(all_gaps, n_bins)
    result["n_bins"] = n_bins
    return result


def _gaps_ece(gaps: Sequence[float], n_bins: int) -> float:
    if not gaps:
        return float("nan")
    pred = torch.sigmoid(torch.tensor(gaps, dtype=torch.float64))
    return expected_calibration_error(pred, torch.ones_like(pred), n_bins)


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
