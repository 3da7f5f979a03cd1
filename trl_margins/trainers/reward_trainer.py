"""`MMPORewardTrainer`: `trl.RewardTrainer` with MMPO soft targets (Kim et al., https://arxiv.org/abs/2410.03145,
Sections 3.2 and 4.3).

TRL 1.x's `RewardTrainer.compute_loss` runs the model, computes the Bradley-Terry loss (with TRL's optional `margin`
shift and `center_rewards_coefficient`) and logs its metrics in one method, with no per-pair hook. So
`MMPORewardTrainer.compute_loss` lets TRL's method run unchanged (forward pass, token count, `accuracy`, `margin`,
`min/mean/max_reward`) and, only when `mmpo_gamma` is set, replaces the returned loss by the soft-target loss of the
same rewards: `soft_target_loss(r_w - r_l [- margin], sigmoid(mmpo_gamma * m))`, plus TRL's centering term. With
`mmpo_gamma=None` the loss is TRL's own, bit for bit. Everything else (model loading, PEFT, tokenization, collation,
evaluation) is TRL's code, with three small additions: the margin column survives to the loss (signature columns and a
collator subclass, as for DPO), encoder tokenizers without an EOS token are tokenized without one, and evaluation
reports the calibration of `sigmoid(r_w - r_l)` against the targets over the whole evaluation set.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from trl import RewardConfig, RewardTrainer
from trl.data_utils import get_dataset_column_names, is_conversational
from trl.trainer.reward_trainer import DataCollatorForPreference

from .._compat import TrainerHooks, main_process_first, record_metrics
from ..data.margins import MARGIN_COLUMN
from ..losses import soft_target_loss, weighted_pair_mean
from ._base import (
    CalibrationMixin,
    MarginCollatorMixin,
    MarginTrainerMixin,
    target_probs,
    with_margin_collator,
    without_pair_columns,
)
from ._base_config import upgrade_config
from .reward_config import MMPORewardConfig

logger = logging.getLogger(__name__)

TRL_MARGIN_COLUMN = "margin"
"""TRL's own (Llama 2 style) margin column: shifts the logit, `-log sigmoid(r_w - r_l - margin)`."""


@dataclasses.dataclass
class RewardMarginDataCollator(MarginCollatorMixin, DataCollatorForPreference):
    """TRL's reward `DataCollatorForPreference` that also carries each pair's MMPO margin (`MARGIN_COLUMN`) and
    weight (`WEIGHT_COLUMN`) as float tensors of shape `[B]`. TRL's own `margin` column is still handled by the
    parent."""


def _tokenize_without_eos(
    dataset: Dataset | IterableDataset, processing_class: PreTrainedTokenizerBase, args: RewardConfig, name: str
) -> Dataset | IterableDataset:
    """Tokenize raw text pairs with a tokenizer that has no EOS token (BERT-style encoders).

    TRL appends `processing_class.eos_token` to non-conversational text before tokenizing, which raises a `TypeError`
    when there is none. An encoder's tokenizer marks the sequence itself (`[CLS] ... [SEP]`), so the text is tokenized
    as is, with the prompt prepended as TRL does. The result has TRL's processed columns (`chosen_ids`,
    `rejected_ids`), so `RewardTrainer._prepare_dataset` only filters it by length.
    """
    columns = get_dataset_column_names(dataset)
    if "chosen_ids" in columns or "chosen_input_ids" in columns or is_conversational(next(iter(dataset))):
        return dataset  # already tokenized, or turns are delimited by the chat template: TRL's path works

    def tokenize(example):
        prompt = example.get("prompt", "")
        return {
            "chosen_ids": processing_class(text=prompt + example["chosen"])["input_ids"],
            "rejected_ids": processing_class(text=prompt + example["rejected"])["input_ids"],
        }

    map_kwargs = {}
    if isinstance(dataset, Dataset):  # `IterableDataset.map` takes neither
        map_kwargs = {"num_proc": args.dataset_num_proc, "desc": f"Tokenizing {name} dataset (no EOS token)"}
    with main_process_first():
        return dataset.map(tokenize, **map_kwargs)


