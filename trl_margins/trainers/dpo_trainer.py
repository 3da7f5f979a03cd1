"""`MMPOTrainer`: `trl.DPOTrainer` with MMPO soft targets and the other knobs of the one loss.

With every knob off (no `mmpo_gamma`, no cDPO `label_smoothing`, DPO rewards, no target margin, no weights) the loss
is TRL's own, so every TRL option works unchanged. With a knob on, TRL 1.x's `DPOTrainer` has no per-example loss
hook, so its loss step is re-implemented here, short (`margin_loss`): the policy forward through TRL's fused LM head
(full logits before TRL 1.15, as TRL's own loss then; `trl_margins._compat.token_outputs`), the reference log-probs
through TRL's public `compute_ref_log_probs` (which handles a separate reference model, PEFT's adapter-disabled base
and no-grad) or TRL's precomputed columns, then the one loss, `w_i * soft_target_loss(z_i - gamma_i, p_i)` (plus
RPO's `sft` term, `loss_weights`, WPO weights), and TRL's metrics. Everything else (data preparation, collation,
reference model loading, PEFT, DeepSpeed/FSDP, precompute, evaluation) is TRL's own code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from .._compat import (
    DPOHooks,
    chosen_nll,
    recompute_outputs,
    record_token_metrics,
    token_outputs,
    without_reference_model,
)
from ..data.margins import MARGIN_COLUMN
from ..errors import UsageError
from ..losses import (
    beta_guided_keep_mask,
    dynamic_beta,
    score_offsets,
    soft_target_loss,
    weighted_pair_mean,
    wpo_weights,
)
from ..state import GAP_STATE_FILE, GapStatistics
from ._base import (
    BETA_DPO_PAPER,
    MMPO_PAPER,
    ODPO_PAPER,
    PAIR_COLUMNS,
    SIMPO_PAPER,
    CalibrationMixin,
    MarginCollatorMixin,
    MarginTrainerMixin,
    Paper,
    missing_column_error,
    target_probs,
    with_margin_collator,
    without_pair_columns,
)
from ._base_config import upgrade_config
from .dpo_config import MMPOConfig, warn_if_cdpo

# Batch entries that are not model inputs (TRL's own, plus our margin and pair weight)
_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", *PAIR_COLUMNS}

_DPO_INIT_SIGNATURE = inspect.signature(DPOTrainer.__init__)


@dataclasses.dataclass
class MarginDataCollator(MarginCollatorMixin, DataCollatorForPreference):
    """TRL's `DataCollatorForPreference` that also carries each pair's margin (`MARGIN_COLUMN`) and weight
    (`WEIGHT_COLUMN`) as float tensors."""


def refuse_margins_on_vision_data(args: MMPOConfig, train_dataset) -> None:
    """MMPO margins (and pair weights) are added before TRL's tokenization, which `DPOTrainer` skips for vision
    datasets (images are processed on the fly), so `mmpo_gamma`, `odpo_alpha` or `weight_column` would silently train
    without them: refuse them instead."""
    fields = {"mmpo_gamma": args.mmpo_gamma, "odpo_alpha": args.odpo_alpha, "weight_column": args.weight_column}
    on = [f"`{name}`" for name, value in fields.items() if value is not None]
    if not on or train_dataset is None:
        return
    sample = next(iter(train_dataset))
    if "image" in sample or "images" in sample:
        raise UsageError(
            f"{', '.join(on)} {'is' if len(on) == 1 else 'are'} not supported with vision datasets (an `image` or "
            "`images` column): TRL's DPOTrainer prepares them on the fly and skips the dataset preparation that adds "
            "the MMPO margins and pair weights. "
            f"Unset {', '.join(on)}, or train on a text-only dataset."
        )


class MMPOTrainer(MarginTrainerMixin, CalibrationMixin, DPOHooks, DPOTrainer):
    """[`~trl.DPOTrainer`] with Margin Matching Preference Optimization (Kim et al., https://arxiv.org/abs/2410.03145,
    Section 3.2) and the other knobs of the one loss.

    Takes the same arguments as `DPOTrainer` and an [`MMPOConfig`] (a plain `DPOConfig` also works). Each pair's
    target probability is `p = sigmoid(mmpo_gamma * m)`, with the margin `m` read from the dataset's score columns,
    and the loss is `soft_target_loss(beta * (log pi/ref(y_w) - log pi/ref(y_l)), p)`, averaged over pairs like TRL's.

    With every knob off the loss and metrics are `DPOTrainer`'s own, for every TRL option, and so is the model card.
    With a knob on, the loss combines with RPO's `"sft"` term, `loss_weights` and WPO weights (see [`MMPOConfig`]
    for what is refused), and the trainer logs every metric `DPOTrainer` logs (`entropy`, `num_tokens`, `logits/*`,
    `mean_token_accuracy`, `rewards/*`, `logps/*`, `aux_loss` for MoE models), plus `mmpo/target_prob` and, in
    evaluation, the expected calibration error (`mmpo/ece`) and Brier score (`mmpo/brier`) of `sigmoid(z)` against
    the targets. With every knob off there are no targets, so none of these three is logged: the metric keys are
    exactly TRL's. The model card cites the paper of each knob that is on.
    """

    config_class: type[MMPOConfig] = MMPOConfig
    default_output_suffix = "MMPO"
    collator_name = "trl_margins.trainers.dpo_trainer.MarginDataCollator"

    def __init__(self, model, ref_model=None, args: DPOConfig | None = None, *trainer_args, **trainer_kwargs):
        if args is None:
            args = self.default_config(model)
        if not isinstance(args, self.config_class):
            warn_if_cdpo(args)
        args = upgrade_config(args, self.config_class)
        bound = _DPO_INIT_SIGNATURE.bind(self, model, ref_model, args, *trainer_args, **trainer_kwargs)
        refuse_margins_on_vision_data(args, bound.arguments.get("train_dataset"))
        self._pending_scalars: dict[str, torch.Tensor] = {}
        if args.simpo and ref_model is not None:
            raise UsageError("`reward_type='simpo'` uses no reference model: don't pass `ref_model`.")
        with without_reference_model(self) if args.simpo else contextlib.nullcontext():
            super().__init__(model, ref_model, args, *trainer_args, **trainer_kwargs)
        # Swapped in after `__init__`, so TRL's reference precompute (which needs no margins) keeps its own collator
        self.data_collator = with_margin_collator(self.data_collator, DataCollatorForPreference, MarginDataCollator)
        self.gap_statistics: GapStatistics | None = None
        if self.args.beta_dpo_alpha is not None:
            self.gap_statistics = GapStatistics(self.args.beta_dpo_momentum, seed=self.args.seed)

    def model_card_papers(self) -> list[Paper]:
        args = self.args
        on = {
            MMPO_PAPER: args.mmpo_gamma is not None,
            SIMPO_PAPER: args.simpo,
            ODPO_PAPER: args.odpo_alpha is not None,
            BETA_DPO_PAPER: args.beta_dpo_alpha is not None,
        }
        return [paper for paper, knob in on.items() if knob]

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, without_pair_columns(inputs))

    # ---- the knobs of the one loss ---------------------------------------------------------------------------------
    @property
    def knobs_on(self) -> bool:
        """Whether any knob of the one loss is on; if not, training is exactly `DPOTrainer`'s."""
        return bool(self.args.margin_knobs())

    def target_probs(self, margins: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """`p_i`: MMPO's `sigmoid(mmpo_gamma * m_i)` (ones without `mmpo_gamma`), then cDPO label smoothing."""
        probs = target_probs(margins, self.args.mmpo_gamma, like, self.collator_name)
        eps = self.args.label_smoothing  # only reached with the sigmoid loss in `loss_type`, where it is cDPO's
        return probs if eps == 0 else (1 - eps) * probs + eps * (1 - probs)

    def target_margins(self, reward_gaps: torch.Tensor, mode: str) -> torch.Tensor | None:
        """`gamma_i`, subtracted from the reward gap. None here (MMPO has no dynamic margin); gamma-PO overrides it."""
        return None

    def offsets(self, margins: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """ODPO's `delta_i = odpo_alpha * f(m_i)` (the other choice of the target margin), or None without it."""
        if self.args.odpo_alpha is None:
            return None
        if margins is None:
            raise missing_column_error("odpo_alpha", MARGIN_COLUMN, "margins", self.collator_name)
        return score_offsets(margins.to(like.device), self.args.odpo_alpha, self.args.odpo_scaling)

    @torch.no_grad()
    def beta_dpo_scale(self, reward_gaps: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """beta-DPO (`beta_dpo_alpha`): `(beta_batch / beta, keep weights)` for this process's pairs, or None.

        Over the global batch (the gaps gathered from every process, so every rank computes the same): in training
        the moving averages are updated first and then used, as in the beta-DPO authors' code; evaluation reads them
        and copies the generator, so evaluating never changes training. The keep weights are `B / K` for the `K`
        kept of the global batch's `B` pairs and 0 for the others: `mean_i(w_i * loss_i)` on each process, averaged
        over the processes, is the mean loss over the kept pairs, whichever process holds them.
        """
        stats = self.gap_statistics
        if stats is None:
            return None
        training = mode == "train"
        gaps = self.accelerator.gather(reward_gaps.detach().float())
        if training:
            stats.update(gaps)
        generator = stats.generator(gaps.device, advance=training)
        keep = beta_guided_keep_mask(gaps, stats.mean, stats.std, self.args.beta_dpo_keep_ratio, generator)
        kept = keep.sum()
        beta = dynamic_beta(gaps[keep].mean(), stats.mean, self.beta, self.args.beta_dpo_alpha)
        weights = keep.float() * (gaps.numel() / kept.clamp_min(1))
        self._pending_scalars.update(
            {
                "beta_dpo/beta": beta,
                "beta_dpo/gap_mean": stats.mean,
                "beta_dpo/gap_std": stats.std,
                "beta_dpo/kept": kept.float(),
            }
        )
        start = self.accelerator.process_index * reward_gaps.numel()
        return beta / self.beta, weights[start : start + reward_gaps.numel()]

    # ---- loss ------------------------------------------------------------------------------------------------------
    def margin_loss(self, model, inputs, return_outputs):
        """The loss of one batch: TRL's own with every knob off, else the one loss of this package."""
        if not self.knobs_on:
            return self.trl_loss(model, without_pair_columns(inputs), return_outputs)
        mode = "train" if self.model.training else "eval"
        margins = inputs.get(MARGIN_COLUMN)
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        shift_completion_mask = inputs["completion_mask"][..., 1:]
        outputs = token_outputs(model, model_kwargs, inputs["input_ids"], inputs["completion_mask"], metrics=True)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        seq_len = shift_completion_mask.size(1)
        per_token_logps = outputs.log_probs[:, -seq_len:]
        chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)  # the batch is [chosen, rejected]

        if self.args.simpo:  # SimPO: beta / |y| * log pi(y)
            lengths = shift_completion_mask.sum(dim=1).clamp(min=1)
            chosen_len, rejected_len = lengths.chunk(2, dim=0)
            chosen_scores, rejected_scores = chosen_logps / chosen_len, rejected_logps / rejected_len
        else:  # DPO: beta * log pi/pi_ref(y)
            if self.precompute_ref_logps:
                ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                ref_model = self.model if self.ref_model is None else self.ref_model  # PEFT: adapter disabled
                ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(ref_model, inputs)
            chosen_scores, rejected_scores = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps

        reward_gaps = self.beta * (chosen_scores - rejected_scores)  # z
        beta_dpo = self.beta_dpo_scale(reward_gaps, mode)
        if beta_dpo is not None:  # z at beta_batch instead of beta, no gradient through the factor
            reward_gaps = beta_dpo[0] * reward_gaps
        target_probs = self.target_probs(margins, like=reward_gaps)
        target_margins = self.target_margins(reward_gaps.detach(), mode)
        offsets = self.offsets(margins, like=reward_gaps)  # refused with gamma-PO's margins: at most one is set
        logits = reward_gaps
        for shift in (target_margins, offsets):
            if shift is not None:
                logits = logits - shift
        pair_weights = self.pair_weights(inputs, per_token_logps, outputs, shift_completion_mask)
        if beta_dpo is not None:  # beta-DPO's filter: the pairs left out weigh 0
            pair_weights = beta_dpo[1] if pair_weights is None else pair_weights * beta_dpo[1]

        loss = 0.0
        for loss_type, loss_weight in zip(self.loss_types, self.loss_weights, strict=True):
            if loss_type == "sigmoid":  # the one loss, in place of DPO's sigmoid loss
                per_pair_loss = soft_target_loss(logits, target_probs)
            else:  # "sft" (RPO), as TRL computes it: the mean NLL over the chosen completion tokens
                nll = chosen_nll(outputs, per_token_logps, inputs["input_ids"], shift_completion_mask)
                per_pair_loss = nll.expand(chosen_logps.size(0))
            loss = loss + weighted_pair_mean(per_pair_loss, pair_weights) * loss_weight
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

        record_token_metrics(self, mode, inputs, outputs, seq_len)
        chosen_rewards, rejected_rewards = self.beta * chosen_scores.detach(), self.beta * rejected_scores.detach()
        # TRL's DPOTrainer metric names, so dashboards and callbacks keep working
        per_pair = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "rewards/margins": chosen_rewards - rejected_rewards,
            "logps/chosen": chosen_logps.detach(),
            "logps/rejected": rejected_logps.detach(),
        }
        if self.args.mmpo_gamma is not None or self.args.label_smoothing > 0:
            per_pair["mmpo/target_prob"] = target_probs
        if offsets is not None:
            per_pair["odpo/offset"] = offsets
        self.record_pair_metrics(mode, per_pair)
        if mode == "eval":
            self.collect_calibration(reward_gaps.detach(), target_probs)

        return (loss, recompute_outputs(model, model_kwargs)) if return_outputs else loss

    def pair_weights(self, inputs, per_token_logps, outputs, shift_completion_mask) -> torch.Tensor | None:
        """`w_i`: the `weight_column` weight times WPO's weight (`use_weighting`), whichever are on, else None."""
        weights = self.pair_weights_of(inputs)
        weights = None if weights is None else weights.to(per_token_logps.device)
        if self.use_weighting:
            wpo = wpo_weights(per_token_logps, outputs.log_sum_sq_probs, shift_completion_mask)
            weights = wpo if weights is None else weights * wpo
        return weights

    # ---- checkpoints -----------------------------------------------------------------------------------------------
    def checkpoint_states(self) -> dict[str, object]:
        return {} if self.gap_statistics is None else {GAP_STATE_FILE: self.gap_statistics}
