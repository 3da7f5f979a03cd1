"""Configuration dataclasses: TRL configs plus the margin knobs of MMPO and gamma-PO."""

import copy
import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import TypeVar

from transformers import TrainingArguments
from trl import DPOConfig, KTOConfig, RewardConfig

from .losses import OFFSET_SCALINGS
from .margins import NEGATIVE_MARGIN_POLICIES
from .trl_compat import refuse_liger_bypass

logger = logging.getLogger(__name__)

REWARD_TYPES = ("dpo", "simpo")
KNOB_LOSS_TYPES = ("sigmoid", "sft")
"""The `loss_type`s that combine with a knob on: the soft-target loss (in place of 'sigmoid') and RPO's 'sft'."""

_SCORE_HELP = (
    "The margin of a pair is `score_chosen - score_rejected`, read from these columns (UltraFeedback's names by "
    "default). Only read when `mmpo_gamma` is set."
)


def has_accelerator() -> bool:
    """Whether a GPU (or XLA / MPS device) is there to train on."""
    import torch
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    mps = getattr(torch.backends, "mps", None)
    return (
        torch.cuda.is_available()
        or is_torch_bf16_gpu_available()
        or is_torch_xla_available()
        or (mps is not None and mps.is_available())
    )


def _before_trl_post_init(config, validate=None) -> None:
    """What the margin configs do before TRL's `__post_init__`: report a bad margin field first, pass TRL's default
    `gradient_checkpointing` under its transformers 5 name, and, without a GPU, leave bf16 and pinned memory off.

    TRL's configs turn an unset `bf16` on, and transformers then refuses to start on a machine without a GPU, so a
    script that runs on a GPU stops on a CPU at its config. Left unset there, bf16 stays off (float32). A `bf16=True`
    that the user wrote is kept, and transformers' error about it too.
    """
    (validate or _validate_mmpo_fields)(config)
    if getattr(config, "activation_checkpointing", False) is None:
        # TRL defaults the old name `gradient_checkpointing` to True, which transformers 5 warns about on every
        # config: the same value under the new name
        config.activation_checkpointing = config.gradient_checkpointing
    if has_accelerator():
        return
    # Pinned memory only speeds up copies to a GPU: without one it does nothing, and torch warns on every loader
    config.dataloader_pin_memory = False
    if config.bf16 is None and not config.fp16:
        logger.info("No GPU: bf16 (TRL's default) is off, training in float32.")
        config.bf16 = False


def _validate_mmpo_fields(config) -> None:
    """Checks shared by every config with MMPO's fields."""
    if config.mmpo_gamma is not None and (not math.isfinite(config.mmpo_gamma) or config.mmpo_gamma < 0):
        raise ValueError(
            f"`mmpo_gamma` must be a finite number >= 0, or None for hard labels; got {config.mmpo_gamma}."
        )
    if config.negative_margins not in NEGATIVE_MARGIN_POLICIES:
        raise ValueError(
            f"`negative_margins` must be one of {NEGATIVE_MARGIN_POLICIES}, got {config.negative_margins!r}."
        )
    if config.calibration_bins < 1:
        raise ValueError(f"`calibration_bins` must be >= 1, got {config.calibration_bins}.")
    if config.weight_column is not None and (not isinstance(config.weight_column, str) or not config.weight_column):
        raise ValueError(f"`weight_column` must be a column name or None, got {config.weight_column!r}.")


def _validate_beta_dpo_fields(config) -> None:
    alpha, keep, momentum = config.beta_dpo_alpha, config.beta_dpo_keep_ratio, config.beta_dpo_momentum
    if alpha is not None and not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"`beta_dpo_alpha` must be a finite number >= 0, or None; got {alpha}.")
    if not (isinstance(keep, (int, float)) and 0.0 < keep <= 1.0):
        raise ValueError(f"`beta_dpo_keep_ratio` must lie in (0, 1], got {keep}.")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
        raise ValueError(f"`beta_dpo_momentum` must lie in [0, 1), got {momentum}.")
    if alpha is None:
        # Without the knob these would silently do nothing
        defaults = (("keep_ratio", keep, 0.8), ("momentum", momentum, 0.9))
        changed = [f"`beta_dpo_{name}={value}`" for name, value, default in defaults if value != default]
        if changed:
            raise ValueError(f"{', '.join(changed)} without `beta_dpo_alpha` does nothing: set `beta_dpo_alpha`.")


