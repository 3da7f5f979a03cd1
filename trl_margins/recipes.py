"""Recipe compatibility: recipes written for the alignment handbook, TRL 0.x, transformers 4 or the papers' code, read
as TRL 1.x / transformers 5 arguments.

- Keys: `RENAMED_KEYS` (each old name with the release, or the code, it comes from), `REMOVED_KEYS` (keys that no
  longer do anything: warned about and dropped), `AMBIGUOUS_KEYS` (refused, with what to write instead); `map_key`
  applies them to one entry, `normalize_recipe` to a whole recipe.
- The recipe file: `load_recipe` (a YAML mapping; its `env` entry is exported, as in TRL's configs).
- Dataset mixtures: the handbook's `dataset_mixture` and older `dataset_mixer`, and TRL's `DatasetMixtureConfig`, each
  keeping the score columns that the margins need through a mixture's `columns` selection.

A key that a new TRL or transformers release renames goes in `RENAMED_KEYS`, with that release. This module imports
`datasets`, TRL's dataset helpers, `loading` and `errors`: no trainer, and nothing of the command line (the parser of
the training commands is `trl_margins.cli.arguments`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from datasets import Dataset, DatasetDict, IterableDataset, concatenate_datasets, load_dataset
from transformers import TrainingArguments
from trl import DatasetMixtureConfig, get_dataset

from .errors import UsageError
from .loading import load_source

if TYPE_CHECKING:
    from .cli.arguments import MarginScriptArguments

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

_FLAG = object()  # a command-line option given without a value (`--bf16`)


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() in ("false", "no", "0"))


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in ("null", "none"))


def map_key(key: str, value: Any, where: str) -> tuple[str, Any] | None:
    """The key and value a recipe entry has in TRL 1.x / transformers 5, or None to drop it; warns once if changed.

    `value` is a YAML value, or a command-line string (`_FLAG` for an option given without a value).
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
    shown = "true" if value is _FLAG else value
    logger.warning("%s: `%s` (%s) is `%s` now: using `%s: %s`.", where, key, origin, new_key, new_key, shown)
    return new_key, value


def _map_model_init_kwargs(value: Any, where: str) -> Any:
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
            new_value = _map_model_init_kwargs(new_value, where)
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


# ---- dataset mixtures -----------------------------------------------------------------------------------------------
def _column_names(dataset: Dataset | IterableDataset) -> list[str] | None:
    names = dataset.column_names
    if names is None and dataset.features is not None:
        names = list(dataset.features)
    return names


def score_columns(training_args: TrainingArguments, script_args: MarginScriptArguments) -> tuple[list, list]:
    """`(required, optional)` columns that must survive a mixture's column selection.

    The margin columns are required when `mmpo_gamma` is set (and no adapter makes them), kept if present otherwise.
    """
    margin = getattr(training_args, "margin_column", None)
    if margin is not None:
        needed = [margin]
    else:
        needed = [getattr(training_args, name, None) for name in ("score_chosen_column", "score_rejected_column")]
        needed = [c for c in needed if c is not None]
    optional = [script_args.target_prob_column] if script_args.target_prob_column else []
    if script_args.dataset_adapter is not None or getattr(training_args, "mmpo_gamma", None) is None:
        return [], needed + optional
    return needed, optional


def _with_score_columns(columns: list[str], available: list[str] | None, needed: tuple[list, list], where: str):
    required, optional = needed
    if available is None:  # a streamed dataset may not know its columns: trust the configuration
        return list(dict.fromkeys([*columns, *required]))
    missing = [c for c in required if c not in available]
    if missing:
        raise UsageError(
            f"{where} lists `columns` {columns}, but the dataset has no {missing} column, which `mmpo_gamma` needs "
            f"for the margins. Columns present: {sorted(available)}. Set `score_chosen_column` / "
            "`score_rejected_column` (or `margin_column`), or a `dataset_adapter` that makes them."
        )
    extra = [c for c in [*required, *optional] if c in available and c not in columns]
    if extra:
        logger.info("%s: keeping the score column(s) %s besides the listed `columns`.", where, extra)
    return [*columns, *extra]


