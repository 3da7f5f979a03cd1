"""Configuration dataclasses: TRL configs plus the margin knobs of MMPO and gamma-PO."""

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field

from trl import DPOConfig

from .data import NEGATIVE_MARGIN_POLICIES

logger = logging.getLogger(__name__)

_SCORE_HELP = (
    "The margin of a pair is `score_chosen - score_rejected`, read from these columns (UltraFeedback's names by "
    "default). Only read when `mmpo_gamma` is set."
)


@dataclass
class MMPOConfig(DPOConfig):
    r"""
    Configuration class for [`MMPOTrainer`]: [`~trl.DPOConfig`] plus Margin Matching Preference Optimization.

    MMPO (Kim et al., Section 3.2) replaces DPO's hard target (the chosen response is preferred with probability 1)
    by the Bradley-Terry probability of the pair's quality margin `m`, `p = sigmoid(mmpo_gamma * m)`, and trains with
    the soft-target cross-entropy `-p log sigmoid(z) - (1 - p) log sigmoid(-z)`, where `z` is DPO's implicit reward
    gap. With `mmpo_gamma=None` (the default) the loss is exactly DPO's sigmoid loss.

    Parameters:
        mmpo_gamma (`float` or `None`, *optional*, defaults to `None`):
            Rationality coefficient `gamma` of the target probability `sigmoid(gamma * m)` (`bt_beta` in the paper's
            code; the paper uses 2.2 for Gemma-2B, 0.3 for Gemma-7B and 1.1 for Llama-3-8B on UltraFeedback). `None`
            trains on hard labels (plain DPO) and needs no score columns; `0` makes every target 0.5.
        score_chosen_column (`str`, *optional*, defaults to `"score_chosen"`):
            Column with the score of the chosen response.
        score_rejected_column (`str`, *optional*, defaults to `"score_rejected"`):
            Column with the score of the rejected response.
        margin_column (`str` or `None`, *optional*, defaults to `None`):
            Column with a precomputed margin `m >= 0`; when set, the score columns are not read.
        negative_margins (`str`, *optional*, defaults to `"error"`):
            What to do with pairs whose chosen response scored below the rejected one: `"error"` stops before
            training, `"swap"` exchanges chosen and rejected, `"drop"` removes the pair (both are logged with a count).
        reference_free (`bool`, *optional*, defaults to `False`):
            Use SimPO's length-normalised, reference-free rewards `beta / |y| * log pi(y)` instead of DPO's implicit
            rewards. No reference model is loaded. SimPO's beta is much larger than DPO's (2.5-10).
        calibration_bins (`int`, *optional*, defaults to `15`):
            Number of equal-width bins of the expected calibration error logged in evaluation.

    `label_smoothing` (from [`~trl.DPOConfig`]) applies conservative-DPO smoothing on top: the target becomes
    `(1 - eps) * p + eps * (1 - p)`. `loss_type` must stay `["sigmoid"]`: the soft-target loss replaces it.
    """

    mmpo_gamma: float | None = field(
        default=None,
        metadata={
            "help": "Rationality coefficient gamma of the MMPO target probability sigmoid(gamma * margin) (`bt_beta` "
            "in the paper's code). None trains on hard labels (plain DPO) and needs no score columns."
        },
    )
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
    reference_free: bool = field(
        default=False,
        metadata={
            "help": "Use SimPO's length-normalised, reference-free rewards beta/|y| * log pi(y) instead of DPO's "
            "implicit rewards. No reference model is loaded."
        },
    )
    calibration_bins: int = field(
        default=15, metadata={"help": "Number of equal-width bins of the expected calibration error in evaluation."}
    )

    def __post_init__(self):
        super().__post_init__()
        self._validate_margin_args()

    def _validate_margin_args(self) -> None:
        if self.mmpo_gamma is not None and (not math.isfinite(self.mmpo_gamma) or self.mmpo_gamma < 0):
            raise ValueError(
                f"`mmpo_gamma` must be a finite number >= 0, or None for hard labels; got {self.mmpo_gamma}."
            )
        if self.negative_margins not in NEGATIVE_MARGIN_POLICIES:
            raise ValueError(
                f"`negative_margins` must be one of {NEGATIVE_MARGIN_POLICIES}, got {self.negative_margins!r}."
            )
        if list(self.loss_type) != ["sigmoid"]:
            raise ValueError(
                f"{type(self).__name__} replaces DPO's loss with the soft-target loss, so `loss_type` must be "
                f"['sigmoid'] (its hard-label special case); got {self.loss_type}."
            )
        unsupported = {
            "ld_alpha": (self.ld_alpha, None),
            "f_divergence_type": (self.f_divergence_type, "reverse_kl"),
            "use_weighting": (self.use_weighting, False),
        }
        for name, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"`{name}={value!r}` is not supported by {type(self).__name__}; leave it at {default!r}."
                )
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"`label_smoothing` must lie in [0, 0.5), got {self.label_smoothing}.")
        if self.calibration_bins < 1:
            raise ValueError(f"`calibration_bins` must be >= 1, got {self.calibration_bins}.")
        if self.reference_free and self.precompute_ref_log_probs:
            raise ValueError("`reference_free=True` uses no reference model: unset `precompute_ref_log_probs`.")
        if self.reference_free and self.sync_ref_model:
            raise ValueError("`reference_free=True` uses no reference model: unset `sync_ref_model`.")


def upgrade_config(args: DPOConfig, config_class: type[MMPOConfig]) -> MMPOConfig:
    """Turn a plain `DPOConfig` into `config_class` with the margin fields at their defaults.

    This is what lets `MMPOTrainer` replace `DPOTrainer` in a script by changing one import: the script's `DPOConfig`
    keeps working and trains with hard labels, exactly as before.
    """
    if isinstance(args, config_class):
        return args
    upgraded = copy.copy(args)
    # Same dataclass layout plus fields with defaults: copy the processed state, then fill in the new fields.
    upgraded.__class__ = config_class
    parent_fields = {f.name for f in dataclasses.fields(args)}
    for f in dataclasses.fields(config_class):
        if f.name not in parent_fields:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(upgraded, f.name, default)
    upgraded._validate_margin_args()
    logger.info(
        "Got a %s; using %s with its defaults for the margin fields.", type(args).__name__, config_class.__name__
    )
    return upgraded
