"""MkDocs hooks (`hooks:` in mkdocs.yml): pages generated at build time, so that they cannot drift from their source.

- `cli/*.md`: the CLI reference, one page per `trl-margins` command, read from the command's own parser (every flag,
  its type, default and help; for `rounds`, which reads a recipe, every key of `RoundsConfig`), and `cli/index.md`
  from `trl-margins --help`.
- `results.md`, `changelog.md`, `contributing.md`: benchmarks/RESULTS.md, CHANGELOG.md and CONTRIBUTING.md, with the
  figures the results show copied into the site.

The generating functions import no MkDocs, so the tests call them too (`tests/test_docs.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checkout_first() -> None:
    """Import the checkout's package, as mkdocstrings reads it (`paths: [.]`), whatever is installed (MkDocs restores
    `sys.path` after loading this module, so each hook calls this)."""
    if sys.path[0] != str(ROOT):
        sys.path.insert(0, str(ROOT))


TRAINING_COMMANDS = ("mmpo", "gamma-po", "reward", "kto")
# The other commands, by the module of trl_margins.cli that holds their `build_parser`
OTHER_COMMANDS = {
    "evaluate": "evaluate",
    "fit-gamma": "fit_gamma",
    "generate": "generate",
    "annotate": "annotate",
    "select": "select",
}
RECIPE_COMMANDS = ("rounds",)  # commands that read a recipe of their own, documented from its config dataclass
COPIED_PAGES = {
    "results.md": "benchmarks/RESULTS.md",
    "changelog.md": "CHANGELOG.md",
    "contributing.md": "CONTRIBUTING.md",
}
FIGURES = "benchmarks/quality/figures"


# ---- the CLI reference ----------------------------------------------------------------------------------------------
def _cell(text: object) -> str:
    text = " ".join(str(text).split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.default is None or action.default == argparse.SUPPRESS:
        return "`None`"
    if dataclasses.is_dataclass(action.default) or callable(action.default):
        return _cell(type(action.default).__name__)
    value = repr(action.default)
    return f"`{_cell(value)}`" if len(value) <= 60 else _cell(value[:57] + "...")


def _type_name(annotation: object) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(typing|collections\.abc|builtins)\.", "", str(annotation))


def _kind(action: argparse.Action, annotation: object = None) -> str:
    if action.choices is not None:
        return " \\| ".join(f"`{_cell(repr(c))}`" for c in action.choices)
    if action.nargs == 0:
        return "flag"
    if annotation is not None:  # a pipe inside a code span would show its escape: one code span per member
        return " \\| ".join(f"`{part}`" for part in _type_name(annotation).split(" | "))
    if action.type is None:
        return "`str`"
    if isinstance(action.type, type):
        return f"`{action.type.__name__}`"
    return ""


def _rows(actions: list[argparse.Action], annotations: dict[str, object] | None = None) -> list[str]:
    """A table row per argument; HfArgumentParser's `--no_<flag>` of a boolean that defaults to true joins its row."""
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in actions:
        by_dest.setdefault(action.dest, []).append(action)

    def negation(action: argparse.Action) -> bool:
        return len(by_dest[action.dest]) > 1 and all(o.startswith("--no") for o in action.option_strings)

    lines = ["| flag | type | default | description |", "|---|---|---|---|"]
    for action in actions:
        if not action.option_strings or negation(action):
            continue
        flags = ", ".join(f"`{o}`" for o in action.option_strings)
        help_text = _cell(action.help or "")
        negations = [o for other in by_dest[action.dest] if negation(other) for o in other.option_strings]
        if negations:
            help_text += " (negate: " + ", ".join(f"`{o}`" for o in negations) + ")"
        kind = _kind(action, (annotations or {}).get(action.dest))
        lines.append(f"| {flags} | {kind} | {_default(action)} | {help_text} |")
    return lines


def _owner(dataclass_type: type, name: str) -> type:
    """The class of `dataclass_type`'s MRO that declares (or last re-declares) the field `name`: this package's
    mixins count as the class a user names, a library's private base class as its public subclass."""
    mro = dataclass_type.__mro__
    for index, cls in enumerate(mro):
        if name in cls.__dict__.get("__annotations__", {}):
            if cls.__module__.startswith("trl_margins"):
                return dataclass_type
            while index > 0 and mro[index].__name__.startswith("_"):
                index -= 1
            return mro[index]
    return dataclass_type


def _group_title(cls: type) -> str:
    package = cls.__module__.split(".")[0]
    where = {"trl_margins": "trl-margins", "trl": "TRL", "transformers": "transformers"}.get(package, package)
    return f"{where}: `{cls.__name__}`"


