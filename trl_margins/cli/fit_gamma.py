"""`trl-margins fit-gamma`: the maximum-likelihood `mmpo_gamma` of a dataset whose pairs say how often people
preferred the chosen response.

    trl-margins fit-gamma --dataset NAME_OR_FILE [--split ...] [--score_chosen_column ... --score_rejected_column ...
        | --margin_column ...] (--prob_column ... | --votes_chosen_column ... --votes_rejected_column ...)

The margins are read as training reads them (`score_chosen - score_rejected`, or a margin column), on the pairs as
listed; the empirical preference probability of each pair is a column, or the share of votes for the chosen side.
Prints the fitted gamma, the mean target probability it gives, and the fit's cross-entropy. See
`trl_margins.pairs.fit_gamma`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import Dataset

from .._compat import process_state
from ..data.loading import check_split, load_source
from ..data.margins import COMMAND_COLUMN_HINT, column_values
from ..errors import ArgumentParser, UsageError, run_command
from ..pairs.fit_gamma import fit_gamma, preference_probs_from_votes, soft_target_nll
from .output import check_writable

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="trl-margins fit-gamma",
        description="Fit MMPO's mmpo_gamma by maximum likelihood: sigmoid(gamma * margin) against each pair's "
        "empirical preference probability (a column, or the share of votes for the chosen response).",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        required=True,
        help="A local .json/.jsonl/.csv/.parquet file, a hub dataset name, or trl_margins:vader (the bundled pairs).",
    )
    data.add_argument("--dataset_config", default=None, help="Configuration name of a hub dataset.")
    data.add_argument("--split", default=None, help="Split to fit on (default: the only one, or 'train').")
    data.add_argument(
        "--output", default=None, help="Also write the fit (gamma, NLL, the sources) to this .json file."
    )

    margins = parser.add_argument_group("margins (as training reads them)")
    margins.add_argument("--score_chosen_column", default="score_chosen")
    margins.add_argument("--score_rejected_column", default="score_rejected")
    margins.add_argument("--margin_column", default=None, help="Column with the margin itself (instead of scores).")

    targets = parser.add_argument_group("empirical preference probabilities (one source)")
    targets.add_argument("--prob_column", default=None, help="Column with the share of raters preferring `chosen`.")
    targets.add_argument("--votes_chosen_column", default=None, help="Column counting the votes for `chosen`.")
    targets.add_argument("--votes_rejected_column", default=None, help="Column counting the votes for `rejected`.")
    targets.add_argument(
        "--weight_by_votes",
        action="store_true",
        help="Weight each pair by its number of votes: the likelihood of the individual votes (default: each pair "
        "counts once, so pairs with many votes don't dominate).",
    )
    return parser


def _check_sources(args: argparse.Namespace) -> None:
    votes = (args.votes_chosen_column, args.votes_rejected_column)
    if (args.prob_column is None) == (votes == (None, None)):
        raise UsageError(
            "Give the preference probabilities: --prob_column, or --votes_chosen_column with --votes_rejected_column "
            "(one of the two)."
        )
    if None in votes and votes != (None, None):
        raise UsageError("Give both --votes_chosen_column and --votes_rejected_column.")
    if args.weight_by_votes and args.prob_column is not None:
        raise UsageError("--weight_by_votes needs the vote columns, not --prob_column.")


def _load_split(name: str, config: str | None, split: str | None) -> tuple[Dataset, str]:
    from datasets import DatasetDict

    dataset = load_source(name, config)  # the loader of the training commands: local files, the hub, trl_margins:vader
    if not isinstance(dataset, DatasetDict):
        return dataset, split or "train"
    if split is None:
        split = next(iter(dataset)) if len(dataset) == 1 else "train"
    check_split(dataset, split, "--split")
    return dataset[split], split


def run(args: argparse.Namespace) -> dict[str, float | int | str]:
    """Fit as `main` does, from parsed arguments; prints the report and returns its numbers."""
    _check_sources(args)
    if process_state().num_processes > 1:
        raise UsageError("fit-gamma runs in one process: run it without torchrun or accelerate launch.")
    if args.output is not None:
        if Path(args.output).suffix != ".json":
            raise UsageError(f"--output must be a .json file, got {args.output}.")
        check_writable(args.output, "--output", file=True)
    dataset, split = _load_split(args.dataset, args.dataset_config, args.split)

    def column(name: str) -> torch.Tensor:
        return torch.tensor(column_values(dataset, name, COMMAND_COLUMN_HINT), dtype=torch.float64)

    if args.margin_column is not None:
        margins, margin_source = column(args.margin_column), args.margin_column
    else:
        margins = column(args.score_chosen_column) - column(args.score_rejected_column)
        margin_source = f"{args.score_chosen_column} - {args.score_rejected_column}"
    weights = None
    if args.prob_column is not None:
        probs, target_source = column(args.prob_column), args.prob_column
    else:
        votes_chosen, votes_rejected = column(args.votes_chosen_column), column(args.votes_rejected_column)
        probs = preference_probs_from_votes(votes_chosen, votes_rejected)
        weights = votes_chosen + votes_rejected if args.weight_by_votes else None
        target_source = f"the share of votes in {args.votes_chosen_column} vs {args.votes_rejected_column}"

    gamma = fit_gamma(margins, probs, weights=weights)
    nll = soft_target_nll(margins, probs, gamma, weights)
    # The cross-entropy can't go below the entropy of the empirical probabilities themselves: the gap is what the
    # one-parameter model misses
    entropy = -(torch.special.xlogy(probs, probs) + torch.special.xlogy(1 - probs, 1 - probs))
    w = torch.ones_like(probs) if weights is None else weights
    floor = float((w * entropy).sum() / w.sum())
    result = {
        "dataset": args.dataset,
        "split": split,
        "pairs": len(margins),
        "mmpo_gamma": gamma,
        "mean_target_prob": float(torch.sigmoid(gamma * margins).mean()),
        "mean_empirical_prob": float(probs.mean()),
        "nll": nll,
        "nll_floor": floor,
    }
    mean_target, mean_empirical = result["mean_target_prob"], result["mean_empirical_prob"]
    print(
        f"{args.dataset} ({split}, {len(margins)} pairs): sigmoid(gamma * ({margin_source})) fitted to {target_source}"
    )
    print(f"  mmpo_gamma          {gamma:.4f}")
    print(f"  mean target prob    {mean_target:.4f} (empirical mean {mean_empirical:.4f})")
    print(f"  NLL                 {nll:.4f} nats per pair (entropy of the empirical probabilities: {floor:.4f})")
    if args.output is not None:
        sources = {"margins": margin_source, "targets": target_source}
        Path(args.output).write_text(json.dumps({**result, **sources}, indent=2) + "\n")
        print(f"  written to {args.output}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `trl-margins fit-gamma`; ``argv`` without the program and subcommand names. Returns the exit
    status: a configuration or data error prints one line and gives 2 (usage) or 1 (data); `--debug` re-raises it."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    return run_command(
        "fit-gamma", sys.argv[1:] if argv is None else argv, lambda a: run(build_parser().parse_args(a))
    )


if __name__ == "__main__":
    sys.exit(main())