class MMPORewardTrainer(MarginTrainerMixin, CalibrationMixin, TrainerHooks, RewardTrainer):
    """[`~trl.RewardTrainer`] with Margin Matching Preference Optimization (Kim et al., Section 3.2; Section 4.3 for
    reward models).

    Takes the same arguments as `RewardTrainer` and an [`MMPORewardConfig`] (a plain `RewardConfig` also works and
    trains exactly like `RewardTrainer`). Each pair's target probability is `p = sigmoid(mmpo_gamma * m)`, with the
    margin `m` read from the dataset's score columns (or `margin_column`), and the loss is
    `soft_target_loss(r(x, y_w) - r(x, y_l), p)`, averaged over pairs; TRL's `margin` column and
    `center_rewards_coefficient` keep working on top. Logs TRL's metrics, `mmpo/target_prob` (with `mmpo_gamma`), and
    in evaluation the expected calibration error (`mmpo/ece`) and Brier score (`mmpo/brier`) of `sigmoid(r_w - r_l)`
    against the targets (all ones without `mmpo_gamma`), computed once over the whole evaluation set.

    Works with decoder (`*ForSequenceClassification` built from a causal LM) and encoder (BERT-style) backbones, and
    with PEFT: for a LoRA reward model put the head in `modules_to_save` (e.g. `["score"]`, or `["classifier"]` for
    BERT) so that it is trained.
    """

    config_class: type[MMPORewardConfig] = MMPORewardConfig
    default_output_suffix = "MMPO-Reward"
    collator_name = "trl_margins.trainers.reward_trainer.RewardMarginDataCollator"

    def __init__(self, model, args: RewardConfig | None = None, *trainer_args, **trainer_kwargs):
        if args is None:
            args = self.default_config(model)
        if not isinstance(args, RewardConfig):
            raise TypeError(
                f"{type(self).__name__} takes a RewardConfig (or MMPORewardConfig), got a {type(args).__name__}."
            )
        args = upgrade_config(args, self.config_class)
        if args.mmpo_gamma is not None and args.margin_column == TRL_MARGIN_COLUMN:
            logger.warning(
                "`margin_column='margin'` is also TRL's margin column, which shifts the logit: each pair's margin is "
                "used both as MMPO's margin and as TRL's shift. Rename the column to use it only as MMPO's margin."
            )
        super().__init__(model, args, *trainer_args, **trainer_kwargs)
        # TRL builds its collator once the tokenizer's pad token is settled; a user's own collator is kept as is
        self.data_collator = with_margin_collator(
            self.data_collator, DataCollatorForPreference, RewardMarginDataCollator
        )

    # ---- data path -------------------------------------------------------------------------------------------------
    def dropped_because(self, args) -> str:
        return f"prompt + chosen or prompt + rejected is longer than `max_length` ({args.max_length} tokens)"

    def add_pair_columns(self, dataset, processing_class, args, dataset_name: str):
        dataset = super().add_pair_columns(dataset, processing_class, args, dataset_name)
        if isinstance(processing_class, PreTrainedTokenizerBase) and processing_class.eos_token is None:
            dataset = _tokenize_without_eos(dataset, processing_class, args, dataset_name)
        return dataset

    # ---- loss ------------------------------------------------------------------------------------------------------
    def mmpo_loss(
        self,
        rewards_chosen: torch.Tensor,
        rewards_rejected: torch.Tensor,
        target_probs: torch.Tensor,
        trl_margin: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """TRL's reward loss with MMPO's soft target (Section 3.2) and pair weights: `mean_i(w_i *
        soft_target_loss(r_w - r_l - trl_margin, p)_i)` (`w_i = 1` without weights), plus TRL's
        `center_rewards_coefficient` term. All inputs `[B]`.
        """
        reward_gaps = rewards_chosen - rewards_rejected
        logits = reward_gaps if trl_margin is None else reward_gaps - trl_margin
        loss = weighted_pair_mean(soft_target_loss(logits, target_probs), weights)
        coef = self.args.center_rewards_coefficient
        if coef is not None:  # unchanged from TRL: pulls the rewards towards mean zero
            loss = loss + coef * torch.mean((rewards_chosen + rewards_rejected) ** 2)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        margins, weights = inputs.get(MARGIN_COLUMN), self.pair_weights_of(inputs)
        inputs = without_pair_columns(inputs)  # TRL passes every other entry to the model
        # TRL's own step: forward, Bradley-Terry loss, token count and its metrics
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        # Rewards are `[2B, 1]` (chosen rows, then rejected rows): squeeze so that they meet `[B]` targets pair by pair
        rewards_chosen, rewards_rejected = outputs.logits.squeeze(-1).chunk(2)
        reward_gaps = rewards_chosen - rewards_rejected
        targets = target_probs(margins, self.args.mmpo_gamma, reward_gaps, self.collator_name)
        if self.args.mmpo_gamma is not None or weights is not None:
            loss = self.mmpo_loss(
                rewards_chosen, rewards_rejected, targets, inputs.get(TRL_MARGIN_COLUMN), weights=weights
            )
        self.record_target_metrics(mode, reward_gaps.detach(), targets)
        return (loss, outputs) if return_outputs else loss

    # ---- metrics ---------------------------------------------------------------------------------------------------
    def record_target_metrics(self, mode: str, reward_gaps: torch.Tensor, targets: torch.Tensor) -> None:
        if self.args.mmpo_gamma is not None:
            mean_target = self.accelerator.gather_for_metrics(targets).mean().item()
            record_metrics(self, mode, {"mmpo/target_prob": mean_target})
        if mode == "eval":
            self.collect_calibration(reward_gaps, targets)
