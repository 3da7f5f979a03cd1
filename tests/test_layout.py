"""The layout's promises (CONTRIBUTING.md): which modules import what, and the old import paths that still work."""

import ast
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trl_margins"
TRAINERS = {"dpo", "gamma_po", "reward", "kto", "trainer_utils"}
# Module -> the package modules it must not import (at run time; `if TYPE_CHECKING:` imports are annotations only)
FORBIDDEN = {
    "losses": TRAINERS | {"cli", "config"},
    "margin_queue": TRAINERS | {"cli", "config"},
    "gap_statistics": TRAINERS | {"cli", "config"},
    "fitting": TRAINERS | {"cli", "config"},
    "evaluation": TRAINERS | {"cli", "config"},
    "margins": TRAINERS | {"cli", "config", "adapters", "recipes"},
    "adapters": TRAINERS | {"cli", "config", "recipes", "demo"},
    "loading": TRAINERS | {"cli", "config", "recipes", "demo"},
    "recipes": TRAINERS | {"cli", "demo"},
    "demo": TRAINERS | {"cli", "recipes"},
    "errors": TRAINERS | {"cli", "config", "margins"},
}


def _package_imports(path: Path) -> set[str]:
    """The package modules (first name below `trl_margins`) that `path` imports, outside `if TYPE_CHECKING:`."""
    package = ["trl_margins", *path.relative_to(PACKAGE).parts[:-1]]
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    modules = []
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            modules += [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            modules.append(base + (node.module.split(".") if node.module else []))
    return {parts[1] for parts in modules if parts[0] == "trl_margins" and len(parts) > 1}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_module_imports_respect_the_layout(module):
    path = PACKAGE / module / "__init__.py" if (PACKAGE / module).is_dir() else PACKAGE / f"{module}.py"
    files = sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]
    imported = set().union(*(_package_imports(f) for f in files)) - {module}
    assert not imported & FORBIDDEN[module], f"{module} imports {sorted(imported & FORBIDDEN[module])}"


def test_documented_old_paths_work_and_warn():
    with pytest.warns(DeprecationWarning, match="trl_margins.adapters.apply_dataset_adapter"):
        from trl_margins.data import apply_dataset_adapter
    with pytest.warns(DeprecationWarning, match="trl_margins.demo.DEMO_RECIPES"):
        from trl_margins.cli import DEMO_RECIPES
    from trl_margins import adapters, demo

    assert apply_dataset_adapter is adapters.apply_dataset_adapter and DEMO_RECIPES is demo.DEMO_RECIPES


def test_undocumented_old_paths_are_forwarded_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from trl_margins.cli import map_key, parse_args, train_main
        from trl_margins.data import LOCAL_FORMATS, MARGIN_COLUMN, add_margin_column
    from trl_margins import loading, margins, recipes
    from trl_margins.cli import arguments

    assert (MARGIN_COLUMN, add_margin_column, LOCAL_FORMATS) == (
        margins.MARGIN_COLUMN,
        margins.add_margin_column,
        loading.LOCAL_FORMATS,
    )
    assert map_key is recipes.map_key and parse_args is arguments.parse_args and callable(train_main)
    with pytest.raises(ImportError):
        from trl_margins.data import nothing_like_this  # noqa: F401
