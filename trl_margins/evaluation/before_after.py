"""The held-out evaluation before and after training (`preference_eval: true`, which the demo recipes set and any
recipe may): `preference_targets`, `pair_rewards`, `evaluate_pairs`, `constant_half` and `format_comparison`.

The trainer is passed in: this module imports no trainer class and nothing of the command line.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainingArguments

from ..errors import UsageError
from ..losses import soft_target_probs
from .calibration import CALIBRATION_BINS, ece_label, preference_metrics
from .rewards import completion_log_probs, policy_rewards, reward_model_scores

logger = logging.getLogger(__name__)


def _signed_margins(dataset: Dataset, args: TrainingArguments) -> torch.Tensor:
    # On the pairs as given (no swap or drop): a pair whose chosen response scored lower gets a target below 1/2
    if args.margin_column is not None:
        return torch.tensor([float(m) for m in dataset[args.margin_column]], dtype=torch.float64)
    chosen, rejected = dataset[args.score_chosen_column], dataset[args.score_rejected_column]
    return torch.tensor([float(c) - float(r) for c, r in zip(chosen, rejected, strict=True)], dtype=torch.float64)


def preference_targets(
    dataset: Dataset, args: TrainingArguments, target_prob_column: str | None = None
) -> dict[str, torch.Tensor | None]:
    """The targets the calibration is measured against: hard labels, MMPO's `sigmoid(mmpo_gamma * m)` (when the
    config sets it), and the empirical preference probability of `target_prob_column` (when the data has it)."""
    targets: dict[str, torch.Tensor | None] = {"hard labels": None}
    if getattr(args, "mmpo_gamma", None) is not None:
        targets[f"MMPO targets (gamma={args.mmpo_gamma:g})"] = soft_target_probs(
            _signed_margins(dataset, args), args.mmpo_gamma
        ).double()
    column = target_prob_column
    if column is not None:
        if column in dataset.column_names:
            probs = torch.tensor([float(p) for p in dataset[column]], dtype=torch.float64)
            if not bool(((probs >= 0) & (probs <= 1)).all()):  # NaN fails too
                raise UsageError(f"`target_prob_column` {column!r} must hold probabilities in [0, 1].")
            targets[column] = probs
        else:
            logger.warning("The evaluation pairs have no `%s` column: no calibration against it.", column)
    return targets


def pair_rewards(
    trainer, dataset: Dataset, mode: str, before_training: bool, reference: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Each pair's chosen and rejected reward under the trainer's model, and what that reward is.

    The reward is the one the loss trains, with one exception: before training a DPO policy is its own reference, so
    its implicit rewards are all 0 by construction and would say nothing. The baseline is then the initial policy's
    own preference, its log-likelihood per completion token (SimPO's reward with beta = 1). Its log-probs are kept in
    ``reference`` (when given): they are the reference's, so the DPO rewards after training need no reference pass.
    """
    args = trainer.args
    batch_size = args.per_device_eval_batch_size
    if mode == "reward":
        rewards = reward_model_scores(trainer.model, trainer.processing_class, dataset, batch_size, args.max_length)
        return *rewards, "reward model scores" + (" (untrained head)" if before_training else "")
    if args.simpo:
        rewards = policy_rewards(
            trainer.model, trainer.processing_class, dataset, args.beta, reward_type="simpo", batch_size=batch_size,
            max_length=args.max_length,
        )  # fmt: skip
        return *rewards, f"SimPO rewards (beta={args.beta:g})"
    if before_training:
        logps = completion_log_probs(trainer.model, trainer.processing_class, dataset, batch_size, args.max_length)
        if reference is not None and not args.sync_ref_model:  # the initial policy is the reference, unless synced
            reference.update(logps)
        per_token = [logps[f"{side}_logps"] / logps[f"{side}_lengths"].clamp(min=1) for side in ("chosen", "rejected")]
        return *per_token, "log-likelihood per completion token of the initial policy"
    kind = f"DPO implicit rewards (beta={args.beta:g})"
    if reference:
        logps = completion_log_probs(trainer.model, trainer.processing_class, dataset, batch_size, args.max_length)
        rewards = [args.beta * (logps[f"{s}_logps"] - reference[f"{s}_logps"]) for s in ("chosen", "rejected")]
        return *rewards, kind
    rewards = policy_rewards(
        trainer.model, trainer.processing_class, dataset, args.beta, ref_model=trainer.ref_model,
        batch_size=batch_size, max_length=args.max_length,
    )  # fmt: skip
    return *rewards, kind


