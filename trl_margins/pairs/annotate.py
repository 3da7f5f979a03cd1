"""Reward-model scores for every response of a dataset (`trl-margins annotate`): the margin source for data that
carries no scores.

Two layouts, told apart by their columns:

- pairs (`chosen`, `rejected`, optional `prompt`): each row gets `score_chosen` and `score_rejected`;
- completions (`prompt`, `all_generated_responses`: N responses per prompt, as `trl-margins generate` writes and the
  SimPO authors' `princeton-nlp/*-ultrafeedback-armorm` sets hold): each row gets `all_rm_scores`, one per response,
  which the `reward_annotated` adapter turns into best-vs-worst pairs.

Each (prompt, response) is tokenized exactly as `trl.RewardTrainer` does (`tokenize_for_reward_model`: the chat
template for conversational rows, EOS appended to standard ones) and scored in length-sorted batches, so a
score here is the score our reward trainer's model gives in training and in `trl-margins evaluate`.

The work is split in shards of `shard_size` rows (`trl_margins.pairs.shards`) written as
`output_dir/shards/shard-00003.jsonl`: a finished shard is not scored again while its input rows are the same (a
stopped run resumes where it was), and under `accelerate launch` rank `r` of `w` scores the shards `k` with
`k % w == r`; rank 0 then concatenates them, in input order, into `output_dir/annotated.jsonl`. One run writes into
an output folder at a time (a lock file).

Imports `datasets`, `transformers`, `data.formatting`, `evaluation.rewards` and `errors`: no trainer, no command line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .._compat import warn_if_slow_bf16
from ..data.formatting import as_conversational, is_empty_response, tokenize_for_reward_model
from ..errors import DataError, UsageError, row_label
from ..evaluation.rewards import score_token_sequences
from .shards import (
    acquire_lock,
    check_manifest,
    kept_shard,
    merge_shards,
    shard_fingerprint,
    shard_path,
    shard_ranges,
    shards_of_rank,
    write_shard,
)

logger = logging.getLogger(__name__)

PAIRS, COMPLETIONS = "pairs", "completions"
RESPONSES_COLUMN = "all_generated_responses"
MERGED_FILE = "annotated.jsonl"
MANIFEST_FILE = "annotate_config.json"


@dataclass
class AnnotateConfig:
    """How `annotate` scores and writes a dataset (the `trl-margins annotate` options besides model and data)."""

    output_dir: str = field(metadata={"help": "Folder of the shards, the manifest and the merged annotated.jsonl."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass of the reward model."})
    max_length: int | None = field(
        default=None, metadata={"help": "Truncate each prompt+response to its first max_length tokens."}
    )
    shard_size: int = field(
        default=512, metadata={"help": "Rows per shard: the unit of resuming and of the split across processes."}
    )
    conversational: bool = field(
        default=False,
        metadata={
            "help": "Wrap string prompts and responses as a user and an assistant turn, so that the reward model's "
            "chat template applies (what chat reward models such as ArmoRM expect). Conversational rows always use it."
        },
    )
    score_chosen_column: str = field(default="score_chosen", metadata={"help": "Output column (pairs)."})
    score_rejected_column: str = field(default="score_rejected", metadata={"help": "Output column (pairs)."})
    scores_column: str = field(default="all_rm_scores", metadata={"help": "Output column (completions)."})
    overwrite_scores: bool = field(
        default=False, metadata={"help": "Replace output columns the dataset already has (else an error)."}
    )


@dataclass
class AnnotateReport:
    layout: str
    rows: int
    scored_shards: list[int]
    skipped_shards: list[int]  # kept from an earlier run: scored from the same rows
    output: Path | None  # the merged file; None on ranks other than 0
    rescored_shards: list[int] = field(default_factory=list)  # scored before from other rows, and again now


# ---- layout and validation -----------------------------------------------------------------------------------------
def detect_layout(column_names: list[str]) -> str:
    if RESPONSES_COLUMN in column_names:
        if "prompt" not in column_names:
            raise DataError(f"`{RESPONSES_COLUMN}` needs a `prompt` column (the request the responses answer).")
        return COMPLETIONS
    if "chosen" in column_names and "rejected" in column_names:
        return PAIRS
    raise DataError(
        "Nothing to score: annotate reads pairs (`chosen`, `rejected`, optional `prompt`) or N completions per "
        f"prompt (`prompt`, `{RESPONSES_COLUMN}`); the columns are {sorted(column_names)}."
    )


def _output_columns(layout: str, config: AnnotateConfig) -> tuple[str, ...]:
    return (config.score_chosen_column, config.score_rejected_column) if layout == PAIRS else (config.scores_column,)


def check_chat_template(tokenizer: PreTrainedTokenizerBase, needed: bool, what: str) -> None:
    """A `UsageError` when conversational rows meet a tokenizer that can't render them."""
    if needed and not getattr(tokenizer, "chat_template", None):
        raise UsageError(
            f"{what} has no chat template, but the rows are conversations (or --conversational was given). Score "
            "plain strings (drop --conversational, with string columns), or use a tokenizer with a chat template "
            "(--tokenizer, or set `tokenizer.chat_template`)."
        )


