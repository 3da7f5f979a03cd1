"""`trl-margins rounds`: on-policy rounds with margins, generate -> annotate -> select -> train -> evaluate, K times
(see `trl_margins.pairs.rounds`).

    trl-margins rounds RECIPE.yaml [--key value ...] [--train.key value ...]
    torchrun --nproc_per_node 2 -m trl_margins.cli rounds RECIPE.yaml   # each stage data-parallel

A rounds recipe names the first `policy`, the `reward_model` (a folder, or a `trl-margins reward` recipe trained
once, first), the `prompts`, the `heldout` pairs, and a mapping per stage: `generate` (`trl-margins generate`'s
options), `annotate`, `select` (`min_margin` or `min_quantile`) and `train` (a `trl-margins <mode>` recipe with its
`mode`: mmpo, gamma-po or kto; MMPO on the reward model's margins by default). `--key value` overrides a top-level
key, `--train.key value` (and so on) a stage's. Writes `output_dir/round-R/` per round, `rounds.json` after every
stage and `rounds.png`; the same command again resumes where a run stopped.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .._compat import process_state
from ..data.loading import resolve_model
from ..errors import UsageError, run_command
from ..pairs.rounds import Round, Rounds, RoundsConfig
from .arguments import FLAG, parse_args, split_argv
from .output import check_writable
from .recipe_keys import load_recipe

logger = logging.getLogger(__name__)

TRAIN_MODES = ("mmpo", "gamma-po", "kto")
_STAGE_KEYS = ("generate", "annotate", "select", "train")


def _value(text: Any) -> Any:
    """A command-line value as YAML reads it (`3` an int, `false` a bool, `[13, 21]` a list), a flag as True."""
    if text is FLAG:
        return True
    if isinstance(text, list):
        return [_value(t) for t in text]
    return yaml.safe_load(text) if isinstance(text, str) else text


def load_config(argv: Sequence[str]) -> RoundsConfig:
    """The `RoundsConfig` of a recipe and `--key value` / `--stage.key value` overrides, its models resolved."""
    recipe_path, overrides = split_argv(argv)
    if recipe_path is None:
        raise UsageError("rounds runs a recipe: `trl-margins rounds RECIPE.yaml [--key value ...]`.")
    recipe = load_recipe(recipe_path)
    fields = {f.name for f in dataclasses.fields(RoundsConfig)}
    for key, text in overrides:
        stage, _, inner = key.partition(".")
        if inner:
            if stage not in _STAGE_KEYS:
                raise UsageError(f"command line: `--{key}`: only {list(_STAGE_KEYS)} take `--stage.key` options.")
            recipe.setdefault(stage, {})[inner] = _value(text)
        else:
            recipe[key] = _value(text)
    for key in recipe:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise UsageError(f"{recipe_path}: unknown key `{key}` of a rounds recipe.{hint}")
    missing = [f.name for f in dataclasses.fields(RoundsConfig) if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and f.name not in recipe]  # fmt: skip
    if missing:
        raise UsageError(f"{recipe_path}: a rounds recipe needs {missing}.")
    mode = (recipe.get("train") or {}).get("mode", "mmpo")
    if mode not in TRAIN_MODES:
        raise UsageError(f"{recipe_path}: `train.mode` must be one of {list(TRAIN_MODES)}, got {mode!r}.")
    recipe["policy"] = resolve_model(recipe["policy"], "`policy`")
    if isinstance(recipe["reward_model"], str):
        recipe["reward_model"] = resolve_model(recipe["reward_model"], "`reward_model`")
    return RoundsConfig(**recipe)


def _write_recipe(path: Path, recipe: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def train_policy(config: RoundsConfig, state):
    """The `train` stage: `trl-margins <mode>` on the round's pairs, from the round's policy, against the reference;
    with PEFT, the adapter merged into the next round's policy (`round-R/policy/`)."""
    from .train import run

    def train(r: int, policy: str, reference: str, pairs: Path, paths: Round) -> str:
        recipe = dict(config.train)
        mode = recipe.pop("mode", "mmpo")
        recipe.update(
            model_name_or_path=policy, dataset_name=str(pairs), dataset_train_split="train",
            output_dir=str(paths.model), eval_strategy="no", preference_eval=False,
        )  # fmt: skip
        if recipe.get("reward_type") != "simpo" and reference != policy:
            recipe["ref_model_name_or_path"] = reference
        run(mode, *parse_args(mode, [_write_recipe(paths.folder / "train.yaml", recipe)]), end=False)
        if not recipe.get("use_peft"):
            return str(paths.model)
        merged = paths.folder / "policy"
        if state.process_index == 0:
            from peft import AutoPeftModelForCausalLM
            from transformers import AutoTokenizer

            shutil.rmtree(merged, ignore_errors=True)
            AutoPeftModelForCausalLM.from_pretrained(paths.model).merge_and_unload().save_pretrained(merged)
            AutoTokenizer.from_pretrained(paths.model).save_pretrained(merged)
        state.wait_for_everyone()
        return str(merged)

    return train


def train_reward_model(state):
    """The `reward` stage: `trl-margins reward` on its recipe, once, before round 0."""
    from .train import run

    def train(recipe: dict[str, Any], output_dir: Path) -> str:
        output_dir.mkdir(parents=True, exist_ok=True)
        recipe = {**recipe, "output_dir": str(output_dir / "model"), "preference_eval": False}
        run("reward", *parse_args("reward", [_write_recipe(output_dir / "reward.yaml", recipe)]), end=False)
        return str(output_dir / "model")

    return train


def run_rounds(argv: Sequence[str]) -> dict[str, Any]:
    config = load_config(argv)
    state = process_state()  # one process, or this one's rank under `accelerate launch` / `torchrun`
    check_writable(config.output_dir, "output_dir")
    rounds = Rounds(config, train_policy(config, state), state, train_reward=train_reward_model(state))
    try:
        summary = rounds.run()
    finally:
        if state.num_processes > 1:
            state.destroy_process_group()
    if state.process_index == 0:
        last = summary["rounds"][-1]["stages"].get("evaluate", {}).get("metrics")
        print(
            f"rounds: {config.rounds} rounds in {config.output_dir} (rounds.json, rounds.png); last held-out: {last}"
        )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `trl-margins rounds`; ``argv`` without the program and subcommand names."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    return run_command("rounds", sys.argv[1:] if argv is None else argv, run_rounds)


if __name__ == "__main__":
    sys.exit(main())
