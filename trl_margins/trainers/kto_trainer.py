"""`MMPOKTOTrainer`: `trl.KTOTrainer` with MMPO's per-sample weights for binary feedback (MMPO,
https://arxiv.org/abs/2410.03145, Appendix B).

KTO's loss multiplies each desirable sample's loss by `desirable_weight` and each undesirable one's by
`undesirable_weight`, both constants. Here each sample's weight is refined by its score `s` against the training set's
median `s_med` (fixed in `__init__`, before training): `desirable_weight * sigmoid(mmpo_gamma * (s - s_med))` and
`undesirable_weight * sigmoid(mmpo_gamma * (s_med - s))` (`trl_margins.losses.kto_sample_weights`). The factor travels
through the collator as a pair weight does (`WEIGHT_COLUMN`), and TRL's own loss applies it: for the one call,
`desirable_weight` and `undesirable_weight` hold the batch's per-sample weights (`trl_margins._compat.kto_weights`), so
the loss, KL term, reference handling and metrics are all TRL's. With `mmpo_gamma=None` this is `trl.KTOTrainer`
exactly. `trl_margins.data.formatting.unpair_preferences` turns scored pairs into the binary feedback KTO trains on.
"""

from __future__ import annotations

import dataclasses
import inspect
import statistics

import torch
from trl import KTOConfig, KTOTrainer
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

from .._compat import KTOHooks, kto_weights, record_metrics
from ..data.margins import WEIGHT_COLUMN, column_scores
from ..errors import UsageError
from ..losses import kto_sample_weights
from ._base import (
    MarginCollatorMixin,
    MarginTrainerMixin,
    missing_column_error,
    with_margin_collator,
    without_pair_columns,
)
from ._base_config import upgrade_config
from .kto_config import MMPOKTOConfig

_KTO_INIT_SIGNATURE = inspect.signature(KTOTrainer.__init__)


@dataclasses.dataclass
class KTOWeightDataCollator(MarginCollatorMixin, DataCollatorForUnpairedPreference):
    """TRL's `DataCollatorForUnpairedPreference` that also carries each sample's MMPO weight factor
    (`WEIGHT_COLUMN`)."""


class MMPOKTOTrainer(MarginTrainerMixin, KTOHooks, KTOTrainer):
    """[`~trl.KTOTrainer`] with MMPO's per-sample weights from scores (MMPO, https://arxiv.org/abs/2410.03145,
    Appendix B); see [`MMPOKTOConfig`].

    Takes the same arguments as `KTOTrainer` and an [`MMPOKTOConfig`] (a plain `KTOConfig` also works, as plain KTO).
    The training set must be a map-style dataset with the score column: its median is computed once, here, and used
    for the evaluation set too. Logs `mmpo/kto_weight` (the mean factor of the batch) besides TRL's metrics. With
    `mmpo_gamma` the model card cites MMPO (and TRL's KTO citation without it).
    """

    config_class = MMPOKTOConfig
    default_output_suffix = "MMPO-KTO"
    collator_name = "trl_margins.trainers.kto_trainer.KTOWeightDataCollator"

    def __init__(self, model, ref_model=None, args: KTOConfig | None = None, *trainer_args, **trainer_kwargs):
        if args is None:
            args = self.default_config(model)
        args = upgrade_config(args, self.config_class)
        bound = _KTO_INIT_SIGNATURE.bind(self, model, ref_model, args, *trainer_args, **trainer_kwargs)
        train_dataset = bound.arguments.get("train_dataset")
        self.score_median: float | None = None
        if args.mmpo_gamma is not None and train_dataset is not None:
            # Fixed before training, over every sample (desirable and undesirable); evaluation uses it too
            scores = column_scores(train_dataset, args.score_column, "`mmpo_gamma` (MMPO's KTO weights)")
            self.score_median = statistics.median(scores)
        super().__init__(model, ref_model, args, *trainer_args, **trainer_kwargs)
        self.data_collator = with_margin_collator(
            self.data_collator, DataCollatorForUnpairedPreference, KTOWeightDataCollator
        )

    def add_pair_columns(self, dataset, processing_class, args, dataset_name: str):
        """Each sample's MMPO weight factor, from its score and the training set's median."""
        if args.mmpo_gamma is None or WEIGHT_COLUMN in dataset.column_names:
            return dataset
        if self.score_median is None:
            raise UsageError("`mmpo_gamma` needs a `train_dataset` with scores: its median sets the weights.")
        scores = column_scores(dataset, args.score_column, "`mmpo_gamma` (MMPO's KTO weights)", dataset_name)
        labels = torch.tensor(dataset["label"], dtype=torch.bool)
        factors = kto_sample_weights(torch.tensor(scores), labels, self.score_median, args.mmpo_gamma)
        return dataset.add_column(WEIGHT_COLUMN, factors.tolist())

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, without_pair_columns(inputs))

    def margin_loss(self, model, inputs, return_outputs):
        """TRL's KTO loss, with the batch's MMPO weight factors as its desirable and undesirable weights."""
        if self.args.mmpo_gamma is None:
            return self.trl_loss(model, without_pair_columns(inputs), return_outputs)
        factors = inputs.get(WEIGHT_COLUMN)
        if factors is None:
            raise missing_column_error("mmpo_gamma", WEIGHT_COLUMN, "MMPO weights", self.collator_name)
        labels = torch.as_tensor(inputs["label"], dtype=torch.bool, device=factors.device)
        mode = "train" if self.model.training else "eval"
        record_metrics(self, mode, {"mmpo/kto_weight": self.accelerator.gather_for_metrics(factors).mean().item()})
        device = self.accelerator.device
        desirable = self.args.desirable_weight * factors[labels].to(device)
        undesirable = self.args.undesirable_weight * factors[~labels].to(device)
        with kto_weights(self, desirable, undesirable):
            return self.trl_loss(model, without_pair_columns(inputs), return_outputs)
