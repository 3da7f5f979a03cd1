"""Dataset adapters: the public datasets the papers trained on, turned into TRL's preference format with score columns.

One module per published dataset, each with one `adapt_*` function; the checks and conversions they share are in
`_common`. A recipe selects one by name: `dataset_adapter: shp` plus `dataset_adapter_kwargs: {...}`; the Python API
is `apply_dataset_adapter(name, dataset, **options)` or the `adapt_*` function itself. A new adapter is a new module
here, registered in `DATASET_ADAPTERS`.

Adapters import `datasets`, `errors` and `margins` (for the score checks) only: no trainer, no TRL, no command line.
"""

from __future__ import annotations

from collections.abc import Callable

from datasets import Dataset, DatasetDict

from ...errors import UsageError
from .argilla import TIE_POLICIES, TiePolicy, adapt_argilla
from .reward_annotated import adapt_reward_annotated
from .shp import SHP_MARGIN_TRANSFORMS, ShpMarginTransform, adapt_shp
from .ultrafeedback import adapt_ultrafeedback_binarized

__all__ = [
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
]

DATASET_ADAPTERS: dict[str, Callable[..., Dataset]] = {
    "ultrafeedback_binarized": adapt_ultrafeedback_binarized,
    "shp": adapt_shp,
    "reward_annotated": adapt_reward_annotated,
    "argilla": adapt_argilla,
}
"""Dataset adapters by the name a recipe uses (`dataset_adapter: shp`)."""


def apply_dataset_adapter(name: str | None, dataset: Dataset | DatasetDict, **kwargs) -> Dataset | DatasetDict:
    """Run the adapter registered as `name` on `dataset` (each split of a `DatasetDict`), with `kwargs` as its options.

    `name=None` returns the dataset unchanged. An unknown name raises a UsageError listing the known ones.
    """
    if name is None:
        if kwargs:
            raise UsageError(
                f"Dataset adapter options {sorted(kwargs)} were given, but no dataset adapter to use them."
            )
        return dataset
    if name not in DATASET_ADAPTERS:
        raise UsageError(
            f"Unknown dataset adapter {name!r}. Known adapters: {sorted(DATASET_ADAPTERS)} (or none, to use the "
            "dataset as it is)."
        )
    adapter = DATASET_ADAPTERS[name]
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: adapter(part, **kwargs) for split, part in dataset.items()})
    return adapter(dataset, **kwargs)
