"""`DPOTrainer` subclasses: MMPO soft targets (and, in `gamma_po.py`, gamma-PO dynamic margins).

With every knob off (no `mmpo_gamma`, no cDPO `label_smoothing`, DPO rewards, no target margin) `_compute_loss` is
TRL's own, so every TRL option works unchanged. With a knob on, TRL 1.x's `DPOTrainer` has no per-example loss hook,
so `_compute_loss` is re-implemented here, short: the policy forward through TRL's fused LM head (full logits before
TRL 1.15, as TRL's own loss then; see `trl_compat.py`), the reference
log-probs through TRL's public `compute_ref_log_probs` (which handles a separate reference model, PEFT's
adapter-disabled base and no-grad) or TRL's precomputed columns, then the one loss of this package,
`w_i * soft_target_loss(z - gamma_i, p_i)` (plus RPO's `sft` term, `loss_weights`, WPO weights), and TRL's metrics.
Everything else (data preparation, collation, reference model loading, PEFT, DeepSpeed/FSDP, precompute,
evaluation) is TRL's own code.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import os
import warnings

import torch
import trl.trainer.dpo_trainer as _trl_dpo
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from .config import MMPOConfig, upgrade_config
from .gap_statistics import GAP_STATE_FILE, GapStatistics
from .losses import (
    beta_guided_keep_mask,
    dynamic_beta,
    score_offsets,
    soft_target_loss,
    soft_target_probs,
    weighted_pair_mean,
)
from .margins import MARGIN_COLUMN, WEIGHT_COLUMN
from .trainer_utils import (
    PAIR_COLUMNS,
    CalibrationMixin,
    MarginCollatorMixin,
    add_margins_from_config,
    add_pair_lengths,
    add_weights_from_config,
    extra_signature_columns,
    missing_margins_error,
    missing_weights_error,
    with_margin_collator,
    without_pair_columns,
)
from .trl_compat import chosen_nll, tensor_parallel_size, token_outputs

logger = logging.get_logger(__name__)

# Batch entries that are not model inputs (TRL's own, plus our margin and pair weight)
_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", *PAIR_COLUMNS}


@dataclasses.dataclass
class MarginDataCollator(MarginCollatorMixin, DataCollatorForPreference):
    """TRL's `DataCollatorForPreference` that also carries each pair's margin (`MARGIN_COLUMN`) and weight
    (`WEIGHT_COLUMN`) as float tensors."""


# The trainer whose `__init__` is running in this context and needs no reference model (SimPO rewards), else None.
# A context variable, not a module attribute: other threads (and other trainers) never see it set.
_skip_reference_load_for: contextvars.ContextVar[DPOTrainer | None] = contextvars.ContextVar(
    "trl_margins_skip_reference_load_for", default=None
)


def _install_reference_load_guard() -> None:
    """Wrap `trl.trainer.dpo_trainer.create_model_from_path` once, for the process, so that it returns None for the
    reference copy of a trainer in `_skip_reference_load_for`, and is the original function everywhere else.

    `DPOTrainer.__init__` has no option to skip the reference load, but looks the function up in its module on each
    call: it loads a policy given by path before `Trainer.__init__` and the reference copy after it, so the reference
    call is the one made once the trainer has its accelerator.
    """
    original = _trl_dpo.create_model_from_path
    if getattr(original, "_trl_margins_guard", False):
        return

    def create_model_from_path(model_id, **kwargs):
        trainer = _skip_reference_load_for.get()
        if trainer is not None and hasattr(trainer, "accelerator"):
            return None
        return original(model_id, **kwargs)

    create_model_from_path._trl_margins_guard = True
    create_model_from_path.__wrapped__ = original
    _trl_dpo.create_model_from_path = create_model_from_path


_install_reference_load_guard()

_DPO_INIT_SIGNATURE = inspect.signature(DPOTrainer.__init__)


def refuse_margins_on_vision_data(args: MMPOConfig, train_dataset) -> None:
    """MMPO margins (and pair weights) are added in `_prepare_dataset`, which `DPOTrainer` skips for vision datasets
    (images are processed on the fly), so `mmpo_gamma`, `odpo_alpha` or `weight_column` would silently train without
    them: refuse them instead."""
    fields = {"mmpo_gamma": args.mmpo_gamma, "odpo_alpha": args.odpo_alpha, "weight_column": args.weight_column}
    on = [f"`{name}`" for name, value in fields.items() if value is not None]
    if not on or train_dataset is None:
        return
    sample = next(iter(train_dataset))
    if "image" in sample or "images" in sample:
        raise ValueError(
            f"{', '.join(on)} {'is' if len(on) == 1 else 'are'} not supported with vision datasets (an `image` or "
            "`images` column): TRL's DPOTrainer prepares them on the fly and skips the dataset preparation that adds "
            "the MMPO margins and pair weights. "
            f"Unset {', '.join(on)}, or train on a text-only dataset."
        )


class MMPOTrainer(CalibrationMixin, DPOTrainer):
    """[`~trl.DPOTrainer`] with Margin Matching Preference Optimization (Kim et al., Section 3.2).

    Takes the same arguments as `DPOTrainer` and an [`MMPOConfig`] (a plain `DPOConfig` also works). Each pair's
    target probability is `p = sigmoid(mmpo_gamma * m)`, with the margin `m` read from the dataset's score columns,
    and the loss is `soft_target_loss(beta * (log pi/ref(y_w) - log pi/ref(y_l)), p)`, averaged over pairs like TRL's.

    With every knob off (`mmpo_gamma=None`, no cDPO `label_smoothing`, `reward_type="dpo"`, no target margin) the
    loss and metrics are `DPOTrainer`'s own, for every TRL option. With a knob on, the loss combines with RPO's
    `"sft"` term, `loss_weights` and WPO weights (see [`MMPOConfig`] for what is refused), and the trainer logs every
    metric `DPOTrainer` logs (`entropy`, `num_tokens`, `logits/*`, `mean_token_accuracy`, `rewards/*`, `logps/*`,
    `aux_loss` for MoE models), plus `mmpo/target_prob` and, in evaluation, the expected calibration error
    (`mmpo/ece`) and Brier score (`mmpo/brier`) of `sigmoid(z)` against the targets. With every knob off there are
    no targets, so none of these three is logged: the metric keys are exactly TRL's.
    """

    _tag_names = ["trl", "dpo", "mmpo", "trl-margins"]
    _name = "MMPO"
    config_class: type[MMPOConfig] = MMPOConfig

    def __init__(self, model, ref_model=None, args: DPOConfig | None = None, *trainer_args, **trainer_kwargs):
        if args is None:
            model_name = model if isinstance(model, str) else _trl_dpo.get_config_model_id(model.config)
            args = self.config_class(f"{model_name.split('/')[-1]}-{self._name}")
        args = upgrade_config(args, self.config_class)
        bound = _DPO_INIT_SIGNATURE.bind(self, model, ref_model, args, *trainer_args, **trainer_kwargs)
        refuse_margins_on_vision_data(args, bound.arguments.get("train_dataset"))
        self._pending_scalars: dict[str, torch.Tensor] = {}
        if args.simpo and ref_model is not None:
            raise ValueError("`reward_type='simpo'` uses no reference model: don't pass `ref_model`.")
        token = _skip_reference_load_for.set(self if args.simpo else None)
        try:
            super().__init__(model, ref_model, args, *trainer_args, **trainer_kwargs)
        finally:
            _skip_reference_load_for.reset(token)
        # Swapped in after `__init__`, so TRL's reference precompute (which needs no margins) keeps its own collator
        self.data_collator = with_margin_collator(self.data_collator, DataCollatorForPreference, MarginDataCollator)
        self.gap_statistics: GapStatistics | None = None
        if self.args.beta_dpo_alpha is not None:
            self.gap_statistics = GapStatistics(self.args.beta_dpo_momentum, seed=self.args.seed)

    # ---- data path -------------------------------------------------------------------------------------------------
    def _needs_margins(self, args: MMPOConfig) -> bool:
        return args.mmpo_gamma is not None or args.odpo_alpha is not None

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = add_weights_from_config(dataset, args, dataset_name)  # first: rows named as the user numbers them
        if self._needs_margins(args):
            dataset = add_margins_from_config(dataset, args, dataset_name)
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        return add_pair_lengths(dataset, args)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        extra = [c for c in extra_signature_columns(self.args) if c not in self._signature_columns]
        self._signature_columns = [*self._signature_columns, *extra]

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, without_pair_columns(inputs))

    # ---- the knobs of the one loss ---------------------------------------------------------------------------------
    @property
    def knobs_on(self) -> bool:
        """Whether any knob of the one loss is on; if not, training is exactly `DPOTrainer`'s."""
        return bool(self.args.margin_knobs())

    def target_probs(self, margins: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """`p_i`: MMPO's `sigmoid(mmpo_gamma * m_i)` (ones without `mmpo_gamma`), then cDPO label smoothing."""
        if self.args.mmpo_gamma is None:
            probs = torch.ones_like(like, dtype=torch.float32)
        else:
            if margins is None:
                raise missing_margins_error("trl_margins.dpo.MarginDataCollator")
            probs = soft_target_probs(margins.to(like.device), self.args.mmpo_gamma)
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
            raise missing_margins_error("trl_margins.dpo.MarginDataCollator", knob="odpo_alpha")
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
    def _compute_loss(self, model, inputs, return_outputs):
        if not self.knobs_on:
            return super()._compute_loss(model, without_pair_columns(inputs), return_outputs)
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
        pair_weights = self.pair_weights(inputs.get(WEIGHT_COLUMN), per_token_logps, outputs, shift_completion_mask)
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

        self._log_token_metrics(mode, inputs, outputs, seq_len)
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
        self._log_metrics(mode, per_pair)
        if mode == "eval":
            self._collect_calibration(reward_gaps.detach(), target_probs)

        if return_outputs:
            warnings.warn(
                "`return_outputs=True` recomputes the logits with an extra forward pass (the fused LM head of TRL "
                "1.15+ builds none), like TRL's DPOTrainer.",
                FutureWarning,
                stacklevel=2,
            )
            with torch.no_grad():
                outputs = model(**model_kwargs)
        return (loss, outputs) if return_outputs else loss

    def pair_weights(self, column_weights, per_token_logps, outputs, shift_completion_mask) -> torch.Tensor | None:
        """`w_i`: the `weight_column` weight times WPO's weight (`use_weighting`), whichever are on, else None."""
        if self.args.weight_column is not None and column_weights is None:
            raise missing_weights_error("trl_margins.dpo.MarginDataCollator")
        weights = None if column_weights is None else column_weights.to(per_token_logps.device)
        if self.use_weighting:
            wpo = self._wpo_weights(per_token_logps, outputs, shift_completion_mask)
            weights = wpo if weights is None else weights * wpo
        return weights

    @staticmethod
    def _wpo_weights(per_token_logps, outputs, shift_completion_mask) -> torch.Tensor:
        """WPO's pair weight (Eq. 2 of the WPO paper), computed as TRL does: the product over the pair of
        `exp(mean over the completion of log p(y_t) - log sum_v p(v)^2)`, without gradient."""
        seq_len = shift_completion_mask.size(1)
        with torch.no_grad():
            aligned_logps = (per_token_logps - outputs.log_sum_sq_probs[:, -seq_len:]) * shift_completion_mask
            weights = torch.exp(aligned_logps.sum(dim=1) / shift_completion_mask.sum(dim=1).clamp_min(1))
        chosen_weights, rejected_weights = weights.chunk(2, dim=0)
        return chosen_weights * rejected_weights

    # ---- metrics ---------------------------------------------------------------------------------------------------
    def _log_token_metrics(self, mode: str, inputs, outputs, seq_len: int) -> None:
        """TRL's token-level metrics: `aux_loss` (MoE), `entropy`, `num_tokens`, `logits/chosen`, `logits/rejected`,
        `mean_token_accuracy`.

        A minimal re-implementation of the metric block of `DPOTrainer._compute_loss` (the same keys and values in TRL
        1.9-1.16), which offers no hook to reuse it: the same sums and ratios, gathered in one transfer.
        tests/test_parity.py checks each value against TRL's, on each release of the CI matrix.
        """
        mask = inputs["completion_mask"][:, 1:]
        chosen_mask, rejected_mask = mask.bool().chunk(2, dim=0)
        chosen_logits, rejected_logits = outputs.mean_logits[:, -seq_len:].detach().chunk(2, dim=0)
        chosen_is_top1 = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)[0]
        sums = [
            (outputs.entropy[:, -seq_len:].detach() * mask).sum(),
            mask.sum(),
            chosen_logits[chosen_mask].sum(),
            chosen_mask.sum(),
            rejected_logits[rejected_mask].sum(),
            rejected_mask.sum(),
            (chosen_is_top1 & chosen_mask).sum(),
            inputs["attention_mask"].sum(),
        ]
        if self.aux_loss_enabled:
            sums.append(outputs.aux_loss.detach())
        # [processes, sums] -> totals over the processes; float64 keeps the token counts exact (MPS has no float64)
        dtype = torch.float32 if mask.device.type == "mps" else torch.float64
        totals = self.accelerator.gather(torch.stack([s.to(dtype) for s in sums])[None]).sum(dim=0).tolist()
        entropy, tokens, chosen_logit, chosen_tokens, rejected_logit, rejected_tokens, correct, attended = totals[:8]

        def ratio(num: float, den: float) -> float:
            return num / den if den > 0 else 0.0

        metrics = self._metrics[mode]
        if self.aux_loss_enabled:
            metrics["aux_loss"].append(totals[8] / self.accelerator.num_processes)
        metrics["entropy"].append(ratio(entropy, tokens))
        if mode == "train":
            self._total_train_tokens += int(attended) // tensor_parallel_size(self)
        metrics["num_tokens"] = [self._total_train_tokens]
        metrics["logits/chosen"].append(ratio(chosen_logit, chosen_tokens))
        metrics["logits/rejected"].append(ratio(rejected_logit, rejected_tokens))
        metrics["mean_token_accuracy"].append(ratio(correct, chosen_tokens))

    def _log_metrics(self, mode: str, per_pair: dict[str, torch.Tensor]) -> None:
        """Log the means over the global batch of `per_pair` tensors and the scalars queued in `_pending_scalars`,
        with a single device-to-host transfer for all of them."""
        names = list(per_pair)
        # [pairs, metrics]: `gather` concatenates the processes' pairs along dim 0
        values = self.accelerator.gather(torch.stack([per_pair[n].float() for n in names], dim=1)).mean(dim=0)
        if self._pending_scalars:
            names += list(self._pending_scalars)
            scalars = [v.float().reshape(1).to(values.device) for v in self._pending_scalars.values()]
            values = torch.cat([values, *scalars])
            self._pending_scalars = {}
        for name, value in zip(names, values.tolist(), strict=True):
            self._metrics[mode][name].append(value)

    # ---- checkpoints -----------------------------------------------------------------------------------------------
    def _training_states(self) -> dict[str, object]:
        """What checkpoints save besides TRL's, by file name: objects with `state_dict` / `load_state_dict`."""
        return {} if self.gap_statistics is None else {GAP_STATE_FILE: self.gap_statistics}

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        states = self._training_states()
        if states and self.args.should_save:  # identical on every rank: the main process writes them
            checkpoint = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            for name, state in states.items():
                torch.save(state.state_dict(), os.path.join(checkpoint, name))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        for name, state in self._training_states().items():
            path = os.path.join(checkpoint, name)
            if os.path.isfile(path):
                state.load_state_dict(torch.load(path, weights_only=True))
            else:
                logger.warning(
                    f"{checkpoint} has no {name}: {type(state).__name__} restarts empty, so this run will not match "
                    "an uninterrupted one."
                )