def _units(example: dict[str, Any], idx: int, layout: str, conversational: bool) -> list[dict[str, Any]]:
    """The (prompt, response) units of one row, each as the one-sided pair `tokenize_for_reward_model` reads."""
    if layout == PAIRS:
        responses = [("chosen", example["chosen"]), ("rejected", example["rejected"])]
    else:
        listed = example[RESPONSES_COLUMN]
        if not isinstance(listed, list) or len(listed) < 2:
            count = len(listed) if isinstance(listed, list) else type(listed).__name__
            raise DataError(
                f"{row_label(idx)}: `{RESPONSES_COLUMN}` must list at least 2 responses to compare, got {count}. "
                "Generate more (`trl-margins generate --num_completions 2` or more) or drop such rows "
                "(`dataset.filter`)."
            )
        responses = [(f"{RESPONSES_COLUMN}[{i}]", r) for i, r in enumerate(listed)]
    units = []
    for column, response in responses:
        if is_empty_response(response):
            raise DataError(
                f"{row_label(idx)}: `{column}` is empty, and a reward model's score of no answer means nothing. Drop "
                "such rows (`dataset.filter`) or generate again with a larger max_new_tokens."
            )
        unit = {k: v for k, v in example.items() if k in ("prompt", "tools", "chat_template_kwargs")}
        if isinstance(response, str) and isinstance(unit.get("prompt"), list):
            response = [{"role": "assistant", "content": response}]  # a chat prompt with plain-string answers
        unit.update(chosen=response, rejected=response)
        if conversational and "prompt" in unit:
            unit = as_conversational(unit)
        units.append(unit)
    return units


