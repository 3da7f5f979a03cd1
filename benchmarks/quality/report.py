"""Markdown tables of the quality benchmarks' result files, for benchmarks/RESULTS.md.

Every paired difference to the baseline carries its paired t-test over seeds and the Holm-adjusted p-value, the
family being one table's comparisons for one metric (`significance.py`); `*` marks Holm-adjusted p < 0.05. Below
each table, the A/A control (gamma-DPO against DPO, whose losses agree to rounding) where the table has it.

PYTHONPATH=. python benchmarks/quality/report.py [--results benchmarks/quality/results]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import common
import significance

POLICY_COLUMNS = (
    ("accuracy", "accuracy ↑", 3),
    ("ece", "ECE ↓", 3),
    ("brier", "Brier ↓", 4),
    ("vader_compound", "VADER, all prompts ↑", 3),
    ("vader_compound_novel", "VADER, new prompts ↑", 3),
    ("kl", "KL to ref. (nats)", 2),
)
RM_COLUMNS = (("accuracy", "accuracy ↑", 3), ("ece", "ECE ↓", 3), ("brier", "Brier ↓", 4), ("nll", "NLL ↓", 4))


def _label(results: dict[str, Any], method: str) -> str:
    return results["config"]["methods"].get(method, {}).get("label", method)


A_A_CONTROL = "gamma_dpo"  # gamma-DPO at the published defaults is DPO up to rounding (RESULTS.md): the noise floor


def comparison_tests(summary: dict[str, Any], baseline: str, metric: str) -> dict[str, dict[str, float]]:
    """The paired t-test of every method against `baseline` on `metric` in one setting's summary, with the
    Holm-adjusted p-value over those comparisons (`holm_p`); methods with fewer than 2 paired seeds are left out."""
    tests = {}
    for method, stats in summary.items():
        if method != baseline and (test := significance.from_summary(stats.get(f"delta_{metric}", {}))):
            tests[method] = test
    for test, adjusted in zip(tests.values(), significance.holm([t["p"] for t in tests.values()])):
        test["holm_p"] = adjusted
    return tests


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _delta_cell(stat: dict[str, float], test: dict[str, float] | None) -> str:
    cell = common.fmt(stat, 3, signed=True)
    if test is None:
        return cell
    mark = "\\*" if test["holm_p"] < significance.ALPHA else ""
    return f"{cell} (p {_p(test['p'])}, Holm {_p(test['holm_p'])}){mark}"


def noise_floor(results: dict[str, Any], setting: str, baseline: str, deltas: tuple[str, ...]) -> str:
    """The A/A control's paired tests in one setting, as a line under its table ("" when it did not run there)."""
    summary = results.get("summary", {}).get(setting, {})
    if A_A_CONTROL not in summary or baseline != "dpo":
        return ""
    parts = []
    for metric in deltas:
        test = comparison_tests(summary, baseline, metric).get(A_A_CONTROL)
        if test is not None:
            parts.append(
                f"{metric} {test['mean']:+.3f}, t = {test['t']:.2f} (df {test['df']}), p {_p(test['p'])}, "
                f"Holm {_p(test['holm_p'])}"
            )
    return ("A/A control (gamma-DPO vs DPO, the noise floor): " + "; ".join(parts)) if parts else ""


def _table(
    results: dict[str, Any], setting: str, columns, baseline: str, deltas: tuple[str, ...], reference: bool
) -> str:
    summary = results["summary"][setting]
    tests = {d: comparison_tests(summary, baseline, d) for d in deltas}
    header = ["method", *(title for _, title, _ in columns)]
    header += [f"Δ {d} vs {baseline} (paired; p, Holm p over {len(tests[d])})" for d in deltas]
    rows = []
    if reference and results.get("reference"):  # a run with --no-reference-rows has none
        ref = results["reference_summary"]
        base = [f"untrained {results['config']['model']} (SimPO-style reward)"]
        base += [common.fmt(ref[key], digits) if key in ref else "-" for key, _, digits in columns]
        rows.append(base + ["" for _ in deltas])
    for method in results["config"]["methods"]:
        if method not in summary:
            continue
        stats = summary[method]
        n = stats[columns[0][0]]["n"]
        reused = any(
            r.get("reused_from") for r in results["runs"] if r["method"] == method and r["setting"] == setting
        )
        name = f"{_label(results, method)}" + (" = run of (a)" if reused else "") + ("" if n >= 3 else f" [{n} seed]")
        row = [name, *(common.fmt(stats[key], digits) for key, _, digits in columns)]
        row += [
            _delta_cell(stats.get(f"delta_{d}", {}), tests[d].get(method)) if method != baseline else ""
            for d in deltas
        ]
        rows.append(row)
    return common.markdown_table(header, rows)


def setting_tables(results: dict[str, Any], columns, baseline: str, reference: bool) -> str:
    """One table per label setting in `results`: the policy benchmark (with the untrained model's row) or the reward
    model's."""
    parts = []
    deltas = ("accuracy", "ece")
    for setting in common.SETTINGS:
        if setting in results.get("summary", {}):
            table = _table(results, setting, columns, baseline, deltas, reference)
            floor = noise_floor(results, setting, baseline, deltas)
            parts.append(f"**{common.SETTING_TITLES[setting]}**\n\n{table}" + (f"\n\n{floor}" if floor else ""))
    return "\n\n".join(parts)


def policy_tables(results: dict[str, Any]) -> str:
    return setting_tables(results, POLICY_COLUMNS, "dpo", reference=True)


def rm_tables(results: dict[str, Any]) -> str:
    return setting_tables(results, RM_COLUMNS, "bt", reference=False)


def label_stats(results: dict[str, Any]) -> str:
    lines = []
    for setting, by_seed in results.get("label_stats", {}).items():
        rates = [s["wrong_label_rate"] for s in by_seed.values()]
        lines.append(f"{setting}: training labels that disagree with the mean ratings: " + ", ".join(
            f"{r:.1%}" for r in rates))  # fmt: skip
    return "\n".join(lines)


def compact(policy: dict[str, Any] | None, rm: dict[str, Any] | None) -> str:
    """One line per method: accuracy / ECE in each label setting (the README table)."""
    header = ["model", "method", *(common.SETTING_TITLES[s] for s in common.SETTINGS)]
    rows = []
    for name, results in (("SmolLM2-135M policy", policy), ("MiniLM reward model", rm)):
        if not results:
            continue
        for method in results["config"]["methods"]:
            cells = []
            for setting in common.SETTINGS:
                stats = results.get("summary", {}).get(setting, {}).get(method)
                cells.append(
                    f"{stats['accuracy']['mean']:.3f} / {stats['ece']['mean']:.3f}" if stats else "-"
                )  # fmt: skip
            if any(c != "-" for c in cells):
                rows.append([name, _label(results, method), *cells])
    return common.markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=common.HERE / "results")
    args = parser.parse_args()
    policy = common.load_results(args.results / "policy.json")
    rm = common.load_results(args.results / "reward_model.json")
    if policy:
        print("## policy\n\n" + policy_tables(policy) + "\n\n" + label_stats(policy) + "\n")
    if rm:
        print("## reward model\n\n" + rm_tables(rm) + "\n\n" + label_stats(rm) + "\n")
    print("## compact (accuracy / ECE)\n\n" + compact(policy, rm))


if __name__ == "__main__":
    main()
