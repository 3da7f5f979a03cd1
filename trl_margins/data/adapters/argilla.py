"""Argilla's rated DPO datasets (argilla/ultrafeedback-binarized-preferences-cleaned, argilla/dpo-mix-7k,
argilla/distilabel-intel-orca-dpo-pairs): the ratings of the two responses become the scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from datasets import Dataset

from ...errors import DataError, UsageError, row_label
from ..margins import check_number
from ._common import (
    SCORE_COLUMNS,
    as_messages,
    check_adapter_input,
    convert_rows,
    finish,
    is_text_column,
    split_conversation,
)

logger = logging.getLogger(__name__)

TiePolicy = Literal["keep", "drop"]
TIE_POLICIES = ("keep", "drop")


_ARGILLA_RATING_COLUMNS = (("chosen-rating", "rejected-rating"), ("chosen_rating", "rejected_rating"))


def adapt_argilla(
    dataset: Dataset,
    *,
    ties: TiePolicy = "keep",
    conversational: bool = False,
    chosen_rating_column: str | None = None,
    rejected_rating_column: str | None = None,
    keep_columns: Sequence[str] = (),
) -> Dataset:
    """Argilla's rated DPO datasets: the ratings of the two responses become `score_chosen` / `score_rejected`.

    Two source layouts are recognised:

    - Per-side ratings, e.g. [argilla/ultrafeedback-binarized-preferences-cleaned]: `source` (str), `prompt` (str),
      `chosen` (list of `{"content", "role"}` messages: user turn then answer), `chosen-rating` (float64),
      `chosen-model` (str), `rejected` (messages), `rejected-rating` (float64), `rejected-model` (str). Other Argilla
      sets spell the ratings `chosen_rating` / `rejected_rating` (e.g. argilla/dpo-mix-7k); both are found
      automatically, or name them with `chosen_rating_column` / `rejected_rating_column`.
    - Rated generations, [argilla/distilabel-intel-orca-dpo-pairs]: `system` (str, often empty), `input` (str, the
      prompt), `chosen` / `rejected` (str), `generations` (list of the two str responses), `rating` (list of two
      float64, one per generation, or null where the judge gave none), `status` ("tie", "unchanged" or "swapped"),
      `chosen_score` (float64), plus `order`, `labelling_model`, `labelling_prompt`, `raw_labelling_response`,
      `rationale`, `original_chosen`, `original_rejected`, `in_gsm8k_train`. Each side's score is the rating of the
      generation equal to it, so no assumption on how distilabel ordered them is needed.

    Output: `prompt`, `chosen`, `rejected`, `score_chosen`, `score_rejected`. Message-list sources are split into the
    shared prompt messages and the assistant's answers (as for UltraFeedback); string sources stay strings, or become
    messages with `conversational=True` (then a non-empty `system` becomes a system message; in the string format it
    has no place and is dropped, with a warning).

    Args:
        ties: pairs rated equally: `"keep"` (default; their margin is 0, so MMPO's target is 0.5 and they teach
            nothing either way) or `"drop"`. Either way they are counted and logged.
        conversational: for string sources, return conversational messages instead of strings.
        chosen_rating_column / rejected_rating_column: the rating columns, when not one of the known spellings.
        keep_columns: source columns to pass through unchanged (e.g. `["source"]`).

    Rows without ratings (null) can't give a margin: they are dropped, counted and logged.
    """
    adapter = "argilla"
    if ties not in TIE_POLICIES:
        raise UsageError(f"`ties` must be one of {TIE_POLICIES}, got {ties!r}.")
    if (chosen_rating_column is None) != (rejected_rating_column is None):
        raise UsageError("Set both `chosen_rating_column` and `rejected_rating_column`, or neither.")
    outputs = ("prompt", "chosen", "rejected", *SCORE_COLUMNS)
    check_adapter_input(dataset, adapter, ("chosen", "rejected"), outputs, keep_columns)
    columns = dataset.column_names

    rating_columns: tuple[str, ...]
    if chosen_rating_column is not None:
        rating_columns = (chosen_rating_column, rejected_rating_column)
    else:
        known = [pair for pair in (*_ARGILLA_RATING_COLUMNS, ("rating", "generations")) if set(pair) <= set(columns)]
        if not known:
            raise DataError(
                f"The '{adapter}' dataset adapter found no rating columns it knows: it looks for "
                f"{' or '.join(map(str, _ARGILLA_RATING_COLUMNS))}, or `rating` with `generations` (distilabel Orca "
                f"pairs). Columns present: {sorted(columns)}. Name the rating columns with `chosen_rating_column` / "
                "`rejected_rating_column`."
            )
        rating_columns = known[0]
    text = is_text_column(dataset, "chosen")
    prompt_column = ("prompt" if "prompt" in columns else "input") if text else None
    required = (*rating_columns, *([prompt_column] if prompt_column else []))
    check_adapter_input(dataset, adapter, required, outputs, keep_columns)
    per_generation = rating_columns == ("rating", "generations")
    system_column = "system" if text and "system" in columns else None

    def is_rated(*ratings) -> bool:
        if per_generation:
            return ratings[0] is not None and all(r is not None for r in ratings[0])
        return all(r is not None for r in ratings)

    rating_inputs = ["rating"] if per_generation else list(rating_columns)
    total = len(dataset)
    dataset = dataset.filter(is_rated, input_columns=rating_inputs, desc="Dropping unrated pairs")
    if len(dataset) < total:
        logger.warning(
            "%s: dropped %d of %d pairs without ratings (null `%s`): they have no margin.",
            adapter,
            total - len(dataset),
            total,
            "` / `".join(rating_inputs),
        )
    if system_column is not None and not conversational:
        with_system = sum(bool(s) for s in dataset[system_column])
        if with_system:
            logger.warning(
                "%s: %d of %d pairs have a non-empty `%s` prompt, which the standard (string) format has no place "
                "for: it is dropped. Pass `conversational=True` to keep it as a system message.",
                adapter,
                with_system,
                len(dataset),
                system_column,
            )

    def scores_of(example: dict, idx: int) -> tuple[float, float]:
        if not per_generation:
            return tuple(check_number(example[c], c, idx) for c in rating_columns)
        generations, ratings = example["generations"], example["rating"]
        try:
            chosen, rejected = generations.index(example["chosen"]), generations.index(example["rejected"])
        except ValueError:
            raise DataError(
                f"{row_label(idx)}: `chosen` or `rejected` is not one of the `generations`, so its `rating` can't be "
                "found."
            ) from None
        if len(ratings) != len(generations):
            raise DataError(f"{row_label(idx)}: {len(generations)} `generations` but {len(ratings)} `rating` values.")
        return check_number(ratings[chosen], "rating", idx), check_number(ratings[rejected], "rating", idx)

    def convert(example: dict, idx: int) -> dict:
        score_chosen, score_rejected = scores_of(example, idx)
        if not text:
            prompt, chosen, rejected = split_conversation(example["chosen"], example["rejected"], idx, adapter)
        elif conversational:
            system = example[system_column] if system_column else None
            prompt, chosen, rejected = as_messages(
                example[prompt_column], example["chosen"], example["rejected"], system
            )
        else:
            prompt, chosen, rejected = example[prompt_column], example["chosen"], example["rejected"]
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "score_chosen": score_chosen,
            "score_rejected": score_rejected,
        }

    dataset = convert_rows(dataset, convert, adapter, keep_columns)
    tied = [i for i, (c, r) in enumerate(zip(dataset["score_chosen"], dataset["score_rejected"])) if c == r]
    if tied and ties == "drop":
        dataset = dataset.select(sorted(set(range(len(dataset))) - set(tied)))
        logger.warning(
            "%s: dropped %d of %d pairs rated as ties (ties='drop').", adapter, len(tied), len(tied) + len(dataset)
        )
    elif tied:
        logger.info(
            "%s: kept %d of %d pairs rated as ties (ties='keep'); their margin is 0.", adapter, len(tied), len(dataset)
        )
    return finish(dataset, outputs, keep_columns)
