"""Rewards of preference pairs under a model, over a dataset, in batches: the inputs of `trl_margins.evaluation`.

Three kinds of reward, each computed the way the matching TRL trainer computes it, so that the numbers agree with the
trainers' logged `rewards/*`:

* a sequence-classification reward model's score of prompt+chosen and prompt+rejected (tokenized like
  `trl.RewardTrainer`: EOS appended to standard completions, chat template for conversational ones);
* a DPO policy's implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))``, the reference being a separate model or,
  for a PEFT model, the same model with its adapter disabled;
* SimPO's reference-free reward ``beta / |y| * log pi(y|x)``.

Policies are tokenized like `trl.DPOTrainer` (prompt and prompt+completion tokenized apart, the completion being what
follows their common prefix; EOS appended to standard completions), each completion collated with its prompt as TRL's
`DataCollatorForPreference` collates one side of a pair, and scored as the trainer scores them: with TRL's fused LM
head, which never builds the ``(batch, length, vocab)`` logits, from TRL 1.15; from the logits before
(`trl_margins._compat.token_outputs`). The tokenization itself is `trl_margins.data.formatting`'s.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
from datasets import Dataset
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .._compat import fused_lm_heads, token_outputs, warn_if_slow_bf16
from ..data.formatting import tokenize_for_policy, tokenize_for_reward_model
from ..losses import REWARD_TYPES

logger = logging.getLogger(__name__)

__all__ = [
    "completion_log_probs",
    "load_scoring_model",
    "scoring_model_kind",
    "dpo_implicit_rewards",
    "policy_rewards",
    "reward_model_scores",
    "score_token_sequences",
    "simpo_rewards",
]

Rows = Dataset | Sequence[dict[str, Any]]


# ---- helpers -------------------------------------------------------------------------------------------------------
def _length_sorted_batches(
    dataset: Rows, batch_size: int, desc: str, tokenize: Callable[[dict[str, Any]], dict[str, list[int]]]
) -> Iterator[tuple[list[int], list[tuple[list[int], list[int]]]]]:
    """Tokenize every pair, then yield batches of ``batch_size`` (prompt ids, completion ids) of similar length,
    longest first, each with its completions' positions: ``i`` for the chosen completion of pair ``i`` of ``n``,
    ``n + i`` for its rejected one.

    Batching in dataset order pads every sequence to the longest of a random batch: on short, uneven pairs (VADER's)
    that is about a third of the compute. Each completion is placed by its own length, not with the other of its
    pair: the two differ about as much as any two, and pairs sorted whole still leave a sixth of the compute to
    padding on VADER (against 1% this way). Longest first, so that a batch that does not fit in memory fails at once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    tokenized = [tokenize(dict(row)) for row in dataset]
    sequences = [(t["prompt_ids"], t[side]) for side in ("chosen_ids", "rejected_ids") for t in tokenized]
    order = sorted(range(len(sequences)), key=lambda i: -(len(sequences[i][0]) + len(sequences[i][1])))
    with tqdm(total=len(order), desc=desc, unit="completion") as progress:
        for start in range(0, len(order), batch_size):
            positions = order[start : start + batch_size]
            yield positions, [sequences[i] for i in positions]
            progress.update(len(positions))


def _collate(
    sequences: list[tuple[list[int], list[int]]], pad_token_id: int, max_length: int | None
) -> dict[str, torch.Tensor]:
    """Prompt+completion sequences truncated to their first ``max_length`` tokens and padded right, with their
    attention and completion masks: what TRL's `DataCollatorForPreference` makes of each side of a pair."""
    ids = [torch.tensor((prompt + completion)[:max_length]) for prompt, completion in sequences]
    completion_masks = [
        torch.tensor(([0] * len(prompt) + [1] * len(completion))[:max_length], dtype=torch.long)
        for prompt, completion in sequences
    ]
    return {
        "input_ids": pad_sequence(ids, batch_first=True, padding_value=pad_token_id),
        "attention_mask": pad_sequence([torch.ones(len(x), dtype=torch.long) for x in ids], batch_first=True),
        "completion_mask": pad_sequence(completion_masks, batch_first=True),
    }


def _in_dataset_order(values: list[torch.Tensor], positions: list[int]) -> torch.Tensor:
    """Values computed batch by batch in a sorted order (`positions`), put back in dataset order."""
    flat = torch.cat(values, dim=-1)
    out = torch.empty_like(flat)
    out[..., torch.tensor(positions, dtype=torch.long)] = flat
    return out


def _pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # As TRL's trainers: the pad token, or EOS when the tokenizer has none
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("The tokenizer has neither a pad token nor an EOS token to pad batches with.")
    return pad


@contextlib.contextmanager
def _eval_mode(*models: torch.nn.Module | None):
    """Dropout off while scoring, and each model's train/eval mode restored afterwards."""
    models = [m for m in models if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in zip(models, modes):
            m.train(training)


def _is_peft(model: torch.nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _completion_log_probs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each sequence's completion tokens, and the number of those tokens."""
    device = next(model.parameters()).device
    input_ids, completion_mask = batch["input_ids"].to(device), batch["completion_mask"].to(device)
    model_kwargs = {"input_ids": input_ids, "attention_mask": batch["attention_mask"].to(device), "use_cache": False}
    outputs = token_outputs(model, model_kwargs, input_ids, completion_mask, metrics=False)
    shift_mask = completion_mask[:, 1:]
    # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
    log_probs = outputs.log_probs[:, -shift_mask.size(1) :].sum(dim=1).float()
    return log_probs, shift_mask.sum(dim=1)


# ---- the models scored ----------------------------------------------------------------------------------------------
def scoring_model_kind(model: str, kind: str | None = None) -> tuple[str | None, str | None]:
    """``(kind, base model of a PEFT adapter or None)`` of a saved model: ``"rm"`` (a sequence classifier) or
    ``"dpo"`` (a causal LM policy), from `kind` when given, else the adapter's task type or the config's
    architectures; ``None`` when neither tells."""
    from transformers import AutoConfig
    from transformers.utils import find_adapter_config_file

    adapter_base, task_type = None, None
    if find_adapter_config_file(model) is not None:
        from peft import PeftConfig

        peft_config = PeftConfig.from_pretrained(model)
        adapter_base, task_type = peft_config.base_model_name_or_path, str(peft_config.task_type or "")
    if kind is not None:
        return kind, adapter_base
    if task_type:
        return ("rm" if "SEQ_CLS" in task_type else "dpo"), adapter_base
    architectures = AutoConfig.from_pretrained(adapter_base or model).architectures or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "rm", adapter_base
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures):
        return "dpo", adapter_base
    return None, adapter_base


def load_scoring_model(model_id: str, kind: str, is_adapter: bool, dtype, device: str) -> PreTrainedModel:
    """A reward model (`kind="rm"`) or a policy (else), or a PEFT adapter of one, on `device`."""
    if kind == "rm":
        from transformers import AutoModelForSequenceClassification as auto_class

        if is_adapter:
            from peft import AutoPeftModelForSequenceClassification as auto_class
    else:
        from transformers import AutoModelForCausalLM as auto_class

        if is_adapter:
            from peft import AutoPeftModelForCausalLM as auto_class
    model = auto_class.from_pretrained(model_id, dtype=dtype).to(device)
    warn_if_slow_bf16(model.dtype, device)  # "auto" takes the checkpoint's dtype, often bf16
    return model


# ---- rewards -------------------------------------------------------------------------------------------------------
def reward_model_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Rows,
    batch_size: int = 8,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of a sequence-classification reward model (one output) for prompt+chosen and prompt+rejected.

    Args:
        model: an ``AutoModelForSequenceClassification`` with ``num_labels=1`` (a PEFT one works too).
        tokenizer: its tokenizer; conversational pairs use its chat template.
        dataset: preference pairs, standard or conversational, explicit prompt or not (TRL's format).
        batch_size: pairs per forward pass (each pass scores ``2 * batch_size`` sequences).
        max_length: truncate each sequence to its first ``max_length`` tokens (as RewardBench's pipeline does);
            ``None`` keeps them whole.

    Returns:
        ``(chosen_scores, rejected_scores)``, float32 tensors on the CPU in the order of ``dataset``.
    """
    tokenized = [tokenize_for_reward_model(dict(row), tokenizer) for row in dataset]
    sequences = [t["chosen_ids"] for t in tokenized] + [t["rejected_ids"] for t in tokenized]
    scores = score_token_sequences(
        model, tokenizer, sequences, 2 * batch_size, max_length, "Scoring pairs with the reward model"
    )
    return scores[: len(tokenized)], scores[len(tokenized) :]


def score_token_sequences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 16,
    max_length: int | None = None,
    desc: str = "Scoring with the reward model",
) -> torch.Tensor:
    """The one output of a sequence-classification reward model for each tokenized sequence (prompt included),
    batched by length, longest first (the padding of random batches is about a third of the compute on short,
    uneven texts, and a batch too large for memory fails at once). Float32, on the CPU, in the order given."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    pad_id = _pad_token_id(tokenizer)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if config.pad_token_id is None:
        # The classifier reads the score at the last non-pad token, so it must know the pad token to batch
        config.pad_token_id = pad_id
    if max_length is not None:
        sequences = [ids[:max_length] for ids in sequences]
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    scores = []
    device = next(model.parameters()).device
    with _eval_mode(model), tqdm(total=len(order), desc=desc, unit="sequence") as progress:
        for start in range(0, len(order), batch_size):
            batch = [torch.tensor(sequences[i]) for i in order[start : start + batch_size]]
            input_ids = pad_sequence(batch, batch_first=True, padding_value=pad_id)
            attention_mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in batch], batch_first=True)
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            if logits.shape[-1] != 1:
                raise ValueError(
                    f"A reward model has one output (num_labels=1); this one has {logits.shape[-1]}. Is it a "
                    "classifier of another kind?"
                )
            scores.append(logits[:, 0].float().cpu())
            progress.update(len(batch))
    if not scores:
        return torch.empty(0)
    return _in_dataset_order(scores, order)


def policy_rewards(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Rows,
    beta: float,
    ref_model: PreTrainedModel | None = None,
    reward_type: str = "dpo",
    batch_size: int = 8,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Implicit rewards of a causal LM policy: DPO's ``beta * log pi/pi_ref(y|x)`` or SimPO's ``beta/|y| * log
    pi(y|x)``, for the chosen and the rejected completion of each pair.

    Equal to `MMPOTrainer`'s (and `trl.DPOTrainer`'s) ``rewards/chosen`` and ``rewards/rejected`` for the same model,
    data, ``beta`` and ``max_length``.

    Args:
        model: the policy, an ``AutoModelForCausalLM`` or a PEFT model wrapping one. From TRL 1.15 it gets TRL's fused
            LM head for the call (`trl.trainer.utils.add_fused_lm_head`); its forward is restored afterwards.
        tokenizer: its tokenizer; conversational pairs use its chat template.
        dataset: preference pairs, standard or conversational, explicit prompt or not (TRL's format).
        beta: the ``beta`` of the loss the policy was trained with.
        ref_model: the reference policy of DPO. With ``None``, a PEFT ``model`` is its own reference with the adapter
            disabled (PEFT's ``disable_adapter()``), as in TRL.
        reward_type: ``"dpo"`` (implicit rewards, with a reference) or ``"simpo"`` (SimPO's length-normalised
            rewards; no reference model), as the trainers' ``reward_type``.
        batch_size: pairs per forward pass (each pass scores ``2 * batch_size`` completions of similar length, from
            any pairs).
        max_length: truncate prompt+completion to its first ``max_length`` tokens, as the trainers' collator does;
            ``None`` keeps it whole. A pair left without completion tokens gets reward 0 (with a warning).

    Returns:
        ``(chosen_rewards, rejected_rewards)``, float32 tensors on the CPU in the order of ``dataset``.
    """
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"`reward_type` must be one of {REWARD_TYPES}, got {reward_type!r}.")
    simpo = reward_type == "simpo"
    if simpo and ref_model is not None:
        raise ValueError("`reward_type='simpo'` uses no reference model: don't pass `ref_model`.")
    if not simpo and ref_model is None and not _is_peft(model):
        raise ValueError(
            "DPO's implicit rewards need the reference policy: pass `ref_model` (usually the SFT model the policy "
            "was trained from), or a PEFT model (its base, with the adapter disabled, is the reference), or set "
            "`reward_type='simpo'` for SimPO's reference-free rewards."
        )
    pad_token_id = _pad_token_id(tokenizer)
    rewards, order = [], []
    empty = 0
    desc = "Computing SimPO rewards" if simpo else "Computing DPO implicit rewards"
    batches = _length_sorted_batches(dataset, 2 * batch_size, desc, partial(tokenize_for_policy, tokenizer=tokenizer))
    with _eval_mode(model, ref_model), fused_lm_heads(model, ref_model):
        for positions, sequences in batches:
            order += positions
            batch = _collate(sequences, pad_token_id, max_length)
            log_probs, lengths = _completion_log_probs(model, batch)
            empty += int((lengths == 0).sum())
            if simpo:
                scores = log_probs / lengths.clamp(min=1).to(log_probs)
            else:
                if ref_model is None:
                    with model.disable_adapter():
                        ref_log_probs, _ = _completion_log_probs(model, batch)
                else:
                    ref_log_probs, _ = _completion_log_probs(ref_model, batch)
                scores = log_probs - ref_log_probs.to(log_probs.device)
            rewards.append((beta * scores).cpu())
    if empty:
        logger.warning(
            "%d completions have no token left after truncation to max_length=%s; their reward is 0.",
            empty,
            max_length,
        )
    chosen, rejected = _in_dataset_order(rewards, order).chunk(2)
    return chosen, rejected


def completion_log_probs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Rows,
    batch_size: int = 8,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Summed log-probability of each pair's chosen and rejected completion under ``model``, and their token counts,
    tokenized, batched and truncated as `policy_rewards` does.

    Returns ``{"chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths"}``, CPU tensors in the order
    of ``dataset``. Log-probs of the reference policy computed once with this function give DPO's implicit rewards
    of any later policy as ``beta * (logps - ref_logps)``, without running the reference again.
    """
    pad_token_id = _pad_token_id(tokenizer)
    parts: dict[str, list[torch.Tensor]] = {"logps": [], "lengths": []}
    order: list[int] = []
    batches = _length_sorted_batches(
        dataset, 2 * batch_size, "Computing completion log-probs", partial(tokenize_for_policy, tokenizer=tokenizer)
    )
    with _eval_mode(model), fused_lm_heads(model):
        for positions, sequences in batches:
            order += positions
            log_probs, lengths = _completion_log_probs(model, _collate(sequences, pad_token_id, max_length))
            parts["logps"].append(log_probs.cpu())
            parts["lengths"].append(lengths.cpu())
    # Positions i and n + i: the chosen and the rejected completion of pair i
    logps, lengths = (_in_dataset_order(parts[key], order).view(2, -1) for key in ("logps", "lengths"))
    return {
        "chosen_logps": logps[0],
        "rejected_logps": logps[1],
        "chosen_lengths": lengths[0],
        "rejected_lengths": lengths[1],
    }


def dpo_implicit_rewards(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Rows,
    beta: float,
    ref_model: PreTrainedModel | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's implicit rewards ``beta * log pi/pi_ref(y|x)``; see `policy_rewards`."""
    return policy_rewards(
        model, tokenizer, dataset, beta, ref_model=ref_model, batch_size=batch_size, max_length=max_length
    )


def simpo_rewards(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Rows,
    beta: float,
    batch_size: int = 8,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimPO's reference-free rewards ``beta / |y| * log pi(y|x)``; see `policy_rewards`."""
    return policy_rewards(
        model, tokenizer, dataset, beta, reward_type="simpo", batch_size=batch_size, max_length=max_length
    )
