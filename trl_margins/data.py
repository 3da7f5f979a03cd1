"""The old home of the margin logic and the dataset adapters, kept so that existing imports still work.

`trl_margins.margins` now holds the margins (`MARGIN_COLUMN`, `add_margin_column`, the negative-margin policies) and
`trl_margins.adapters` the published-dataset adapters; `LOCAL_FORMATS` is in `trl_margins.loading`. The adapters were
documented under this module (`trl_margins.data.apply_dataset_adapter`), so importing them from here warns; the other
names were internal and are forwarded silently. Nothing in the package imports this module: don't add to it.
"""

from __future__ import annotations

import importlib
import warnings

_INTERNAL = {
    "MARGIN_COLUMN": "margins",
    "NEGATIVE_MARGIN_POLICIES": "margins",
    "NegativeMarginPolicy": "margins",
    "add_margin_column": "margins",
    "_check_number": "margins",
    "_column_values": "margins",
    "LOCAL_FORMATS": "loading",
}


def __getattr__(name: str):
    if name in _INTERNAL:
        return getattr(importlib.import_module(f"trl_margins.{_INTERNAL[name]}"), name)
    adapters = importlib.import_module("trl_margins.adapters")
    if name not in adapters.__all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"`trl_margins.data.{name}` moved to `trl_margins.adapters.{name}`; the old path will be removed.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(adapters, name)


def __dir__() -> list[str]:
    return sorted([*importlib.import_module("trl_margins.adapters").__all__, *_INTERNAL])