def _handbook_mixture(mixture: dict, needed: tuple[list, list], streaming: bool) -> DatasetDict:
    """The alignment handbook's `get_dataset`: each dataset's `columns`, `weight` (a shuffled fraction), then one
    shuffled concatenation, split off a test set when `test_split_size` is set."""
    unknown = set(mixture) - {"datasets", "seed", "test_split_size"}
    if unknown or not isinstance(mixture.get("datasets"), list):
        raise UsageError(
            "`dataset_mixture` must be {datasets: [{id, config, split, columns, weight}], seed, test_split_size}"
            + (f"; unknown key(s) {sorted(unknown)}" if unknown else "")
        )
    seed = mixture.get("seed", 0)
    parts = []
    for i, entry in enumerate(mixture["datasets"]):
        unknown = set(entry) - {"id", "config", "split", "columns", "weight"}
        if unknown or "id" not in entry:
            raise UsageError(f"`dataset_mixture.datasets[{i}]` needs `id` and takes config, split, columns, weight.")
        where = f"`dataset_mixture.datasets[{i}]` ({entry['id']})"
        dataset = load_source(entry["id"], entry.get("config"), split=entry.get("split", "train"), streaming=streaming)
        if entry.get("columns") is not None:
            columns = _with_score_columns(list(entry["columns"]), _column_names(dataset), needed, where)
            dataset = dataset.select_columns(columns)
        if entry.get("weight") is not None:
            if isinstance(dataset, IterableDataset):
                raise UsageError(f"{where}: `weight` needs the dataset's length, which streaming doesn't give.")
            dataset = dataset.shuffle(seed=seed).select(range(int(len(dataset) * entry["weight"])))
        parts.append(dataset)
    if not parts:
        raise UsageError("`dataset_mixture.datasets` is empty.")
    combined = concatenate_datasets(parts).shuffle(seed=seed)
    if mixture.get("test_split_size") is not None:
        return combined.train_test_split(test_size=mixture["test_split_size"], seed=seed)
    return DatasetDict({"train": combined})


def _handbook_mixer(script_args: MarginScriptArguments) -> DatasetDict:
    """The older handbook's `mix_datasets`: a fraction of each dataset's train splits, its test splits whole."""
    mixer = script_args.dataset_mixer
    splits = script_args.dataset_splits or ["train", "test"]
    configs = script_args.dataset_configs or [None] * len(mixer)
    if len(configs) != len(mixer):
        raise UsageError("`dataset_configs` must name one configuration per `dataset_mixer` dataset.")
    train_parts, test_parts = [], []
    for (name, fraction), config in zip(mixer.items(), configs, strict=True):
        for split in splits:
            dataset = load_source(name, config, split=split)
            if "train" in split:
                train_parts.append(dataset.select(range(int(fraction * len(dataset)))))
            elif "test" in split:
                test_parts.append(dataset)
            else:
                raise UsageError(f"`dataset_splits` entry {split!r} names neither a train nor a test split.")
    result = DatasetDict()
    if train_parts:
        result["train"] = concatenate_datasets(train_parts).shuffle(seed=42)
    if test_parts:
        result["test"] = concatenate_datasets(test_parts).shuffle(seed=42)
    return result


def _trl_mixture(dataset_args: DatasetMixtureConfig, needed: tuple[list, list]) -> DatasetDict:
    """TRL's `get_dataset`, after adding the score columns to each dataset's `columns`."""
    for i, entry in enumerate(dataset_args.datasets):
        if entry.columns is not None:
            probe = load_dataset(
                entry.path, entry.name, data_dir=entry.data_dir, data_files=entry.data_files, split=entry.split,
                streaming=dataset_args.streaming,
            )  # fmt: skip
            where = f"`datasets[{i}]` ({entry.path})"
            entry.columns = _with_score_columns(list(entry.columns), _column_names(probe), needed, where)
    return get_dataset(dataset_args)
