"""Recipe keys: recipes written for the alignment handbook, TRL 0.x, transformers 4 or the papers' code, read as
TRL 1.x / transformers 5 arguments, and the recipe file itself.

- `RENAMED_KEYS` (each old name with the release, or the code, it comes from), `REMOVED_KEYS` (keys that no longer do
  anything: warned about and dropped), `AMBIGUOUS_KEYS` (refused, with what to write instead); `map_key` applies them
  to one entry, `normalize_recipe` to a whole recipe.
- `load_recipe`: a YAML mapping; its `env` entry is exported, as in TRL's configs.

A key that a new TRL or transformers release renames goes in `RENAMED_KEYS`, with that release. Imports `yaml` and
`errors` only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError

logger = logging.getLogger(__name__)

RENAMED_KEYS: dict[str, tuple[str, str]] = {
    "torch_dtype": ("dtype", "transformers 5"),
    "evaluation_strategy": ("eval_strategy", "transformers 5"),
    # transformers 5 removed `warmup_ratio`; a float < 1 in `warmup_steps` is a ratio of the total steps
    "warmup_ratio": ("warmup_steps", "transformers 5 reads a value < 1 as a ratio"),
    "use_flash_attention_2": ("attn_implementation", "transformers 4.36+"),
    "bt_beta": ("mmpo_gamma", "the MMPO paper's code"),
    "preprocessing_num_workers": ("dataset_num_proc", "the handbook's DataArguments"),
    "hub_model_revision": ("hub_revision", "the handbook's DPOConfig"),
    "max_seq_length": ("max_length", "TRL < 0.20"),
}
"""Keys of older handbook / TRL / transformers recipes (or of the papers' code): the key they became, and where the old
name comes from."""

REMOVED_KEYS: dict[str, str] = {
    "max_prompt_length": "TRL 1.x truncates prompt + completion together to `max_length` (see `truncation_mode`)",
    "logging_dir": "transformers 5 removed it (TensorBoard reads TENSORBOARD_LOGGING_DIR)",
    "truncation_side": "TRL's trainers truncate completions themselves (`truncation_mode`)",
    "auto_insert_empty_system_msg": "TRL applies the tokenizer's chat template as it is",
    "text_column": "used by the handbook's continued pretraining only",
    "model_code_revision": "use `model_revision`",
    "base_model_revision": "TRL loads a PEFT adapter's base model from the adapter's config",
}
"""Keys that no longer do anything: warned about and dropped."""

AMBIGUOUS_KEYS: dict[str, str] = {
    "gamma": "`gamma` is MMPO's rationality coefficient in one paper and SimPO's target margin in the other: write "
    "`mmpo_gamma` (MMPO) or `gamma_beta_ratio` (SimPO / gamma-PO, target margin = gamma_beta_ratio * beta)",
    "reference_free": "`reference_free` meant TRL 0.x's uniform reference (no length normalisation); for SimPO "
    "rewards (length-normalised, no reference model) write `reward_type: simpo`",
}

FLAG = object()
"""A command-line option given without a value (`--bf16`)."""


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() in ("false", "no", "0"))


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in ("null", "none"))


def map_key(key: str, value: Any, where: str) -> tuple[str, Any] | None:
    """The key and value a recipe entry has in TRL 1.x / transformers 5, or None to drop it; warns once if changed.

    `value` is a YAML value, or a command-line string (`FLAG` for an option given without a value).
    """
    if key in AMBIGUOUS_KEYS:
        raise UsageError(f"{where}: {AMBIGUOUS_KEYS[key]}.")
    if key in REMOVED_KEYS:
        logger.warning("%s: ignoring `%s` (%s).", where, key, REMOVED_KEYS[key])
        return None
    if key not in RENAMED_KEYS:
        return key, value
    new_key, origin = RENAMED_KEYS[key]
    if key == "torch_dtype" and _is_null(value):
        logger.warning("%s: `torch_dtype: null` -> the default `dtype` (float32), as transformers 4 loaded.", where)
        return None
    if key == "use_flash_attention_2":
        if _is_false(value):
            logger.warning("%s: `use_flash_attention_2: false` -> the default `attn_implementation`.", where)
            return None
        value = "flash_attention_2"
    if key == "warmup_ratio":
        ratio = float(value)
        if not 0 <= ratio < 1:
            raise UsageError(f"{where}: `warmup_ratio` must lie in [0, 1), got {value}.")
        # A command-line value stays a string for argparse to convert
        value = str(ratio) if isinstance(value, str) else ratio
    shown = "true" if value is FLAG else value
    logger.warning("%s: `%s` (%s) is `%s` now: using `%s: %s`.", where, key, origin, new_key, new_key, shown)
    return new_key, value


def map_model_init_kwargs(value: Any, where: str) -> Any:
    # `model_init_kwargs` go straight to `from_pretrained`, which has the same renames
    if not isinstance(value, dict):
        return value
    mapped = {}
    for key, inner in value.items():
        new = map_key(key, inner, f"{where} (model_init_kwargs)") if key in RENAMED_KEYS else (key, inner)
        if new is not None:
            mapped[new[0]] = new[1]
    return mapped


def normalize_recipe(recipe: dict[str, Any], where: str) -> dict[str, Any]:
    """Apply `map_key` to every entry of a recipe; two entries that end up as the same key are an error."""
    normalized: dict[str, Any] = {}
    for key, value in recipe.items():
        mapped = map_key(key, value, where)
        if mapped is None:
            continue
        new_key, new_value = mapped
        if new_key == "model_init_kwargs":
            new_value = map_model_init_kwargs(new_value, where)
        if new_key in normalized:
            raise UsageError(f"{where}: `{key}` and `{new_key}` set the same key; keep one.")
        normalized[new_key] = new_value
    return normalized


def load_recipe(path: str) -> dict[str, Any]:
    """A recipe's mapping; its `env` entry (as in TRL's configs) is exported to the environment."""
    if not Path(path).is_file():
        raise UsageError(f"recipe file {path} not found")
    try:
        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(recipe, dict):
        raise UsageError(f"{path} must hold a YAML mapping of keys to values.")
    env = recipe.pop("env", {}) or {}
    if not isinstance(env, dict):
        raise UsageError(f"{path}: `env` must be a mapping of environment variables.")
    for name, value in env.items():
        os.environ[str(name)] = str(value)
    return recipe
