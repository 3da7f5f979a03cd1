"""Pieces both trainer families (DPO and reward) share: margins through the collator, margins from the config, pair
lengths for length-grouped batches, and calibration over a whole evaluation.

Imports `margins` and `evaluation`, not the trainers that use it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from datasets import Dataset
from transformers.trainer_utils import EvalLoopOutput

from .evaluation import brier_score, expected_calibration_error
from .margins import MARGIN_COLUMN, WEIGHT_COLUMN, add_margin_column, add_weight_column

PAIR_COLUMNS = (MARGIN_COLUMN, WEIGHT_COLUMN)
"""The internal per-pair columns that travel through the collator to the loss, and never into the model."""


class MarginCollatorMixin:
    """Mixed into a TRL preference collator: also carries each pair's margin (`MARGIN_COLUMN`) and weight
    (`WEIGHT_COLUMN`), where the dataset has them, as `[B]` float tensors, which TRL's collators would drop."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        for column in PAIR_COLUMNS:
            if column in examples[0]:
                output[column] = torch.tensor([float(ex[column]) for ex in examples], dtype=torch.float32)
        return output


def without_pair_columns(inputs: dict[str, Any]) -> dict[str, Any]:
    """`inputs` without our per-pair columns, for TRL code that passes every entry on to the model."""
    return {k: v for k, v in inputs.items() if k not in PAIR_COLUMNS}


def with_margin_collator(collator, default_class: type, margin_class: type):
    """`margin_class` built from TRL's default collator; any other collator (the user's own) is returned as is."""
    if type(collator) is not default_class:
        return collator
    return margin_class(**{name: getattr(collator, name) for name in collator.__dataclass_fields__})


def add_weights_from_config(dataset, args, dataset_name: str):
    """`add_weight_column` with the config's `weight_column`; the dataset as it is without one. Call it before
    `add_margins_from_config`, so that bad rows are named as in the user's dataset."""
    if args.weight_column is None:
        return dataset
    return add_weight_column(dataset, args.weight_column, dataset_name)


def add_margins_from_config(dataset, args, dataset_name: str):
    """`add_margin_column` with the column names and negative-margin policy of an MMPO config."""
    return add_margin_column(
        dataset,
        score_chosen_column=args.score_chosen_column,
        score_rejected_column=args.score_rejected_column,
        margin_column=args.margin_column,
        negative_margins=args.negative_margins,
        dataset_name=dataset_name,
        positive_for=getattr(args, "positive_margins_for", None),
    )


def add_pair_lengths(dataset, args):
    """With `train_sampling_strategy="group_by_length"`, give each tokenized pair its length in
    `args.length_column_name`: the prompt plus the longer completion, which is what the pair costs in a padded batch.

    transformers infers lengths only from an `input_ids` column, which tokenized preference pairs lack, so TRL's own
    `DPOTrainer` and `RewardTrainer` stop with a `ValueError` on this option. Streamed datasets are left alone
    (transformers ignores the option for them), and so is a length column the user already has.
    """
    if args.train_sampling_strategy != "group_by_length" or not isinstance(dataset, Dataset):
        return dataset
    if args.length_column_name in dataset.column_names or "chosen_ids" not in dataset.column_names:
        return dataset
    prompted = "prompt_ids" in dataset.column_names  # a reward model's pairs carry the prompt in each completion

    def length(example: dict[str, Any]) -> dict[str, int]:
        prompt = len(example["prompt_ids"]) if prompted else 0
        return {args.length_column_name: prompt + max(len(example["chosen_ids"]), len(example["rejected_ids"]))}

    return dataset.map(length, desc="Measuring pair lengths")


def extra_signature_columns(args) -> list[str]:
    """The columns our trainers read beyond TRL's, which `remove_unused_columns` must keep: the margin, the pair
    weight, and the pair length that `add_pair_lengths` adds."""
    columns = list(PAIR_COLUMNS)
    if args.train_sampling_strategy == "group_by_length":
        columns.append(args.length_column_name)
    return columns


def missing_margins_error(collator_name: str, knob: str = "mmpo_gamma") -> ValueError:
    return ValueError(
        f"`{knob}` is set but the batch carries no margins (`{MARGIN_COLUMN}`). If you passed your own "
        f"`data_collator`, make it keep that column (see `{collator_name}`)."
    )


def missing_weights_error(collator_name: str) -> ValueError:
    return ValueError(
        f"`weight_column` is set but the batch carries no pair weights (`{WEIGHT_COLUMN}`). If you passed your own "
        f"`data_collator`, make it keep that column (see `{collator_name}`)."
    )


class CalibrationMixin:
    """Mixed into a Trainer: collects `sigmoid(r_w - r_l)` and the target probabilities of every evaluation batch and
    reports their expected calibration error (`mmpo/ece`, symmetric: each pair counted in both orders, as in
    `preference_metrics`) and Brier score (`mmpo/brier`) once per evaluation loop.

    Reduced in `evaluation_loop`, not averaged per batch (calibration is a property of the whole set), so `predict`
    reports it too and nothing carries over into the next evaluation.
    """

    def _collect_calibration(self, reward_gaps: torch.Tensor, target_probs: torch.Tensor) -> None:
        if not hasattr(self, "_calibration"):
            self._calibration = defaultdict(list)
        pred, target = self.accelerator.gather_for_metrics((torch.sigmoid(reward_gaps.float()), target_probs))
        self._calibration["pred"].append(pred.cpu())
        self._calibration["target"].append(target.cpu())

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ) -> EvalLoopOutput:
        self._calibration = defaultdict(list)
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self._calibration["pred"]:
            pred, target = torch.cat(self._calibration["pred"]), torch.cat(self._calibration["target"])
            # Symmetric: each pair counts in both orders, so hard labels give the usual confidence-vs-accuracy ECE
            # (not 1 - mean(p)) and the result does not depend on which response is listed first
            output.metrics[f"{metric_key_prefix}_mmpo/ece"] = expected_calibration_error(
                pred, target, self.args.calibration_bins, symmetric=True
            )
            output.metrics[f"{metric_key_prefix}_mmpo/brier"] = brier_score(pred, target)
        self._calibration = defaultdict(list)
        return output
