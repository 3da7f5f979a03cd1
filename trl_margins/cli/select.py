"""`trl-margins select`: keep the pairs whose margin passes a rule, written as a .jsonl file (see
`trl_margins.pairs.select`).

    trl-margins select --dataset NAME_OR_FILE --output FILE.jsonl (--min_margin X | --min_quantile Q
        | --policy PATH_OR_ID --keep_fraction F [--logp_weight W]) [--score_chosen_column ... | --margin_column ...]
        [--dataset_adapter reward_annotated]

Prints how many pairs were kept and dropped, and the cut. With `--dataset_adapter`, the rows are first turned into
pairs by that adapter: `reward_annotated` pairs the best against the worst of `trl-margins annotate`'s `all_rm_scores`
(prompts whose completions all tie are skipped and counted), so `generate -> annotate -> select -> mmpo` needs no
other step.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .._compat import process_state
from ..data.adapters import DATASET_ADAPTERS, apply_dataset_adapter
from ..data.loading import load_preference_dataset, resolve_model
from ..errors import ArgumentParser, UsageError, run_command
from ..pairs.select import SelectionReport, mean_logp_margins, select_by_alignment_potential, select_by_margin
from .arguments import adapter_name
from .output import check_writable

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="trl-margins select", description="Keep the preference pairs whose margin passes a threshold or quantile."
    )
    parser.add_argument("--dataset", required=True, help="A local file, a hub dataset, or trl_margins:vader.")
    parser.add_argument("--dataset_config", default=None, help="Configuration name of a hub dataset.")
    parser.add_argument("--split", default=None, help="Split to select from (default: the only one, or 'test').")
    parser.add_argument("--output", required=True, help="The .jsonl file of the kept pairs.")
    parser.add_argument(
        "--dataset_adapter",
        default=None,
        type=adapter_name,
        help=f"Turn the rows into scored pairs first: one of {sorted(DATASET_ADAPTERS)}, or none (reward_annotated: "
        "best vs worst of all_rm_scores, chat turns).",
    )
    rule = parser.add_argument_group("rule (one)")
    rule.add_argument("--min_margin", type=float, help="Keep margins > this (the MMPO paper's Table 3 baseline).")
    rule.add_argument("--min_quantile", type=float, help="Keep margins >= this quantile of the margins (0..1).")
    rule.add_argument(
        "--policy", default=None, help="Alignment potential: the policy to train (path or id), with --keep_fraction."
    )
    rule.add_argument("--keep_fraction", type=float, default=None, help="Alignment potential: share of pairs kept.")
    rule.add_argument("--logp_weight", type=float, default=1.0, help="Alignment potential: weight of the policy term.")
    rule.add_argument("--batch_size", type=int, default=8, help="Alignment potential: pairs per forward pass.")
    margins = parser.add_argument_group("margins (as training reads them)")
    margins.add_argument("--score_chosen_column", default="score_chosen")
    margins.add_argument("--score_rejected_column", default="score_rejected")
    margins.add_argument("--margin_column", default=None, help="Column with the margin itself (instead of scores).")
    return parser


def run(args: argparse.Namespace) -> SelectionReport:
    if Path(args.output).suffix != ".jsonl":
        raise UsageError(f"--output must be a .jsonl file, got {args.output}.")
    if process_state().num_processes > 1:
        raise UsageError("select runs in one process: run it without torchrun or accelerate launch.")
    check_writable(args.output, "--output", file=True)
    policy = resolve_model(args.policy, "--policy") if args.policy is not None else None
    columns = {
        "score_chosen_column": args.score_chosen_column,
        "score_rejected_column": args.score_rejected_column,
        "margin_column": args.margin_column,
    }
    dataset = apply_dataset_adapter(
        args.dataset_adapter, load_preference_dataset(args.dataset, args.split, args.dataset_config)
    )
    if policy is not None:
        if args.keep_fraction is None or args.min_margin is not None or args.min_quantile is not None:
            raise UsageError(
                "--policy (alignment potential) takes --keep_fraction, and no --min_margin/--min_quantile."
            )
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model, tokenizer = AutoModelForCausalLM.from_pretrained(policy), AutoTokenizer.from_pretrained(policy)
        implicit = mean_logp_margins(model, tokenizer, dataset, args.batch_size)
        selected, report = select_by_alignment_potential(
            dataset, implicit, keep_fraction=args.keep_fraction, logp_weight=args.logp_weight, **columns
        )
    else:
        if args.keep_fraction is not None:
            raise UsageError("--keep_fraction is for --policy (alignment potential); use --min_quantile here.")
        selected, report = select_by_margin(
            dataset, min_margin=args.min_margin, min_quantile=args.min_quantile, **columns
        )
    selected.to_json(args.output, lines=True, force_ascii=False)
    print(f"select {report} -> {args.output}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `trl-margins select`; ``argv`` without the program and subcommand names."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    return run_command("select", sys.argv[1:] if argv is None else argv, lambda a: run(build_parser().parse_args(a)))


if __name__ == "__main__":
    sys.exit(main())