@dataclass
class MMPOFields:
    """The MMPO fields that `MMPOConfig` and `MMPORewardConfig` share (documented in those classes)."""

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
    calibration_bins: int = field(
        default=15, metadata={"help": "Number of equal-width bins of the expected calibration error in evaluation."}
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


@dataclass
class MMPOConfig(MMPOFields, DPOConfig):
    r"""
    Configuration class for [`MMPOTrainer`]: [`~trl.DPOConfig`] plus Margin Matching Preference Optimization.

    MMPO (Kim et al., Section 3.2) replaces DPO's hard target (the chosen response is preferred with probability 1)
    by the Bradley-Terry probability of the pair's quality margin `m`, `p = sigmoid(mmpo_gamma * m)`, and trains with
    the soft-target cross-entropy `-p log sigmoid(z) - (1 - p) log sigmoid(-z)`, where `z` is DPO's implicit reward
    gap. With `mmpo_gamma=None` (the default) the loss is exactly DPO's sigmoid loss.

    Parameters:
        mmpo_gamma (`float` or `None`, *optional*, defaults to `None`):
            Rationality coefficient `gamma` of the target probability `sigmoid(gamma * m)` (`bt_beta` in the paper's
            code; the paper's Table 8 uses 2.2 for 2B and 1.1 for 7B/8B models on UltraFeedback, 0.15 and 0.3 on SHP).
            `None` trains on hard labels (plain DPO) and needs no score columns; `0` makes every target 0.5.
        score_chosen_column (`str`, *optional*, defaults to `"score_chosen"`):
            Column with the score of the chosen response.
        score_rejected_column (`str`, *optional*, defaults to `"score_rejected"`):
            Column with the score of the rejected response.
        margin_column (`str` or `None`, *optional*, defaults to `None`):
            Column with a precomputed margin `m >= 0`; when set, the score columns are not read.
        negative_margins (`str`, *optional*, defaults to `"error"`):
            What to do with pairs whose chosen response scored below the rejected one: `"error"` stops before
            training, `"swap"` exchanges chosen and rejected, `"drop"` removes the pair (both are logged with a count).
        reward_type (`str`, *optional*, defaults to `"dpo"`):
            The reward `z` is built from: `"dpo"`, DPO's implicit reward `beta * log pi/pi_ref(y)`; `"simpo"`,
            SimPO's length-normalised, reference-free reward `beta / |y| * log pi(y)` (no reference model is loaded;
            SimPO's beta is much larger than DPO's, 2.5-10). Not TRL 0.x's `reference_free`, which meant a uniform
            reference without length normalisation.
        odpo_alpha (`float` or `None`, *optional*, defaults to `None`):
            ODPO's offset strength `alpha` (Amini et al., 2024, arXiv 2402.10571, the ODPO loss of Section 3): each
            pair gets the target margin `delta_i = odpo_alpha * f(m_i)` from its margin `m_i = score_chosen -
            score_rejected` (the same columns as MMPO's), and the loss is `-log sigmoid(z - delta_i)` (with
            `mmpo_gamma`, `soft_target_loss(z - delta_i, p_i)`). The offset is not multiplied by `beta`. `None`: no
            offset. Not with [`GammaPOConfig`], whose margins are the other choice of the same term.
        odpo_scaling (`str`, *optional*, defaults to `"log"`):
            `f`: `"log"` (the paper's experiments and code; every margin must be `> 0`, so ties are refused, naming
            the row) or `"identity"` (`delta_i = odpo_alpha * m_i`).
        beta_dpo_alpha (`float` or `None`, *optional*, defaults to `None`):
            beta-DPO (Wu et al., 2024, arXiv 2407.08639, Section 4), the `beta` knob of the one loss. Each forward
            pass gathers the reward gaps `M_i = z_i` of the global batch, updates the moving averages `M_0` and
            `sigma` of their mean and std, keeps `round(beta_dpo_keep_ratio * B)` pairs sampled without replacement
            by the weights `exp(-(M_i - M_0)^2 / (2 sigma^2))`, and trains the kept pairs (averaged over them) with
            `beta_batch = beta * (1 + beta_dpo_alpha * (mean_kept(M_i) - M_0))`, floored at 1e-3: the reward gap
            becomes `(beta_batch / beta) * z`. See `trl_margins.losses.dynamic_beta` for how this differs from the
            published codes. `None`: fixed `beta`. Not with [`GammaPOConfig`].
        beta_dpo_keep_ratio (`float`, *optional*, defaults to `0.8`):
            The fraction of the global batch beta-DPO keeps (the authors' filtering ratio 0.2).
        beta_dpo_momentum (`float`, *optional*, defaults to `0.9`):
            The momentum of beta-DPO's moving averages of the gap mean and std.
        calibration_bins (`int`, *optional*, defaults to `15`):
            Number of equal-width bins of the expected calibration error logged in evaluation.
        weight_column (`str` or `None`, *optional*, defaults to `None`):
            Column with a weight `w_i >= 0` per pair (MADPO-style sample weights). The batch loss is
            `mean_i(w_i * loss_i)` over the `B` pairs of the micro-batch (not `sum(w * loss) / sum(w)`): TRL's own
            reduction for its WPO weights, which gives the full batch's value under gradient accumulation. With WPO
            (`use_weighting`) each pair's weight is `w_i * wpo_i`; RPO's `"sft"` term is weighted the same way.
            Negative, NaN or infinite weights, and weights that are all zero, are refused before training, naming the
            row. A weight column is a knob: it trains on this package's loss path.

    `label_smoothing` (from [`~trl.DPOConfig`]) with the sigmoid loss applies conservative-DPO smoothing on top: the
    target becomes `(1 - eps) * p + eps * (1 - p)` (stock TRL 1.9-1.16 ignores `label_smoothing` for that loss).

    The knobs are `mmpo_gamma`, `label_smoothing > 0` with the sigmoid loss, `reward_type="simpo"`, `weight_column`,
    `odpo_alpha`, `beta_dpo_alpha` and (in [`GammaPOConfig`]) the target margins. With every knob off,
    [`MMPOTrainer`] is [`~trl.DPOTrainer`]: every
    `loss_type`, `loss_weights`, `use_weighting`, `ld_alpha` and `f_divergence_type` works, with TRL's own loss
    and metrics. With a knob on, the loss is `w_i * soft_target_loss(z_i - gamma_i, p_i)`, which replaces DPO's
    sigmoid loss; it combines with the `"sft"` term (RPO, `loss_type=["sigmoid", "sft"]`), `loss_weights` and WPO
    weights (`use_weighting`). Any other `loss_type`, `ld_alpha` and `f_divergence_type` other than `"reverse_kl"` are
    refused with a knob on: they have no soft-target form here.
    """

    reward_type: str = field(
        default="dpo",
        metadata={
            "help": "'dpo': DPO's implicit reward beta * log pi/pi_ref(y). 'simpo': SimPO's length-normalised "
            "reference-free reward beta/|y| * log pi(y); no reference model is loaded (not TRL 0.x's "
            "`reference_free`, a uniform reference without length normalisation).",
            "choices": list(REWARD_TYPES),
        },
    )
    odpo_alpha: float | None = field(
        default=None,
        metadata={
            "help": "ODPO offset strength alpha (arXiv 2402.10571): target margin delta_i = alpha * f(score_chosen - "
            "score_rejected), loss -log sigmoid(z - delta_i); read from the score (or margin) columns. None: none."
        },
    )
    odpo_scaling: str = field(
        default="log",
        metadata={
            "help": "f of the ODPO offset: 'log' (the paper's; margins must be > 0) or 'identity'.",
            "choices": list(OFFSET_SCALINGS),
        },
    )
    beta_dpo_alpha: float | None = field(
        default=None,
        metadata={
            "help": "beta-DPO (arXiv 2407.08639): batch beta = beta * (1 + alpha * (mean kept gap - running gap "
            "mean)), floored at 1e-3, after keeping `beta_dpo_keep_ratio` of the global batch by Gaussian sampling "
            "weights around the running gap mean. Gaps are beta-scaled reward gaps: the authors' code's `a` is "
            "alpha * beta. None: fixed beta, no filtering."
        },
    )
    beta_dpo_keep_ratio: float = field(
        default=0.8,
        metadata={"help": "Fraction of the global batch beta-DPO's filter keeps, in (0, 1] (the papers': 0.8)."},
    )
    beta_dpo_momentum: float = field(
        default=0.9,
        metadata={"help": "Momentum m of beta-DPO's moving averages of the gap mean and std, in [0, 1) (0.9)."},
    )

    def __post_init__(self):
        _before_trl_post_init(self)
        super().__post_init__()
        self._validate_margin_args()

    @property
    def simpo(self) -> bool:
        """SimPO's reference-free, length-normalised rewards (`reward_type="simpo"`)."""
        return self.reward_type == "simpo"

    def margin_knobs(self) -> list[str]:
        """The knobs of the one loss that are on, as `option=value` strings; empty means plain TRL DPO."""
        knobs = []
        if self.mmpo_gamma is not None:
            knobs.append(f"mmpo_gamma={self.mmpo_gamma}")
        # `label_smoothing` is TRL's own parameter of its robust, exo_pair and aot losses: ours only with the sigmoid
        if self.label_smoothing > 0 and "sigmoid" in self.loss_type:
            knobs.append(f"label_smoothing={self.label_smoothing} (cDPO, with the sigmoid loss)")
        if self.simpo:
            knobs.append("reward_type='simpo'")
        if self.weight_column is not None:
            knobs.append(f"weight_column={self.weight_column!r}")
        if self.odpo_alpha is not None:
            knobs.append(f"odpo_alpha={self.odpo_alpha} (ODPO offsets)")
        if self.beta_dpo_alpha is not None:
            knobs.append(f"beta_dpo_alpha={self.beta_dpo_alpha} (beta-DPO)")
        return knobs

    @property
    def positive_margins_for(self) -> str | None:
        """What needs every margin > 0 (a tie refused, naming the row), or None: ODPO's log offset."""
        if self.odpo_alpha is not None and self.odpo_scaling == "log":
            return "ODPO's log offset (`odpo_scaling='log'`, log 0 = -inf)"
        return None

    def _validate_margin_args(self) -> None:
        _validate_mmpo_fields(self)
        if self.reward_type not in REWARD_TYPES:
            raise ValueError(f"`reward_type` must be one of {REWARD_TYPES}, got {self.reward_type!r}.")
        if self.odpo_alpha is not None and not (math.isfinite(self.odpo_alpha) and self.odpo_alpha >= 0):
            raise ValueError(f"`odpo_alpha` must be a finite number >= 0, or None; got {self.odpo_alpha}.")
        if self.odpo_scaling not in OFFSET_SCALINGS:
            raise ValueError(f"`odpo_scaling` must be one of {OFFSET_SCALINGS}, got {self.odpo_scaling!r}.")
        _validate_beta_dpo_fields(self)
        knobs = self.margin_knobs()
        refuse_liger_bypass(self.use_liger_kernel, knobs)
        if not knobs:
            return  # plain DPO: TRL's own loss path, which validates its own options
        on = ", ".join(knobs)
        why = (
            f"with {on}, {type(self).__name__} trains with the soft-target / target-margin loss, which replaces DPO's "
            "sigmoid loss"
        )
        fix = "use `trl.DPOTrainer` (or turn those knobs off) for"  # completed by the option
        if "sigmoid" not in self.loss_type:
            raise ValueError(f"`loss_type` must include 'sigmoid': {why}. Got {self.loss_type}; {fix} these losses.")
        for loss_type in self.loss_type:
            if loss_type not in KNOB_LOSS_TYPES:
                raise ValueError(
                    f"`loss_type={loss_type!r}` is not supported: {why} (combined only with 'sft'), and "
                    f"{loss_type!r} has no soft-target form: {fix} {loss_type!r}."
                )
        unsupported = {"ld_alpha": (self.ld_alpha, None), "f_divergence_type": (self.f_divergence_type, "reverse_kl")}
        for name, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"`{name}={value!r}` is not supported: {why}, and `{name}` has no soft-target form here. Leave "
                    f"it at {default!r}, or {fix} `{name}`."
                )
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"`label_smoothing` must lie in [0, 0.5), got {self.label_smoothing}.")
        if self.simpo and self.precompute_ref_log_probs:
            raise ValueError("`reward_type='simpo'` uses no reference model: unset `precompute_ref_log_probs`.")
        if self.simpo and self.sync_ref_model:
            raise ValueError("`reward_type='simpo'` uses no reference model: unset `sync_ref_model`.")


