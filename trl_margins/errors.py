"""The package's own error types, and how the command line reports them.

Configuration and data checks raise subclasses of `TrlMarginsError`, a `ValueError`: code that catches `ValueError`
from the Python API keeps working, and the command line can tell these errors (the input needs changing; the message
says how) from genuine bugs, which keep their traceback. The `trl-margins` commands print a `TrlMarginsError` as one
line, `trl-margins <command>: error: <message>`, and exit with

- 2 for a `UsageError`: the command line, the recipe or a configuration value needs changing (argparse's status);
- 1 for a `DataError`: the dataset's columns or values can't give the pairs the run needs.

`--debug` anywhere on a command line re-raises instead, with the traceback.

Imports nothing of this package, so that every module can use it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

DEBUG_FLAG = "--debug"


class TrlMarginsError(ValueError):
    """A configuration or a dataset this package can't use as given; the message says what to change."""


class UsageError(TrlMarginsError):
    """A recipe, command line or configuration value that can't be run as written."""


class DataError(TrlMarginsError):
    """A dataset whose columns or values can't give preference pairs with margins (a missing column, a bad score)."""


def row_label(index: int) -> str:
    """A dataset row as every message of this package names it: its index, counting from 0, as `dataset[index]` does
    (the line of a .jsonl file is one more)."""
    return f"row {index} (counting from 0)"


def exit_status(error: TrlMarginsError) -> int:
    return 1 if isinstance(error, DataError) else 2


def pop_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`argv` without `--debug`, and whether it was there. Taken off before any parser sees the command line."""
    rest = [token for token in argv if token != DEBUG_FLAG]
    return rest, len(rest) != len(argv)


def report_error(command: str, error: TrlMarginsError) -> int:
    """Print `error` as the one-line message of `trl-margins <command>`; returns the exit status."""
    print(f"trl-margins {command}: error: {error}", file=sys.stderr)
    return exit_status(error)


def run_command(command: str, argv: Sequence[str], body: Callable[[list[str]], object]) -> int:
    """Run ``body`` on ``argv`` (less `--debug`) as `trl-margins <command>`: 0 when it returns, or a
    `TrlMarginsError` printed as one line with its exit status; with `--debug` the error is re-raised instead."""
    argv, debug = pop_debug_flag(argv)
    try:
        body(argv)
    except TrlMarginsError as e:
        if debug:
            raise
        return report_error(command, e)
    return 0


class RaisingParserMixin:
    """For an `argparse.ArgumentParser` subclass: a parse error (an invalid choice, a value of the wrong type) raises
    a `UsageError` instead of printing the whole usage and exiting, so the entry point reports it as one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class ArgumentParser(RaisingParserMixin, argparse.ArgumentParser):
    """argparse whose errors raise a `UsageError`, which the command's `main` prints as one line (no usage dump)."""
