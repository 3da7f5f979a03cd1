"""`MMPOKTOTrainer`: `trl.KTOTrainer` with MMPO's per-sample weights for binary feedback (MMPO paper, Appendix B).

KTO's loss multiplies each desirable sample's loss by `desirable_weight` and each undesirable one's by
`undesirable_weight`, both constants. Here each sample's weight is refined by its score `s` against the training set's
median `s_med` (fixed in `__init__`, before training): `desirable_weight * sigmoid(mmpo_gamma * (s - s_med))` and
`undesirable_weight * sigmoid(mmpo_gamma * (s_med - s))` (`losses.kto_sample_weights`). The factor travels through
the collator as a pair weight does (`WEIGHT_COLUMN`), and TRL's own `_compute_loss` applies it: for the one call,
`desirable_weight` and `undesirable_weight` hold the batch's per-sample weights (in the order TRL selects the samples,
ascending index), so the loss, KL term, reference handling and metrics are all TRL's. With `mmpo_gamma=None` this is
`trl.KTOTrainer` exactly.

`unpair_preferences` turns preference pairs with scores (the bundled VADER pairs, UltraFeedback) into the binary
feedback KTO trains on. The weight hook (per-sample `desirable_weight` / `undesirable_weight` for one `_compute_loss`
call) lives here, not in `trl_compat.py`: it reads only what KTOTrainer has in every supported TRL release (1.9-1.16,
where `tests/test_kto.py` runs on each), so there is no version difference to isolate.

A thin subclass: the math is in `losses.py`, the score checks in `margins.py`; nothing of the command line.
"""

from __future__ import annotations

import dataclasses
import inspect
import statistics

import torch
from datasets import Dataset, IterableDataset
from trl import KTOConfig, KTOTrainer
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

from .config import MMPOKTOConfig, upgrade_config
from .losses import kto_sample_weights
from .margins import WEIGHT_COLUMN, column_scores
from .trainer_utils import MarginCollatorMixin, missing_weights_error, with_margin_collator, without_pair_columns

_KTO_INIT_SIGNATURE = inspect.signature(KTOTrainer.__init__)


def unpair_preferences(
    dataset: Dataset | IterableDataset,
    score_column: str = "score",
    score_chosen_column: str = "score_chosen",
    score_rejected_column: str = "score_rejected",
) -> Dataset | IterableDataset:
    """Preference pairs as KTO's unpaired rows (TRL's `prompt`, `completion`, `label`): each pair gives its chosen
    response as a desirable row and its rejected one as an undesirable row, in that order, each with its own score in
    `score_column` (where the pairs have the score columns). Other columns are dropped (they are per pair, not per
    response). A dataset that is already unpaired (a `label` column) is returned as it is.

    TRL's `unpair_preference_dataset` does the same without the scores, which MMPO's KTO weights need.
    """
    columns = dataset.column_names
    if columns is not None and "label" in columns:
        return dataset
    if columns is not None and not {"chosen", "rejected"} <= set(columns):
        raise ValueError(
            f"KTO needs unpaired rows (`prompt`, `completion`, `label`) or pairs (`chosen`, `rejected`) to unpair; "
            f"the dataset has {sorted(columns)}."
        )
    scored = columns is None or {score_chosen_column, score_rejected_column} <= set(columns)

    def unpair(batch: dict[str, list]) -> dict[str, list]:
        n = len(batch["chosen"])
        rows = {
            "completion": [x for pair in zip(batch["chosen"], batch["rejected"], strict=True) for x in pair],
            "label": [True, False] * n,
        }
        if "prompt" in batch:
            rows["prompt"] = [p for p in batch["prompt"] for _ in range(2)]
        if scored:
            pairs = zip(batch[score_chosen_column], batch[score_rejected_column], strict=True)
            rows[score_column] = [s for pair in pairs for s in pair]
        return rows

    return dataset.map(unpair, batched=True, remove_columns=columns)


@dataclasses.dataclass
class KTOWeightDataCollator(MarginCollatorMixin, DataCollatorForUnpairedPreference):
    """TRL's `DataCollatorForUnpairedPreference` that also carries each sample's MMPO weight factor
    (`WEIGHT_COLUMN`)."""


class MMPOKTOTrainer(KTOTrainer):
    """[`~trl.KTOTrainer`] with MMPO's per-sample weights from scores (MMPO paper, Appendix B); see [`MMPOKTOConfig`].

    Takes the same arguments as `KTOTrainer` and an [`MMPOKTOConfig`] (a plain `KTOConfig` also works, as plain KTO).
    The training set must be a map-style dataset with the score column: its median is computed once, here, and used
    for the evaluation set too. Logs `mmpo/kto_weight` (the mean factor of the batch) besides TRL's metrics.
    """

    _tag_names = ["trl", "kto", "mmpo", "trl-margins"]
    config_class = MMPOKTOConfig

    def __init__(self, model, ref_model=None, args: KTOConfig | None = None, *trainer_args, **trainer_kwargs):
        if args is None:
            args = self.config_class(f"{model if isinstance(model, str) else 'model'}-MMPO-KTO".split("/")[-1])
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

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if args.mmpo_gamma is not None and WEIGHT_COLUMN not in dataset.column_names:
            if self.score_median is None:
                raise ValueError("`mmpo_gamma` needs a `train_dataset` with scores: its median sets the weights.")
            scores = column_scores(dataset, args.score_column, "`mmpo_gamma` (MMPO's KTO weights)", dataset_name)
            factors = kto_sample_weights(
                torch.tensor(scores), torch.tensor(dataset["label"], dtype=torch.bool), self.score_median,
                args.mmpo_gamma,
            )  # fmt: skip
            dataset = dataset.add_column(WEIGHT_COLUMN, factors.tolist())
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if WEIGHT_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, WEIGHT_COLUMN]

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, without_pair_columns(inputs))

    def _compute_loss(self, model, inputs, return_outputs):
        if self.args.mmpo_gamma is None:
            return super()._compute_loss(model, without_pair_columns(inputs), return_outputs)
        factors = inputs.get(WEIGHT_COLUMN)
        if factors is None:
            raise missing_weights_error("trl_margins.kto.KTOWeightDataCollator")
        labels = torch.as_tensor(inputs["label"], dtype=torch.bool, device=factors.device)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["mmpo/kto_weight"].append(self.accelerator.gather_for_metrics(factors).mean().item())
        device = self.accelerator.device
        # TRL's loss is `cat(desirable_weight * chosen_losses, undesirable_weight * rejected_losses)`, with the samples
        # selected by `nonzero(label)` / `nonzero(~label)`, in ascending order, like boolean indexing
        self.desirable_weight = self.args.desirable_weight * factors[labels].to(device)
        self.undesirable_weight = self.args.undesirable_weight * factors[~labels].to(device)
        try:
            return super()._compute_loss(model, without_pair_columns(inputs), return_outputs)
        finally:
            self.desirable_weight, self.undesirable_weight = self.args.desirable_weight, self.args.undesirable_weight
