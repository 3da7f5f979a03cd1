"""A griffe extension for the API reference: reads the package's Hugging Face/TRL-style docstrings as Google-style
ones, at docs build time (the docstrings themselves stay as TRL writes its own).

- A `Parameters:` block split into groups by `> Parameters that control ...` lines becomes one `Parameters:` section
  per group, each under the group's line in bold; an entry's type, ``(`float` or `None`, *optional*, defaults to
  `None`)``, loses the markup and the default (the table has a column for it).
- TRL's doc-builder references, ``[`MMPOTrainer`]`` and ``[`~trl.DPOConfig`]``, become a link to the object's entry
  in this reference when it is one of `trl_margins`' public names, and inline code otherwise.
"""

from __future__ import annotations

import re

import griffe

_GROUP = re.compile(r"^(\s*)> (Parameters that control .+?)\s*$")
_SECTION = re.compile(r"^(\s*)Parameters:\s*$")
_REFERENCE = re.compile(r"\[`(~?)([A-Za-z_][\w.]*)`\](?![\[(])")
_ITEM = re.compile(r"^(\s+)(\w+) \((.+)\):\s*$")
PUBLIC = {
    "GammaPOConfig", "GammaPOTrainer", "MMPOConfig", "MMPOKTOConfig", "MMPOKTOTrainer", "MMPORewardConfig",
    "MMPORewardTrainer", "MMPOTrainer", "fit_gamma",
}  # fmt: skip


def split_parameter_groups(text: str) -> str:
    """One `Parameters:` section per `> Parameters that control ...` group, under the group's title in bold."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        section = _SECTION.match(lines[i])
        if not section:
            out.append(lines[i])
            i += 1
            continue
        indent = section.group(1)
        body: list[str] = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i])
            i += 1
        body = [_plain_type(line) for line in body]
        if not any(_GROUP.match(line) for line in body):
            out += [f"{indent}Parameters:", *body]
            continue
        groups: list[tuple[str | None, list[str]]] = [(None, [])]
        for line in body:
            group = _GROUP.match(line)
            if group:
                groups.append((group.group(2), []))
            else:
                groups[-1][1].append(line)
        for title, items in groups:
            if not any(item.strip() for item in items):
                continue
            if title:
                out += ["", f"{indent}**{title}**", ""]
            while not items[0].strip():
                items.pop(0)
            while not items[-1].strip():
                items.pop()
            out += [f"{indent}Parameters:", *items, ""]
    return "\n".join(out)


def _plain_type(line: str) -> str:
    """`name (`float` or `None`, *optional*, defaults to `None`):` as `name (float | None):` (the default has its own
    column)."""
    item = _ITEM.match(line)
    if not item:
        return line
    kind = re.sub(r",\s*\*optional\*|,\s*defaults to .*$", "", item.group(3)).replace("`", "")
    return f"{item.group(1)}{item.group(2)} ({kind.replace(' or ', ' | ')}):"


def link_references(text: str) -> str:
    def replace(match: re.Match) -> str:
        path = match.group(2)
        name = path.rsplit(".", 1)[-1] if match.group(1) else path
        if path in PUBLIC:
            return f"[`{name}`][trl_margins.{path}]"
        return f"`{name if match.group(1) else path}`"

    return _REFERENCE.sub(replace, text)


class HFDocstrings(griffe.Extension):
    """Rewrite each docstring of the package before griffe parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and obj.path.startswith("trl_margins"):
            obj.docstring.value = link_references(split_parameter_groups(obj.docstring.value))
