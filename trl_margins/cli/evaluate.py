"""`trl-margins evaluate`: accuracy and calibration of a reward model or a DPO/SimPO policy on preference pairs.

    trl-margins evaluate --model PATH_OR_ID [--ref_model ...] [--reward_type {dpo,simpo}] [--beta ...]
        --dataset NAME_OR_FILE [--split ...] [--output_dir ...] [--gamma ... | --prob_column ...] [--batch_size ...]
        [--max_samples ...]

Writes ``metrics.json`` (overall metrics with the reliability table, per-subset accuracy, RewardBench's section
scores when the subsets are RewardBench's), ``rewards.jsonl`` (the rewards of every pair),
``reliability_diagram.png`` and ``reward_margins.png`` to ``--output_dir``, and prints a short table.

Rows in RewardBench 2's layout (``chosen`` and ``rejected`` are lists of strings, with ``num_correct``, ``subset`` and
``id``; detected, or ``--format rewardbench2``) are scored completion by completion and reported as RewardBench 2 does
(`trl_margins.evaluation.rewardbench.rewardbench2_scores`: best-of-4 accuracy per subset, the Ties score, the mean over
subsets, random baseline 25%), with each subset's ECE beside the official numbers; the "overall" metrics and plots are
then over every (chosen, rejected) combination of a row.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._compat import process_state
from ..data.adapters import DATASET_ADAPTERS, apply_dataset_adapter
from ..data.formatting import as_conversational, check_responses
from ..data.loading import load_preference_dataset, resolve_model
from ..data.margins import MARGIN_COLUMN, NEGATIVE_MARGIN_POLICIES, add_margins_from
from ..errors import ArgumentParser, UsageError, run_command
from ..evaluation.calibration import CALIBRATION_BINS, ece_label, preference_metrics, subset_metrics
from ..evaluation.plots import plot_margin_histogram, plot_reliability_diagram
from ..evaluation.rewardbench import (
    completion_pairs,
    fold_scores,
    is_rewardbench2_row,
    rewardbench2_report,
    rewardbench_section_scores,
)
from ..evaluation.rewards import load_scoring_model, policy_rewards, reward_model_scores, scoring_model_kind
from ..losses import REWARD_TYPES, soft_target_probs
from .arguments import adapter_name, json_mapping
from .output import check_writable

logger = logging.getLogger(__name__)

MODEL_TYPES = ("rm", "dpo", "simpo")
# Without `--beta`, the default of each objective: TRL's DPOConfig, and SimPO's paper (2.0-2.5 for its base models)
_DEFAULT_BETA = {"dpo": 0.1, "simpo": 2.0}
FORMATS = ("auto", "pairs", "rewardbench2")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The arguments of `trl-margins evaluate`, added to ``parser`` (e.g. a subcommand's) or to a new one."""
    if parser is None:
        parser = ArgumentParser(
            prog="trl-margins evaluate",
            description="Accuracy and calibration (ECE, Brier score, reliability diagram) of a reward model or a "
            "DPO/SimPO policy on preference pairs.",
        )
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help="Path or hub id of the model (or of a PEFT adapter).")
    model.add_argument(
        "--model_type",
        choices=MODEL_TYPES,
        default=None,
        help="rm: sequence-classification reward model; dpo: policy with implicit rewards beta*log(pi/pi_ref); "
        "simpo: reference-free beta/|y|*log(pi). Default: rm or dpo, from the model config's `architectures`.",
    )
    model.add_argument(
        "--ref_model", default=None, help="Reference policy of a DPO model. Not needed for a PEFT adapter."
    )
    model.add_argument(
        "--reward_type",
        choices=REWARD_TYPES,
        default=None,
        help="A policy's rewards, as the trainers' `reward_type`: dpo (implicit, with a reference) or simpo "
        "(length-normalised, reference-free). Same as --model_type dpo / simpo.",
    )
    model.add_argument(
        "--beta", type=float, default=None, help="Beta of the policy's loss (default: 0.1 DPO, 2 SimPO)."
    )
    model.add_argument("--tokenizer", default=None, help="Tokenizer path or id (default: the model's).")
    model.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    model.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        required=True,
        help="A local .json/.jsonl/.parquet/.csv file or a hub dataset name, in TRL's preference format or "
        "RewardBench's (prompt, chosen, rejected, subset); `trl_margins:vader` is the bundled VADER pairs.",
    )
    data.add_argument("--dataset_config", default=None, help="Configuration name of a hub dataset.")
    data.add_argument(
        "--dataset_adapter",
        default=None,
        type=adapter_name,
        help="Turn the rows into scored pairs first, as training does (`dataset_adapter`): one of "
        f"{sorted(DATASET_ADAPTERS)}, or none.",
    )
    data.add_argument(
        "--dataset_adapter_kwargs",
        default=None,
        type=json_mapping,
        help="Options of the dataset adapter, a JSON object (as training's `dataset_adapter_kwargs`).",
    )
    data.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="pairs: one chosen and one rejected per row; rewardbench2: lists of chosen and rejected completions per "
        "row (allenai/reward-bench-2's layout). auto: rewardbench2 when `chosen` holds lists of strings.",
    )
    data.add_argument("--split", default=None, help="Split (default: the only one, or 'test').")
    data.add_argument("--max_samples", type=int, default=None, help="Evaluate the first N pairs only.")
    data.add_argument("--subset_column", default="subset", help="Column naming each pair's subset, if present.")
    data.add_argument(
        "--conversational",
        action="store_true",
        help="Wrap string prompts and completions as chat turns and apply the model's chat template, as "
        "RewardBench does for chat models.",
    )
    data.add_argument("--max_length", type=int, default=None, help="Truncate sequences to this many tokens.")

    targets = parser.add_argument_group("calibration targets (default: hard labels)")
    targets.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="MMPO targets sigmoid(gamma * (score_chosen - score_rejected)) from the score columns.",
    )
    targets.add_argument("--score_chosen_column", default="score_chosen")
    targets.add_argument("--score_rejected_column", default="score_rejected")
    targets.add_argument("--margin_column", default=None, help="Column with the margin itself (instead of scores).")
    targets.add_argument(
        "--negative_margins",
        default="error",
        choices=list(NEGATIVE_MARGIN_POLICIES),
        help="Pairs whose chosen response scored lower: stop, swap chosen and rejected, or drop them.",
    )
    targets.add_argument("--prob_column", default=None, help="Column with each pair's target probability.")

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default="evaluation", help="Where metrics.json and the plots go.")
    run.add_argument("--batch_size", type=int, default=8)
    run.add_argument(
        "--n_bins", type=int, default=CALIBRATION_BINS, help="Bins of the ECE and the reliability diagram."
    )
    run.add_argument("--no_plots", action="store_true", help="Skip the PNGs (and the need for matplotlib).")
    return parser


