"""What the margin configs share: MMPO's fields, their checks, the order of checks around TRL's `__post_init__`, and
the upgrade of a plain TRL config.

Each margin config is a dataclass `MMPO...Config(<fields of this module>, <TRL config>)`: TRL's fields and checks, plus
the fields below. Its `__post_init__` (`MarginFields.__post_init__`) checks this package's fields first, so that a bad
margin field is reported before anything else, then settles the precision on a machine without a GPU
(`trl_margins._compat.settle_devices`), runs TRL's `__post_init__`, and then checks the combinations with TRL's
options, which TRL has normalised by then (`check_knobs`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import TypeVar

from transformers import TrainingArguments

from .._compat import settle_devices
from ..data.margins import NEGATIVE_MARGIN_POLICIES
from ..errors import UsageError
from ..evaluation.calibration import CALIBRATION_BINS

logger = logging.getLogger(__name__)

_SCORE_HELP = (
    "The margin of a pair is `score_chosen - score_rejected`, read from these columns (UltraFeedback's names by "
    "default). Only read when `mmpo_gamma` (or `odpo_alpha`) is set."
)


def check_finite(name: str, value: float | None, low: float = 0.0, none: str | None = None) -> None:
    """A `ValueError` unless `value` is a finite number `>= low` (or None, when `none` says what None means)."""
    if value is None and none is not None:
        return
    if value is None or isinstance(value, bool) or not (math.isfinite(value) and value >= low):
        alternative = f", or None ({none})" if none is not None else ""
        raise UsageError(f"`{name}` must be a finite number >= {low:g}{alternative}; got {value}.")


@dataclass
class MarginFields:
    """The one field every margin config has, MMPO's `mmpo_gamma`, and the order of checks around TRL's."""

    mmpo_gamma: float | None = field(
        default=None,
        metadata={
            "help": "Rationality coefficient gamma of MMPO (`bt_beta` in the paper's code): pairs get the target "
            "probability sigmoid(gamma * margin); KTO's samples the weight sigmoid(gamma * (score - median score)). "
            "None: off (plain DPO, reward modelling or KTO), and no score column is read."
        },
    )

    def __post_init__(self):
        self.check_margin_fields()
        settle_devices(self)
        super().__post_init__()
        self.check_knobs()

    def check_margin_fields(self) -> None:
        """The checks of this package's fields alone, before TRL's."""
        check_finite("mmpo_gamma", self.mmpo_gamma, none="MMPO off")

    def check_knobs(self) -> None:
        """The checks of this package's fields against TRL's options, after TRL's `__post_init__`."""

    def margin_knobs(self) -> list[str]:
        """The knobs of the one loss that are on, as `option=value` strings; empty means TRL's own trainer."""
        return [] if self.mmpo_gamma is None else [f"mmpo_gamma={self.mmpo_gamma}"]


@dataclass
class PairMarginFields(MarginFields):
    """The fields of the configs that train on pairs with margins (DPO, gamma-PO, reward models)."""

    score_chosen_column: str = field(default="score_chosen", metadata={"help": _SCORE_HELP})
    score_rejected_column: str = field(default="score_rejected", metadata={"help": _SCORE_HELP})
    margin_column: str | None = field(
        default=None,
        metadata={"help": "Column with a precomputed margin (>= 0). When set, the score columns are not read."},
    )
    negative_margins: str = field(
        default="error",
        metadata={
            "help": "Pairs whose chosen response scored below the rejected one: 'error' (stop before training), "
            "'swap' (exchange chosen and rejected) or 'drop' (remove). Swaps and drops are logged with a count.",
            "choices": list(NEGATIVE_MARGIN_POLICIES),
        },
    )
    weight_column: str | None = field(
        default=None,
        metadata={
            "help": "Column with a weight w_i >= 0 per pair (finite, not all zero; checked before training, naming "
            "the row). The batch loss becomes mean_i(w_i * loss_i): normalised by the number of pairs, like TRL's "
            "WPO weights, so it composes with gradient accumulation; weights with mean 1 keep the loss scale. "
            "None weights every pair 1."
        },
    )
    calibration_bins: int = field(
        default=CALIBRATION_BINS,
        metadata={"help": "Number of equal-width bins of the expected calibration error logged in evaluation."},
    )

    def check_margin_fields(self) -> None:
        super().check_margin_fields()
        if self.negative_margins not in NEGATIVE_MARGIN_POLICIES:
            raise UsageError(
                f"`negative_margins` must be one of {NEGATIVE_MARGIN_POLICIES}, got {self.negative_margins!r}."
            )
        if self.calibration_bins < 1:
            raise UsageError(f"`calibration_bins` must be >= 1, got {self.calibration_bins}.")
        if self.weight_column is not None and (not isinstance(self.weight_column, str) or not self.weight_column):
            raise UsageError(f"`weight_column` must be a column name or None, got {self.weight_column!r}.")

    @property
    def needs_margins(self) -> bool:
        """Whether a knob reads each pair's margin (MMPO's targets)."""
        return self.mmpo_gamma is not None

    def margin_knobs(self) -> list[str]:
        knobs = super().margin_knobs()
        if self.weight_column is not None:
            knobs.append(f"weight_column={self.weight_column!r}")
        return knobs


_ConfigT = TypeVar("_ConfigT", bound=TrainingArguments)


def upgrade_config(args: TrainingArguments, config_class: type[_ConfigT]) -> _ConfigT:
    """Turn a plain TRL config (`DPOConfig`, `RewardConfig`, `KTOConfig`) into `config_class`, a subclass of its class
    that only adds fields with defaults: the same values, the margin fields at their defaults, and every check run.

    This is what lets `MMPOTrainer` replace `DPOTrainer` (and the other trainers theirs) in a script by changing one
    import: the script's config keeps working and trains as TRL's trainer does.
    """
    if isinstance(args, config_class):
        return args
    upgraded = config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init})
    logger.info(
        "Got a %s; using %s with its defaults for the margin fields.", type(args).__name__, config_class.__name__
    )
    return upgraded
