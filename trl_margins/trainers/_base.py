"""What every margin trainer shares: the per-pair columns through TRL's data path, the model card's papers, the
checkpointed run state, and the calibration of a whole evaluation.

`MarginTrainerMixin` holds the public methods that `trl_margins._compat.TrainerHooks` calls from TRL's private hooks
(dataset preparation, signature columns, checkpoints, the model card); each trainer is
`class MMPO...Trainer(MarginTrainerMixin, <hooks of _compat>, <TRL trainer>)` and overrides only what differs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import textwrap
from collections import defaultdict
from typing import Any, ClassVar

import torch
from datasets import Dataset
from transformers.trainer_utils import EvalLoopOutput
from trl.trainer.utils import get_config_model_id

from .._compat import record_metrics
from ..data.formatting import check_responses
from ..data.margins import MARGIN_COLUMN, WEIGHT_COLUMN, add_margins_from, add_weight_column
from ..errors import DataError
from ..evaluation.calibration import brier_score, expected_calibration_error
from ..losses import soft_target_probs

logger = logging.getLogger(__name__)

PAIR_COLUMNS = (MARGIN_COLUMN, WEIGHT_COLUMN)
"""The internal per-pair columns that travel through the collator to the loss, and never into the model."""


# ---- the papers the model cards cite ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Paper:
    """A method's paper, as a model card cites it: TRL's `{"title", "id", "citation"}` plus the method's name and
    tag."""

    method: str
    title: str
    arxiv_id: str
    bibtex: str
    tag: str


def _bibtex(text: str) -> str:
    return textwrap.dedent(text).strip()


MMPO_PAPER = Paper(
    "MMPO",
    "Margin Matching Preference Optimization: Enhanced Model Alignment with Granular Feedback",
    "2410.03145",
    _bibtex("""
        @inproceedings{kim2024margin,
            title        = {{Margin Matching Preference Optimization: Enhanced Model Alignment with
                             Granular Feedback}},
            author       = {Kyuyoung Kim and Ah Jeong Seo and Hao Liu and Jinwoo Shin and Kimin Lee},
            year         = 2024,
            booktitle    = {Findings of the Association for Computational Linguistics: EMNLP 2024},
            url          = {https://arxiv.org/abs/2410.03145},
        }"""),
    "mmpo",
)
GAMMA_PO_PAPER = Paper(
    "gamma-PO",
    "Robust Preference Optimization via Dynamic Target Margins",
    "2506.03690",
    _bibtex("""
        @inproceedings{sun2025robust,
            title        = {{Robust Preference Optimization via Dynamic Target Margins}},
            author       = {Jie Sun and Junkang Wu and Jiancan Wu and Zhibo Zhu and Xingyu Lu and Jun Zhou and
                            Lintao Ma and Xiang Wang},
            year         = 2025,
            booktitle    = {Findings of the Association for Computational Linguistics: ACL 2025},
            url          = {https://arxiv.org/abs/2506.03690},
        }"""),
    "gamma-po",
)
SIMPO_PAPER = Paper(
    "SimPO",
    "SimPO: Simple Preference Optimization with a Reference-Free Reward",
    "2405.14734",
    _bibtex("""
        @inproceedings{meng2024simpo,
            title        = {{SimPO: Simple Preference Optimization with a Reference-Free Reward}},
            author       = {Yu Meng and Mengzhou Xia and Danqi Chen},
            year         = 2024,
            booktitle    = {Advances in Neural Information Processing Systems 38: NeurIPS 2024},
            url          = {https://arxiv.org/abs/2405.14734},
        }"""),
    "simpo",
)
ODPO_PAPER = Paper(
    "ODPO",
    "Direct Preference Optimization with an Offset",
    "2402.10571",
    _bibtex("""
        @inproceedings{amini2024direct,
            title        = {{Direct Preference Optimization with an Offset}},
            author       = {Afra Amini and Tim Vieira and Ryan Cotterell},
            year         = 2024,
            booktitle    = {Findings of the Association for Computational Linguistics: ACL 2024},
            url          = {https://arxiv.org/abs/2402.10571},
        }"""),
    "odpo",
)
BETA_DPO_PAPER = Paper(
    "beta-DPO",
    "beta-DPO: Direct Preference Optimization with Dynamic beta",
    "2407.08639",
    _bibtex("""
        @inproceedings{wu2024beta,
            title        = {{$\\beta$-DPO: Direct Preference Optimization with Dynamic $\\beta$}},
            author       = {Junkang Wu and Yuexiang Xie and Zhengyi Yang and Jiancan Wu and Jinyang Gao and
                            Bolin Ding and Xiang Wang and Xiangnan He},
            year         = 2024,
            booktitle    = {Advances in Neural Information Processing Systems 38: NeurIPS 2024},
            url          = {https://arxiv.org/abs/2407.08639},
        }"""),
    "beta-dpo",
)
PAPERS = (MMPO_PAPER, GAMMA_PO_PAPER, SIMPO_PAPER, ODPO_PAPER, BETA_DPO_PAPER)
"""Every paper a margin trainer's model card may cite, the methods' order of precedence."""


# ---- per-pair columns through TRL's collators -----------------------------------------------------------------------
class MarginCollatorMixin:
    """Mixed into a TRL preference collator: also carries each pair's margin (`MARGIN_COLUMN`) and weight
    (`WEIGHT_COLUMN`), where the dataset has them, as `[B]` float tensors, which TRL's collators would drop."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        for column in PAIR_COLUMNS:
            if column in examples[0]:
                output[column] = torch.tensor([float(ex[column]) for ex in examples], dtype=torch.float32)
        return output


def without_pair_columns(inputs: dict[str, Any]) -> dict[str, Any]:
    """`inputs` without our per-pair columns, for TRL code that passes every entry on to the model."""
    return {k: v for k, v in inputs.items() if k not in PAIR_COLUMNS}


def with_margin_collator(collator, default_class: type, margin_class: type):
    """`margin_class` built from TRL's default collator; any other collator (the user's own) is returned as is."""
    if type(collator) is not default_class:
        return collator
    return margin_class(**{name: getattr(collator, name) for name in collator.__dataclass_fields__})


def missing_column_error(knob: str, column: str, what: str, collator_name: str) -> ValueError:
    """The batch lacks a per-pair column that `knob` reads: a collator of the user's that drops it."""
    return ValueError(
        f"`{knob}` is set but the batch carries no {what} (`{column}`). If you passed your own `data_collator`, make "
        f"it keep that column (see `{collator_name}`)."
    )


def add_pair_lengths(dataset, args):
    """With `train_sampling_strategy="group_by_length"`, give each tokenized pair its length in
    `args.length_column_name`: the prompt plus the longer completion, which is what the pair costs in a padded batch.

    transformers infers lengths only from an `input_ids` column, which tokenized preference pairs lack, so TRL's own
    `DPOTrainer` and `RewardTrainer` stop with a `ValueError` on this option. Streamed datasets are left alone
    (transformers ignores the option for them), and so is a length column the user already has.
    """
    if args.train_sampling_strategy != "group_by_length" or not isinstance(dataset, Dataset):
        return dataset
    if args.length_column_name in dataset.column_names or "chosen_ids" not in dataset.column_names:
        return dataset
    prompted = "prompt_ids" in dataset.column_names  # a reward model's pairs carry the prompt in each completion

    def length(example: dict[str, Any]) -> dict[str, int]:
        prompt = len(example["prompt_ids"]) if prompted else 0
        return {args.length_column_name: prompt + max(len(example["chosen_ids"]), len(example["rejected_ids"]))}

    return dataset.map(length, desc="Measuring pair lengths")


def target_probs(
    margins: torch.Tensor | None, gamma: float | None, like: torch.Tensor, collator_name: str
) -> torch.Tensor:
    """`p_i = sigmoid(gamma * m_i)` (MMPO, https://arxiv.org/abs/2410.03145, Section 3.2), or ones without `gamma`,
    shaped like `like` and on its device."""
    if gamma is None:
        return torch.ones_like(like, dtype=torch.float32)
    if margins is None:
        raise missing_column_error("mmpo_gamma", MARGIN_COLUMN, "margins", collator_name)
    if margins.shape != like.shape:
        # A `[B, 1]` against a `[B]` would silently broadcast to `[B, B]` in the loss
        raise ValueError(f"Margins of shape {tuple(margins.shape)} differ from rewards of shape {tuple(like.shape)}.")
    return soft_target_probs(margins.to(like.device), gamma)


# ---- what every margin trainer shares ------------------------------------------------------------------------------
class MarginTrainerMixin:
    """The public methods TRL's hooks reach through `trl_margins._compat.TrainerHooks`, with the behaviour every
    margin trainer shares; each trainer overrides what differs."""

    config_class: ClassVar[type]
    default_output_suffix: ClassVar[str]
    collator_name: ClassVar[str]

    @classmethod
    def default_config(cls, model):
        """The config of a trainer built without `args`, in `<model name>-<suffix>`, as TRL's trainers name theirs."""
        model_name = model if isinstance(model, str) else get_config_model_id(model.config)
        return cls.config_class(f"{model_name.split('/')[-1]}-{cls.default_output_suffix}")

    # ---- the model card
    def model_card_papers(self) -> list[Paper]:
        """The papers of the knobs that are on, the main method first; none means TRL's own method and paper."""
        return [MMPO_PAPER] if self.args.mmpo_gamma is not None else []

    @property
    def method_name(self) -> str | None:
        papers = self.model_card_papers()
        return " + ".join(p.method for p in papers) if papers else None

    def model_card_paper(self) -> dict[str, str] | None:
        """TRL's `_paper` for the knobs that are on: the main method's title and id, every paper's BibTeX."""
        papers = self.model_card_papers()
        if not papers:
            return None
        citation = "\n\n".join(p.bibtex for p in papers)
        return {"title": papers[0].title, "id": papers[0].arxiv_id, "citation": citation}

    def model_card_tags(self) -> list[str]:
        """The tags added to TRL's: the package's, and the tag of each paper cited."""
        return ["trl-margins", *(p.tag for p in self.model_card_papers())]

    # ---- the data path
    def before_tokenization(self, dataset, processing_class, args, dataset_name: str):
        """Before TRL's tokenization: the rows checked (`check_responses`), then `add_pair_columns`."""
        check_responses(dataset, dataset_name)
        return self.add_pair_columns(dataset, processing_class, args, dataset_name)

    def add_pair_columns(self, dataset, processing_class, args, dataset_name: str):
        """The validated pair weights (first, so that bad rows are named as in the user's dataset) and, when a knob
        reads them, the margins."""
        if args.weight_column is not None:
            dataset = add_weight_column(dataset, args.weight_column, dataset_name)
        return add_margins_from(dataset, args, dataset_name) if args.needs_margins else dataset

    def dropped_because(self, args) -> str:
        """Why TRL's tokenization drops a row (`after_tokenization` counts them): DPO's and KTO's reason."""
        return f"the prompt alone fills `max_length` ({args.max_length} tokens), which leaves no completion token"

    def after_tokenization(self, given, prepared, args, dataset_name: str):
        """After TRL's tokenization: the rows it dropped counted (a warning with the count, or a `DataError` when it
        dropped every row), then the pair lengths for length-grouped batches (`add_pair_lengths`)."""
        if isinstance(given, Dataset) and isinstance(prepared, Dataset) and len(prepared) < len(given):
            dropped, total = len(given) - len(prepared), len(given)
            fix = "raise `max_length` (`--max_length` on the command line) or shorten the prompts"
            if not len(prepared):
                raise DataError(
                    f"Every one of the {total} rows of the {dataset_name} dataset was dropped: "
                    f"{self.dropped_because(args)}. To train, {fix}."
                )
            logger.warning(
                "Dropped %d of %d rows of the %s dataset: %s. To keep them, %s.",
                dropped, total, dataset_name, self.dropped_because(args), fix,
            )  # fmt: skip
        return add_pair_lengths(prepared, args)

    def extra_signature_columns(self) -> list[str]:
        """The columns our trainers read beyond TRL's, which `remove_unused_columns` must keep: the margin, the pair
        weight, and the pair length that `add_pair_lengths` adds."""
        columns = list(PAIR_COLUMNS)
        if self.args.train_sampling_strategy == "group_by_length":
            columns.append(self.args.length_column_name)
        return columns

    def pair_weights_of(self, inputs: dict[str, Any]) -> torch.Tensor | None:
        """The batch's `weight_column` weights, or None without the knob."""
        weights = inputs.get(WEIGHT_COLUMN)
        if self.args.weight_column is not None and weights is None:
            raise missing_column_error("weight_column", WEIGHT_COLUMN, "pair weights", self.collator_name)
        return weights

    # ---- metrics
    def record_pair_metrics(self, mode: str, per_pair: dict[str, torch.Tensor]) -> None:
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
        record_metrics(self, mode, dict(zip(names, values.tolist(), strict=True)))

    # ---- run state in checkpoints
    def checkpoint_states(self) -> dict[str, Any]:
        """What checkpoints save besides TRL's, by file name: objects with `state_dict` / `load_state_dict`."""
        return {}

    def save_checkpoint_states(self, folder: str) -> None:
        for name, state in self.checkpoint_states().items():
            torch.save(state.state_dict(), os.path.join(folder, name))

    def restore_checkpoint_states(self, folder: str) -> None:
        for name, state in self.checkpoint_states().items():
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                state.load_state_dict(torch.load(path, weights_only=True))
            else:
                logger.warning(
                    "%s has no %s: %s restarts empty, so this run will not match an uninterrupted one.",
                    folder,
                    name,
                    type(state).__name__,
                )


class CalibrationMixin:
    """Mixed into a Trainer: collects `sigmoid(r_w - r_l)` and the target probabilities of every evaluation batch and
    reports their expected calibration error (`mmpo/ece`, symmetric: each pair counted in both orders, as in
    `preference_metrics`) and Brier score (`mmpo/brier`) once per evaluation loop.

    Reduced in `evaluation_loop`, not averaged per batch (calibration is a property of the whole set), so `predict`
    reports it too and nothing carries over into the next evaluation.
    """

    def collect_calibration(self, reward_gaps: torch.Tensor, target_probs: torch.Tensor) -> None:
        if not hasattr(self, "_calibration"):
            self._calibration = defaultdict(list)
        pred, target = self.accelerator.gather_for_metrics((torch.sigmoid(reward_gaps.float()), target_probs))
        self._calibration["pred"].append(pred.cpu())
        self._calibration["target"].append(target.cpu())

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ) -> EvalLoopOutput:
        self._calibration = defaultdict(list)
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self._calibration["pred"]:
            pred, target = torch.cat(self._calibration["pred"]), torch.cat(self._calibration["target"])
            # Symmetric: each pair counts in both orders, so hard labels give the usual confidence-vs-accuracy ECE
            # (not 1 - mean(p)) and the result does not depend on which response is listed first
            output.metrics[f"{metric_key_prefix}_mmpo/ece"] = expected_calibration_error(
                pred, target, self.args.calibration_bins, symmetric=True
            )
            output.metrics[f"{metric_key_prefix}_mmpo/brier"] = brier_score(pred, target)
        self._calibration = defaultdict(list)
        return output
