"""The `trl-margins` console command: parsing and dispatch only. Each command is a module of this package.

- `mmpo`, `gamma-po`, `reward`: `train` (the run) and `arguments` (recipe and overrides);
- `evaluate`: `evaluate`;
- `fit-gamma`: `fit_gamma`.

A new command is a new module here with a `main(argv) -> int`, listed in `main`'s dispatch below. `python -m
trl_margins.cli ...` (under `accelerate launch`) runs the same `main`. This package is the only one that imports the
trainers and the argument classes together: nothing else in `trl_margins` imports it.
"""

import difflib
import importlib
import sys
import warnings
from collections.abc import Sequence

from .arguments import MODES
from .train import train_main

__all__ = ["main", "train_main"]

# Names of the single-module cli.py of 0.1, forwarded to their modules so that code written against it still runs.
# The README documented DEMO_RECIPES there, so that one warns.
_MOVED = {
    **dict.fromkeys(("BUNDLED_DATASET", "BUNDLED_MODEL"), "assets"),
    **dict.fromkeys(("AMBIGUOUS_KEYS", "REMOVED_KEYS", "RENAMED_KEYS", "load_recipe", "map_key"), "recipes"),
    **dict.fromkeys(("normalize_recipe", "score_columns"), "recipes"),
    **dict.fromkeys(("DEMO_RECIPES", "evaluate_command", "evaluate_pairs", "format_comparison"), "demo"),
    **dict.fromkeys(("pair_rewards", "preference_targets"), "demo"),
    **dict.fromkeys(("MODES", "MarginScriptArguments", "make_parser", "parse_args", "split_argv"), "cli.arguments"),
    **dict.fromkeys(("load_splits", "run"), "cli.train"),
}
_DOCUMENTED = ("DEMO_RECIPES",)


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _DOCUMENTED:
        warnings.warn(
            f"`trl_margins.cli.{name}` moved to `trl_margins.{_MOVED[name]}.{name}`; the old path will be removed.",
            DeprecationWarning,
            stacklevel=2,
        )
    return getattr(importlib.import_module(f"trl_margins.{_MOVED[name]}"), name)


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
        from .evaluate import main as evaluate_main

        return evaluate_main(rest)
    if command == "fit-gamma":
        from .fit_gamma import main as fit_gamma_main

        return fit_gamma_main(rest)
    if command not in MODES:
        close = difflib.get_close_matches(command, commands, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        print(f"trl-margins: unknown command `{command}`; choose one of {commands}.{hint}", file=sys.stderr)
        return 2
    return train_main(command, rest)
