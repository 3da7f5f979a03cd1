"""What the dataset adapters share: the checks of the source dataset, the conversion of its rows, and the
output's fixed columns.

An adapter takes a dataset as published on the Hub (its documented column layout) and returns exactly
`prompt` / `chosen` / `rejected` plus score columns (`score_chosen` / `score_rejected`, and `margin` for SHP), with
the columns named in `keep_columns` passed through unchanged. Rows it cannot use are counted and logged, never
dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from datasets import Dataset, Value

from ...errors import DataError, row_label

Messages = list[dict[str, str]]

SCORE_COLUMNS = ("score_chosen", "score_rejected")


def check_adapter_input(
    dataset: Dataset, adapter: str, required: Sequence[str], outputs: Sequence[str], keep_columns: Sequence[str]
) -> None:
    """Fail before any work on a wrong dataset: a streamed one, a missing column, or a passthrough that would clash."""
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"The '{adapter}' dataset adapter needs a `datasets.Dataset` (one split, in memory or memory-mapped), got "
            f"{type(dataset).__name__}. Pick a split (`dataset['train']`) or load without `streaming=True`."
        )
    missing = [c for c in (*required, *keep_columns) if c not in dataset.column_names]
    if missing:
        raise DataError(
            f"The '{adapter}' dataset adapter needs the column(s) {missing}, which the dataset lacks. Columns "
            f"present: {sorted(dataset.column_names)}. Check that the dataset has the layout this adapter documents, "
            "or pick another adapter."
        )
    clashing = [c for c in keep_columns if c in outputs]
    if clashing:
        raise DataError(
            f"`keep_columns` of the '{adapter}' dataset adapter can't hold {clashing}: the adapter writes those "
            f"columns itself ({list(outputs)})."
        )


def check_not_empty(dataset: Dataset, adapter: str) -> None:
    # An empty split would fail later with an obscure message (`map` on no rows adds no columns): say so here.
    if len(dataset) == 0:
        raise DataError(
            f"The '{adapter}' dataset adapter has no pairs to convert: the dataset is empty, or every row was dropped "
            "(see the warnings above)."
        )


def finish(dataset: Dataset, outputs: Sequence[str], keep_columns: Sequence[str]) -> Dataset:
    # A fixed column order, whatever the source's, so that the documented columns are exactly what comes out.
    return dataset.select_columns([*outputs, *keep_columns])


def columns_to_drop(dataset: Dataset, keep_columns: Sequence[str]) -> list[str]:
    return [c for c in dataset.column_names if c not in keep_columns]


def is_text_column(dataset: Dataset, column: str) -> bool:
    """Whether a column holds plain strings (standard format) rather than message lists (conversational)."""
    return isinstance(dataset.features[column], Value)


def split_conversation(chosen: Messages, rejected: Messages, row: int, adapter: str) -> tuple[Messages, ...]:
    """The shared leading messages of two conversations (the prompt) and what each adds after them.

    The last message always stays in the completion, so two identical conversations still give a pair (with equal
    completions), as TRL's own prompt extraction does.
    """
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    prompt, chosen_turns, rejected_turns = chosen[:shared], chosen[shared:], rejected[shared:]
    if not prompt or chosen_turns[0]["role"] != "assistant" or rejected_turns[0]["role"] != "assistant":
        raise DataError(
            f"{row_label(row)}: the '{adapter}' dataset adapter expects `chosen` and `rejected` to be the same "
            "conversation up to the assistant's answer, but they share no leading messages or differ before an "
            f"assistant turn (chosen roles {[m['role'] for m in chosen]}, rejected roles "
            f"{[m['role'] for m in rejected]})."
        )
    return prompt, chosen_turns, rejected_turns


def as_messages(prompt: str, chosen: str, rejected: str, system: str | None = None) -> tuple[Messages, ...]:
    head = [{"role": "system", "content": system}] if system else []
    return (
        [*head, {"role": "user", "content": prompt}],
        [{"role": "assistant", "content": chosen}],
        [{"role": "assistant", "content": rejected}],
    )


def convert_rows(
    dataset: Dataset, convert: Callable[[dict, int], dict], adapter: str, keep_columns: Sequence[str]
) -> Dataset:
    """`convert(example, row)` on every row, in place of the source's columns (`keep_columns` pass through); an empty
    dataset stops here. The adapter then fixes the output's columns with `finish`."""
    check_not_empty(dataset, adapter)
    return dataset.map(
        convert, with_indices=True, remove_columns=columns_to_drop(dataset, keep_columns), desc=f"Adapting {adapter}"
    )
