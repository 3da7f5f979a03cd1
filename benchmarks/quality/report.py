"""Markdown tables of the quality benchmarks' result files, for benchmarks/RESULTS.md.

Every paired difference to the baseline carries its paired t-test over seeds and the Holm-adjusted p-value, the
family being one table's comparisons for one metric (`significance.py`); `*` marks Holm-adjusted p < 0.05. Below
each table, the A/A control (gamma-DPO against DPO, whose losses agree to rounding) where the table has it.

Each block of tables opens with where its numbers come from, as far as the JSON records it: the command that last
wrote the file, the date and commit its `machine` entry records (when the first run started), the shards it merged
(each with its own start and commit), hardware and software, the compute summed over processes, and the commit that
last changed the file (`git log`). What the JSON does not record (the load on the machine, when the last run ended)
is said so.

    PYTHONPATH=. python benchmarks/quality/report.py [--results benchmarks/quality/results]   # print the tables
    PYTHONPATH=. python benchmarks/quality/report.py --update benchmarks/RESULTS.md           # rewrite its blocks
    PYTHONPATH=. python benchmarks/quality/report.py --check benchmarks/RESULTS.md            # exit 1 if stale

`--update` and `--check` act on the blocks between `<!-- report.py KIND PATH -->` and `<!-- end report.py -->` in
the file (KIND `policy`, `reward_model`, `rm_agreement` or `rounds`, with PATH the result file from the repository
root; or KIND `preregistered`, with PATH the declarations, `benchmarks/quality/preregistered.yaml`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
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


# ---- where the numbers come from ------------------------------------------------------------------------------------
COMMITTED = "- **Committed**"
"""The provenance line read from git rather than from the JSON (a checkout without history cannot check it)."""


def _repo_path(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return path.relative_to(common.REPO_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def git_last_change(path: Path, first: bool = False) -> tuple[str, str] | None:
    """`(short hash, date)` of the commit that last changed `path` (with `first`, that added it), or None without the
    repository's history."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=common.REPO_ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        if git("rev-parse", "--is-shallow-repository") != "false":
            return None
        which = ["--diff-filter=A", "--follow"] if first else ["-1"]
        out = git("log", *which, "--format=%h %cs", "--", _repo_path(path)).splitlines()[-1:]
        out = out[0] if out else ""
    except OSError:
        return None
    return tuple(out.split(" ", 1)) if out else None


def _hours(seconds: float) -> str:
    return f"{seconds:,.0f} s ({seconds / 3600:.1f} h)"


def _machine(machine: dict[str, Any]) -> str:
    if not machine:
        return "not recorded in the JSON"
    cpu = f"{machine.get('cpu', 'CPU not recorded')}, {machine.get('cpu_count', '?')} CPUs"
    threads = machine.get("torch_threads")
    cpu += f", {threads} torch thread{'s' if threads != 1 else ''} per process" if threads else ""
    flags = machine.get("cpu_flags")
    if flags:
        native = [name for name, key in (("AVX512-BF16", "avx512_bf16"), ("AMX", "amx")) if flags.get(key)]
        cpu += f", torch's CPU capability {flags['capability']}, " + (
            f"native bf16 ({' and '.join(native)})" if native else "no native bf16"
        )
    names = (("Python", "python"), ("torch", "torch"), ("transformers", "transformers"), ("TRL", "trl"),
             ("accelerate", "accelerate"), ("PEFT", "peft"))  # fmt: skip
    software = ", ".join(f"{name} {machine[key]}" for name, key in names if machine.get(key))
    return f"{cpu}; {software}"


def _shard_rows(path: Path) -> list[list[str]]:
    """One row per shard file next to the result (`shards/*/<name>`): when and at which commit it started, what ran."""
    rows = []
    for shard_path in sorted((path.parent / "shards").glob(f"*/{path.name}")):
        shard = json.loads(shard_path.read_text())
        machine = shard.get("machine", {})
        runs = [r for r in shard.get("runs", []) if not r.get("reused_from")]
        settings = ", ".join(dict.fromkeys(r["setting"] for r in runs)) or "-"
        methods = ", ".join(dict.fromkeys(r["method"] for r in runs)) or "-"
        seeds = ", ".join(str(s) for s in sorted({r["seed"] for r in runs})) or "-"
        rows.append([
            f"`{shard_path.parent.name}`", machine.get("date", "not recorded"), machine.get("git_commit") or "-",
            settings, methods, seeds, str(len(runs)), f"{shard.get('compute_s', 0):,.0f}",
        ])  # fmt: skip
    return rows


