"""The `trl-margins` console command: parsing and dispatch only. Each command is a module of this package.

- `mmpo`, `gamma-po`, `reward`, `kto`: `train` (the run), `arguments` (recipe and overrides), `recipe_keys` (old and
  renamed recipe keys) and `demo` (the offline default example);
- `evaluate`: `evaluate`;
- `fit-gamma`: `fit_gamma`;
- `generate`, `annotate`, `select`: `generate`, `annotate`, `select` (on-policy pairs and their margins);
- `rounds`: `rounds` (all of them, K times, with training).

A new command is a new module here with a `main(argv) -> int`, listed in `main`'s dispatch below. `python -m
trl_margins.cli ...` (under `accelerate launch`) runs the same `main`. This package is the only one that imports the
trainers and the argument classes together: nothing else in `trl_margins` imports it.
"""

import difflib
import importlib
import sys
from collections.abc import Sequence

from .arguments import MODES
from .train import train_main

__all__ = ["main", "train_main"]

# The commands besides the training modes: (module of this package, description)
_COMMANDS = {
    "evaluate": ("evaluate", "preference accuracy and calibration of a trained model"),
    "fit-gamma": ("fit_gamma", "fit mmpo_gamma to a dataset's preference probabilities or votes"),
    "generate": ("generate", "sample N completions per prompt from a policy (all_generated_responses)"),
    "annotate": ("annotate", "score every response with a reward model (score columns, all_rm_scores)"),
    "select": ("select", "keep the pairs whose margin passes a threshold, a quantile or a metric"),
    "rounds": ("rounds", "on-policy rounds: generate, annotate, select, train and evaluate, K times"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """`trl-margins mmpo|gamma-po|reward|kto|evaluate|fit-gamma|generate|annotate|select|rounds ...`: train with a
    recipe, evaluate a trained model, fit `mmpo_gamma`, make and filter pairs with margins, or run on-policy rounds."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = [*MODES, *_COMMANDS]
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: trl-margins {{{','.join(commands)}}} ... [--debug]\n")
        for mode, spec in MODES.items():
            print(f"  {mode:<10}train: {spec.description}")
        for command, (_, description) in _COMMANDS.items():
            print(f"  {command:<10}{description}")
        print("\nErrors in the command line, recipe or data print one line; --debug shows the traceback instead.")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in _COMMANDS:  # each imported on use, so one broken command stops only itself
        return importlib.import_module(f"{__name__}.{_COMMANDS[command][0]}").main(rest)
    if command not in MODES:
        close = difflib.get_close_matches(command, commands, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        print(f"trl-margins: unknown command `{command}`; choose one of {commands}.{hint}", file=sys.stderr)
        return 2
    return train_main(command, rest)
