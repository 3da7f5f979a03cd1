"""Margins from dataset columns, validated once before training.

The trainers read a per-pair quality margin ``m`` either from two score columns (``m = score_chosen -
score_rejected``) or from a precomputed margin column, and store it in one internal column, ``MARGIN_COLUMN``, that
survives TRL's data path up to the loss. Bad values stop training here, with the column and row that caused it.

This is the data side of the margin knobs, shared by the trainers, the dataset adapters and the commands. It imports
`datasets` and `errors` only: no trainer, no TRL, no command line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from numbers import Real
from typing import Literal

from datasets import Dataset, IterableDataset

from ..errors import DataError, UsageError, row_label

logger = logging.getLogger(__name__)

MARGIN_COLUMN = "mmpo_margin"
"""Internal column holding the validated margin of each pair. Kept out of the model's forward."""

WEIGHT_COLUMN = "mmpo_pair_weight"
"""Internal column holding the validated weight of each pair (`weight_column`). Kept out of the model's forward."""

NegativeMarginPolicy = Literal["error", "swap", "drop"]
NEGATIVE_MARGIN_POLICIES = ("error", "swap", "drop")

# Columns that change meaning when chosen and rejected trade places. Score columns are added at call time.
_PAIRED_COLUMNS = (("chosen", "rejected"), ("chosen_ids", "rejected_ids"), ("ref_chosen_logps", "ref_rejected_logps"))