def provenance(results: dict[str, Any], path: Path, git: bool = True) -> str:
    """Where a result file's numbers come from, as far as it records it (and git, with `git=True`)."""
    machine = results.get("machine", {})
    shards = _shard_rows(path)
    lines = [f"Source: `{_repo_path(path)}`.", ""]
    command = results.get("command")
    lines.append(f"- **Command** (the last that wrote the file): `{command}`" if command else "- **Command**: not "
                 "recorded in the JSON")  # fmt: skip
    if results.get("shards"):
        lines[-1] += f"; it merged the results of {len(results['shards'])} shard commands (the JSON's `shards`)"
    started = machine.get("date")
    if started:
        if results.get("shards"):
            what = "of the first file merged, written when that run started"
        elif command and "--resume" in command:
            what = "written when the last invocation, a `--resume`, started; earlier invocations are not recorded"
        else:
            what = "written when the run started"
        lines.append(
            f"- **Started**: {started} at commit {machine.get('git_commit') or '(not recorded)'} (the JSON's "
            f"`machine`, {what}; the JSON does not record when the last run ended)"
        )
    else:
        lines.append("- **Started**: the JSON records no date or commit")
    if git:
        change = git_last_change(path)
        lines.append(
            f"{COMMITTED}: {change[0]} on {change[1]} (the commit that last changed the file, `git log`)"
            if change
            else f"{COMMITTED}: no git history in this checkout (`git log -- {_repo_path(path)}`)"
        )
    lines.append(f"- **Hardware and software**: {_machine(machine)}")
    lines.append("- **Load**: not recorded in the JSON")
    if "compute_s" in results:
        lines.append(f"- **Compute**: {_hours(results['compute_s'])}, the processes' wall times summed (`compute_s`)")
    sizes = results.get("config", {}).get("sizes")
    if sizes:
        keys = ("train_pairs", "steps", "batch_size", "eval_pairs", "seeds")
        lines.append("- **Sizes**: " + ", ".join(f"{k} {sizes[k]}" for k in keys if k in sizes))
    text = "\n".join(lines)
    if shards:
        header = ["shard", "started", "commit", "settings", "methods", "seeds", "runs", "compute (s)"]
        text += "\n\nThe shard files it merged (`shards/*/" + path.name + "`, each with its own `machine`):\n\n"
        text += common.markdown_table(header, shards)
    return text


def agreement_table(results: dict[str, Any]) -> str:
    """The reward model's margins against the raters' (`rm_agreement.py`)."""
    names = {"test": "test", "train_unseen_by_rm": "train, not in the RM's training pairs",
             "train_seen_by_rm": "train, the RM's own training pairs"}  # fmt: skip
    rows = [
        [label, str(results[key]["n"]), f"{results[key]['sign_agreement']:.3f}", f"{results[key]['pearson']:.3f}",
         f"{results[key]['spearman']:.3f}"]
        for key, label in names.items()
        if key in results
    ]  # fmt: skip
    return common.markdown_table(["pairs", "n", "sign agreement (accuracy)", "Pearson", "Spearman"], rows)


BLOCK = re.compile(
    r"(<!-- report\.py (?P<kind>policy|reward_model|rm_agreement|rounds|preregistered) (?P<path>\S+) -->\n)"
    r"(?P<body>.*?)"
    r"(<!-- end report\.py -->)",
    flags=re.S,
)


DECLARED = "- **Declared**"
"""The pre-registration's line read from git (as `COMMITTED`)."""


