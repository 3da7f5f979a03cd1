"""On-policy rounds with margins, measured: the offline recipe
(recipes/smollm2-135m-instruct/rounds-mmpo/config_vader.yaml: SmolLM2-135M-Instruct, a MiniLM reward model trained once
on the VADER raters' pairs, VADER prompts, 2 rounds) with MMPO on the reward model's margins against DPO rounds (the
same recipe, hard labels), seed by seed.

Each (method, seed) is one `trl-margins rounds` run in a child process; the seed sets the sampling (`generate.seed`)
and the training (`train.seed`), so the two methods of one seed start from the same round-0 pairs. The reward model is
trained once (the first run trains it from the recipe; the others reuse it). Per run and round: the time of every
stage, the held-out accuracy, ECE and Brier against the raters (VADER test pairs, their preference probabilities; 10
bins, as the other quality benchmarks, from each pair's stored margin), and the reward model's agreement on the
selected pairs with VADER's sentiment lexicon (built from the same raters' word ratings; the completions themselves
were never rated): the share of pairs whose lexicon compound score difference has the sign of the reward-model margin,
among pairs where the lexicon tells them apart.

    PYTHONPATH=. python benchmarks/quality/rounds.py --seeds 10 11 12 13 14 [--resume]
    PYTHONPATH=. python benchmarks/quality/rounds.py --report   # the tables, from the stored JSON
    PYTHONPATH=. python benchmarks/quality/rounds.py --quick --out /tmp/q --work_dir /tmp/q/work   # tiny models

Writes ``results/rounds/rounds.json`` and, with ``--report``, prints the markdown tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import significance
import yaml

RECIPE = common.REPO_ROOT / "recipes" / "smollm2-135m-instruct" / "rounds-mmpo" / "config_vader.yaml"
METHODS = {"mmpo": ["--train.mmpo_gamma", "1.0"], "dpo": ["--train.mmpo_gamma", "null"]}
METRICS = ("accuracy", "ece", "brier")
TARGET = "human_pref_prob"


def _lexicon_agreement(pairs_file: Path) -> dict[str, float]:
    """The reward model's margins against VADER's lexicon on a round's selected pairs."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines() if line.strip()]

    def text(side: Any) -> str:
        return side if isinstance(side, str) else " ".join(m["content"] for m in side if m["role"] == "assistant")

    told_apart = agree = 0
    for pair in pairs:
        lexicon = analyzer.polarity_scores(text(pair["chosen"]))["compound"]
        lexicon -= analyzer.polarity_scores(text(pair["rejected"]))["compound"]
        if lexicon != 0:
            told_apart += 1
            agree += (lexicon > 0) == (pair["score_chosen"] > pair["score_rejected"])
    return {"pairs": len(pairs), "told_apart": told_apart, "agreement": agree / told_apart if told_apart else None}


def _heldout_metrics(path: Path, targets) -> dict[str, Any]:
    """The round's held-out metrics from its per-pair rewards, binned as the other quality benchmarks bin (10 bins;
    the command reports the package's 15), and the per-pair margins they come from."""
    import torch

    from trl_margins.evaluation.calibration import preference_metrics

    rewards = json.loads(path.read_text())
    chosen, rejected = (torch.tensor(rewards[side], dtype=torch.float64) for side in ("chosen", "rejected"))
    metrics = preference_metrics(chosen, rejected, target_probs=targets, n_bins=10)
    return {"metrics": {m: metrics[m] for m in METRICS}, "predictions": common.pack_floats(chosen - rejected)}


def _heldout(recipe: Path, max_samples: int | None) -> dict[str, Any]:
    """The held-out pairs of the recipe, as the rounds' evaluate stage reads them: the targets per-pair margins
    are compared with."""
    from trl_margins.data.loading import load_preference_dataset

    config = yaml.safe_load(recipe.read_text())
    pairs = load_preference_dataset(config["heldout"], config["heldout_split"])
    pairs = pairs.select(range(min(max_samples or config["heldout_max_samples"], len(pairs))))
    return common.heldout_record(pairs.to_list(), pairs[config["heldout_prob_column"]])


QUICK_PAIRS = 8
QUICK = [
    "--rounds", "1", "--prompts_per_round", "2", "--heldout_max_samples", str(QUICK_PAIRS),
    "--generate.num_completions", "2", "--generate.max_new_tokens", "4", "--train.use_peft", "false",
    "--train.max_steps", "1", "--train.per_device_train_batch_size", "2",
]  # fmt: skip
"""`--quick`: one round of tiny random models on 2 prompts (the tests)."""


def _quick_models(folder: Path) -> list[str]:
    """A tiny random policy and a reward model on its tokenizer, as the recipe's overrides."""
    import torch
    from transformers import AutoModelForSequenceClassification

    sys.path.insert(0, str(common.REPO_ROOT))
    from tests.helpers import build_tiny_model

    policy = build_tiny_model(str(folder / "tiny-policy"))
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1)
    rm.config.pad_token_id = rm.config.pad_token_id or 0
    rm.save_pretrained(folder / "tiny-rm")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(policy).save_pretrained(folder / "tiny-rm")
    return ["--policy", policy, "--reward_model", str(folder / "tiny-rm"), *QUICK]


