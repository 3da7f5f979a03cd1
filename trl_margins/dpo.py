"""`DPOTrainer` subclasses: MMPO soft targets (and, in `gamma_po.py`, gamma-PO dynamic margins).

TRL 1.x's `DPOTrainer` has no per-example loss hook, so `_compute_loss` is re-implemented here, short: the policy
forward through TRL's fused LM head, the reference log-probs through TRL's public `compute_ref_log_probs` (which
handles a separate reference model, PEFT's adapter-disabled base and no-grad) or TRL's precomputed columns, then the
one loss of this package, `soft_target_loss(z - gamma_i, p_i)`, and TRL's reward metrics. Everything else (data
preparation, collation, reference model loading, PEFT, DeepSpeed/FSDP, precompute, evaluation) is TRL's own code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings

import torch
import trl.trainer.dpo_trainer as _trl_dpo
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from .config import MMPOConfig, upgrade_config
from .data import MARGIN_COLUMN
from .losses import soft_target_loss, soft_target_probs
from .trainer_utils import (
    CalibrationMixin,
    MarginCollatorMixin,
    add_margins_from_config,
    missing_margins_error,
    with_margin_collator,
)

# Batch entries that are not model inputs (TRL's own, plus our margin)
_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", MARGIN_COLUMN}


@dataclasses.dataclass
class MarginDataCollator(MarginCollatorMixin, DataCollatorForPreference):
    """TRL's `DataCollatorForPreference` that also carries each pair's margin (`MARGIN_COLUMN`) as a float tensor."""


@contextlib.contextmanager
def _replaced_in_trl_dpo(name: str, wrap):
    """Replace `trl.trainer.dpo_trainer.<name>` by `wrap(original)` while `DPOTrainer.__init__` runs: it offers no hook
    for what we change, but looks these functions up in its module on each call."""
    original = getattr(_trl_dpo, name)
    setattr(_trl_dpo, name, wrap(original))
    try:
        yield
    finally:
        setattr(_trl_dpo, name, original)


def _without_reference_model_load(trainer: DPOTrainer):
    """Make `DPOTrainer.__init__` skip loading a reference copy of the policy (reference-free rewards need none).

    `DPOTrainer` loads a policy given by path before `Trainer.__init__` and the reference copy after it, both with
    `create_model_from_path`; the reference call is the one made once the accelerator exists.
    """

    def wrap(original):
        def create_model_from_path(model_id, **kwargs):
            if hasattr(trainer, "accelerator"):
                return None
            return original(model_id, **kwargs)

        return create_model_from_path

    return _replaced_in_trl_dpo("create_model_from_path", wrap)


def _log_probs_only_lm_head():
    """Make `DPOTrainer.__init__` build its fused LM head with the `log_probs` output only.

    TRL also asks the head for entropy, mean logit and top-1 hits, which feed only its own loss's metrics; our
    `_compute_loss` never reads them, and on short sequences they cost a few percent of a step (benchmarks/RESULTS.md).
    """

    def wrap(original):
        def add_fused_lm_head(model, *args, **kwargs):
            return original(model, *args, **{**kwargs, "outputs": ("log_probs",)})

        return add_fused_lm_head

    return _replaced_in_trl_dpo("add_fused_lm_head", wrap)


class MMPOTrainer(CalibrationMixin, DPOTrainer):
    """[`~trl.DPOTrainer`] with Margin Matching Preference Optimization (Kim et al., Section 3.2).

    Takes the same arguments as `DPOTrainer` and an [`MMPOConfig`] (a plain `DPOConfig` also works and trains with
    hard labels). Each pair's target probability is `p = sigmoid(mmpo_gamma * m)`, with the margin `m` read from the
    dataset's score columns, and the loss is `soft_target_loss(beta * (log pi/ref(y_w) - log pi/ref(y_l)), p)`,
    averaged over pairs like TRL's. Logs TRL's `rewards/*` and `logps/*` metrics, `mmpo/target_prob`, and in evaluation
    the expected calibration error (`mmpo/ece`) and Brier score (`mmpo/brier`) of `sigmoid(z)` against the targets.
    """

    _tag_names = ["trl", "dpo", "mmpo", "trl-margins"]
    _name = "MMPO"
    config_class: type[MMPOConfig] = MMPOConfig

    def __init__(self, model, ref_model=None, args: DPOConfig | None = None, *trainer_args, **trainer_kwargs):
        if args is None:
            model_name = model if isinstance(model, str) else _trl_dpo.get_config_model_id(model.config)
            args = self.config_class(f"{model_name.split('/')[-1]}-{self._name}")
        args = upgrade_config(args, self.config_class)
        self._pending_scalars: dict[str, torch.Tensor] = {}
        with contextlib.ExitStack() as patches:
            patches.enter_context(_log_probs_only_lm_head())
            if args.reference_free:
                if ref_model is not None:
                    raise ValueError("`reference_free=True` uses no reference model: don't pass `ref_model`.")
                patches.enter_context(_without_reference_model_load(self))
            super().__init__(model, ref_model, args, *trainer_args, **trainer_kwargs)
        # Swapped in after `__init__`, so TRL's reference precompute (which needs no margins) keeps its own collator
        self.data_collator = with_margin_collator(self.data_collator, DataCollatorForPreference, MarginDataCollator)

    # ---- data path -------------------------------------------------------------------------------------------------
    def _needs_margins(self, args: MMPOConfig) -> bool:
        return args.mmpo_gamma is not None

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if self._needs_margins(args):
            dataset = add_margins_from_config(dataset, args, dataset_name)
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if MARGIN_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, MARGIN_COLUMN]

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != MARGIN_COLUMN})

    # ---- the knobs of the one loss ---------------------------------------------------------------------------------
    def target_probs(self, margins: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """`p_i`: MMPO's `sigmoid(mmpo_gamma * m_i)` (ones without `mmpo_gamma`), then cDPO label smoothing."""
        if self.args.mmpo_gamma is None:
            probs = torch.ones_like(like, dtype=torch.float32)
        else:
            if margins is None:
                raise missing_margins_error("trl_margins.dpo.MarginDataCollator")
            probs = soft_target_probs(margins.to(like.device), self.args.mmpo_gamma)
        eps = self.args.label_smoothing
        return probs if eps == 0 else (1 - eps) * probs + eps * (1 - probs)

    def target_margins(self, reward_gaps: torch.Tensor, mode: str) -> torch.Tensor | None:
        """`gamma_i`, subtracted from the reward gap. None here (MMPO has no target margin); gamma-PO overrides it."""
        return None

    # ---- loss ------------------------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        margins = inputs.get(MARGIN_COLUMN)
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        shift_completion_mask = completion_mask[..., 1:]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        logps = outputs.log_probs[:, -shift_completion_mask.size(1) :].sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)  # the batch is [chosen, rejected]

        if self.args.reference_free:  # SimPO: beta / |y| * log pi(y)
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
        target_probs = self.target_probs(margins, like=reward_gaps)
        target_margins = self.target_margins(reward_gaps.detach(), mode)
        logits = reward_gaps if target_margins is None else reward_gaps - target_margins
        loss = soft_target_loss(logits, target_probs).mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

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
        self._log_metrics(mode, per_pair)
        if mode == "eval":
            self._collect_calibration(reward_gaps.detach(), target_probs)

        if return_outputs:
            warnings.warn(
                "`return_outputs=True` recomputes the logits with an extra forward pass (the fused LM head builds "
                "none), like TRL's DPOTrainer.",
                FutureWarning,
                stacklevel=2,
            )
            with torch.no_grad():
                outputs = model(**model_kwargs)
        return (loss, outputs) if return_outputs else loss

    # ---- metrics ---------------------------------------------------------------------------------------------------
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
