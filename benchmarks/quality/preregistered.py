"""The pre-registered comparisons (`preregistered.yaml`), reported as declared: for each hypothesis, the per-seed
difference with its paired t-test (Holm's correction within the family decides), the paired bootstrap over seeds x
held-out pairs beside it, and the outcome; a reliability diagram per method from the pooled per-pair predictions.

    PYTHONPATH=. python benchmarks/quality/preregistered.py            # the table, for RESULTS.md
    PYTHONPATH=. python benchmarks/quality/preregistered.py --figures  # also the reliability diagrams

A hypothesis whose result file is missing, or lacks one of the declared seeds, is reported as not run or incomplete,
never tested on what is there. The per-pair predictions are checked against each run's stored metrics first.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import common
import significance
import torch
import yaml

REGISTRY = common.HERE / "preregistered.yaml"
FIGURES = common.HERE / "figures" / "prereg"


# ---- the metrics, from per-pair margins (as `preference_metrics` computes them) ------------------------------------
def ece(margins: torch.Tensor, targets: torch.Tensor) -> float:
    from trl_margins.evaluation.calibration import expected_calibration_error

    return expected_calibration_error(torch.sigmoid(margins), targets, n_bins=10, symmetric=True)


def accuracy(margins: torch.Tensor, targets: torch.Tensor) -> float:
    return float(((margins > 0).double() + 0.5 * (margins == 0).double()).mean())  # ties count as half


def brier(margins: torch.Tensor, targets: torch.Tensor) -> float:
    from trl_margins.evaluation.calibration import brier_score

    return brier_score(torch.sigmoid(margins), targets)


METRICS = {"ece": ece, "accuracy": accuracy, "brier": brier}


# ---- the runs of a hypothesis ---------------------------------------------------------------------------------------
def _runs(results: dict[str, Any], hypothesis: dict[str, Any], method: str) -> dict[int, dict[str, Any]]:
    """seed -> {"metrics", "predictions"} of one method's runs in the hypothesis's setting (or round)."""
    found = {}
    for run in results["runs"]:
        if run["method"] != method:
            continue
        if hypothesis["benchmark"] == "rounds":
            entry = next((x for x in run["rounds"] if x["round"] == hypothesis["round"]), None)
            if entry is not None:
                found[run["seed"]] = {"metrics": entry["metrics"], "predictions": entry.get("predictions")}
        elif run["setting"] == hypothesis["setting"]:
            found[run["seed"]] = {"metrics": run["metrics"], "predictions": run.get("predictions")}
    return found


def evidence(hypothesis: dict[str, Any], seeds: list[int], root: Path = common.REPO_ROOT) -> dict[str, Any]:
    """The per-seed values and per-pair margins of the method and the baseline, or why there are none yet."""
    path = root / hypothesis["results"]
    if not path.is_file():
        return {"status": "not run"}
    results = common.load_results(path)
    targets = common.unpack_floats(results["heldout"]["human_pref_prob"])
    sides = {side: _runs(results, hypothesis, hypothesis[side]) for side in ("method", "baseline")}
    missing = {side: [s for s in seeds if s not in runs] for side, runs in sides.items()}
    if any(missing.values()):
        return {"status": "incomplete", "missing": missing}
    extra = sorted({s for runs in sides.values() for s in runs} - set(seeds))
    metric = METRICS[hypothesis["metric"]]
    out: dict[str, Any] = {"status": "complete", "targets": targets, "undeclared_seeds": extra}
    for side, runs in sides.items():
        margins = [common.unpack_floats(runs[s]["predictions"]) for s in seeds]
        values = [runs[s]["metrics"][hypothesis["metric"]] for s in seeds]
        for seed, m, stored in zip(seeds, margins, values, strict=True):  # the stored predictions are the run's
            if not math.isclose(metric(m, targets), stored, rel_tol=1e-9, abs_tol=1e-12):
                raise SystemExit(f"{path}: seed {seed} {hypothesis[side]}: predictions give {metric(m, targets)}, "
                                 f"the run stored {stored}")  # fmt: skip
        out[side] = {"values": values, "margins": margins}
    return out


def analyse(registry: dict[str, Any], root: Path = common.REPO_ROOT, replicates: int = 2000) -> list[dict[str, Any]]:
    """Every hypothesis with its test, Holm-adjusted p (within its family), bootstrap and outcome."""
    seeds = list(registry["seeds"])
    rows = []
    for hypothesis in registry["hypotheses"]:
        found = evidence(hypothesis, seeds, root)
        row = {"hypothesis": hypothesis, **found}
        if found["status"] == "complete":
            diffs = [a - b for a, b in zip(found["method"]["values"], found["baseline"]["values"], strict=True)]
            row["diffs"] = diffs
            row["t_test"] = significance.paired_t_test(diffs)
            row["bootstrap"] = significance.paired_bootstrap(
                found["method"]["margins"], found["baseline"]["margins"], found["targets"],
                METRICS[hypothesis["metric"]], replicates=replicates, seed=0,
            )  # fmt: skip
        rows.append(row)
    for family in {r["hypothesis"]["family"] for r in rows}:
        members = [r for r in rows if r["hypothesis"]["family"] == family]
        if all(r["status"] == "complete" for r in members):  # a family is corrected only when all of it is in
            for r, adjusted in zip(members, significance.holm([r["t_test"]["p"] for r in members]), strict=True):
                r["holm_p"] = adjusted
                sign = 1 if r["hypothesis"]["predicted"] == "higher" else -1
                held = sign * statistics.fmean(r["diffs"]) > 0 and adjusted < registry["alpha"]
                r["outcome"] = "held" if held else "did not hold"
    return rows


# ---- the report ----------------------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    header = ["hypothesis", "metric", "method", "baseline", "difference", "t-test p / Holm", "bootstrap [95%], p",
              "outcome"]  # fmt: skip
    lines = []
    for r in rows:
        h = r["hypothesis"]
        name = f"`{h['id']}` ({h['family']})"
        what = f"{h['metric']} ({h['predicted']})"
        if r["status"] != "complete":
            lines.append([name, what, h["method"], h["baseline"], "-", "-", "-", r["status"]])
            continue
        stats = [common.mean_std(r[side]["values"]) for side in ("method", "baseline")]
        boot = r["bootstrap"]
        lines.append([
            name, what, f"{h['method']} {common.fmt(stats[0])}", f"{h['baseline']} {common.fmt(stats[1])}",
            common.fmt(common.mean_std(r["diffs"]), signed=True),
            f"{r['t_test']['p']:.3f} / {r['holm_p']:.3f}" if "holm_p" in r else f"{r['t_test']['p']:.3f} / -",
            f"{boot['delta']:+.3f} [{boot['ci_low']:+.3f}, {boot['ci_high']:+.3f}], {boot['p']:.3f}",
            f"**{r['outcome']}**" if "outcome" in r else "family incomplete",
        ])  # fmt: skip
    return common.markdown_table(header, lines)


def draw_reliability(rows: list[dict[str, Any]], folder: Path = FIGURES) -> list[Path]:
    """One figure per result file and pair of methods: each method's pooled predictions (every seed, every held-out
    pair in both orders) binned as the ECE bins them."""
    import plots
    from matplotlib.figure import Figure

    from trl_margins.evaluation.calibration import reliability_bins

    drawn, seen = [], set()
    for r in rows:
        h = r["hypothesis"]
        key = (h["results"], h["method"], h["baseline"], h.get("setting"), h.get("round"))
        if r["status"] != "complete" or key in seen:
            continue
        seen.add(key)
        fig = Figure(figsize=(8.4, 4.2), layout="constrained")
        for ax, side in zip(fig.subplots(1, 2), ("method", "baseline"), strict=True):
            margins = torch.cat(r[side]["margins"])
            targets = r["targets"].repeat(len(r[side]["margins"]))
            table_ = reliability_bins(torch.sigmoid(margins), targets, 10, symmetric=True)
            ece_stat = common.mean_std([ece(m, r["targets"]) for m in r[side]["margins"]])
            color = plots.COLORS.get(h[side].split("_g")[0], "tab:red")
            plots._reliability_panel(ax, table_, f"{h[side]} ({h['benchmark']})", ece_stat, color)
            ax.set_xlabel("predicted sigmoid(r_a - r_b)")
        fig.axes[0].set_ylabel("human preference probability P(a > b)")
        n, k = r["targets"].numel(), len(r["method"]["margins"])
        fig.suptitle(f"{h['id']}: {n} held-out pairs x {k} seeds pooled, each pair in both orders", fontsize=10)
        drawn.append(plots._save(fig, folder / f"{h['id']}_reliability.png"))
    return drawn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, default=REGISTRY)
    parser.add_argument("--figures", action="store_true", help=f"draw the reliability diagrams into {FIGURES}")
    parser.add_argument("--replicates", type=int, default=2000)
    args = parser.parse_args(argv)
    registry = yaml.safe_load(args.registry.read_text())
    rows = analyse(registry, replicates=args.replicates)
    print(table(rows))
    if args.figures:
        for path in draw_reliability(rows):
            print(f"[prereg] {path.relative_to(common.REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
