"""`trl-margins annotate`: score every response of a dataset with a reward model (see `trl_margins.pairs.annotate`).

    trl-margins annotate --reward_model PATH_OR_ID --dataset NAME_OR_FILE --output_dir DIR [--split ...]
        [--dtype auto|bfloat16|float32] [--trust_remote_code] [--conversational] [--batch_size ...] [--shard_size ...]
    accelerate launch -m trl_margins.cli annotate ...      # data-parallel: each process scores its shards
    torchrun --nproc_per_node 2 -m trl_margins.cli annotate ...   # the same (gloo on CPUs)

Writes `DIR/annotated.jsonl` (the input rows, in order, with `score_chosen`/`score_rejected` or `all_rm_scores`),
which every command reads as a dataset; an interrupted run resumes from its finished shards.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._compat import process_state
from ..data.loading import load_preference_dataset, resolve_model
from ..errors import UsageError, run_command
from ..pairs.annotate import AnnotateConfig, AnnotateReport, annotate, load_reward_model, resolve_dtype
from ..pairs.shards import check_lock
from .arguments import DataclassParser
from .output import check_writable

logger = logging.getLogger(__name__)


@dataclass
class AnnotateArguments:
    """The reward model and the rows of `trl-margins annotate`."""

    reward_model: str = field(
        metadata={"help": "Path or hub id of an AutoModelForSequenceClassification with one output."}
    )
    dataset: str = field(
        metadata={"help": "A local .json/.jsonl/.csv/.parquet file, a hub dataset, or trl_margins:vader."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a hub dataset."})
    split: str | None = field(default=None, metadata={"help": "Split to score (default: the only one, or 'test')."})
    max_samples: int | None = field(default=None, metadata={"help": "Score only the first max_samples rows."})
    dtype: str = field(
        default="auto", metadata={"help": "auto (bfloat16 on a GPU, float32 on a CPU), bfloat16, float16, float32."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the hub model's own modelling code."})


def build_parser() -> DataclassParser:
    """The parser of `trl-margins annotate`: the reward model and the rows, and the scoring settings."""
    return DataclassParser((AnnotateArguments, AnnotateConfig), prog="trl-margins annotate")


def run(argv: Sequence[str]) -> AnnotateReport:
    parser = build_parser()
    args, config, unknown = parser.parse_args_into_dataclasses(list(argv), return_remaining_strings=True)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    state = process_state()  # one process, or this one's rank under `accelerate launch` / `torchrun`
    check_writable(config.output_dir, "--output_dir")
    check_lock(config.output_dir)  # another run writing there stops this one before it loads anything
    reward_model = resolve_model(args.reward_model, "--reward_model")
    dataset = load_preference_dataset(args.dataset, args.split, args.dataset_config)
    if args.max_samples is not None:
        if args.max_samples < 1:
            raise UsageError(f"--max_samples must be >= 1, got {args.max_samples}.")
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    dtype = resolve_dtype(args.dtype, state.device)
    model, tokenizer = load_reward_model(
        reward_model, dtype=dtype, device=state.device, trust_remote_code=args.trust_remote_code
    )
    source = {"reward_model": args.reward_model, "dataset": args.dataset, "split": args.split, "dtype": str(dtype)}
    report = annotate(
        model,
        tokenizer,
        dataset,
        config,
        source={**source, "max_samples": args.max_samples, "dataset_config": args.dataset_config},
        rank=state.process_index,
        world_size=state.num_processes,
        barrier=state.wait_for_everyone,
    )
    if report.output is not None:
        print(
            f"annotate: {report.rows} rows ({report.layout}) scored by {args.reward_model} -> {report.output} "
            f"({len(report.scored_shards)} shards scored here, {len(report.skipped_shards)} kept from an earlier run)"
        )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `trl-margins annotate`; ``argv`` without the program and subcommand names."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return run_command("annotate", sys.argv[1:] if argv is None else argv, run)


if __name__ == "__main__":
    sys.exit(main())
