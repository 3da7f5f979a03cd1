"""Stanford Human Preferences (stanfordnlp/SHP): Reddit comments ranked by their votes, the MMPO paper's SHP data."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from typing import Literal

from datasets import Dataset

from ...errors import DataError, UsageError, row_label
from ..margins import check_number
from ._common import SCORE_COLUMNS, check_adapter_input, convert_rows, finish

logger = logging.getLogger(__name__)

ShpMarginTransform = Literal["difference", "log_ratio"]
SHP_MARGIN_TRANSFORMS = ("difference", "log_ratio")


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
    outputs = ("prompt", "chosen", "rejected", *SCORE_COLUMNS, "margin")
    required = ("post_id", "history", "human_ref_A", "human_ref_B", "score_A", "score_B", "labels")
    check_adapter_input(dataset, adapter, required, outputs, keep_columns)
    if max_pairs_per_post is not None:
        dataset = _cap_pairs_per_post(dataset, "post_id", max_pairs_per_post, seed)

    def convert(example: dict, idx: int) -> dict:
        where = f"{row_label(idx)} (post_id {example['post_id']!r})"
        if example["labels"] not in (0, 1):
            raise DataError(
                f"Column 'labels' must hold 1 (A preferred) or 0 (B preferred); {where} holds {example['labels']!r}."
            )
        score_a = check_number(example["score_A"], "score_A", idx)
        score_b = check_number(example["score_B"], "score_B", idx)
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

    dataset = convert_rows(dataset, convert, adapter, keep_columns)
    disagreeing = [i for i, m in enumerate(dataset["margin"]) if m < 0]
    if disagreeing:
        # Not fixed here: a swapped label is a fact about the data that the margin policy, not the adapter, handles.
        logger.warning(
            "SHP: in %d of %d pairs the comment preferred by `labels` has the lower vote score (first: output %s); "
            "they are kept as labelled, with a negative margin. Set `negative_margins` ('swap' or 'drop') to "
            "decide what training does with them.",
            len(disagreeing),
            len(dataset),
            row_label(disagreeing[0]),
        )
    return finish(dataset, outputs, keep_columns)
