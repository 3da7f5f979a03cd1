"""The `trl-margins` console command: parsing and dispatch only. Each command is a module of this package.

- `mmpo`, `gamma-po`, `reward`: `train` (the run) and `arguments` (recipe and overrides);
- `evaluate`: `evaluate`;
- `fit-gamma`: `fit_gamma`.

A new command is a new module here with a `main(argv) -> int`, listed in `main`'s dispatch below. `python -m
trl_margins.cli ...` (under `accelerate launch`) runs the same `main`. This package is the only one that imports the
trainers and the argument classes together: nothing else in `trl_margins` imports it.
"""

import difflib
import sys
from collections.abc import Sequence

from .arguments import MODES
from .train import train_main

__all__ = ["main", "train_main"]


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