def _model_kind(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(model_type, base model of a PEFT adapter or None)``, from the flags or the model's config."""
    if args.reward_type is not None and args.model_type not in (None, args.reward_type):
        raise UsageError(
            f"--reward_type {args.reward_type} means --model_type {args.reward_type}, not {args.model_type}."
        )
    kind, adapter_base = scoring_model_kind(args.model, args.reward_type or args.model_type)
    if kind is None:
        raise UsageError(
            f"Can't tell the kind of model {args.model} from its architectures: pass --model_type rm|dpo|simpo."
        )
    return kind, adapter_base


def _targets(dataset, args: argparse.Namespace) -> tuple[Any, torch.Tensor | None, str]:
    """``(dataset, target probabilities or None, description)``. May swap or drop pairs (``--negative_margins``)."""
    if args.prob_column is not None and args.gamma is not None:
        raise UsageError("Give either --prob_column or --gamma, not both.")
    if args.prob_column is not None:
        if args.prob_column not in dataset.column_names:
            raise UsageError(f"No column {args.prob_column!r}; the columns are {dataset.column_names}.")
        probs = torch.tensor([float(p) for p in dataset[args.prob_column]], dtype=torch.float64)
        if not (torch.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()):
            raise UsageError(f"Column {args.prob_column!r} must hold probabilities in [0, 1].")
        return dataset, probs, f"column '{args.prob_column}'"
    if args.gamma is not None:
        # A missing column or a bad score raises a DataError that says which
        dataset = add_margins_from(dataset, args, "evaluation")
        margins = torch.tensor(dataset[MARGIN_COLUMN], dtype=torch.float64)
        source = args.margin_column or f"{args.score_chosen_column} - {args.score_rejected_column}"
        return dataset, soft_target_probs(margins, args.gamma).double(), f"sigmoid({args.gamma:g} * ({source}))"
    return dataset, None, "hard labels"


# ---- the command ---------------------------------------------------------------------------------------------------
def _check_model_flags(args: argparse.Namespace, kind: str, adapter_base: str | None) -> None:
    if kind == "rm" and (args.ref_model or args.beta is not None):
        raise UsageError("A reward model's scores are its rewards: --ref_model and --beta are for policies.")
    if kind == "simpo" and args.ref_model:
        raise UsageError("SimPO rewards are reference-free: drop --ref_model.")
    if kind == "dpo" and args.ref_model is None and adapter_base is None:
        raise UsageError(
            "DPO's implicit rewards need the reference policy: pass --ref_model (usually the SFT model the policy was "
            "trained from), or a PEFT adapter as --model (its base is the reference), or --model_type simpo."
        )


def _is_rewardbench2(dataset, requested: str) -> bool:
    is_rb2 = (
        requested == "rewardbench2" if requested != "auto" else bool(len(dataset)) and is_rewardbench2_row(dataset[0])
    )
    if is_rb2:
        missing = [c for c in ("prompt", "chosen", "rejected", "subset") if c not in dataset.column_names]
        if missing:
            raise UsageError(f"RewardBench 2 rows need the columns {missing}; the columns are {dataset.column_names}.")
    return is_rb2


def _rewards(args: argparse.Namespace, kind: str, adapter_base: str | None, beta, dataset) -> tuple[torch.Tensor, ...]:
    """The chosen and rejected rewards of every pair of `dataset` under the model the arguments name."""
    from transformers import AutoTokenizer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    except (OSError, ValueError):
        if adapter_base is None or args.tokenizer:
            raise
        tokenizer = AutoTokenizer.from_pretrained(adapter_base)  # an adapter saved without its tokenizer
    model = load_scoring_model(args.model, kind, adapter_base is not None, dtype, device)
    if kind == "rm":
        return reward_model_scores(model, tokenizer, dataset, args.batch_size, args.max_length)
    ref_model = load_scoring_model(args.ref_model, kind, False, dtype, device) if args.ref_model else None
    return policy_rewards(
        model, tokenizer, dataset, beta, ref_model=ref_model, reward_type=kind, batch_size=args.batch_size,
        max_length=args.max_length,
    )  # fmt: skip


def _write(result: dict[str, Any], lines: list[dict[str, Any]], chosen, rejected, args: argparse.Namespace) -> None:
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (output_dir / "rewards.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    written = ["metrics.json", "rewards.jsonl"]
    if not args.no_plots:
        name = Path(args.model.rstrip("/")).name
        overall = result["overall"]
        plot_reliability_diagram(overall, output_dir / "reliability_diagram.png", f"Reliability diagram: {name}")
        plot_margin_histogram(chosen, rejected, output_dir / "reward_margins.png", f"Reward margins: {name}")
        written += ["reliability_diagram.png", "reward_margins.png"]
    print(format_table(result))
    print(f"Wrote {', '.join(written)} to {output_dir}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as `main` does, from parsed arguments; returns what it writes to ``metrics.json``."""
    if not args.no_plots:
        try:  # fail before the (long) scoring, not after it
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise ImportError("Plots need matplotlib: `pip install 'trl-margins[plot]'`, or pass --no_plots.") from e
    if process_state().num_processes > 1:
        raise UsageError("evaluate scores in one process: run it without torchrun or accelerate launch.")
    args.model = resolve_model(args.model, "--model")
    args.ref_model = resolve_model(args.ref_model, "--ref_model") if args.ref_model else None
    args.tokenizer = resolve_model(args.tokenizer, "--tokenizer") if args.tokenizer else None
    check_writable(args.output_dir, "--output_dir")
    kind, adapter_base = _model_kind(args)
    beta = args.beta if args.beta is not None else _DEFAULT_BETA.get(kind)
    _check_model_flags(args, kind, adapter_base)

    dataset = load_preference_dataset(args.dataset, args.split, args.dataset_config)
    dataset = apply_dataset_adapter(args.dataset_adapter, dataset, **(args.dataset_adapter_kwargs or {}))
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    rewardbench2_rows = _is_rewardbench2(dataset, args.format)
    if not rewardbench2_rows:
        check_responses(dataset, "evaluation")
    rb2_rows = None
    if rewardbench2_rows:
        if args.gamma is not None or args.prob_column is not None:
            raise UsageError("RewardBench 2 rows are ranked against hard labels: drop --gamma / --prob_column.")
        from datasets import Dataset

        rb2_rows = list(dataset)
        pairs, sizes = completion_pairs(rb2_rows)
        dataset = Dataset.from_list(pairs)
        target_probs, targets = None, "hard labels (RewardBench 2: chosen above rejected)"
    else:
        dataset, target_probs, targets = _targets(dataset, args)
    if args.conversational:
        if "prompt" not in dataset.column_names:
            raise UsageError("--conversational needs a `prompt` column (the user turn).")
        dataset = dataset.map(as_conversational, desc="Formatting pairs as conversations")

    chosen, rejected = _rewards(args, kind, adapter_base, beta, dataset)
    rewardbench2 = None
    if rb2_rows is not None:
        rewardbench2, lines, chosen, rejected = rewardbench2_report(
            rb2_rows, fold_scores(chosen, rejected, sizes), n_bins=args.n_bins
        )
    else:
        lines = [{"chosen_reward": c, "rejected_reward": r} for c, r in zip(chosen.tolist(), rejected.tolist())]
        if target_probs is not None:
            for line, p in zip(lines, target_probs.tolist()):
                line["target_prob"] = float(p)
    overall = preference_metrics(chosen, rejected, target_probs, n_bins=args.n_bins)
    result: dict[str, Any] = {
        "model": args.model,
        "model_type": kind,
        "ref_model": (args.ref_model or adapter_base) if kind == "dpo" else None,
        "beta": beta,
        "dataset": args.dataset,
        "split": args.split,
        "targets": targets,
        "overall": overall,
    }
    if rewardbench2 is not None:
        result["rewardbench2"] = rewardbench2
    elif args.subset_column in dataset.column_names:
        subsets = [str(s) for s in dataset[args.subset_column]]
        result["subsets"] = subset_metrics(chosen, rejected, subsets)
        sections = rewardbench_section_scores({name: m["accuracy"] for name, m in result["subsets"].items()})
        if sections is not None:
            result["rewardbench_sections"] = sections
    _write(result, lines, chosen, rejected, args)
    return result


def format_table(result: dict[str, Any]) -> str:
    """The short plain-text summary `main` prints."""
    overall = result["overall"]
    beta = "" if result["beta"] is None else f", beta={result['beta']:g}"
    lines = [
        f"{result['model']} ({result['model_type']}{beta}) on {result['dataset']}: {overall['num_pairs']} pairs",
        f"calibration against {result['targets']}",
        "",
        f"  {'accuracy':<28}{overall['accuracy']:>10.4f}",
        f"  {'mean margin':<28}{overall['mean_margin']:>10.4f}",
        f"  {ece_label(overall):<28}{overall['ece']:>10.4f}",
        f"  {'Brier score':<28}{overall['brier']:>10.4f}",
        f"  {'NLL':<28}{overall['nll']:>10.4f}",
    ]
    if "subsets" in result:
        lines += ["", f"  {'subset':<28}{'pairs':>8}{'accuracy':>10}"]
        lines += [f"  {k:<28}{v['num_pairs']:>8}{v['accuracy']:>10.4f}" for k, v in result["subsets"].items()]
    if "rewardbench2" in result:
        rb2 = result["rewardbench2"]
        lines += ["", f"  RewardBench 2{'':<15}{'prompts':>8}{'score':>10}{'ECE':>10}"]
        lines += [
            f"  {k:<28}{v['num_prompts']:>8}{v['score']:>10.4f}{v['ece']:>10.4f}" for k, v in rb2["subsets"].items()
        ]
        lines.append(f"  {'score (mean of subsets)':<36}{rb2['score']:>10.4f}{rb2['ece']:>10.4f}")
        lines.append(f"  random baseline: {rb2['random_baseline']:.2f} (best of 4)")
        if rb2["missing_subsets"]:
            lines.append(f"  missing subsets: {', '.join(rb2['missing_subsets'])} (the score averages those present)")
    if "rewardbench_sections" in result:
        lines += ["", "  RewardBench sections"]
        lines += [f"  {k:<28}{v:>10.4f}" for k, v in result["rewardbench_sections"].items()]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "n_bins", "max_samples", "max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}.")
    if args.gamma is not None and not (math.isfinite(args.gamma) and args.gamma >= 0):
        raise UsageError(f"--gamma must be a finite number >= 0, got {args.gamma}.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `trl-margins evaluate`; ``argv`` without the program and subcommand names. Returns the exit
    status: a configuration or data error prints one line and gives 2 (usage) or 1 (data); `--debug` re-raises it."""

    def body(argv: list[str]) -> None:
        args = parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        run(args)

    return run_command("evaluate", sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
    sys.exit(main())
