"""`MMPOConfig`: `trl.DPOConfig` plus the knobs of the one loss (MMPO targets, SimPO rewards, pair weights, ODPO
offsets, beta-DPO)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cache

from trl import DPOConfig

from .._compat import refuse_liger_bypass
from ..errors import UsageError
from ..losses import OFFSET_SCALINGS, REWARD_TYPES
from ._base_config import PairMarginFields, check_finite

KNOB_LOSS_TYPES = ("sigmoid", "sft")
"""The `loss_type`s that combine with a knob on: the soft-target loss (in place of 'sigmoid') and RPO's 'sft'."""


@dataclass
class MMPOConfig(PairMarginFields, DPOConfig):
    r"""
    Configuration class for [`MMPOTrainer`]: [`~trl.DPOConfig`] plus Margin Matching Preference Optimization and the
    other knobs of the one loss.

    MMPO (Kim et al., https://arxiv.org/abs/2410.03145, Section 3.2) replaces DPO's hard target (the chosen response
    is preferred with probability 1) by the Bradley-Terry probability of the pair's quality margin `m`,
    `p = sigmoid(mmpo_gamma * m)`, and trains with the soft-target cross-entropy `-p log sigmoid(z) - (1 - p) log
    sigmoid(-z)`, where `z` is DPO's implicit reward gap. With every knob off (the default) the trainer is
    [`~trl.DPOTrainer`]: every `loss_type`, `loss_weights`, `use_weighting`, `ld_alpha` and `f_divergence_type`
    works, with TRL's own loss and metrics.

    With a knob on, the loss is `w_i * soft_target_loss(z_i - gamma_i, p_i)`, which replaces DPO's sigmoid loss; it
    combines with the `"sft"` term (RPO, `loss_type=["sigmoid", "sft"]`), `loss_weights` and WPO weights
    (`use_weighting`). Any other `loss_type`, `ld_alpha` and `f_divergence_type` other than `"reverse_kl"` are
    refused with a knob on: they have no soft-target form here. The knobs are `mmpo_gamma`, `label_smoothing > 0`
    with the sigmoid loss (cDPO: the target becomes `(1 - eps) * p + eps * (1 - p)`; stock TRL 1.9-1.16 ignores
    `label_smoothing` for that loss), `reward_type="simpo"`, `weight_column`, `odpo_alpha`, `beta_dpo_alpha` and, in
    [`GammaPOConfig`], the dynamic target margins.

    Parameters:
        > Parameters that control the MMPO targets

        mmpo_gamma (`float` or `None`, *optional*, defaults to `None`):
            Rationality coefficient `gamma` of the target probability `sigmoid(gamma * m)` (`bt_beta` in the paper's
            code; the paper's Table 8 uses 2.2 for 2B and 1.1 for 7B/8B models on UltraFeedback, 0.15 and 0.3 on
            SHP). `None` trains on hard labels and needs no score columns; `0` makes every target 0.5.
        score_chosen_column (`str`, *optional*, defaults to `"score_chosen"`):
            Column with the score of the chosen response.
        score_rejected_column (`str`, *optional*, defaults to `"score_rejected"`):
            Column with the score of the rejected response.
        margin_column (`str` or `None`, *optional*, defaults to `None`):
            Column with a precomputed margin `m >= 0`; when set, the score columns are not read.
        negative_margins (`str`, *optional*, defaults to `"error"`):
            What to do with pairs whose chosen response scored below the rejected one: `"error"` stops before
            training, `"swap"` exchanges chosen and rejected, `"drop"` removes the pair (both are logged with a
            count).

        > Parameters that control the reward

        reward_type (`str`, *optional*, defaults to `"dpo"`):
            The reward `z` is built from: `"dpo"`, DPO's implicit reward `beta * log pi/pi_ref(y)`; `"simpo"`,
            SimPO's length-normalised, reference-free reward `beta / |y| * log pi(y)` (no reference model is loaded;
            SimPO's beta is much larger than DPO's, 2.5-10). Not TRL 0.x's `reference_free`, which meant a uniform
            reference without length normalisation.
        beta_dpo_alpha (`float` or `None`, *optional*, defaults to `None`):
            beta-DPO (Wu et al., https://arxiv.org/abs/2407.08639, Section 4), the `beta` knob of the one loss. Each
            forward pass gathers the reward gaps `M_i = z_i` of the global batch, updates the moving averages `M_0`
            and `sigma` of their mean and std, keeps `round(beta_dpo_keep_ratio * B)` pairs sampled without
            replacement by the weights `exp(-(M_i - M_0)^2 / (2 sigma^2))`, and trains the kept pairs (averaged over
            them) with `beta_batch = beta * (1 + beta_dpo_alpha * (mean_kept(M_i) - M_0))`, floored at 1e-3: the
            reward gap becomes `(beta_batch / beta) * z`. See `trl_margins.losses.dynamic_beta` for how this differs
            from the published codes. `None`: fixed `beta`. Not with [`GammaPOConfig`].
        beta_dpo_keep_ratio (`float`, *optional*, defaults to `0.8`):
            The fraction of the global batch beta-DPO keeps (the authors' filtering ratio 0.2).
        beta_dpo_momentum (`float`, *optional*, defaults to `0.9`):
            The momentum of beta-DPO's moving averages of the gap mean and std.

        > Parameters that control the target margins and pair weights

        odpo_alpha (`float` or `None`, *optional*, defaults to `None`):
            ODPO's offset strength `alpha` (Amini et al., https://arxiv.org/abs/2402.10571, the ODPO loss of
            Section 3): each pair gets the target margin `delta_i = odpo_alpha * f(m_i)` from its margin `m_i =
            score_chosen - score_rejected` (the same columns as MMPO's), and the loss is `-log sigmoid(z - delta_i)`
            (with `mmpo_gamma`, `soft_target_loss(z - delta_i, p_i)`). The offset is not multiplied by `beta`.
            `None`: no offset. Not with [`GammaPOConfig`], whose margins are the other choice of the same term.
        odpo_scaling (`str`, *optional*, defaults to `"log"`):
            `f`: `"log"` (the paper's experiments and code; every margin must be `> 0`, so ties are refused, naming
            the row) or `"identity"` (`delta_i = odpo_alpha * m_i`).
        weight_column (`str` or `None`, *optional*, defaults to `None`):
            Column with a weight `w_i >= 0` per pair (MADPO-style sample weights). The batch loss is
            `mean_i(w_i * loss_i)` over the `B` pairs of the micro-batch (not `sum(w * loss) / sum(w)`): TRL's own
            reduction for its WPO weights, which gives the full batch's value under gradient accumulation. With WPO
            (`use_weighting`) each pair's weight is `w_i * wpo_i`; RPO's `"sft"` term is weighted the same way.
            Negative, NaN or infinite weights, and weights that are all zero, are refused before training, naming
            the row. A weight column is a knob: it trains on this package's loss path.

        > Parameters that control evaluation

        calibration_bins (`int`, *optional*, defaults to `15`):
            Number of equal-width bins of the expected calibration error logged in evaluation (`mmpo/ece`).
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

    @property
    def simpo(self) -> bool:
        """SimPO's reference-free, length-normalised rewards (`reward_type="simpo"`)."""
        return self.reward_type == "simpo"

    def margin_knobs(self) -> list[str]:
        knobs = super().margin_knobs()
        # `label_smoothing` is TRL's own parameter of its robust, exo_pair and aot losses: ours only with the sigmoid
        if self.label_smoothing > 0 and "sigmoid" in self.loss_type:
            knobs.append(f"label_smoothing={self.label_smoothing} (cDPO, with the sigmoid loss)")
        if self.simpo:
            knobs.append("reward_type='simpo'")
        if self.odpo_alpha is not None:
            knobs.append(f"odpo_alpha={self.odpo_alpha} (ODPO offsets)")
        if self.beta_dpo_alpha is not None:
            knobs.append(f"beta_dpo_alpha={self.beta_dpo_alpha} (beta-DPO)")
        return knobs

    @property
    def needs_margins(self) -> bool:
        """Whether a knob reads each pair's margin: MMPO's targets or ODPO's offsets."""
        return self.mmpo_gamma is not None or self.odpo_alpha is not None

    @property
    def positive_margins_for(self) -> str | None:
        """What needs every margin > 0 (a tie refused, naming the row), or None: ODPO's log offset."""
        if self.odpo_alpha is not None and self.odpo_scaling == "log":
            return "ODPO's log offset (`odpo_scaling='log'`, log 0 = -inf)"
        return None

    def check_margin_fields(self) -> None:
        super().check_margin_fields()
        if self.reward_type not in REWARD_TYPES:
            raise UsageError(f"`reward_type` must be one of {REWARD_TYPES}, got {self.reward_type!r}.")
        check_finite("odpo_alpha", self.odpo_alpha, none="no offset")
        if self.odpo_scaling not in OFFSET_SCALINGS:
            raise UsageError(f"`odpo_scaling` must be one of {OFFSET_SCALINGS}, got {self.odpo_scaling!r}.")
        alpha, keep, momentum = self.beta_dpo_alpha, self.beta_dpo_keep_ratio, self.beta_dpo_momentum
        check_finite("beta_dpo_alpha", alpha, none="a fixed beta")
        if not (isinstance(keep, (int, float)) and 0.0 < keep <= 1.0):
            raise UsageError(f"`beta_dpo_keep_ratio` must lie in (0, 1], got {keep}.")
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
            raise UsageError(f"`beta_dpo_momentum` must lie in [0, 1), got {momentum}.")
        if alpha is None:
            # Without the knob these would silently do nothing
            defaults = (("keep_ratio", keep, 0.8), ("momentum", momentum, 0.9))
            changed = [f"`beta_dpo_{name}={value}`" for name, value, default in defaults if value != default]
            if changed:
                raise UsageError(f"{', '.join(changed)} without `beta_dpo_alpha` does nothing: set `beta_dpo_alpha`.")

    def check_knobs(self) -> None:
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
            raise UsageError(f"`loss_type` must include 'sigmoid': {why}. Got {self.loss_type}; {fix} these losses.")
        for loss_type in self.loss_type:
            if loss_type not in KNOB_LOSS_TYPES:
                raise UsageError(
                    f"`loss_type={loss_type!r}` is not supported: {why} (combined only with 'sft'), and "
                    f"{loss_type!r} has no soft-target form: {fix} {loss_type!r}."
                )
        unsupported = {"ld_alpha": (self.ld_alpha, None), "f_divergence_type": (self.f_divergence_type, "reverse_kl")}
        for name, (value, default) in unsupported.items():
            if value != default:
                raise UsageError(
                    f"`{name}={value!r}` is not supported: {why}, and `{name}` has no soft-target form here. Leave "
                    f"it at {default!r}, or {fix} `{name}`."
                )
        if not 0.0 <= self.label_smoothing < 0.5:
            raise UsageError(f"`label_smoothing` must lie in [0, 0.5), got {self.label_smoothing}.")
        if self.simpo and self.precompute_ref_log_probs:
            raise UsageError("`reward_type='simpo'` uses no reference model: unset `precompute_ref_log_probs`.")
        if self.simpo and self.sync_ref_model:
            raise UsageError("`reward_type='simpo'` uses no reference model: unset `sync_ref_model`.")


def warn_if_cdpo(args: DPOConfig) -> None:
    """A plain `DPOConfig` whose `label_smoothing` TRL would have ignored now trains cDPO: say so, once per process."""
    if args.label_smoothing > 0 and list(args.loss_type) == ["sigmoid"]:
        _warn_cdpo_once(args.label_smoothing)


@cache
def _warn_cdpo_once(label_smoothing: float) -> None:
    warnings.warn(
        f"`label_smoothing={label_smoothing}` with `loss_type=['sigmoid']`: stock TRL 1.9-1.16 ignores "
        "`label_smoothing` for the sigmoid loss, while trl-margins applies conservative DPO (cDPO) targets "
        "`(1 - eps) * p + eps * (1 - p)`. Set `label_smoothing=0` for TRL's loss.",
        UserWarning,
        stacklevel=4,
    )
