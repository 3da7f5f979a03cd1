"""UltraFeedback, binarized (HuggingFaceH4/ultrafeedback_binarized, allenai/ultrafeedback_binarized_cleaned): the MMPO
paper's UltraFeedback data.
"""

from __future__ import annotations

from collections.abc import Sequence

from datasets import Dataset

from ...errors import DataError
from ..margins import check_number
from ._common import (
    SCORE_COLUMNS,
    check_adapter_input,
    convert_rows,
    finish,
    is_text_column,
    split_conversation,
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
    outputs = ("prompt", "chosen", "rejected", *SCORE_COLUMNS)
    check_adapter_input(dataset, adapter, ("chosen", "rejected", *SCORE_COLUMNS), outputs, keep_columns)
    if is_text_column(dataset, "chosen"):
        raise DataError(
            f"The '{adapter}' dataset adapter expects `chosen` / `rejected` to be message lists, but they hold "
            "strings. For a dataset that is already a standard preference dataset with score columns, use no adapter."
        )

    def convert(example: dict, idx: int) -> dict:
        prompt, chosen, rejected = split_conversation(example["chosen"], example["rejected"], idx, adapter)
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "score_chosen": check_number(example["score_chosen"], "score_chosen", idx),
            "score_rejected": check_number(example["score_rejected"], "score_rejected", idx),
        }

    dataset = convert_rows(dataset, convert, adapter, keep_columns)
    return finish(dataset, outputs, keep_columns)