def check_number(value, column: str, row: int) -> float:
    """One score as a finite float, or a DataError that names the column and the row."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise DataError(
            f"Column '{column}' must hold numbers, but {row_label(row)} holds {value!r} ({type(value).__name__}). "
            "Convert the column to float (for example `dataset.cast_column(...)` or a `map`), or fix that row."
        )
    value = float(value)
    if not math.isfinite(value):
        raise DataError(
            f"Column '{column}' holds a non-finite value ({value}) at {row_label(row)}. Scores must be finite: drop "
            "or repair such rows (e.g. `dataset.filter(...)`) before training."
        )
    return value


TRAINING_COLUMN_HINT = (
    "Name the score columns with `score_chosen_column` / `score_rejected_column` (or a precomputed margin with "
    "`margin_column`), e.g. `--score_chosen_column NAME` on the command line, or leave `mmpo_gamma` unset to train "
    "on hard labels."
)
COMMAND_COLUMN_HINT = (
    "Name the score columns with `--score_chosen_column` / `--score_rejected_column`, or a margin column with "
    "`--margin_column`."
)


def column_values(dataset: Dataset, column: str, hint: str = TRAINING_COLUMN_HINT) -> list[float]:
    """The values of a score or margin column as finite floats, or a `DataError` naming the column (with `hint` on
    what to set when it is missing) or the first bad row."""
    if column not in dataset.column_names:
        raise DataError(
            f"The dataset has no column '{column}', which is needed to compute the preference margins. Columns "
            f"present: {sorted(dataset.column_names)}. {hint}"
        )
    return [check_number(v, column, i) for i, v in enumerate(dataset[column])]


def _required_columns(
    score_chosen_column: str, score_rejected_column: str, margin_column: str | None
) -> tuple[str, ...]:
    return (margin_column,) if margin_column is not None else (score_chosen_column, score_rejected_column)


def _swap_pair(example: dict, paired: Sequence[tuple[str, str]], margin: float) -> dict:
    for a, b in paired:
        if a in example and b in example:
            example[a], example[b] = example[b], example[a]
    example[MARGIN_COLUMN] = -margin
    return example


def add_margin_column(
    dataset: Dataset | IterableDataset,
    *,
    score_chosen_column: str = "score_chosen",
    score_rejected_column: str = "score_rejected",
    margin_column: str | None = None,
    negative_margins: NegativeMarginPolicy = "error",
    dataset_name: str = "train",
    positive_for: str | None = None,
) -> Dataset | IterableDataset:
    """Validate the scores (or margin) of a preference dataset and store the margin in ``MARGIN_COLUMN``.

    Args:
        dataset: a preference dataset (standard or conversational; raw or already tokenized).
        score_chosen_column / score_rejected_column: the two score columns; the margin is their difference.
        margin_column: a column holding the margin itself; when set, the score columns are not read.
        negative_margins: what to do with pairs whose chosen response scored below the rejected one: ``"error"``
            (default) stops; ``"swap"`` exchanges chosen and rejected (and their scores) so the margin becomes
            positive; ``"drop"`` removes the pair. Swaps and drops are counted and logged.
        dataset_name: used in messages.
        positive_for: when set, a margin of exactly 0 (a tie) is an error too, and this names what needs margins
            ``> 0`` in the message (e.g. ODPO's log offset).

    Returns:
        The dataset with ``MARGIN_COLUMN`` added (a no-op if it is already there).

    Raises:
        DataError (a ValueError): a missing column (listing the columns present), a non-numeric, NaN or infinite
            value (naming the column and the first bad row), or a negative margin with ``negative_margins="error"``.
        UsageError (a ValueError): an unknown ``negative_margins`` policy.
    """
    if negative_margins not in NEGATIVE_MARGIN_POLICIES:
        raise UsageError(f"negative_margins must be one of {NEGATIVE_MARGIN_POLICIES}, got {negative_margins!r}.")
    columns = _required_columns(score_chosen_column, score_rejected_column, margin_column)
    paired = list(_PAIRED_COLUMNS)
    if margin_column is None:
        paired.append((score_chosen_column, score_rejected_column))

    if isinstance(dataset, IterableDataset):
        return _add_margin_column_lazily(dataset, columns, paired, negative_margins, dataset_name, positive_for)
    if MARGIN_COLUMN in dataset.column_names:
        return dataset

    if margin_column is not None:
        margins = column_values(dataset, margin_column)
    else:
        chosen = column_values(dataset, score_chosen_column)
        rejected = column_values(dataset, score_rejected_column)
        margins = [c - r for c, r in zip(chosen, rejected, strict=True)]

    if positive_for is not None:
        zero_rows = [i for i, m in enumerate(margins) if m == 0]
        if zero_rows:
            raise _zero_margin_error(zero_rows[0], len(zero_rows), len(margins), columns, dataset_name, positive_for)
    negative_rows = [i for i, m in enumerate(margins) if m < 0]
    if negative_rows and negative_margins == "error":
        raise DataError(
            f"{len(negative_rows)} of {len(margins)} pairs in the {dataset_name} dataset have a negative margin "
            f"(chosen scored below rejected, from {' - '.join(columns)}); the first is {row_label(negative_rows[0])} "
            f"(margin {margins[negative_rows[0]]:g}). Fix the labels, or set `negative_margins` to 'swap' to exchange "
            "chosen and rejected in such pairs or to 'drop' to remove them (`--negative_margins swap` or `drop` on "
            "the command line)."
        )
    dataset = dataset.add_column(MARGIN_COLUMN, margins)
    if not negative_rows:
        return dataset
    if negative_margins == "swap":
        to_swap = set(negative_rows)

        def swap(example, idx):
            return _swap_pair(example, paired, example[MARGIN_COLUMN]) if idx in to_swap else example

        dataset = dataset.map(swap, with_indices=True, desc=f"Swapping negative-margin pairs in {dataset_name}")
        logger.warning(
            "Swapped chosen and rejected in %d of %d pairs of the %s dataset whose margin was negative "
            "(negative_margins='swap').",
            len(negative_rows),
            len(margins),
            dataset_name,
        )
    else:
        to_drop = set(negative_rows)
        dataset = dataset.select([i for i in range(len(margins)) if i not in to_drop])
        logger.warning(
            "Dropped %d of %d pairs of the %s dataset whose margin was negative (negative_margins='drop').",
            len(negative_rows),
            len(margins),
            dataset_name,
        )
    return dataset


def _add_margin_column_lazily(
    dataset: IterableDataset,
    columns: tuple[str, ...],
    paired: list[tuple[str, str]],
    negative_margins: NegativeMarginPolicy,
    dataset_name: str,
    positive_for: str | None = None,
) -> IterableDataset:
    # A streamed dataset can't be scanned up front: the same checks run as each row is read.
    first = next(iter(dataset))
    if MARGIN_COLUMN in first:
        return dataset
    for column in columns:
        if column not in first:
            raise DataError(
                f"The dataset has no column '{column}', which is needed to compute the preference margins. Columns "
                f"present: {sorted(first)}."
            )

    def margin_of(example, idx):
        values = [check_number(example[c], c, idx) for c in columns]
        margin = values[0] if len(values) == 1 else values[0] - values[1]
        if margin == 0 and positive_for is not None:
            raise _zero_margin_error(idx, None, None, columns, dataset_name, positive_for)
        if margin < 0:
            if negative_margins == "error":
                raise DataError(
                    f"{row_label(idx)} of the {dataset_name} dataset has a negative margin ({margin:g}, chosen scored "
                    "below rejected). Fix the labels, or set `negative_margins` to 'swap' or 'drop' "
                    "(`--negative_margins swap` on the command line)."
                )
            if negative_margins == "swap":
                return _swap_pair(example, paired, margin)
        example[MARGIN_COLUMN] = margin
        return example

    dataset = dataset.map(margin_of, with_indices=True)
    if negative_margins == "drop":
        logger.warning(
            "Streaming %s dataset: pairs with a negative margin are dropped as they are read, so their count is not "
            "known in advance.",
            dataset_name,
        )
        dataset = dataset.filter(lambda example: example[MARGIN_COLUMN] >= 0)
    return dataset


def add_margins_from(dataset: Dataset | IterableDataset, settings, dataset_name: str = "train"):
    """`add_margin_column` with the column names and negative-margin policy of `settings`: a margin config, or any
    object with `score_chosen_column`, `score_rejected_column`, `margin_column` and `negative_margins` (and, for a tie
    refused, `positive_margins_for`)."""
    return add_margin_column(
        dataset,
        score_chosen_column=settings.score_chosen_column,
        score_rejected_column=settings.score_rejected_column,
        margin_column=settings.margin_column,
        negative_margins=settings.negative_margins,
        dataset_name=dataset_name,
        positive_for=getattr(settings, "positive_margins_for", None),
    )


def _zero_margin_error(
    row: int, count: int | None, total: int | None, columns: tuple[str, ...], dataset_name: str, positive_for: str
) -> DataError:
    counted = f"{count} of {total} pairs" if count is not None else "A pair"
    return DataError(
        f"{counted} in the {dataset_name} dataset have a margin of 0 (a tie, from {' - '.join(columns)}); the first "
        f"is {row_label(row)}. {positive_for} needs margins > 0: drop the ties (e.g. `dataset.filter(...)`) or choose "
        "another setting."
    )


def _check_weight(value, column: str, row: int) -> float:
    """One pair weight as a finite float >= 0, or a DataError that names the column and the row."""
    weight = check_number(value, column, row)
    if weight < 0:
        raise DataError(
            f"Column '{column}' holds a negative pair weight ({weight:g}) at {row_label(row)}. Pair weights must be "
            ">= 0 (0 leaves the pair out of the loss): fix or drop such rows before training."
        )
    return weight


def add_weight_column(
    dataset: Dataset | IterableDataset, weight_column: str, dataset_name: str = "train"
) -> Dataset | IterableDataset:
    """Validate a per-pair weight column and store the weights in ``WEIGHT_COLUMN``.

    Add it before `add_margin_column`, so that rows are named as in the user's dataset and a dropped pair takes its
    weight with it.

    Raises:
        DataError (a ValueError): a missing column (listing the columns present); a non-numeric, NaN, infinite or
            negative weight (naming the column and the row); weights that are all zero (nothing would be trained).
            A streamed dataset is checked row by row as it is read, where "all zero" can't be known in advance.
    """
    if isinstance(dataset, IterableDataset):
        first = next(iter(dataset))
        if WEIGHT_COLUMN in first:
            return dataset
        if weight_column not in first:
            raise DataError(
                f"The {dataset_name} dataset has no column '{weight_column}' (`weight_column`). Columns present: "
                f"{sorted(first)}."
            )
        return dataset.map(
            lambda example, idx: {WEIGHT_COLUMN: _check_weight(example[weight_column], weight_column, idx)},
            with_indices=True,
        )
    if WEIGHT_COLUMN in dataset.column_names:
        return dataset
    if weight_column not in dataset.column_names:
        raise DataError(
            f"The {dataset_name} dataset has no column '{weight_column}' (`weight_column`). Columns present: "
            f"{sorted(dataset.column_names)}. Name the column of per-pair weights with `weight_column` "
            "(`--weight_column NAME` on the command line), or leave it unset to weight every pair 1."
        )
    weights = [_check_weight(v, weight_column, i) for i, v in enumerate(dataset[weight_column])]
    if weights and not any(weights):
        raise DataError(
            f"Every pair weight in column '{weight_column}' of the {dataset_name} dataset is 0 (rows 0 to "
            f"{len(weights) - 1}, counting from 0): the loss would be 0 and nothing would be trained. Fix the "
            "weights, or leave `weight_column` unset."
        )
    return dataset.add_column(WEIGHT_COLUMN, weights)


def column_scores(dataset: Dataset, column: str, needed_by: str, dataset_name: str = "train") -> list[float]:
    """The values of a score column as finite floats, or a DataError naming the column (listing the columns present
    when it is missing) or the first bad row. `needed_by` names the option that reads it, for the message."""
    if not isinstance(dataset, Dataset):
        raise UsageError(
            f"{needed_by} needs the {dataset_name} dataset's scores up front, which a streamed dataset can't give: "
            "pass a map-style `datasets.Dataset`."
        )
    if column not in dataset.column_names:
        raise DataError(
            f"The {dataset_name} dataset has no column '{column}', which {needed_by} reads. Columns present: "
            f"{sorted(dataset.column_names)}. Name the score column with `score_column`."
        )
    return [check_number(v, column, i) for i, v in enumerate(dataset[column])]