def _run_once(
    out: Path, method: str, seed: int, reward_model: str | None, threads: int, extra: list[str], targets
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "trl_margins.cli", "rounds", str(RECIPE), "--output_dir", str(out),
            "--generate.seed", str(seed), "--train.seed", str(seed), *METHODS[method]]  # fmt: skip
    if reward_model is not None:
        argv += ["--reward_model", reward_model]
    argv += extra
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(common.REPO_ROOT)}  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"[rounds] {method} seed {seed} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "rounds.json").read_text())
    rounds = []
    for entry in summary["rounds"]:
        stages = entry["stages"]
        folder = out / f"round-{entry['round']}"
        rounds.append({
            "round": entry["round"],
            "seconds": {stage: info["seconds"] for stage, info in stages.items()},
            "pairs": stages["select"]["kept"],
            **_heldout_metrics(folder / "heldout_rewards.json", targets),
            "command_metrics": stages["evaluate"]["metrics"][TARGET],
            "lexicon": _lexicon_agreement(folder / "pairs.jsonl"),
        })  # fmt: skip
    return {"method": method, "seed": seed, "wall_s": round(time.monotonic() - started, 1), "rounds": rounds,
            "reward_model": summary.get("reward_model"), "command": shlex.join(argv[1:])}  # fmt: skip


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    out_dir = Path(args.out)
    path = out_dir / "rounds.json"
    results = common.load_results(path) if args.resume else None
    if results is None:
        results = {"benchmark": "rounds", "command": common.command_line("rounds", argv), "recipe": str(RECIPE),
                   "machine": common.machine_info(), "runs": [], "compute_s": 0.0}  # fmt: skip
    results["quick"] = args.quick
    results["heldout"] = _heldout(RECIPE, QUICK_PAIRS if args.quick else None)
    work = Path(args.work_dir)
    reward_model = args.reward_model or results.get("reward_model_path")  # trained by the first run, then reused
    extra = _quick_models(work) if args.quick else []
    targets = common.unpack_floats(results["heldout"]["human_pref_prob"])
    for seed in args.seeds:
        for method in METHODS:
            if common.find_run(results["runs"], method=method, seed=seed):
                continue
            print(f"[rounds] {method}, seed {seed}", flush=True)
            record = _run_once(work / f"{method}-seed{seed}", method, seed, reward_model, args.threads, extra, targets)
            if reward_model is None and not args.quick:
                reward_model = results["reward_model_path"] = record["reward_model"]["reward_model"]
                results["reward_model"] = record["reward_model"]
            results["runs"].append(record)
            results["compute_s"] = round(results["compute_s"] + record["wall_s"], 1)
            common.write_json(path, results)
    return results


def report(results: dict[str, Any]) -> str:
    """The held-out metrics per round (mean ± sd over seeds), MMPO's paired difference to DPO with its t-test and
    Holm's correction over the table's comparisons, the lexicon agreement, and the time per stage."""
    runs = results["runs"]
    seeds = sorted(set.intersection(*({r["seed"] for r in runs if r["method"] == m} for m in METHODS)))
    by = {(r["method"], r["seed"]): r for r in runs}
    rounds = sorted({x["round"] for r in runs for x in r["rounds"]})
    rows, tests = [], []
    for rnd in rounds:
        for metric in METRICS:
            values = {m: [by[(m, s)]["rounds"][rnd]["metrics"][metric] for s in seeds] for m in METHODS}
            diffs = [a - b for a, b in zip(values["mmpo"], values["dpo"], strict=True)]
            tests.append(significance.paired_t_test(diffs))
            rows.append([str(rnd), metric, *(common.fmt(common.mean_std(values[m])) for m in METHODS),
                         common.fmt(common.mean_std(diffs), signed=True)])  # fmt: skip
    adjusted = significance.holm([t["p"] if t else 1.0 for t in tests])
    for row, test, holm_p in zip(rows, tests, adjusted, strict=True):
        row.append("-" if test is None else f"{test['p']:.3f} / {holm_p:.3f}")
    lines = [common.markdown_table(["round", "metric (vs raters)", "MMPO", "DPO", "MMPO - DPO", "p / Holm"], rows)]
    lexicon = [[m, *(common.fmt(common.mean_std([by[(m, s)]["rounds"][rnd]["lexicon"]["agreement"] for s in seeds]))
                     for rnd in rounds)] for m in METHODS]  # fmt: skip
    lines += ["", common.markdown_table(["reward model vs lexicon", *(f"round {r}" for r in rounds)], lexicon)]
    stages = list(runs[0]["rounds"][0]["seconds"])
    timing = [[stage, *(f"{statistics.fmean(r['rounds'][rnd]['seconds'][stage] for r in runs):.0f}" for rnd in rounds)]
              for stage in stages]  # fmt: skip
    lines += ["", common.markdown_table(["stage (s, mean over runs)", *(f"round {r}" for r in rounds)], timing)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default=str(common.RESULTS_DIR / "rounds"))
    parser.add_argument("--work_dir", default="outputs/benchmark-rounds")
    parser.add_argument("--reward_model", default=None, help="A trained reward model to reuse (default: train one).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="Keep the finished runs of the result file.")
    parser.add_argument("--report", action="store_true", help="Print the tables of the stored results and stop.")
    parser.add_argument("--quick", action="store_true", help="One round of tiny random models (the tests).")
    args = parser.parse_args(argv)
    if args.report:
        print(report(common.load_results(Path(args.out) / "rounds.json")))
        return 0
    results = run(args, argv)
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
