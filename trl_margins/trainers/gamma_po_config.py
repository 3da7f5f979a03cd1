"""`GammaPOConfig`: `MMPOConfig` plus gamma-PO's dynamic per-pair target margins."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from ..errors import UsageError
from ._base_config import check_finite
from .dpo_config import MMPOConfig

logger = logging.getLogger(__name__)

MARGIN_MODES = ("published", "full", "deviation")


@dataclass
class GammaPOConfig(MMPOConfig):
    r"""
    Configuration class for [`GammaPOTrainer`]: dynamic per-pair target margins (gamma-PO), on DPO or SimPO rewards,
    optionally with MMPO soft targets.

    Each training step, the reward gaps `r_w - r_l` of the (global) batch and up to `margin_sample_size - batch`
    gaps sampled from a FIFO queue of recent gaps go through `margin_iters` mirror-descent steps (gamma-PO, Sun et
    al., https://arxiv.org/abs/2506.03690, Appendix C, Eqs. 22-24), giving a margin `gamma_i` per pair with mean
    `gamma0 = gamma_beta_ratio * beta`. The loss is `soft_target_loss(z - gamma_i, p_i)`: `-log sigmoid(r_w - r_l -
    gamma_i)` (Eq. 10) with hard targets. Every field of [`MMPOConfig`] applies too, except `odpo_alpha` and
    `beta_dpo_alpha`, which are other choices of the same terms.

    Parameters:
        > Parameters that control the dynamic target margins

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

    def check_margin_fields(self) -> None:
        super().check_margin_fields()
        if self.odpo_alpha is not None:
            raise UsageError(
                f"`odpo_alpha={self.odpo_alpha}` is not supported by GammaPOConfig: ODPO's score offsets and "
                "gamma-PO's dynamic margins are two choices of the same target margin `gamma_i`, one per pair. Use "
                "MMPOConfig (MMPOTrainer) for ODPO, or unset `odpo_alpha`."
            )
        if self.beta_dpo_alpha is not None:
            raise UsageError(
                f"`beta_dpo_alpha={self.beta_dpo_alpha}` is not supported by GammaPOConfig: gamma-PO solves its "
                "margins over the reward gaps at the fixed `beta` and keeps them in its queue, while beta-DPO "
                "rescales those gaps by a batch factor and drops a fifth of the pairs, so the margins would be solved "
                "for gaps that are not the ones trained (the gamma-PO paper compares the two as alternatives, "
                "Table 3). Use MMPOConfig (MMPOTrainer) for beta-DPO, or unset `beta_dpo_alpha`."
            )
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise UsageError(f"`tau` must be a finite number > 0, got {self.tau}.")
        check_finite("gamma_beta_ratio", self.gamma_beta_ratio)
        for name in ("margin_queue_size", "margin_iters"):
            if getattr(self, name) < 0:
                raise UsageError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.margin_sample_size < 1:
            raise UsageError(f"`margin_sample_size` must be >= 1, got {self.margin_sample_size}.")
        if self.margin_step_size is not None and not (
            math.isfinite(self.margin_step_size) and self.margin_step_size > 0
        ):
            raise UsageError(f"`margin_step_size` must be a finite number > 0 or None, got {self.margin_step_size}.")
        if self.margin_mode not in MARGIN_MODES:
            raise UsageError(f"`margin_mode` must be one of {MARGIN_MODES}, got {self.margin_mode!r}.")
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
