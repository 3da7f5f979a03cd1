"""Datasets and models by name: a local file (by its suffix), a hub dataset, or the bundled VADER pairs
(`trl_margins:vader`); a local model folder, a hub id, or a bundled model (`trl_margins:smollm2`,
`trl_margins:minilm`).

The commands read their datasets and name their models through here, so that every command takes the same names
and fails the same way on a wrong one: at once, in one line. Imports `datasets`, `assets` and `errors` only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError, DatasetNotFoundError

from ..errors import DataError, UsageError
from .assets import (
    BUNDLED_DATASET,
    BUNDLED_MODEL,
    BUNDLED_PROMPTS,
    BUNDLED_REWARD_BACKBONE,
    VADER_SPLITS,
    load_bundled_pairs,
    load_vader_prompts,
    minilm_path,
    smollm2_path,
)

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
            f"dataset {path!r} could not be loaded: {e}. A hub dataset needs network access, or a copy in the Hugging "
            "Face cache; a local dataset is a file or folder path that exists."
        ) from e


def _load_file(path: Path, **kwargs) -> Dataset | DatasetDict:
    """`load_dataset` of a local file, with an empty or unreadable file as one `DataError` naming the file."""
    if path.stat().st_size == 0 or (path.stat().st_size < 1 << 16 and not path.read_bytes().strip()):
        raise DataError(f"dataset file {path} is empty: it holds no rows.")
    builder_log = logging.getLogger("datasets.packaged_modules")
    level = builder_log.level
    builder_log.setLevel(logging.CRITICAL)  # a broken file is reported below, once, not also by the builder
    try:
        dataset = load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), **kwargs)
    except DatasetGenerationError as e:
        cause = e.__cause__ or e
        reason = " ".join(str(cause).split())[:300]
        raise DataError(
            f"dataset file {path} could not be read as {path.suffix[1:]} ({type(cause).__name__}: {reason}). Check "
            "that it is valid: one JSON object per line for .jsonl, one JSON document for .json."
        ) from e
    finally:
        builder_log.setLevel(level)
    parts = dataset.values() if isinstance(dataset, DatasetDict) else [dataset]
    if not any(len(part) for part in parts):
        raise DataError(f"dataset file {path} holds no rows.")
    return dataset


def check_split(dataset: DatasetDict, split: str, option: str) -> None:
    """A `UsageError` naming `option` when `dataset` has no `split`."""
    if split not in dataset:
        raise UsageError(
            f"the dataset has no split {split!r}; its splits are {sorted(dataset)}: choose one with `{option}`."
        )


def _bundled(split: str, option: str, name: str = BUNDLED_DATASET) -> Dataset:
    if split not in VADER_SPLITS:
        raise UsageError(f"{name} has the splits {list(VADER_SPLITS)}, not {split!r}: choose one with `{option}`.")
    return load_vader_prompts(split) if name == BUNDLED_PROMPTS else load_bundled_pairs(split)


def load_source(path: str, name: str | None = None, **kwargs) -> Dataset | DatasetDict:
    if path in (BUNDLED_DATASET, BUNDLED_PROMPTS):
        split = kwargs.get("split")
        if split is not None:
            return _bundled(split, "split", path)
        return DatasetDict({s: _bundled(s, "split", path) for s in VADER_SPLITS})
    suffix = Path(path).suffix
    if suffix in LOCAL_FORMATS and not Path(path).is_file():  # else `load_dataset` looks for it on the hub
        raise UsageError(f"dataset file {path} not found")
    if Path(path).is_file() and suffix in LOCAL_FORMATS:
        kwargs.setdefault("split", None)
        return _load_file(Path(path), **kwargs)
    return _load_from_hub(path, name, **kwargs)


def load_preference_dataset(name_or_path: str, split: str | None = None, config: str | None = None):
    """A local file (by extension) or a hub dataset, as one `datasets.Dataset`."""
    if name_or_path in (BUNDLED_DATASET, BUNDLED_PROMPTS):  # as `trl-margins mmpo` trains and evaluates on them
        return _bundled(split or "test", "--split", name_or_path)
    path = Path(name_or_path)
    if path.suffix in LOCAL_FORMATS and not path.is_file():  # else `load_dataset` looks for it on the hub
        raise UsageError(f"dataset file {path} not found")
    if path.is_file():
        if path.suffix not in LOCAL_FORMATS:
            raise UsageError(f"Can't read {path}: use one of {sorted(LOCAL_FORMATS)}, or a hub dataset name.")
        if split not in (None, "train"):
            logger.warning("A single local file has one split; ignoring --split %s.", split)
        return _load_file(path, split="train")
    try:
        dataset = _load_from_hub(name_or_path, config, split=split)
    except ValueError as e:
        if "split" not in str(e).lower() or isinstance(e, UsageError):
            raise
        raise UsageError(f"{name_or_path} has no split {split!r} ({e}): choose one with `--split`.") from e
    if isinstance(dataset, DatasetDict):
        if len(dataset) == 1:
            return next(iter(dataset.values()))
        if "test" in dataset:
            return dataset["test"]
        raise UsageError(f"{name_or_path} has splits {sorted(dataset)}: choose one with `--split`.")
    return dataset


# ---- models by name ---------------------------------------------------------------------------------------------
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def resolve_model(name: str, option: str) -> str:
    """The folder or hub id a command loads for `name`: a bundled model's folder, a local folder, or a hub id.

    Fails at once, naming `option`, on a path that exists but is no folder, and on one that is not a folder and
    cannot be a hub id either (an absolute or `./` path, more than one `/`, or a relative path whose first folder
    exists here): loading it would otherwise wait for the hub and then fail with a message about repository names.
    """
    if name == BUNDLED_MODEL:
        return smollm2_path()
    if name == BUNDLED_REWARD_BACKBONE:
        return minilm_path()
    path = Path(name).expanduser()
    if path.is_dir():
        return name
    if path.exists():
        raise UsageError(f"{option} {name} is a file, not a model folder: give the folder that holds config.json.")
    fix = f"Give a model folder that exists, a hub id (`organisation/name`), or {BUNDLED_MODEL}."
    if name.startswith(("/", "./", "../", "~")) or not _HUB_ID.fullmatch(name):
        raise UsageError(f"{option} {name}: no such folder, and it is no hub id either. {fix}")
    if len(path.parts) > 1 and Path(path.parts[0]).is_dir():
        folder = path.parts[0]
        raise UsageError(f"{option} {name}: no such folder ({folder}/ is a folder here, so this is no hub id). {fix}")
    return name
