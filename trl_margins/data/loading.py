"""Datasets by name: a local file (by its suffix), a hub dataset, or the bundled VADER pairs (`trl_margins:vader`).

The commands read their datasets through here, so that every command takes the same names. This module imports
`datasets`, `assets` and `errors` only: no trainer, no TRL, no command line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetNotFoundError

from ..errors import UsageError
from .assets import BUNDLED_DATASET, VADER_SPLITS, load_bundled_pairs

logger = logging.getLogger(__name__)

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
"""The `datasets` builder of each local file type that the commands read as a dataset (by its suffix)."""


def _load_from_hub(path: str, name: str | None = None, **kwargs):
    """`load_dataset` of a hub id, with the two ways it fails for a user (no network or cache, or no such dataset)
    as one usage error that names the dataset and what to check, not a traceback."""
    try:
        return load_dataset(path, name, **kwargs)
    except DatasetNotFoundError as e:
        raise UsageError(f"dataset {path!r} not found: not a local file or folder, nor a hub dataset ({e}).") from e
    except ConnectionError as e:
        raise UsageError(
            f"dataset {path!r} could not be loaded: {e}. A hub dataset needs network access, or a copy in the "
            "Hugging Face cache; a local dataset is a file or folder path that exists."
        ) from e


def load_source(path: str, name: str | None = None, **kwargs) -> Dataset | DatasetDict:
    if path == BUNDLED_DATASET:
        split = kwargs.get("split")
        if split is not None:
            return load_bundled_pairs(split)
        return DatasetDict({s: load_bundled_pairs(s) for s in VADER_SPLITS})
    suffix = Path(path).suffix
    if suffix in LOCAL_FORMATS and not Path(path).is_file():  # else `load_dataset` looks for it on the hub
        raise UsageError(f"dataset file {path} not found")
    if Path(path).is_file() and suffix in LOCAL_FORMATS:
        kwargs.setdefault("split", None)
        return load_dataset(LOCAL_FORMATS[suffix], data_files=path, **kwargs)
    return _load_from_hub(path, name, **kwargs)


def load_preference_dataset(name_or_path: str, split: str | None = None, config: str | None = None):
    """A local file (by extension) or a hub dataset, as one `datasets.Dataset`."""
    if name_or_path == BUNDLED_DATASET:  # the pairs exactly as `trl-margins mmpo` trains and evaluates on them
        return load_bundled_pairs(split or "test")
    path = Path(name_or_path)
    if path.suffix in LOCAL_FORMATS and not path.is_file():  # else `load_dataset` looks for it on the hub
        raise UsageError(f"dataset file {path} not found")
    if path.is_file():
        if path.suffix not in LOCAL_FORMATS:
            raise UsageError(f"Can't read {path}: use one of {sorted(LOCAL_FORMATS)}, or a hub dataset name.")
        if split not in (None, "train"):
            logger.warning("A single local file has one split; ignoring --split %s.", split)
        return load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
    dataset = _load_from_hub(name_or_path, config, split=split)
    if isinstance(dataset, DatasetDict):
        if len(dataset) == 1:
            return next(iter(dataset.values()))
        if "test" in dataset:
            return dataset["test"]
        raise UsageError(f"{name_or_path} has splits {sorted(dataset)}: choose one with --split.")
    return dataset