def evaluate_pairs(
    trainer, dataset: Dataset, mode: str, targets: dict, before_training: bool, reference: dict | None = None
) -> dict[str, Any]:
    """`preference_metrics` of the model's rewards against each target (`preference_targets`), and what the rewards
    are: ``{"rewards": description, "metrics": {target name: metrics}}``.

    The ECE is the package's one definition (each pair counted in both orders), as in the trainers' `mmpo/ece` and
    `trl-margins evaluate`, so the same model and pairs give the same numbers in all three.
    """
    chosen, rejected, kind = pair_rewards(trainer, dataset, mode, before_training, reference)
    bins = getattr(trainer.args, "calibration_bins", CALIBRATION_BINS)
    metrics = {name: preference_metrics(chosen, rejected, t, n_bins=bins) for name, t in targets.items()}
    return {"rewards": kind, "metrics": metrics}


def constant_half(targets: dict, num_pairs: int, n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """`evaluate_pairs`'s result for a predictor with no model, which says 1/2 for every pair: the floor a trained
    model must beat. Its ECE is 0 (counted in both orders it is perfectly calibrated), its accuracy 1/2, and its Brier
    score against soft targets ``mean((p - 1/2)^2)``: small margins look calibrated, and only the Brier score shows
    whether they also rank and separate the pairs."""
    zeros = torch.zeros(num_pairs, dtype=torch.float64)
    metrics = {name: preference_metrics(zeros, zeros, t, n_bins=n_bins) for name, t in targets.items()}
    return {"rewards": "1/2 for every pair (no model)", "metrics": metrics}


def format_comparison(
    before: dict[str, Any], after: dict[str, Any], title: str, floor: dict[str, Any] | None = None
) -> str:
    """The before/after table printed at the end of a run, from two `evaluate_pairs` results, with the
    `constant_half` predictor's numbers beside them when ``floor`` is given."""
    before_metrics, after_metrics = before["metrics"], after["metrics"]
    rows = [("accuracy", "hard labels", "accuracy"), ("mean reward margin", "hard labels", "mean_margin")]
    # Against hard labels, a model that predicts 1/2 everywhere is perfectly calibrated: show it only when there is
    # no soft target to measure against (it stays in the JSON report)
    soft = [name for name in before_metrics if name != "hard labels"] or ["hard labels"]
    rows += [(f"ECE vs {name}", name, "ece") for name in soft]
    rows += [(f"Brier vs {name}", name, "brier") for name in soft]
    width = max(len(label) for label, _, _ in rows) + 2
    lines = [title, f"  before: {before['rewards']}", f"  after:  {after['rewards']}"]
    columns = [before_metrics, after_metrics]
    header = f"  {'':<{width}}{'before':>10}{'after':>10}"
    if floor is not None:
        lines.append(f"  1/2:    {floor['rewards']}")
        columns.append(floor["metrics"])
        header += f"{'1/2':>10}"
    lines.append(header)
    for label, name, key in rows:
        lines.append(f"  {label:<{width}}" + "".join(f"{metrics[name][key]:>10.4f}" for metrics in columns))
    ece = ece_label(after_metrics["hard labels"])
    lines.append(f"  {ece} of sigmoid(reward margin), the same as the trainers' mmpo/ece and `trl-margins evaluate`.")
    if floor is not None:
        lines.append(
            "  Lower is better for ECE and Brier; a model beats the 1/2 column only where its Brier is lower."
        )
    return "\n".join(lines)