def preregistered_block(path: Path, git: bool = True) -> str:
    """The pre-registered hypotheses as declared in `path`: when they were declared, each result file's start, and
    the outcomes (`preregistered.py`)."""
    import preregistered
    import yaml

    registry = yaml.safe_load(path.read_text())
    lines = [f"Source: `{_repo_path(path)}` and the result files it names.", ""]
    if git:
        added = git_last_change(path, first=True)
        lines.append(f"{DECLARED}: commit {added[0]} on {added[1]} (the commit that added the file, `git log`)"
                     if added else f"{DECLARED}: no git history in this checkout")  # fmt: skip
    for result_path in dict.fromkeys(h["results"] for h in registry["hypotheses"]):
        results = common.load_results(common.REPO_ROOT / result_path)
        if results is None:
            lines.append(f"- `{result_path}`: not run yet")
            continue
        machine = results.get("machine", {})
        lines.append(
            f"- `{result_path}`: started {machine.get('date', '(not recorded)')} at commit "
            f"{machine.get('git_commit') or '(not recorded)'}, compute {_hours(results.get('compute_s', 0))}; "
            f"{_machine(machine)}"
        )
    rows = preregistered.analyse(registry)
    return "\n".join(lines) + "\n\n" + preregistered.table(rows)


def block(kind: str, path: Path, git: bool = True) -> str:
    """The text of one generated block of RESULTS.md: provenance, then the tables."""
    if kind == "preregistered":
        return preregistered_block(path, git) + "\n"
    results = common.load_results(path)
    if results is None:
        raise FileNotFoundError(f"{path}: no such result file")
    parts = [provenance(results, path, git)]
    if kind == "policy":
        parts += [policy_tables(results), label_stats(results)]
    elif kind == "reward_model":
        parts += [rm_tables(results), label_stats(results)]
    elif kind == "rounds":
        import rounds

        parts.append(rounds.report(results))
    else:
        parts.append(agreement_table(results))
    return "\n\n".join(p for p in parts if p) + "\n"


def update(markdown: str, git: bool = True) -> str:
    """`markdown` with every generated block rewritten from its result file."""

    def render(match: re.Match) -> str:
        body = block(match["kind"], common.REPO_ROOT / match["path"], git)
        return match.group(1) + "\n" + body + "\n" + match.group(5)

    return BLOCK.sub(render, markdown)


def stale_blocks(markdown: str) -> list[str]:
    """The generated blocks of `markdown` that differ from what the result files give now (the git line is compared
    only where the checkout has the history)."""
    has_history = git_last_change(common.HERE / "report.py") is not None

    def keep(text: str) -> str:
        git_lines = (COMMITTED, DECLARED)
        return "\n".join(line for line in text.splitlines() if has_history or not line.startswith(git_lines))

    fresh = {m["path"]: m["body"] for m in BLOCK.finditer(update(markdown, git=has_history))}
    return [m["path"] for m in BLOCK.finditer(markdown) if keep(m["body"]) != keep(fresh[m["path"]])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=common.HERE / "results")
    parser.add_argument("--update", type=Path, help="Rewrite the generated blocks of this Markdown file.")
    parser.add_argument("--check", type=Path, help="Exit 1 if a generated block of this file is stale.")
    args = parser.parse_args(argv)
    if args.update or args.check:
        target = args.update or args.check
        text = target.read_text(encoding="utf-8")
        if args.update:
            target.write_text(update(text), encoding="utf-8")
            print(f"{target}: {len(BLOCK.findall(text))} generated blocks rewritten")
            return 0
        stale = stale_blocks(text)
        for path in stale:
            print(f"{target}: the block of {path} is stale; run report.py --update {target}", file=sys.stderr)
        return 1 if stale else 0
    policy = common.load_results(args.results / "policy.json")
    rm = common.load_results(args.results / "reward_model.json")
    if policy:
        print("## policy\n\n" + policy_tables(policy) + "\n\n" + label_stats(policy) + "\n")
    if rm:
        print("## reward model\n\n" + rm_tables(rm) + "\n\n" + label_stats(rm) + "\n")
    print("## compact (accuracy / ECE)\n\n" + compact(policy, rm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
