"""The old home of the margin logic and the dataset adapters, kept so that existing imports still work.

`trl_margins.margins` now holds the margins (`MARGIN_COLUMN`, `add_margin_column`, the negative-margin policies) and
`trl_margins.adapters` the published-dataset adapters; `LOCAL_FORMATS` is in `trl_margins.loading`. The adapters were
documented under this module (`trl_margins.data.apply_dataset_adapter`), so importing them from here warns; the other
names were internal and are forwarded silently. Nothing in the package imports this module: don't add to it.
"""

from __future__ import annotations

import importlib
import warnings

_DOCUMENTED = {
    name: "adapters"
    for name in (
        "DATASET_ADAPTERS",
        "SHP_MARGIN_TRANSFORMS",
        "TIE_POLICIES",
        "ShpMarginTransform",
        "TiePolicy",
        "adapt_argilla",
        "adapt_reward_annotated",
        "adapt_shp",
        "adapt_ultrafeedback_binarized",
        "apply_dataset_adapter",
    )
}
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
    module = _DOCUMENTED.get(name) or _INTERNAL.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _DOCUMENTED:
        warnings.warn(
            f"`trl_margins.data.{name}` moved to `trl_margins.{module}.{name}`; the old path will be removed.",
            DeprecationWarning,
            stacklevel=2,
        )
    return getattr(importlib.import_module(f"trl_margins.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*_DOCUMENTED, *_INTERNAL])
