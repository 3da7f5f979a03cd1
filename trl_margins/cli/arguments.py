"""The arguments of the training commands (`trl-margins mmpo|gamma-po|reward|kto`, `examples/run_*.py`), parsed from a
recipe and `--key value` overrides.

The arguments are TRL's, `(ScriptArguments, <config>, ModelConfig, DatasetMixtureConfig)` parsed by `TrlParser` as in
`trl/scripts/dpo.py`, with `MarginScriptArguments` adding a few keys (dataset adapters, the handbook's dataset
mixtures, chat wrapping, a before/after preference evaluation). `MODES` names each command's config and trainer.

A recipe is a YAML file, given as the first positional argument (the handbook's and both papers' convention,
`accelerate launch examples/run_mmpo.py recipes/x/config.yaml`) or with `--config`; `--key value` and `--key=value`
override it. Old keys are mapped by `trl_margins.cli.recipe_keys`; unknown keys stop the run with the closest known
key.
Without a recipe, a command line that names a model or a dataset starts from TRL's defaults, as `trl/scripts/dpo.py`
does; one that names neither runs the offline demo recipe (`trl_margins.cli.demo.DEMO_RECIPES`), which `--key value`
adjusts in the same way. Parsing only: the run itself is `trl_margins.cli.train`.
"""

import argparse
import dataclasses
import difflib
import inspect
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser, TrainingArguments
from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser

from ..data.adapters import DATASET_ADAPTERS
from ..data.loading import resolve_model
from ..errors import RaisingParserMixin, TrlMarginsError, UsageError
from ..trainers import (
    GammaPOConfig,
    GammaPOTrainer,
    MMPOConfig,
    MMPOKTOConfig,
    MMPOKTOTrainer,
    MMPORewardConfig,
    MMPORewardTrainer,
    MMPOTrainer,
)
from .demo import DEMO_RECIPES
from .recipe_keys import FLAG, RENAMED_KEYS, load_recipe, map_key, map_model_init_kwargs, normalize_recipe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mode:
    config_class: type[TrainingArguments]
    trainer_class: type
    description: str


MODES: dict[str, Mode] = {
    "mmpo": Mode(MMPOConfig, MMPOTrainer, "DPO (or SimPO) with MMPO soft targets"),
    "gamma-po": Mode(GammaPOConfig, GammaPOTrainer, "gamma-PO dynamic target margins on DPO or SimPO rewards"),
    "reward": Mode(MMPORewardConfig, MMPORewardTrainer, "reward model with MMPO soft targets"),
    "kto": Mode(MMPOKTOConfig, MMPOKTOTrainer, "KTO on binary feedback with MMPO's per-sample weights from scores"),
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
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Reference policy of DPO-style training (mmpo, gamma-po, kto), loaded like the model. Default: a "
            "copy of the model (or, with PEFT, the model with its adapter disabled), as TRL does."
        },
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


_DATASET_SOURCES = ("dataset_name", "dataset_mixture", "dataset_mixer", "datasets")
_OPTIONAL_CHOICES = ("dataset_adapter",)
"""Options with choices whose default is None: `none`, `null` or an empty value on the command line unsets them."""
_NULLS = ("none", "null", "")


def adapter_name(value: str) -> str | None:
    """An argparse `type`: a dataset adapter's name, or None for `none`, `null` or an empty value."""
    if value.lower() in _NULLS:
        return None
    if value not in DATASET_ADAPTERS:
        raise argparse.ArgumentTypeError(
            f"unknown dataset adapter {value!r}; choose one of {sorted(DATASET_ADAPTERS)}"
        )
    return value


def json_mapping(value: str) -> dict:
    """An argparse `type`: a JSON object."""
    try:
        mapping = json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not a JSON object: {e}") from e
    if not isinstance(mapping, dict):
        raise argparse.ArgumentTypeError("not a JSON object")
    return mapping


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

    An override's value is a string, a list of strings (`--report_to wandb tensorboard`), or `FLAG` (`--bf16`).
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
            value = values[0] if len(values) == 1 else (values or FLAG)
        if key == "config":
            if recipe is not None or value is FLAG or isinstance(value, list):
                raise UsageError("Give one recipe: a positional .yaml file or `--config PATH`.")
            recipe = value
            continue
        overrides.append((key, value))
    return recipe, overrides


class _Parser(RaisingParserMixin, TrlParser):
    """TrlParser whose errors (an invalid choice, a value of the wrong type) raise a one-line `UsageError`, instead of
    printing the usage of some 180 keys first."""


class DataclassParser(RaisingParserMixin, HfArgumentParser):
    """HfArgumentParser whose errors raise a one-line `UsageError` (`trl-margins annotate` and `generate`)."""


def make_parser(mode: str) -> TrlParser:
    if mode not in MODES:
        raise UsageError(f"Unknown mode {mode!r}; choose one of {sorted(MODES)}.")
    types = (MarginScriptArguments, MODES[mode].config_class, ModelConfig, DatasetMixtureConfig)
    return _Parser(types, prog=f"trl-margins {mode}")


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
        if key in _OPTIONAL_CHOICES and isinstance(value, str) and value.lower() in _NULLS:
            recipe[key] = None  # `--dataset_adapter none` unsets a recipe's adapter, and its options with it
            recipe.pop(f"{key}_kwargs", None)
            continue
        if key == "model_init_kwargs" and isinstance(value, str) and value.startswith("{"):
            value = json.dumps(map_model_init_kwargs(json.loads(value), "command line"))
        argv_out += [f"--{key}"] + ([] if value is FLAG else value if isinstance(value, list) else [value])
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
    try:
        namespace, remaining = parser.parse_known_args(argv_out)
    except UsageError as e:
        # argparse converts the recipe's string values too: say which file a bad one came from
        key = re.search(r"argument --(\w+)", str(e))
        if key is None or key.group(1) not in recipe or key.group(1) in given:
            raise
        raise UsageError(f"{where}: `{key.group(1)}: {recipe[key.group(1)]!r}`: {e}") from e
    if remaining:
        raise UsageError(f"Could not parse {' '.join(remaining)}.")
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
    model_args.model_name_or_path = resolve_model(model_args.model_name_or_path, "`model_name_or_path`")
    if script_args.ref_model_name_or_path is not None:
        if mode == "reward":
            raise UsageError("`ref_model_name_or_path` is for policies: a reward model has no reference.")
        ref = resolve_model(script_args.ref_model_name_or_path, "`ref_model_name_or_path`")
        script_args.ref_model_name_or_path = ref
    if script_args.tokenizer_name_or_path is not None:
        script_args.tokenizer_name_or_path = resolve_model(
            script_args.tokenizer_name_or_path, "`tokenizer_name_or_path`"
        )
    if dataset_args.datasets and any(getattr(script_args, k) is not None for k in _DATASET_SOURCES[:3]):
        raise UsageError("Give one dataset source: TRL's `datasets` list or a `dataset_*` key, not both.")
    return script_args, training_args, model_args, dataset_args
