"""The layout's promises (CONTRIBUTING.md): imports run downward only, with no cycle, and only `_compat.py` touches
the private code of TRL and transformers."""

from __future__ import annotations

import ast
import importlib
import inspect
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trl_margins"

# The layers, lowest first: a module may import its own subpackage and the layers below its own, never above
LAYERS = [{"errors", "losses", "state", "_compat"}, {"data"}, {"evaluation"}, {"trainers"}, {"pairs"}, {"cli"}]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
SEAM = PACKAGE / "_compat.py"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "resources" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The package modules `path` imports (dotted, below `trl_margins`), outside `if TYPE_CHECKING:` blocks."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + (node.module.split(".") if node.module else []))
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # `from . import x` names a module
    known = {_module_name(p) for p in _modules()}
    return {m for m in found if m in known and m != "trl_margins"}


def _top(module: str) -> str:
    return module.split(".")[1]


@pytest.mark.parametrize("path", [p for p in _modules() if p.parent != PACKAGE or p.name != "__init__.py"], ids=str)
def test_imports_run_downward(path):
    """Each module imports only its own subpackage and the layers below its own."""
    own = _top(_module_name(path))
    upward = sorted(
        m for m in _imports(path) if _top(m) != own and LAYER_OF[_top(m)] >= LAYER_OF[own] and not _base_pair(own, m)
    )
    assert not upward, f"{_module_name(path)} imports {upward}, which are not below its layer"


def _base_pair(own: str, imported: str) -> bool:
    # In the lowest layer, only `_compat` may use `errors` (for the one-line errors of its process policy)
    return own == "_compat" and _top(imported) == "errors"


def test_no_import_cycle():
    graph = {_module_name(p): _imports(p) for p in _modules()}
    visiting, done = set(), set()

    def visit(node, path):
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join([*path, node])}"
        visiting.add(node)
        for child in graph.get(node, ()):
            visit(child, [*path, node])
        visiting.discard(node)
        done.add(node)

    for module in graph:
        visit(module, [])


# ---- one seam to TRL's private code ---------------------------------------------------------------------------------
_UPSTREAM_SOURCES = {
    "trl": ["trainer/base_trainer.py", "trainer/dpo_trainer.py", "trainer/reward_trainer.py", "trainer/kto_trainer.py",
            "trainer/dpo_config.py", "trainer/reward_config.py", "trainer/kto_config.py", "trainer/utils.py"],
    "transformers": ["trainer.py", "training_args.py", "modeling_utils.py", "configuration_utils.py",
                     "tokenization_utils_base.py", "trainer_utils.py"],
}  # fmt: skip


@cache
def _upstream_private_names() -> frozenset[str]:
    """Every private name (one leading underscore) that TRL's trainers and configs, and the transformers classes they
    build on, define: methods, class attributes, attributes set on `self`, module-level functions."""
    names = set()
    for package, files in _UPSTREAM_SOURCES.items():
        root = Path(importlib.import_module(package).__file__).parent
        for file in files:
            for node in ast.walk(ast.parse((root / file).read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
    return frozenset(n for n in names if n.startswith("_") and not n.startswith("__"))


def _upstream_module_names(tree: ast.Module) -> set[str]:
    """Names bound to TRL or transformers modules by this module's imports (`import trl.x as m`, `from trl import
    trainer`)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {
                (a.asname or a.name.split(".")[0]) for a in node.names if a.name.split(".")[0] in _UPSTREAM_SOURCES
            }
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] in _UPSTREAM_SOURCES:
            module = importlib.import_module(node.module)
            bound |= {a.asname or a.name for a in node.names if inspect.ismodule(getattr(module, a.name, None))}
    return bound


def _seam_violations(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    tree = ast.parse(path.read_text())
    private = _upstream_private_names()
    modules = _upstream_module_names(tree)
    # A method or class attribute of ours with an upstream private name overrides TRL's; a module function does not
    in_class = {id(child) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef) for child in cls.body}
    found = []
    for node in ast.walk(tree):
        line = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] in _UPSTREAM_SOURCES:
            found += [f"{line} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr in private:
            found.append(f"{line} reads `{ast.unparse(node)}`")
        elif (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in private and id(node) in in_class
        ):
            found.append(f"{line} overrides `{node.name}`")
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in private and id(node) in in_class:
                    found.append(f"{line} sets `{target.id}`")  # a class attribute of TRL's, such as `_name`
                elif isinstance(target, ast.Attribute) and ast.unparse(target.value) in modules:
                    found.append(f"{line} patches `{ast.unparse(target)}`")
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "setattr" and node.args[:1]:
            patched = ast.unparse(node.args[0])
            found += [f"{line} patches `{patched}`"] if patched in modules else []
    return found


def test_only_the_seam_touches_trl_private_code():
    violations = [v for path in _modules() if path != SEAM for v in _seam_violations(path)]
    assert not violations, "outside trl_margins/_compat.py:\n" + "\n".join(violations)


def test_the_seam_check_finds_what_it_must(tmp_path):
    """The check itself, on code that does each thing it must refuse."""
    offender = tmp_path / "offender.py"
    offender.write_text(
        "import trl.trainer.dpo_trainer as dpo\n"
        "from trl.trainer.utils import _is_fsdp\n"
        "class T:\n"
        "    _name = 'X'\n"
        "    def _compute_loss(self, model, inputs, return_outputs):\n"
        "        return self._metrics, super()._prepare_dataset\n"
        "dpo.create_model_from_path = None\n"
        "setattr(dpo, 'x', 1)\n"
    )
    found = " | ".join(_seam_violations(offender, root=tmp_path))
    expected = [
        "imports trl.trainer.utils._is_fsdp",
        "sets `_name`",
        "overrides `_compute_loss`",
        "reads `self._metrics`",
        "reads `super()._prepare_dataset`",
        "patches `dpo.create_model_from_path`",
        "patches `dpo`",
    ]
    assert [e for e in expected if e not in found] == [], found
    # And on the real seam, which does touch TRL's private hooks and metric store
    seam = " | ".join(_seam_violations(SEAM))
    assert "overrides `_compute_loss`" in seam and "reads `trainer._metrics`" in seam, seam