_ConfigT = TypeVar("_ConfigT", bound=TrainingArguments)
_warned_label_smoothing = False


def _warn_label_smoothing_with_sigmoid(args) -> None:
    """Once per process: a plain `DPOConfig` whose `label_smoothing` TRL would have ignored now trains cDPO."""
    global _warned_label_smoothing
    if _warned_label_smoothing or not (args.label_smoothing > 0 and list(args.loss_type) == ["sigmoid"]):
        return
    _warned_label_smoothing = True
    warnings.warn(
        f"`label_smoothing={args.label_smoothing}` with `loss_type=['sigmoid']`: stock TRL 1.9-1.16 ignores "
        "`label_smoothing` for the sigmoid loss, while trl-margins applies conservative DPO (cDPO) targets "
        "`(1 - eps) * p + eps * (1 - p)`. Set `label_smoothing=0` for TRL's loss.",
        UserWarning,
        stacklevel=3,
    )


def upgrade_config(args: TrainingArguments, config_class: type[_ConfigT]) -> _ConfigT:
    """Turn a plain TRL config (`DPOConfig`, `RewardConfig`) into `config_class`, a subclass of its class that only
    adds fields with defaults, with the margin fields at their defaults.

    This is what lets `MMPOTrainer` replace `DPOTrainer` (and `MMPORewardTrainer` replace `RewardTrainer`) in a script
    by changing one import: the script's config keeps working and trains with hard labels, exactly as before.
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
    if isinstance(upgraded, MMPOConfig):
        _warn_label_smoothing_with_sigmoid(args)
    logger.info(
        "Got a %s; using %s with its defaults for the margin fields.", type(args).__name__, config_class.__name__
    )
    return upgraded


MARGIN_MODES = ("published", "full", "deviation")


@dataclass
class GammaPOConfig(MMPOConfig):
    r"""
    Configuration class for [`GammaPOTrainer`]: dynamic per-pair target margins (gamma-PO), on DPO or SimPO rewards,
    optionally with MMPO soft targets.

    Each training step, the reward gaps `r_w - r_l` of the (global) batch and up to `margin_sample_size - batch`
    gaps sampled from a FIFO queue of recent gaps go through `margin_iters` mirror-descent steps (gamma-PO paper,
    Appendix C, Eqs. 22-24), giving a margin `gamma_i` per pair with mean `gamma0 = gamma_beta_ratio * beta`. The loss
    is `soft_target_loss(z - gamma_i, p_i)`: `-log sigmoid(r_w - r_l - gamma_i)` (Eq. 10) with hard targets.

    Parameters:
        gamma_beta_ratio (`float`, *optional*, defaults to `0.5`):
            Base margin over beta, `gamma0 = gamma_beta_ratio * beta`, as in the paper's (SimPO-derived) code. Table 7
            of the paper: 0.4 (Llama-3-Instruct, beta 10), 0.15 (Mistral-Instruct, beta 2.5), 0.5 (Gemma-2-it,
            beta 10), 0.3 (Qwen2.5-Instruct, beta 10).
        tau (`float`, *optional*, defaults to `10.0`):
            KL regularisation towards uniform margins; larger means margins closer to `gamma0`. Table 7: 10, 10, 20, 3.
        margin_queue_size (`int`, *optional*, defaults to `2048`):
            Capacity of the FIFO queue of recent reward gaps.
        margin_sample_size (`int`, *optional*, defaults to `256`):
            `m_n`, the number of gaps the margins are solved over: the global batch plus gaps sampled from the queue.
        margin_iters (`int`, *optional*, defaults to `20`):
            Mirror-descent iterations.
        margin_step_size (`float` or `None`, *optional*, defaults to `None`):
            Mirror-descent step size; `None` is the paper's `min(0.5 / tau, 1)`.
        margin_mode (`str`, *optional*, defaults to `"published"`):
            Which margin enters the loss. `"published"` reproduces the paper's code: gamma-SimPO
            (`reward_type="simpo"`) applies `gamma_i`, gamma-DPO applies `gamma_i - gamma0` (only the per-pair
            deviation, so the mean margin is 0). `"full"` applies `gamma_i` in both, `"deviation"` applies
            `gamma_i - gamma0` in both.
    """

    gamma_beta_ratio: float = field(
        default=0.5,
        metadata={"help": "Base target margin over beta: gamma0 = gamma_beta_ratio * beta (as in the paper's code)."},
    )
    tau: float = field(
        default=10.0,
        metadata={"help": "KL regularisation of the dynamic margins towards gamma0 (> 0; larger = closer to gamma0)."},
    )
    margin_queue_size: int = field(
        default=2048, metadata={"help": "Capacity of the FIFO queue of recent reward gaps."}
    )
    margin_sample_size: int = field(
        default=256,
        metadata={"help": "m_n: number of reward gaps the margins are solved over (global batch + queue samples)."},
    )
    margin_iters: int = field(default=20, metadata={"help": "Mirror-descent iterations of the margin solve."})
    margin_step_size: float | None = field(
        default=None, metadata={"help": "Mirror-descent step size; None = the paper's min(0.5 / tau, 1)."}
    )
    margin_mode: str = field(
        default="published",
        metadata={
            "help": "'published': gamma-SimPO applies gamma_i, gamma-DPO applies gamma_i - gamma0 (as the paper's "
            "code); 'full': gamma_i for both; 'deviation': gamma_i - gamma0 for both.",
            "choices": list(MARGIN_MODES),
        },
    )

    def margin_knobs(self) -> list[str]:
        # The dynamic target margins are always on (gamma_i - gamma0 is a per-pair margin even with the
        # "published" gamma-DPO offset), so the knob-on loss path and its checks always apply
        return [*super().margin_knobs(), "gamma-PO target margins"]

    def _validate_margin_args(self) -> None:
        super()._validate_margin_args()
        if self.odpo_alpha is not None:
            raise ValueError(
                f"`odpo_alpha={self.odpo_alpha}` is not supported by GammaPOConfig: ODPO's score offsets and "
                "gamma-PO's dynamic margins are two choices of the same target margin `gamma_i`, one per pair. Use "
                "MMPOConfig (MMPOTrainer) for ODPO, or unset `odpo_alpha`."
            )
        if self.beta_dpo_alpha is not None:
            raise ValueError(
                f"`beta_dpo_alpha={self.beta_dpo_alpha}` is not supported by GammaPOConfig: gamma-PO solves its "
                "margins over the reward gaps at the fixed `beta` and keeps them in its queue, while beta-DPO "
                "rescales those gaps by a batch factor and drops a fifth of the pairs, so the margins would be solved "
                "for gaps that are not the ones trained (the gamma-PO paper compares the two as alternatives, "
                "Table 3). Use MMPOConfig (MMPOTrainer) for beta-DPO, or unset `beta_dpo_alpha`."
            )
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"`tau` must be a finite number > 0, got {self.tau}.")
        if not (math.isfinite(self.gamma_beta_ratio) and self.gamma_beta_ratio >= 0):
            raise ValueError(f"`gamma_beta_ratio` must be a finite number >= 0, got {self.gamma_beta_ratio}.")
        for name in ("margin_queue_size", "margin_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.margin_sample_size < 1:
            raise ValueError(f"`margin_sample_size` must be >= 1, got {self.margin_sample_size}.")
        if self.margin_step_size is not None and not (
            math.isfinite(self.margin_step_size) and self.margin_step_size > 0
        ):
            raise ValueError(f"`margin_step_size` must be a finite number > 0 or None, got {self.margin_step_size}.")
        if self.margin_mode not in MARGIN_MODES:
            raise ValueError(f"`margin_mode` must be one of {MARGIN_MODES}, got {self.margin_mode!r}.")
        if self.margin_step_size is None and self.tau <= 0.5:
            logger.warning(
                "tau=%s gives the paper's mirror-descent step size min(0.5 / tau, 1) = 1, where the multiplicative "
                "margin update can oscillate instead of converging. Consider tau > 0.5 or a smaller "
                "`margin_step_size`.",
                self.tau,
            )

    @property
    def gamma0(self) -> float:
        """The base target margin, `gamma_beta_ratio * beta`."""
        return self.gamma_beta_ratio * self.beta


@dataclass
class MMPORewardConfig(MMPOFields, RewardConfig):
    r"""
    Configuration class for [`MMPORewardTrainer`]: [`~trl.RewardConfig`] plus Margin Matching Preference Optimization
    for reward models.

    MMPO (Kim et al., Section 3.2; reward models in Section 4.3) trains the reward model `r` towards the Bradley-Terry
    probability of each pair's quality margin `m`, `p = sigmoid(mmpo_gamma * m)`, with the soft-target cross-entropy
    `-p log sigmoid(r_w - r_l) - (1 - p) log sigmoid(r_l - r_w)`, instead of the Bradley-Terry loss
    `-log sigmoid(r_w - r_l)` (its case `p = 1`). With `mmpo_gamma=None` (the default) training is exactly
    [`~trl.RewardTrainer`]'s.

    Parameters:
        mmpo_gamma (`float` or `None`, *optional*, defaults to `None`):
            Rationality coefficient `gamma` of the target probability `sigmoid(gamma * m)` (`bt_beta` in the paper's
            code). `None` trains on hard labels (plain Bradley-Terry) and needs no score columns; `0` makes every
            target 0.5. Must be `>= 0`.
        score_chosen_column (`str`, *optional*, defaults to `"score_chosen"`):
            Column with the score of the chosen response.
        score_rejected_column (`str`, *optional*, defaults to `"score_rejected"`):
            Column with the score of the rejected response.
        margin_column (`str` or `None`, *optional*, defaults to `None`):
            Column with a precomputed MMPO margin `m >= 0`; when set, the score columns are not read.
        negative_margins (`str`, *optional*, defaults to `"error"`):
            What to do with pairs whose chosen response scored below the rejected one: `"error"` stops before
            training, `"swap"` exchanges chosen and rejected, `"drop"` removes the pair (both are logged with a count).
        calibration_bins (`int`, *optional*, defaults to `15`):
            Number of equal-width bins of the expected calibration error logged in evaluation.
        weight_column (`str` or `None`, *optional*, defaults to `None`):
            Column with a weight `w_i >= 0` per pair: the loss is `mean_i(w_i * loss_i)` over the pairs of the
            micro-batch (plus TRL's `center_rewards_coefficient` term, unweighted). Bad weights are refused as in
            [`MMPOConfig`].

    MMPO's margin and TRL's `margin` column are different knobs. A dataset column named `margin` (Llama 2 style, read
    by [`~trl.RewardTrainer`] whether or not MMPO is on) *shifts the logit*: the loss becomes
    `-log sigmoid(r_w - r_l - margin)`, which asks for a reward gap of more than `margin` and, with its hard target,
    never stops pushing the gap up. MMPO's margin *sets the target probability*: the loss is minimised at the finite
    gap `r_w - r_l = mmpo_gamma * m`. With both, the loss is `soft_target_loss(r_w - r_l - margin,
    sigmoid(mmpo_gamma * m))`, minimised at `r_w - r_l = margin + mmpo_gamma * m`.
    Pointing `margin_column` at TRL's `margin` column applies the same values both ways; rename the column to use it
    only as MMPO's margin.
    """

    def __post_init__(self):
        _before_trl_post_init(self)
        super().__post_init__()
        self._validate_margin_args()

    def _validate_margin_args(self) -> None:
        _validate_mmpo_fields(self)


def _validate_kto_fields(config) -> None:
    if config.mmpo_gamma is not None and (not math.isfinite(config.mmpo_gamma) or config.mmpo_gamma < 0):
        raise ValueError(
            f"`mmpo_gamma` must be a finite number >= 0, or None for KTO's constant weights; got {config.mmpo_gamma}."
        )
    if not isinstance(config.score_column, str) or not config.score_column:
        raise ValueError(f"`score_column` must be a column name, got {config.score_column!r}.")


@dataclass
class MMPOKTOConfig(KTOConfig):
    r"""
    Configuration class for [`MMPOKTOTrainer`]: [`~trl.KTOConfig`] plus MMPO's per-sample weights for binary feedback
    (MMPO paper, Appendix B, "Extension to Binary Feedback").

    KTO weighs every desirable sample's loss by the constant `desirable_weight` and every undesirable one's by
    `undesirable_weight`. With `mmpo_gamma` set, each sample's weight is refined by how desirable its score `s` makes
    it, relative to the median score `s_med` of the training set (computed once over all of its samples, desirable
    and undesirable, before training, and used for evaluation too):

    - desirable: `desirable_weight * sigmoid(mmpo_gamma * (s - s_med))`;
    - undesirable: `undesirable_weight * sigmoid(mmpo_gamma * (s_med - s))`, the Bradley-Terry probability that a
      median response beats it (the appendix names only the desirable form; this is its mirror image, so a worse
      undesirable response weighs more).

    Parameters:
        mmpo_gamma (`float` or `None`, *optional*, defaults to `None`):
            Rationality coefficient of the weights. `None`: exactly [`~trl.KTOTrainer`] (constant weights, no score
            column read).
        score_column (`str`, *optional*, defaults to `"score"`):
            Column with each sample's quality score. A missing column, a non-numeric, NaN or infinite score stops
            before training, naming the column and the row.
    """

    mmpo_gamma: float | None = field(
        default=None,
        metadata={
            "help": "Rationality coefficient of MMPO's KTO weights: desirable_weight * sigmoid(gamma * (s - median)), "
            "undesirable_weight * sigmoid(gamma * (median - s)), median of the training set. None: plain KTO."
        },
    )
    score_column: str = field(
        default="score", metadata={"help": "Column with each sample's score. Only read when `mmpo_gamma` is set."}
    )

    def __post_init__(self):
        _before_trl_post_init(self, validate=_validate_kto_fields)
        super().__post_init__()
        self._validate_margin_args()

    def margin_knobs(self) -> list[str]:
        return [] if self.mmpo_gamma is None else [f"mmpo_gamma={self.mmpo_gamma}"]

    def _validate_margin_args(self) -> None:
        _validate_kto_fields(self)
        if self.use_liger_kernel and self.mmpo_gamma is not None:
            raise ValueError(
                "`use_liger_kernel=True` with `mmpo_gamma`: TRL's Liger KTO loss has no per-sample weights, so the "
                "MMPO weights would be skipped. Unset `use_liger_kernel`, or `mmpo_gamma`."
            )
