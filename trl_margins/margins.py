"""Margins from dataset columns, validated once before training.

The trainers read a per-pair quality margin ``m`` either from two score columns (``m = score_chosen -
score_rejected``) or from a precomputed margin column, and store it in one internal column, ``MARGIN_COLUMN``, that
survives TRL's data path up to the loss. Bad values stop training here, with the column and row that caused it.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Literal

from datasets import Dataset, DatasetDict, IterableDataset, Value

from .errors import DataError, UsageError

logger = logging.getLogger(__name__)

MARGIN_COLUMN = "mmpo_margin"
"""Internal column holding the validated margin of each pair. Kept out of the model's forward."""

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
"""The `datasets` builder of each local file type that the commands read as a dataset (by its suffix)."""

NegativeMarginPolicy = Literal["error", "swap", "drop"]
NEGATIVE_MARGIN_POLICIES = ("error", "swap", "drop")

# Columns that change meaning when chosen and rejected trade places. Score columns are added at call time.
_PAIRED_COLUMNS = (("chosen", "rejected"), ("chosen_ids", "rejected_ids"), ("ref_chosen_logps", "ref_rejected_logps"))


def _check_number(value, column: str, row: int) -> float:
    """One score as a finite float, or a DataError that names the column and the row."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise DataError(
            f"Column '{column}' must hold numbers, but row {row} holds {value!r} ({type(value).__name__}). "
            "Convert the column to float (for example `dataset.cast_column(...)` or a `map`), or fix that row."
        )
    value = float(value)
    if not math.isfinite(value):
        raise DataError(
            f"Column '{column}' holds a non-finite value ({value}) at row {row}. Scores must be finite: drop or "
            "repair such rows (e.g. `dataset.filter(...)`) before training."
        )
    return value


def _column_values(dataset: Dataset, column: str) -> list[float]:
    if column not in dataset.column_names:
        raise DataError(
            f"The dataset has no column '{column}', which is needed to compute the preference margins. Columns "
            f"present: {sorted(dataset.column_names)}. Name the score columns with `score_chosen_column` / "
            "`score_rejected_column` (or a precomputed margin with `margin_column`), e.g. "
            "`--score_chosen_column NAME` on the command line, or leave `mmpo_gamma` unset to train on hard labels."
        )
    return [_check_number(v, column, i) for i, v in enumerate(dataset[column])]


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
        return _add_margin_column_lazily(dataset, columns, paired, negative_margins, dataset_name)
    if MARGIN_COLUMN in dataset.column_names:
        return dataset

    if margin_column is not None:
        margins = _column_values(dataset, margin_column)
    else:
        chosen = _column_values(dataset, score_chosen_column)
        rejected = _column_values(dataset, score_rejected_column)
        margins = [c - r for c, r in zip(chosen, rejected, strict=True)]

    negative_rows = [i for i, m in enumerate(margins) if m < 0]
    if negative_rows and negative_margins == "error":
        raise DataError(
            f"{len(negative_rows)} of {len(margins)} pairs in the {dataset_name} dataset have a negative margin "
            f"(chosen scored below rejected, from {' - '.join(columns)}); the first is row {negative_rows[0]} "
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
        values = [_check_number(example[c], c, idx) for c in columns]
        margin = values[0] if len(values) == 1 else values[0] - values[1]
        if margin < 0:
            if negative_margins == "error":
                raise DataError(
                    f"Row {idx} of the {dataset_name} dataset has a negative margin ({margin:g}, chosen scored below "
                    "rejected). Fix the labels, or set `negative_margins` to 'swap' or 'drop' "
                    "(`--negative_margins swap` on the command line)."
                )
            if negative_margins == "swap":
                return _swap_pair(example, paired, margin)
        example[MARGIN_COLUMN] = margin
        return example

    dataset = dataset.map(margin_of, with_indices=True)
    if negative_margins == "drop":
        logger.warning(
            "Streaming %s dataset: pairs with a negative margin are dropped as they are read, so their count is "
            "not known in advance.",
            dataset_name,
        )
        dataset = dataset.filter(lambda example: example[MARGIN_COLUMN] >= 0)
    return dataset


# ---------------------------------------------------------------------------------------------------------------------
# Dataset adapters: the public datasets the papers trained on, turned into TRL's preference format with score columns
# ---------------------------------------------------------------------------------------------------------------------
#
# Each adapter takes the dataset as published on the Hub (its documented column layout) and returns exactly
# `prompt` / `chosen` / `rejected` plus score columns (`score_chosen` / `score_rejected`, and `margin` for SHP), with
# the columns named in `keep_columns` passed through unchanged. Rows it cannot use are counted and logged, never
# dropped silently. A recipe selects one by name: `dataset_adapter: shp` plus `dataset_adapter_kwargs: {...}`.

Messages = list[dict[str, str]]

ShpMarginTransform = Literal["difference", "log_ratio"]
SHP_MARGIN_TRANSFORMS = ("difference", "log_ratio")
TiePolicy = Literal["keep", "drop"]
TIE_POLICIES = ("keep", "drop")

_SCORE_COLUMNS = ("score_chosen", "score_rejected")


def _check_adapter_input(
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
            f"present: {sorted(dataset.column_names)}. Check that the dataset has the layout this adapter "
            "documents, or pick another adapter."
        )
    clashing = [c for c in keep_columns if c in outputs]
    if clashing:
        raise DataError(
            f"`keep_columns` of the '{adapter}' dataset adapter can't hold {clashing}: the adapter writes those "
            f"columns itself ({list(outputs)})."
        )


def _check_not_empty(dataset: Dataset, adapter: str) -> None:
    # An empty split would fail later with an obscure message (`map` on no rows adds no columns): say so here.
    if len(dataset) == 0:
        raise DataError(
            f"The '{adapter}' dataset adapter has no pairs to convert: the dataset is empty, or every row was "
            "dropped (see the warnings above)."
        )


def _finish(dataset: Dataset, outputs: Sequence[str], keep_columns: Sequence[str]) -> Dataset:
    # A fixed column order, whatever the source's, so that the documented columns are exactly what comes out.
    return dataset.select_columns([*outputs, *keep_columns])


def _columns_to_drop(dataset: Dataset, keep_columns: Sequence[str]) -> list[str]:
    return [c for c in dataset.column_names if c not in keep_columns]


def _is_text_column(dataset: Dataset, column: str) -> bool:
    """Whether a column holds plain strings (standard format) rather than message lists (conversational)."""
    return isinstance(dataset.features[column], Value)


def _split_conversation(chosen: Messages, rejected: Messages, row: int, adapter: str) -> tuple[Messages, ...]:
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
            f"Row {row}: the '{adapter}' dataset adapter expects `chosen` and `rejected` to be the same conversation "
            "up to the assistant's answer, but they share no leading messages or differ before an assistant turn "
            f"(chosen roles {[m['role'] for m in chosen]}, rejected roles {[m['role'] for m in rejected]})."
        )
    return prompt, chosen_turns, rejected_turns


def _as_messages(prompt: str, chosen: str, rejected: str, system: str | None = None) -> tuple[Messages, ...]:
    head = [{"role": "system", "content": system}] if system else []
    return (
        [*head, {"role": "user", "content": prompt}],
        [{"role": "assistant", "content": chosen}],
        [{"role": "assistant", "content": rejected}],
    )


def adapt_ultrafeedback_binarized(dataset: Dataset, *, keep_columns: Sequence[str] = ()) -> Dataset:
    """UltraFeedback, binarized: [HuggingFaceH4/ultrafeedback_binarized] and [allenai/ultrafeedback_binarized_cleaned].

    Source layout (one row per prompt, splits `train_prefs` / `test_prefs`): `prompt` (str, the user's request),
    `prompt_id` (str, a hash of it), `chosen` and `rejected` (lists of `{"content": str, "role": str}` messages: the
    user turn followed by the assistant's answer), `messages` (the same as `chosen`), `score_chosen` and
    `score_rejected` (float64, GPT-4's 1-10 ratings of the two answers). The allenai copy, the one the MMPO paper used
    (Appendix A.1: TruthfulQA prompts removed, 60,829 train pairs), adds `source` (str).

    Output (conversational): `prompt` (the messages `chosen` and `rejected` share: the user turn), `chosen` and
    `rejected` (the assistant's answer, as a one-message list), `score_chosen`, `score_rejected` (float). TRL could
    extract the prompt itself; doing it here keeps the scores next to a clean pair. `messages` and the string `prompt`
    are dropped (they repeat the conversation); pass `keep_columns=["prompt_id"]` (or `"source"`) to keep those.
    """
    adapter = "ultrafeedback_binarized"
    outputs = ("prompt", "chosen", "rejected", *_SCORE_COLUMNS)
    _check_adapter_input(dataset, adapter, ("chosen", "rejected", *_SCORE_COLUMNS), outputs, keep_columns)
    if _is_text_column(dataset, "chosen"):
        raise DataError(
            f"The '{adapter}' dataset adapter expects `chosen` / `rejected` to be message lists, but they hold "
            "strings. For a dataset that is already a standard preference dataset with score columns, use no adapter."
        )

    def convert(example: dict, idx: int) -> dict:
        prompt, chosen, rejected = _split_conversation(example["chosen"], example["rejected"], idx, adapter)
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "score_chosen": _check_number(example["score_chosen"], "score_chosen", idx),
            "score_rejected": _check_number(example["score_rejected"], "score_rejected", idx),
        }

    _check_not_empty(dataset, adapter)
    dataset = dataset.map(
        convert, with_indices=True, remove_columns=_columns_to_drop(dataset, keep_columns), desc=f"Adapting {adapter}"
    )
    return _finish(dataset, outputs, keep_columns)


def _cap_pairs_per_post(dataset: Dataset, post_column: str, max_pairs: int, seed: int) -> Dataset:
    """At most `max_pairs` rows per post, drawn uniformly at random (reproducible from `seed`), in the source order."""
    rows_by_post: dict[str, list[int]] = {}
    for row, post in enumerate(dataset[post_column]):
        rows_by_post.setdefault(post, []).append(row)
    rng = random.Random(seed)
    # Posts in order of first appearance, so the same seed draws the same rows on every run.
    kept = sorted(
        row
        for rows in rows_by_post.values()
        for row in (rows if len(rows) <= max_pairs else rng.sample(rows, max_pairs))
    )
    dropped = len(dataset) - len(kept)
    if dropped == 0:
        return dataset
    capped_posts = sum(len(rows) > max_pairs for rows in rows_by_post.values())
    logger.info(
        "SHP: kept at most %d pairs per post (seed %d): dropped %d of %d pairs, from %d of %d posts.",
        max_pairs,
        seed,
        dropped,
        len(dataset),
        capped_posts,
        len(rows_by_post),
    )
    return dataset.select(kept)


def adapt_shp(
    dataset: Dataset,
    *,
    margin_transform: ShpMarginTransform = "difference",
    max_pairs_per_post: int | None = 5,
    seed: int = 42,
    keep_columns: Sequence[str] = (),
) -> Dataset:
    """Stanford Human Preferences, [stanfordnlp/SHP]: Reddit comments ranked by their votes.

    Source layout (one row per pair of top-level comments on a post; a post has many rows): `post_id` (str),
    `domain` (str, subreddit and split), `upvote_ratio` (float), `history` (str, the post: title and text),
    `c_root_id_A` / `c_root_id_B` (str, comment ids), `created_at_utc_A` / `created_at_utc_B` (int, timestamps),
    `score_A` / `score_B` (int, the comments' Reddit scores: net upvotes), `human_ref_A` / `human_ref_B` (str, the
    comments), `labels` (int, 1 if A is preferred, 0 if B is), `seconds_difference` (float), `score_ratio` (float, the
    preferred comment's score over the other's).

    Output (standard format): `prompt` (the post), `chosen` (the comment `labels` prefers), `rejected` (the other),
    `score_chosen`, `score_rejected` (their vote scores, as float) and `margin` (float, from `margin_transform`).

    Args:
        margin_transform: how the margin comes from the two vote scores.
            `"difference"` (default): `score_chosen - score_rejected`, the raw difference in net votes. This is what
            the MMPO paper does ("scores derived from the net positive number of votes", Section 4.1), with
            `gamma` = 0.15 (2B) / 0.3 (7B) (Table 8). Half the differences are 7 or less and a quarter 27 or more,
            up to 43,000 (Appendix A.1), so with those gammas the target `sigmoid(gamma * m)` is soft only for the
            small differences and practically 1 for the large ones.
            `"log_ratio"`: `log(score_chosen / score_rejected)` (the log of SHP's `score_ratio`), which is free of
            the post's scale: 20 votes against 10 and 2,000 against 1,000 count the same, as they should if
            popular posts simply draw more votes. Needs positive scores (SHP only pairs comments scored >= 2).
            Either way `margin` is written; with `"difference"` it equals `score_chosen - score_rejected`, so the
            config can read the scores or, for both transforms, set `margin_column: margin`.
        max_pairs_per_post: keep at most this many pairs per post (`None`: all). The default, 5, is the MMPO paper's:
            "Following Ethayarajh et al. (2022), we sampled no more than 5 preferences for the same prompt to prevent
            overfitting" (Appendix A.1); posts with many comments would otherwise dominate. The paper also drew a 55k
            subset with equal numbers of pairs from each quartile of score differences and dropped prompts or
            responses over 512 tokens; that is left to the caller (`dataset.filter` / `select` on the output).
        seed: seeds the per-post draw, so the same rows come out on every run.
        keep_columns: source columns to pass through unchanged (e.g. `["post_id", "domain"]`).

    In SHP, `labels` is derived from the scores, so the chosen comment normally has the higher score. Should a row
    ever disagree (chosen scored below rejected), it is kept as labelled, counted and logged: its margin is then
    negative, and `add_margin_column(negative_margins=...)` decides what happens to it (by default, training stops).
    """
    adapter = "shp"
    if margin_transform not in SHP_MARGIN_TRANSFORMS:
        raise UsageError(f"`margin_transform` must be one of {SHP_MARGIN_TRANSFORMS}, got {margin_transform!r}.")
    if max_pairs_per_post is not None and max_pairs_per_post < 1:
        raise UsageError(f"`max_pairs_per_post` must be >= 1 (or None for no cap), got {max_pairs_per_post}.")
    outputs = ("prompt", "chosen", "rejected", *_SCORE_COLUMNS, "margin")
    required = ("post_id", "history", "human_ref_A", "human_ref_B", "score_A", "score_B", "labels")
    _check_adapter_input(dataset, adapter, required, outputs, keep_columns)
    if max_pairs_per_post is not None:
        dataset = _cap_pairs_per_post(dataset, "post_id", max_pairs_per_post, seed)

    def convert(example: dict, idx: int) -> dict:
        where = f"row {idx} (post_id {example['post_id']!r})"
        if example["labels"] not in (0, 1):
            raise DataError(
                f"Column 'labels' must hold 1 (A preferred) or 0 (B preferred); {where} holds {example['labels']!r}."
            )
        score_a = _check_number(example["score_A"], "score_A", idx)
        score_b = _check_number(example["score_B"], "score_B", idx)
        a_preferred = example["labels"] == 1
        score_chosen, score_rejected = (score_a, score_b) if a_preferred else (score_b, score_a)
        if margin_transform == "difference":
            margin = score_chosen - score_rejected
        elif score_chosen > 0 and score_rejected > 0:
            margin = math.log(score_chosen / score_rejected)
        else:
            raise DataError(
                f"margin_transform='log_ratio' needs positive vote scores, but {where} has score_A={score_a:g}, "
                f"score_B={score_b:g}. Set the adapter option `margin_transform` to 'difference', or filter such rows "
                "out first."
            )
        return {
            "prompt": example["history"],
            "chosen": example["human_ref_A"] if a_preferred else example["human_ref_B"],
            "rejected": example["human_ref_B"] if a_preferred else example["human_ref_A"],
            "score_chosen": score_chosen,
            "score_rejected": score_rejected,
            "margin": margin,
        }

    _check_not_empty(dataset, adapter)
    dataset = dataset.map(
        convert, with_indices=True, remove_columns=_columns_to_drop(dataset, keep_columns), desc=f"Adapting {adapter}"
    )
    disagreeing = [i for i, m in enumerate(dataset["margin"]) if m < 0]
    if disagreeing:
        # Not fixed here: a swapped label is a fact about the data that the margin policy, not the adapter, handles.
        logger.warning(
            "SHP: in %d of %d pairs the comment preferred by `labels` has the lower vote score (first: output row "
            "%d); they are kept as labelled, with a negative margin. Set `negative_margins` ('swap' or 'drop') to "
            "decide what training does with them.",
            len(disagreeing),
            len(dataset),
            disagreeing[0],
        )
    return _finish(dataset, outputs, keep_columns)


def adapt_reward_annotated(
    dataset: Dataset, *, conversational: bool = True, keep_columns: Sequence[str] = ()
) -> Dataset:
    """On-policy responses scored by a reward model: [princeton-nlp/llama3-ultrafeedback-armorm] and its variants.

    The SimPO authors' datasets (`princeton-nlp/llama3-ultrafeedback-armorm`, `.../gemma2-ultrafeedback-armorm`,
    `.../mistral-instruct-ultrafeedback`, ...) hold several answers per UltraFeedback prompt, generated by the policy
    and scored by a reward model (ArmoRM; PairRM in the earlier sets). The gamma-PO paper builds its data this way
    (Section 4: five responses per prompt, scored by ArmoRM, best and worst kept).

    Source layout (one row per prompt): `prompt_id` (str), `prompt` (str, the user's request),
    `all_generated_responses` (list of str), `all_rm_scores` (list of float64, one per response), and `chosen` /
    `rejected` (lists of `{"content", "role"}` messages: the user turn and the best / worst response). `chosen` and
    `rejected` are rebuilt here from the scores (so the two always agree) and the source's copies are dropped.

    Output: `prompt`, `chosen` (the best-scored response), `rejected` (the worst-scored), `score_chosen`,
    `score_rejected` (their reward-model scores, so the margin is their difference). Ties for best or worst go to the
    first response listed. With `conversational=True` (default) the prompt is `[{"role": "user", ...}]` and each
    response an assistant message; with `False`, all three are plain strings. Prompts whose responses all scored the
    same give no pair: they are skipped, counted and logged.
    """
    adapter = "reward_annotated"
    outputs = ("prompt", "chosen", "rejected", *_SCORE_COLUMNS)
    _check_adapter_input(
        dataset, adapter, ("prompt", "all_generated_responses", "all_rm_scores"), outputs, keep_columns
    )

    def has_spread(scores: list, idx: int) -> bool:
        values = [_check_number(s, "all_rm_scores", idx) for s in scores]
        if len(values) < 2:
            raise DataError(f"Row {idx}: `all_rm_scores` must score at least 2 responses, got {len(values)}.")
        return max(values) > min(values)

    total = len(dataset)
    dataset = dataset.filter(has_spread, input_columns="all_rm_scores", with_indices=True, desc="Skipping ties")
    if len(dataset) < total:
        logger.warning(
            "%s: skipped %d of %d prompts whose responses all got the same score (no preference to learn).",
            adapter,
            total - len(dataset),
            total,
        )

    def convert(example: dict, idx: int) -> dict:
        responses, scores = example["all_generated_responses"], example["all_rm_scores"]
        if len(responses) != len(scores):
            raise DataError(
                f"Row {idx}: {len(responses)} responses in `all_generated_responses` but {len(scores)} scores in "
                "`all_rm_scores`; they must pair up one to one."
            )
        best = max(range(len(scores)), key=scores.__getitem__)
        worst = min(range(len(scores)), key=scores.__getitem__)
        prompt, chosen, rejected = example["prompt"], responses[best], responses[worst]
        if conversational:
            prompt, chosen, rejected = _as_messages(prompt, chosen, rejected)
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "score_chosen": float(scores[best]),
            "score_rejected": float(scores[worst]),
        }

    _check_not_empty(dataset, adapter)
    dataset = dataset.map(
        convert, with_indices=True, remove_columns=_columns_to_drop(dataset, keep_columns), desc=f"Adapting {adapter}"
    )
    return _finish(dataset, outputs, keep_columns)


# Per-side rating columns of Argilla's datasets, in the order they are looked for.
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
    outputs = ("prompt", "chosen", "rejected", *_SCORE_COLUMNS)
    _check_adapter_input(dataset, adapter, ("chosen", "rejected"), outputs, keep_columns)
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
    text = _is_text_column(dataset, "chosen")
    prompt_column = ("prompt" if "prompt" in columns else "input") if text else None
    required = (*rating_columns, *([prompt_column] if prompt_column else []))
    _check_adapter_input(dataset, adapter, required, outputs, keep_columns)
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
            return tuple(_check_number(example[c], c, idx) for c in rating_columns)
        generations, ratings = example["generations"], example["rating"]
        try:
            chosen, rejected = generations.index(example["chosen"]), generations.index(example["rejected"])
        except ValueError:
            raise DataError(
                f"Row {idx}: `chosen` or `rejected` is not one of the `generations`, so its `rating` can't be found."
            ) from None
        if len(ratings) != len(generations):
            raise DataError(f"Row {idx}: {len(generations)} `generations` but {len(ratings)} `rating` values.")
        return _check_number(ratings[chosen], "rating", idx), _check_number(ratings[rejected], "rating", idx)

    def convert(example: dict, idx: int) -> dict:
        score_chosen, score_rejected = scores_of(example, idx)
        if not text:
            prompt, chosen, rejected = _split_conversation(example["chosen"], example["rejected"], idx, adapter)
        elif conversational:
            system = example[system_column] if system_column else None
            prompt, chosen, rejected = _as_messages(
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

    _check_not_empty(dataset, adapter)
    dataset = dataset.map(
        convert, with_indices=True, remove_columns=_columns_to_drop(dataset, keep_columns), desc=f"Adapting {adapter}"
    )
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
    return _finish(dataset, outputs, keep_columns)


DATASET_ADAPTERS: dict[str, Callable[..., Dataset]] = {
    "ultrafeedback_binarized": adapt_ultrafeedback_binarized,
    "shp": adapt_shp,
    "reward_annotated": adapt_reward_annotated,
    "argilla": adapt_argilla,
}
"""Dataset adapters by the name a recipe uses (`dataset_adapter: shp`)."""


def apply_dataset_adapter(name: str | None, dataset: Dataset | DatasetDict, **kwargs) -> Dataset | DatasetDict:
    """Run the adapter registered as `name` on `dataset` (each split of a `DatasetDict`), with `kwargs` as its options.

    `name=None` returns the dataset unchanged. An unknown name raises a UsageError listing the known ones.
    """
    if name is None:
        if kwargs:
            raise UsageError(
                f"Dataset adapter options {sorted(kwargs)} were given, but no dataset adapter to use them."
            )
        return dataset
    if name not in DATASET_ADAPTERS:
        raise UsageError(
            f"Unknown dataset adapter {name!r}. Known adapters: {sorted(DATASET_ADAPTERS)} (or none, to use the "
            "dataset as it is)."
        )
    adapter = DATASET_ADAPTERS[name]
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: adapter(part, **kwargs) for split, part in dataset.items()})
    return adapter(dataset, **kwargs)