def _dataclass_sections(parser) -> list[str]:
    """One table per declaring class, this package's first: the arguments of a parser built from dataclasses."""
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        by_dest.setdefault(action.dest, []).append(action)
    sections: dict[type, list[argparse.Action]] = {}
    annotations: dict[str, object] = {}
    for dataclass_type in parser.dataclass_types:
        hints = typing.get_type_hints(dataclass_type) if _resolvable(dataclass_type) else {}
        for field in dataclasses.fields(dataclass_type):
            if not field.init or field.name not in by_dest:
                continue
            owner = _owner(dataclass_type, field.name)
            sections.setdefault(owner, []).extend(by_dest[field.name])
            annotations[field.name] = hints.get(field.name, field.type)
    order = [cls for dataclass_type in parser.dataclass_types for cls in dataclass_type.__mro__]
    ours = [cls for cls in sections if cls.__module__.startswith("trl_margins")]
    theirs = sorted((cls for cls in sections if cls not in ours), key=order.index)
    lines: list[str] = []
    for cls in [*ours, *theirs]:
        lines += ["", f"## {_group_title(cls)}", "", *_rows(sections[cls], annotations)]
    return lines


def _resolvable(dataclass_type: type) -> bool:
    try:
        typing.get_type_hints(dataclass_type)
    except Exception:  # a forward reference some library leaves unresolvable: keep the annotation's text
        return False
    return True


def _group_sections(parser: argparse.ArgumentParser) -> list[str]:
    """One table per argument group of a plain argparse parser."""
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if actions:
            title = "options" if group.title in (None, "options", "optional arguments") else group.title
            lines += ["", f"## {title}", "", *_rows(actions)]
    return lines


def command_parser(command: str):
    """The parser `trl-margins <command>` parses its command line with."""
    import importlib

    if command in TRAINING_COMMANDS:
        from trl_margins.cli.arguments import make_parser

        return make_parser(command)
    return importlib.import_module(f"trl_margins.cli.{OTHER_COMMANDS[command]}").build_parser()


def command_page(command: str) -> str:
    """The reference page of one command: its usage, then every flag its parser takes."""
    parser = command_parser(command)
    lines = [f"# trl-margins {command}", ""]
    if command in TRAINING_COMMANDS:
        from trl_margins.cli.arguments import MODES

        mode = MODES[command]
        lines += [
            f"Train: {mode.description} (`{mode.trainer_class.__name__}`, `{mode.config_class.__name__}`).",
            "",
            "```text",
            f"trl-margins {command} [RECIPE.yaml | --config RECIPE.yaml] [--key value | --key=value ...] [--debug]",
            "```",
            "",
            "Every flag below is also a recipe key. A recipe's old keys are mapped as listed in "
            "[Recipes and old keys](../guides/recipes.md); with neither a recipe, a model nor a dataset, the command "
            "runs its offline demo recipe. The tables are generated from the command's parser "
            "(`trl_margins.cli.arguments.make_parser`), this package's arguments first.",
        ]
        lines += _dataclass_sections(parser)
    else:
        lines += [parser.description or "", "", "```text", parser.format_usage().strip(), "```", ""]
        lines.append(
            f"The tables are generated from the command's parser (`trl_margins.cli.{OTHER_COMMANDS[command]}"
            ".build_parser`)."
        )
        lines += _dataclass_sections(parser) if hasattr(parser, "dataclass_types") else _group_sections(parser)
    return "\n".join(lines) + "\n"


def _field_default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return f"`{_cell(repr(field.default))}`"
    if field.default_factory is not dataclasses.MISSING:
        return f"`{_cell(repr(field.default_factory()))}`"
    return "required"


def _field_rows(dataclass_type: type) -> list[str]:
    """A table row per field of a config dataclass: its key, type, default and help."""
    hints = typing.get_type_hints(dataclass_type)
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for field in dataclasses.fields(dataclass_type):
        kind = " \\| ".join(f"`{part}`" for part in _type_name(hints[field.name]).split(" | "))
        help_text = _cell(field.metadata.get("help", ""))
        lines.append(f"| `{field.name}` | {kind} | {_field_default(field)} | {help_text} |")
    return lines


