"""Preference data in the forms TRL's trainers read: chat-wrapped pairs, KTO's unpaired rows, and pairs tokenized
exactly as `trl.DPOTrainer` and `trl.RewardTrainer` tokenize them (for scoring outside a trainer, in
`trl_margins.evaluation.rewards` and `trl_margins.pairs.annotate`).

Imports `datasets`, transformers' tokenizer type and TRL's public data helpers: no trainer, no command line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from trl.data_utils import extract_prompt, is_conversational

from ..errors import DataError, row_label

__all__ = [
    "as_conversational",
    "check_responses",
    "is_empty_response",
    "tokenize_for_policy",
    "tokenize_for_reward_model",
    "unpair_preferences",
]


def as_conversational(example: dict[str, Any]) -> dict[str, Any]:
    """Wrap a standard pair (strings) as a user turn and two assistant turns, so that the model's chat template
    applies; RewardBench scores chat models this way. Conversational pairs are returned unchanged."""
    if is_conversational(example):
        return example
    return {
        **example,
        "prompt": [{"role": "user", "content": example["prompt"]}],
        "chosen": [{"role": "assistant", "content": example["chosen"]}],
        "rejected": [{"role": "assistant", "content": example["rejected"]}],
    }


def is_empty_response(response: Any) -> bool:
    """Whether a response has no text: an empty or blank string, or messages whose non-user turns are all empty."""
    if isinstance(response, list):  # messages: the assistant turn(s)
        return all(not str(m.get("content") or "").strip() for m in response if m.get("role") != "user")
    return not str(response or "").strip()


def _form(value: Any) -> str:
    return "messages" if isinstance(value, list) else "text" if isinstance(value, str) else type(value).__name__


def check_responses(dataset: Dataset | IterableDataset, dataset_name: str = "train") -> None:
    """Before TRL's tokenization: every response is non-empty, and every row is in one form, either text (strings)
    or conversational (message lists), as TRL's trainers require; a `DataError` names the first offending row.

    Reads the response columns that are there (`chosen` and `rejected` of pairs, `completion` of KTO's rows) and the
    `prompt`. An already tokenized dataset, or a streamed one (whose rows are not read up front), is left alone.
    """
    if not isinstance(dataset, Dataset):
        return
    responses = [c for c in ("chosen", "rejected", "completion") if c in dataset.column_names]
    if not responses or "chosen_ids" in dataset.column_names or "completion_ids" in dataset.column_names:
        return
    columns = [c for c in ("prompt", *responses) if c in dataset.column_names]
    expected = None
    for i, example in enumerate(dataset.select_columns(columns)):
        forms = {c: _form(example[c]) for c in columns}
        for column in responses:
            if is_empty_response(example[column]):
                raise DataError(
                    f"{row_label(i)} of the {dataset_name} dataset: `{column}` is empty, and a preference for or "
                    "against no answer teaches nothing. Drop such rows (`dataset.filter(...)`) or fix them."
                )
        if expected is None:
            expected = forms
        if len(set(forms.values())) > 1 or forms != expected:
            found = ", ".join(f"`{c}` is {f}" for c, f in forms.items())
            if len(set(forms.values())) == 1:
                found += f" (the first row's are {next(iter(expected.values()))})"
            raise DataError(
                f"{row_label(i)} of the {dataset_name} dataset mixes text and messages: {found}. TRL reads a dataset "
                "in one form, all text (strings) or all conversational (lists of messages): convert that row "
                "(`--conversational` on the command line wraps text pairs as chat turns) or drop it; rows in a "
                "published layout take its `--dataset_adapter` (e.g. `ultrafeedback_binarized`)."
            )


def _token_ids(tokenizer: PreTrainedTokenizerBase, text_or_messages, example: dict, **template_kwargs) -> list[int]:
    # As `trl.data_utils._tokenize`, with the per-example `tools` and `chat_template_kwargs` TRL's trainers pass
    if isinstance(text_or_messages, list):
        tools = example.get("tools")
        tools = json.loads(tools) if isinstance(tools, str) else tools
        template_kwargs = {"tools": tools, **(example.get("chat_template_kwargs") or {}), **template_kwargs}
        encoded = tokenizer.apply_chat_template(text_or_messages, tokenize=True, return_dict=True, **template_kwargs)
        return list(encoded["input_ids"])
    return list(tokenizer(text=text_or_messages)["input_ids"])


def _with_eos(example: dict[str, Any], eos_token: str | None, keys: Sequence[str]) -> dict[str, Any]:
    if eos_token is None:  # e.g. BERT-style tokenizers, which close a sequence with their own [SEP]
        return example
    example = dict(example)
    for key in keys:
        if not example[key].endswith(eos_token):
            example[key] = example[key] + eos_token
    return example


def tokenize_for_policy(example: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """``prompt_ids``, ``chosen_ids`` and ``rejected_ids`` of a pair, exactly as `trl.DPOTrainer` prepares them."""
    if "prompt" not in example:  # implicit prompt: the common start of chosen and rejected
        example = {**example, **extract_prompt(example)}
    if not is_conversational(example):
        example = _with_eos(example, tokenizer.eos_token, ("chosen", "rejected"))
    prompt, chosen, rejected = example["prompt"], example["chosen"], example["rejected"]
    if is_conversational(example):
        prompt_ids = _token_ids(tokenizer, prompt, example, add_generation_prompt=True)
    else:
        prompt_ids = _token_ids(tokenizer, prompt, example)
    chosen_full = _token_ids(tokenizer, prompt + chosen, example)
    rejected_full = _token_ids(tokenizer, prompt + rejected, example)
    # Some templates render the prompt alone differently, and tokens can merge across the boundary: the completion
    # starts where the tokenizations diverge (TRL's `common_prefix_length`)
    prompt_len = min(_common_prefix(prompt_ids, chosen_full), _common_prefix(prompt_ids, rejected_full))
    return {
        "prompt_ids": prompt_ids[:prompt_len],
        "chosen_ids": chosen_full[prompt_len:],
        "rejected_ids": rejected_full[prompt_len:],
    }


def _common_prefix(ids: list[int], other: list[int]) -> int:
    length = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        length += 1
    return length


def tokenize_for_reward_model(example: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """``chosen_ids`` and ``rejected_ids`` (prompt included) of a pair, exactly as `trl.RewardTrainer` prepares
    them."""
    if not is_conversational(example):
        example = _with_eos(example, tokenizer.eos_token, ("chosen", "rejected"))
    chosen, rejected = example["chosen"], example["rejected"]
    if "prompt" in example:
        chosen, rejected = example["prompt"] + chosen, example["prompt"] + rejected
    return {
        "chosen_ids": _token_ids(tokenizer, chosen, example),
        "rejected_ids": _token_ids(tokenizer, rejected, example),
    }


def unpair_preferences(
    dataset: Dataset | IterableDataset,
    score_column: str = "score",
    score_chosen_column: str = "score_chosen",
    score_rejected_column: str = "score_rejected",
) -> Dataset | IterableDataset:
    """Preference pairs as KTO's unpaired rows (TRL's `prompt`, `completion`, `label`): each pair gives its chosen
    response as a desirable row and its rejected one as an undesirable row, in that order, each with its own score in
    `score_column` (where the pairs have the score columns). Other columns are dropped (they are per pair, not per
    response). A dataset that is already unpaired (a `label` column) is returned as it is.

    TRL's `unpair_preference_dataset` does the same without the scores, which MMPO's KTO weights need.
    """
    columns = dataset.column_names
    if columns is not None and "label" in columns:
        return dataset
    if columns is not None and not {"chosen", "rejected"} <= set(columns):
        raise ValueError(
            f"KTO needs unpaired rows (`prompt`, `completion`, `label`) or pairs (`chosen`, `rejected`) to unpair; "
            f"the dataset has {sorted(columns)}."
        )
    scored = columns is None or {score_chosen_column, score_rejected_column} <= set(columns)

    def unpair(batch: dict[str, list]) -> dict[str, list]:
        n = len(batch["chosen"])
        rows = {
            "completion": [x for pair in zip(batch["chosen"], batch["rejected"], strict=True) for x in pair],
            "label": [True, False] * n,
        }
        if "prompt" in batch:
            rows["prompt"] = [p for p in batch["prompt"] for _ in range(2)]
        if scored:
            pairs = zip(batch[score_chosen_column], batch[score_rejected_column], strict=True)
            rows[score_column] = [s for pair in pairs for s in pair]
        return rows

    return dataset.map(unpair, batched=True, remove_columns=columns)
