"""Figures of the quality benchmarks (matplotlib, no pyplot state): reliability diagrams (MMPO paper, Figure 4),
gamma_i against the reward gap (gamma-PO paper, Figure 5) and validation reward margins over training (MMPO paper,
Figure 5)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import common
from matplotlib.figure import Figure

COLORS = {
    "dpo": "tab:blue", "cdpo": "tab:cyan", "mmpo": "tab:red", "gamma_dpo": "tab:purple", "simpo": "tab:green",
    "gamma_simpo": "tab:olive", "mmpo_gamma_dpo": "tab:orange", "mmpo_1rater": "tab:pink", "bt": "tab:blue",
}  # fmt: skip


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _pooled_reliability(runs: list[dict]) -> dict[str, list]:
    """Pool the per-seed reliability tables (same bins) into one: counts add, means are count-weighted."""
    n_bins = len(runs[0]["reliability"]["count"])
    count = [0] * n_bins
    pred = [0.0] * n_bins
    target = [0.0] * n_bins
    for run in runs:
        table = run["reliability"]
        for i in range(n_bins):
            c = table["count"][i]
            if c:
                count[i] += c
                pred[i] += c * table["mean_pred"][i]
                target[i] += c * table["mean_target"][i]
    return {
        "bin_edges": runs[0]["reliability"]["bin_edges"],
        "count": count,
        "mean_pred": [p / c if c else None for p, c in zip(pred, count)],
        "mean_target": [t / c if c else None for t, c in zip(target, count)],
    }


def _reliability_panel(ax, table: dict[str, list], title: str, ece: dict[str, float], color: str) -> None:
    edges, counts = table["bin_edges"], table["count"]
    width = edges[1] - edges[0]
    total = sum(counts)
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfect calibration")
    for i, c in enumerate(counts):
        if not c:
            continue
        # Bar height: the humans' mean preference probability in the bin; marker: the model's mean prediction
        ax.bar(edges[i], table["mean_target"][i], width=width, align="edge", color=color, alpha=0.25 + 0.6 * c / total,
               edgecolor="black", linewidth=0.5)  # fmt: skip
        ax.plot(table["mean_pred"][i], table["mean_target"][i], "o", color="black", markersize=3)
    ax.plot([], [], "s", color=color, alpha=0.7, label="human P(a > b) per bin\n(darker = more pairs)")
    ax.plot([], [], "o", color="black", markersize=3, label="(mean prediction, mean human P)")
    ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{title}\nECE {ece['mean']:.3f} ± {ece['std']:.3f} (seeds)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)


def reliability_grid(
    results: dict[str, Any], path: Path, methods: tuple[str, ...] | None = None, labels: dict[str, str] | None = None
) -> Path | None:
    """Reliability diagrams: rows = label settings, columns = methods; predictions of all seeds pooled."""
    runs = results["runs"]
    settings = [s for s in common.SETTINGS if any(r["setting"] == s for r in runs)]
    if methods is None:
        methods = ("dpo", "mmpo") if results["benchmark"] == "policy" else ("bt", "mmpo_g1")
    methods = tuple(m for m in methods if any(r["method"] == m for r in runs))
    if not methods or not settings:  # e.g. a shard of other methods
        return None
    labels = labels or {}
    fig = Figure(figsize=(3.9 * len(methods) + 0.6, 3.9 * len(settings) + 0.9), layout="constrained")
    axes = fig.subplots(len(settings), len(methods), squeeze=False)
    for i, setting in enumerate(settings):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            mine = [r for r in runs if r["setting"] == setting and r["method"] == method]
            if not mine:
                ax.set_axis_off()
                continue
            ece = common.mean_std([r["metrics"]["ece"] for r in mine])
            name = labels.get(method, method)
            color = COLORS.get(method.split("_g")[0] if method.startswith("mmpo_g") else method, "tab:red")
            _reliability_panel(ax, _pooled_reliability(mine), f"{name}\n{common.SETTING_TITLES[setting]}", ece, color)
            if j == 0:
                ax.set_ylabel("human preference probability P(a > b)")
            if i == len(settings) - 1:
                ax.set_xlabel("predicted sigmoid(r_a - r_b)")
    axes[0][-1].legend(loc="upper left", fontsize=7)
    what = "policy implicit rewards" if results["benchmark"] == "policy" else "reward models"
    fig.suptitle(
        f"Reliability on held-out VADER pairs ({what}); each pair in both orders; seeds pooled",
        fontsize=10,
    )
    return _save(fig, path)


def gamma_vs_gap(results: dict[str, Any], path: Path) -> Path | None:
    """gamma_i against the reward gap of each training pair (gamma-PO Figure 5), coloured by training step."""
    traces = results.get("gamma_traces", {})
    setting = "clean" if "clean" in traces else next(iter(traces), None)
    recorded = traces.get(setting, {}) if setting else {}
    # SimPO's margin is fixed (gamma_i = gamma0): only the dynamic runs are worth a panel
    panels = [(m, recorded[m]) for m in ("gamma_dpo", "gamma_simpo", "mmpo_gamma_dpo") if m in recorded]
    if not panels:
        return None
    fig = Figure(figsize=(5.0 * len(panels), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (method, trace) in zip(axes, panels):
        steps, gaps, gammas = [], [], []
        for step, step_gaps, step_gammas in trace["steps"]:
            steps += [step] * len(step_gaps)
            gaps += step_gaps
            gammas += step_gammas
        points = ax.scatter(gaps, gammas, c=steps, cmap="viridis", s=10, alpha=0.8)
        ax.axhline(trace["gamma0"], color="tab:red", linestyle="--", label=f"gamma0 = {trace['gamma0']:.3g}")
        applied = "gamma_i - gamma0" if trace["margin_offset"] else "gamma_i"
        ax.set(xlabel="reward gap r_w - r_l of the pair (at that step)", ylabel="target margin gamma_i")
        ax.ticklabel_format(useOffset=False)
        ax.set_title(f"{method}: {len(gaps)} training pairs\n(the loss applies {applied})", fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
        fig.colorbar(points, ax=ax, label="training step")
    if not panels:
        axes[0].text(0.5, 0.5, "no gamma-PO run recorded", ha="center", va="center")
    fig.suptitle(f"Dynamic target margins against reward gaps, {common.SETTING_TITLES.get(setting, '')}, seed 0",
                 fontsize=10)  # fmt: skip
    return _save(fig, path)


def margins_over_training(
    results: dict[str, Any], path: Path, methods: tuple[str, ...] = ("dpo", "mmpo")
) -> Path | None:
    """Mean validation reward margin and accuracy during training, mean ± std over seeds (MMPO Figure 5)."""
    runs = [r for r in results["runs"] if r.get("margin_trace")]
    settings = [s for s in common.SETTINGS if any(r["setting"] == s for r in runs)]
    if not settings:
        return None
    fig = Figure(figsize=(4.4 * len(settings), 6.4), layout="constrained")
    axes = fig.subplots(2, len(settings), squeeze=False)
    for j, setting in enumerate(settings):
        for method in methods:
            mine = [r for r in runs if r["setting"] == setting and r["method"] == method]
            if not mine:
                continue
            steps = [p["step"] for p in mine[0]["margin_trace"]]
            for row, key in enumerate(("margin", "accuracy")):
                stats = [common.mean_std([r["margin_trace"][k][key] for r in mine]) for k in range(len(steps))]
                mean = [s["mean"] for s in stats]
                std = [0.0 if math.isnan(s["std"]) else s["std"] for s in stats]
                ax = axes[row][j]
                reused = " = run of (a)" if mine[0].get("reused_from") else ""
                ax.plot(steps, mean, "o-", color=COLORS.get(method), label=f"{method}{reused} ({len(mine)} seeds)")
                ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=COLORS.get(method), alpha=0.2)  # fmt: skip
        axes[0][j].set_title(common.SETTING_TITLES[setting], fontsize=9)
        axes[0][j].set_ylabel("validation reward margin r_w - r_l")
        axes[1][j].set_ylabel("validation preference accuracy")
        axes[1][j].set_xlabel("training step")
        for row in range(2):
            axes[row][j].grid(alpha=0.3)
            axes[row][j].legend(fontsize=8)
    fig.suptitle("Implicit reward margins on held-out pairs during training (mean ± std over seeds)", fontsize=10)
    return _save(fig, path)