def rounds_page() -> str:
    """`trl-margins rounds`: the command line, every key of its recipe, and where each stage's keys are listed."""
    from trl_margins.cli.rounds import TRAIN_MODES
    from trl_margins.pairs.rounds import RoundsConfig

    modes = ", ".join(f"[{m}]({m}.md)" for m in TRAIN_MODES)
    lines = [
        "# trl-margins rounds",
        "",
        "On-policy rounds with margins: generate, annotate, select, train and evaluate, once per round.",
        "",
        "```text",
        "trl-margins rounds RECIPE.yaml [--key value ...] [--stage.key value ...] [--debug]",
        "torchrun --nproc_per_node N -m trl_margins.cli rounds RECIPE.yaml",
        "```",
        "",
        "The command reads a rounds recipe: the keys below. `--key value` overrides a top-level key and "
        "`--generate.key value` (also `annotate`, `select`, `train`) a key of a stage; values are read as YAML "
        "(`3`, `false`, `[13, 21]`). The table is generated from `trl_margins.pairs.rounds.RoundsConfig`.",
        "",
        "## Keys",
        "",
        *_field_rows(RoundsConfig),
        "",
        "## Stage keys",
        "",
        "| stage | keys |",
        "|---|---|",
        "| `generate` | the sampling options of [trl-margins generate](generate.md) (`GenerateConfig`) |",
        "| `annotate` | the scoring options of [trl-margins annotate](annotate.md) (`AnnotateConfig`), "
        "besides `output_dir` |",
        "| `select` | `min_margin` (keep pairs whose margin is at least this) or `min_quantile` |",
        f"| `train` | `mode` ({modes}) and that command's keys |",
        "",
        "See [On-policy rounds](../guides/rounds.md) for a walk-through and the files a run writes.",
    ]
    return "\n".join(lines) + "\n"


def cli_index() -> str:
    """The CLI overview: `trl-margins --help` and a link to each command's page."""
    from trl_margins.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["--help"])
    listed = re.findall(r"^  (\S+)\s", out.getvalue(), flags=re.M)
    missing = sorted(set(listed) - set(TRAINING_COMMANDS) - set(OTHER_COMMANDS) - set(RECIPE_COMMANDS))
    if missing:
        raise RuntimeError(f"`trl-margins --help` lists commands without a reference page: {missing}")
    lines = [
        "# CLI reference",
        "",
        "The console script `trl-margins` (also `python -m trl_margins.cli`, e.g. under `accelerate launch`):",
        "",
        "```text",
        out.getvalue().strip(),
        "```",
        "",
        "| command | page |",
        "|---|---|",
        *(f"| `trl-margins {c}` | [trl-margins {c}]({c}.md) |" for c in listed),
        "",
        "A mistake in the command line, a recipe or the data stops with one line, `trl-margins <command>: error: "
        "...`, naming the flag or key to change: exit status 2 for the command line or recipe, 1 for the data. "
        "`--debug` shows the traceback instead. The pages are generated from the parsers when the site is built.",
    ]
    return "\n".join(lines) + "\n"


def cli_pages() -> dict[str, str]:
    """Every generated CLI page, by its path under docs/."""
    pages = {"cli/index.md": cli_index()}
    for command in (*TRAINING_COMMANDS, *OTHER_COMMANDS):
        pages[f"cli/{command}.md"] = command_page(command)
    pages["cli/rounds.md"] = rounds_page()
    return pages


# ---- pages copied from the repository -------------------------------------------------------------------------------
def copied_page(name: str) -> str:
    """A repository file as a site page: links to the results' figures point at their copies in the site."""
    text = (ROOT / COPIED_PAGES[name]).read_text(encoding="utf-8")
    if name == "results.md":
        text = text.replace("](quality/figures/", "](figures/").replace("](../docs/", "](")
    return text


def figure_files() -> list[Path]:
    return sorted((ROOT / FIGURES).rglob("*.png"))


# ---- the recipe keys ------------------------------------------------------------------------------------------------
RECIPE_KEYS_MARKER = "<!-- recipe-keys -->"


def recipe_keys_table() -> str:
    """The renamed, removed and refused recipe keys of `trl_margins.cli.recipe_keys`, as one table."""
    from trl_margins.cli.recipe_keys import AMBIGUOUS_KEYS, REMOVED_KEYS, RENAMED_KEYS

    lines = ["| key | becomes | why |", "|---|---|---|"]
    lines += [f"| `{old}` | `{new}` | renamed ({_cell(origin)}) |" for old, (new, origin) in RENAMED_KEYS.items()]
    lines += [f"| `{old}` | dropped, with a warning | {_cell(why)} |" for old, why in REMOVED_KEYS.items()]
    lines += [f"| `{old}` | refused | {_cell(why)} |" for old, why in AMBIGUOUS_KEYS.items()]
    return "\n".join(lines)


# ---- MkDocs --------------------------------------------------------------------------------------------------------
def on_files(files, config):
    from mkdocs.structure.files import File

    _checkout_first()
    pages = {**cli_pages(), **{name: copied_page(name) for name in COPIED_PAGES}}
    for path, content in pages.items():
        files.append(File.generated(config, path, content=content))
    for figure in figure_files():
        uri = "figures/" + figure.relative_to(ROOT / FIGURES).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(figure)))
    return files


def on_page_markdown(markdown, page, config, files):
    _checkout_first()
    if RECIPE_KEYS_MARKER in markdown:
        markdown = markdown.replace(RECIPE_KEYS_MARKER, recipe_keys_table())
    return markdown