# ---- scoring ---# ---- scoring --------------------------------------------------------------------------------------
def score_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    config: AnnotateConfig,
    layout: str | None = None,
    row_offset: int = 0,
) -> list[dict[str, Any]]:
    """The rows of ``dataset`` with their score columns added (``row_offset``: the first row's index, in messages)."""
    layout = layout or detect_layout(dataset.column_names)
    rows = [dict(row) for row in dataset]
    units_per_row = [_units(row, row_offset + i, layout, config.conversational) for i, row in enumerate(rows)]
    sequences = [tokenize_for_reward_model(unit, tokenizer)["chosen_ids"] for units in units_per_row for unit in units]
    scores = score_token_sequences(model, tokenizer, sequences, config.batch_size, config.max_length).tolist()
    position = 0
    for i, (row, units) in enumerate(zip(rows, units_per_row)):
        values = scores[position : position + len(units)]
        position += len(units)
        bad = [j for j, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            column = ("chosen", "rejected")[bad[0]] if layout == PAIRS else f"{RESPONSES_COLUMN}[{bad[0]}]"
            raise DataError(
                f"{row_label(row_offset + i)}: the reward model scored `{column}` as {values[bad[0]]}. Half precision "
                "can overflow: try --dtype float32; else the model or that text is broken."
            )
        if layout == PAIRS:
            row[config.score_chosen_column], row[config.score_rejected_column] = values
        else:
            row[config.scores_column] = values
    return rows


def annotate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    config: AnnotateConfig,
    *,
    source: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> AnnotateReport:
    """Score ``dataset`` shard by shard into ``config.output_dir``; rank 0 merges the shards.

    Args:
        source: what the rows and the model are (names, split), kept in the manifest so that a resumed run can't
            mix shards of different inputs.
        rank / world_size / barrier: this process's place among the data-parallel ones and a function that waits
            for all of them (`accelerate.PartialState().wait_for_everyone`); the defaults are one process.
    """
    layout = detect_layout(dataset.column_names)
    present = [c for c in _output_columns(layout, config) if c in dataset.column_names]
    if present and not config.overwrite_scores:
        raise UsageError(
            f"The dataset already has {present}: give other output names (--score_chosen_column, "
            "--score_rejected_column, --scores_column) or --overwrite_scores to replace them."
        )
    if present:
        dataset = dataset.remove_columns(present)
    first = dataset[0] if len(dataset) else {}
    chat_rows = any(isinstance(first.get(c), list) for c in ("prompt", "chosen", "rejected"))
    check_chat_template(tokenizer, config.conversational or chat_rows, "The reward model's tokenizer")

    output_dir = Path(config.output_dir)
    ranges = shard_ranges(len(dataset), config.shard_size)
    manifest = {**(source or {}), **asdict(config), "layout": layout}
    manifest.pop("output_dir")
    manifest.pop("batch_size")  # changes no score beyond float noise: a resume may use another
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(output_dir)
    try:
        check_manifest(output_dir, manifest, MANIFEST_FILE, rank)
        barrier()
        scored, skipped, changed = [], [], []
        for k in shards_of_rank(len(ranges), rank, world_size):
            path, rows = shard_path(output_dir, k), dataset.select(ranges[k])
            fingerprint = shard_fingerprint(rows)
            if kept_shard(path, fingerprint):
                skipped.append(k)
                continue
            if path.is_file():
                changed.append(k)
            write_shard(score_rows(model, tokenizer, rows, config, layout, ranges[k].start), path, fingerprint)
            scored.append(k)
            logger.info("annotate: shard %d of %d written (%s)", k + 1, len(ranges), path)
        if skipped:
            logger.warning(
                "annotate: %d shards were already scored in %s from the same rows and were kept: %s",
                len(skipped), output_dir, skipped,
            )  # fmt: skip
        if changed:
            logger.warning(
                "annotate: %d shards of %s were scored from other rows than these (the input changed) and were "
                "scored again: %s", len(changed), output_dir, changed,
            )  # fmt: skip
        barrier()
        output = merge_shards(output_dir, len(ranges), output_dir / MERGED_FILE) if rank == 0 else None
    finally:
        if rank == 0:
            lock.unlink(missing_ok=True)
    return AnnotateReport(layout, len(dataset), scored, skipped, output, changed)


# ---- loading a reward model ----------------------------------------------------------------------------------------
def resolve_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU (what reward models are served in), float32 on a CPU."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"--dtype must be auto or a torch dtype (bfloat16, float16, float32), got {name!r}.")
    warn_if_slow_bf16(dtype, device)
    return dtype


def load_reward_model(
    name: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu", trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A single-logit sequence classifier and its tokenizer, or a `UsageError` that says what ``name`` is instead.

    A causal LM loads as a classifier without complaint, with a random score head; that would score every text with
    noise, so a head missing from the checkpoint is an error, as are heads with more than one output.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    if config.num_labels != 1:
        raise UsageError(
            f"{name} has {config.num_labels} outputs (num_labels={config.num_labels}; architectures "
            f"{config.architectures}): a reward model is a sequence classifier with one. Train one with `trl-margins "
            "reward`, or give a reward model's path or hub id."
        )
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name, dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True
        )
    except ValueError as e:  # an architecture with no sequence-classification class
        raise UsageError(f"{name} can't load as a sequence classifier ({e}); pass --trust_remote_code for a hub model "
                         "with its own code.") from e  # fmt: skip
    if info["missing_keys"]:
        raise UsageError(
            f"{name} has no trained score head (missing from the checkpoint: {sorted(info['missing_keys'])[:4]}): it "
            "would score with random weights. Give a reward model, e.g. one trained with `trl-margins reward`."
        )
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    return model.to(device), tokenizer
