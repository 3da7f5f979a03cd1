"""Dataset mixtures: the alignment handbook's `dataset_mixture` and older `dataset_mixer`, and TRL's
`DatasetMixtureConfig`, each keeping the score columns that the margins need through a mixture's `columns` selection.

The columns a run needs come in as `needed = (required, optional)` column names: the command line works them out from
its arguments (`trl_margins.cli.train`). Imports `datasets`, TRL's `get_dataset`, `loading` and `errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from datasets import Dataset, DatasetDict, IterableDataset, concatenate_datasets, load_dataset
from trl import DatasetMixtureConfig, get_dataset

from ..errors import UsageError
from .loading import load_source

logger = logging.getLogger(__name__)

ColumnNeeds = tuple[list[str], list[str]]
"""`(required, optional)`: columns a mixture's `columns` selection must keep, and ones it keeps where present."""


def _column_names(dataset: Dataset | IterableDataset) -> list[str] | None:
    names = dataset.column_names
    if names is None and dataset.features is not None:
        names = list(dataset.features)
    return names


def _with_score_columns(columns: list[str], available: list[str] | None, needed: ColumnNeeds, where: str):
    required, optional = needed
    if available is None:  # a streamed dataset may not know its columns: trust the configuration
        return list(dict.fromkeys([*columns, *required]))
    missing = [c for c in required if c not in available]
    if missing:
        raise UsageError(
            f"{where} lists `columns` {columns}, but the dataset has no {missing} column, which `mmpo_gamma` needs "
            f"for the margins. Columns present: {sorted(available)}. Set `score_chosen_column` / "
            "`score_rejected_column` (or `margin_column`), or a `dataset_adapter` that makes them."
        )
    extra = [c for c in [*required, *optional] if c in available and c not in columns]
    if extra:
        logger.info("%s: keeping the score column(s) %s besides the listed `columns`.", where, extra)
    return [*columns, *extra]


def handbook_mixture(mixture: dict, needed: ColumnNeeds, streaming: bool = False) -> DatasetDict:
    """The alignment handbook's `get_dataset`: each dataset's `columns`, `weight` (a shuffled fraction), then one
    shuffled concatenation, split off a test set when `test_split_size` is set."""
    unknown = set(mixture) - {"datasets", "seed", "test_split_size"}
    if unknown or not isinstance(mixture.get("datasets"), list):
        raise UsageError(
            "`dataset_mixture` must be {datasets: [{id, config, split, columns, weight}], seed, test_split_size}"
            + (f"; unknown key(s) {sorted(unknown)}" if unknown else "")
        )
    seed = mixture.get("seed", 0)
    parts = []
    for i, entry in enumerate(mixture["datasets"]):
        unknown = set(entry) - {"id", "config", "split", "columns", "weight"}
        if unknown or "id" not in entry:
            raise UsageError(f"`dataset_mixture.datasets[{i}]` needs `id` and takes config, split, columns, weight.")
        where = f"`dataset_mixture.datasets[{i}]` ({entry['id']})"
        dataset = load_source(entry["id"], entry.get("config"), split=entry.get("split", "train"), streaming=streaming)
        if entry.get("columns") is not None:
            columns = _with_score_columns(list(entry["columns"]), _column_names(dataset), needed, where)
            dataset = dataset.select_columns(columns)
        if entry.get("weight") is not None:
            if isinstance(dataset, IterableDataset):
                raise UsageError(f"{where}: `weight` needs the dataset's length, which streaming doesn't give.")
            dataset = dataset.shuffle(seed=seed).select(range(int(len(dataset) * entry["weight"])))
        parts.append(dataset)
    if not parts:
        raise UsageError("`dataset_mixture.datasets` is empty.")
    combined = concatenate_datasets(parts).shuffle(seed=seed)
    if mixture.get("test_split_size") is not None:
        return combined.train_test_split(test_size=mixture["test_split_size"], seed=seed)
    return DatasetDict({"train": combined})


def handbook_mixer(
    mixer: dict[str, float], splits: Sequence[str] | None = None, configs: Sequence[str | None] | None = None
) -> DatasetDict:
    """The older handbook's `mix_datasets`: a fraction of each dataset's train splits, its test splits whole."""
    splits = splits or ["train", "test"]
    configs = configs or [None] * len(mixer)
    if len(configs) != len(mixer):
        raise UsageError("`dataset_configs` must name one configuration per `dataset_mixer` dataset.")
    train_parts, test_parts = [], []
    for (name, fraction), config in zip(mixer.items(), configs, strict=True):
        for split in splits:
            dataset = load_source(name, config, split=split)
            if "train" in split:
                train_parts.append(dataset.select(range(int(fraction * len(dataset)))))
            elif "test" in split:
                test_parts.append(dataset)
            else:
                raise UsageError(f"`dataset_splits` entry {split!r} names neither a train nor a test split.")
    result = DatasetDict()
    if train_parts:
        result["train"] = concatenate_datasets(train_parts).shuffle(seed=42)
    if test_parts:
        result["test"] = concatenate_datasets(test_parts).shuffle(seed=42)
    return result


def trl_mixture(dataset_args: DatasetMixtureConfig, needed: ColumnNeeds) -> DatasetDict:
    """TRL's `get_dataset`, after adding the score columns to each dataset's `columns`."""
    for i, entry in enumerate(dataset_args.datasets):
        if entry.columns is not None:
            probe = load_dataset(
                entry.path, entry.name, data_dir=entry.data_dir, data_files=entry.data_files, split=entry.split,
                streaming=dataset_args.streaming,
            )  # fmt: skip
            where = f"`datasets[{i}]` ({entry.path})"
            entry.columns = _with_score_columns(list(entry.columns), _column_names(probe), needed, where)
    return get_dataset(dataset_args)
