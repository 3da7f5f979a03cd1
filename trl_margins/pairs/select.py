"""Preference pairs selected by their margin, before training (`trl-margins select`).

- A threshold: keep the pairs whose margin is strictly above ``min_margin``. This is the MMPO paper's Table 3
  baseline (DPO trained "only on preferences with score differences exceeding" 0, 1, 2 on UltraFeedback and 1, 2, 5
  on SHP), which MMPO's soft targets are meant to make unnecessary.
- A quantile: keep the pairs whose margin is at or above the ``min_quantile`` quantile of the dataset's margins
  (``0.6`` keeps about the top 40%; pairs tied at the cut are all kept).
- Alignment potential (Huang et al., "Larger or Smaller Reward Margins to Select Preferences for Alignment?", ICML
  2025), as the authors' code computes it (Hesse73/Alignment-Potential-Metric@123ece76: `metric_selection.py`,
  `get_top_score_idx` with `rm-logp`; the mean token log-probs in `infer_scripts/infer_simpo_trainer.py`,
  `get_batch_logps(average_log_prob=True)`): ``z(m_explicit) - w * z(|mean log pi(y_w|x) - mean log pi(y_l|x)|)``,
  z-scores over the dataset (population std), mean token log-probs under the policy to be trained; the top
  ``keep_fraction`` (``int(fraction * n)`` pairs) are kept. The explicit margin is the reward model's (score
  difference).

Every removal is counted and logged. DCRM (Huang & Goyal, arXiv 2506.14157) and "Less is More"'s dual-margin
selection (Deng et al., arXiv 2502.14560) are not here: neither paper's method section nor the authors' code was
found, only abstracts and third-party summaries that name the ingredients (a response distance and a reward margin;
an external and an implicit DPO margin) without the exact formula and its constants.

Imports torch, `datasets`, `data.margins`, `evaluation.rewards` and `errors`: no trainer, no command line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from datasets import Dataset

from ..data.margins import COMMAND_COLUMN_HINT, column_values
from ..errors import UsageError

logger = logging.getLogger(__name__)

SELECTION_METHODS = ("threshold", "quantile", "alignment_potential")


@dataclass
class SelectionReport:
    method: str
    kept: int
    dropped: int
    cut: float  # the margin (or score) a pair had to pass

    def __str__(self) -> str:
        total = self.kept + self.dropped
        return f"{self.method}: kept {self.kept} of {total} pairs, dropped {self.dropped} (cut {self.cut:.4g})"


def pair_margins(
    dataset: Dataset,
    score_chosen_column: str = "score_chosen",
    score_rejected_column: str = "score_rejected",
    margin_column: str | None = None,
) -> torch.Tensor:
    """Margins as training reads them: a margin column, or chosen minus rejected score (checked: numbers, finite)."""
    if margin_column is not None:
        return torch.tensor(column_values(dataset, margin_column, COMMAND_COLUMN_HINT), dtype=torch.float64)
    chosen = torch.tensor(column_values(dataset, score_chosen_column, COMMAND_COLUMN_HINT), dtype=torch.float64)
    return chosen - torch.tensor(
        column_values(dataset, score_rejected_column, COMMAND_COLUMN_HINT), dtype=torch.float64
    )


def _zscore(values: torch.Tensor) -> torch.Tensor:
    std = values.std(unbiased=False)  # numpy's default, as the authors' code
    return (values - values.mean()) / std if std > 0 else torch.zeros_like(values)


def alignment_potential(
    explicit_margins: torch.Tensor, implicit_margins: torch.Tensor, logp_weight: float = 1.0
) -> torch.Tensor:
    """``z(explicit) - logp_weight * z(|implicit|)``, per pair: large where the reward model sees a clear difference
    that the policy does not yet make. ``implicit_margins``: the policy's mean token log-prob of the chosen minus the
    rejected response."""
    if explicit_margins.shape != implicit_margins.shape:
        raise ValueError(f"shapes differ: {tuple(explicit_margins.shape)} vs {tuple(implicit_margins.shape)}")
    return _zscore(explicit_margins.double()) - logp_weight * _zscore(implicit_margins.double().abs())


def _keep(dataset: Dataset, mask: torch.Tensor, report: SelectionReport) -> tuple[Dataset, SelectionReport]:
    kept = dataset.select(torch.nonzero(mask).flatten().tolist())  # input order kept
    logger.warning("select %s", report)
    return kept, report


def select_by_margin(
    dataset: Dataset,
    *,
    min_margin: float | None = None,
    min_quantile: float | None = None,
    score_chosen_column: str = "score_chosen",
    score_rejected_column: str = "score_rejected",
    margin_column: str | None = None,
) -> tuple[Dataset, SelectionReport]:
    """The pairs whose margin is > ``min_margin``, or >= the ``min_quantile`` quantile of the margins (one of the
    two), in input order, and the count of what was dropped."""
    if (min_margin is None) == (min_quantile is None):
        raise UsageError("Select by one rule: --min_margin (a threshold) or --min_quantile (a quantile).")
    if len(dataset) == 0:
        raise UsageError("The dataset has no pairs to select from.")
    margins = pair_margins(dataset, score_chosen_column, score_rejected_column, margin_column)
    if min_margin is not None:
        mask, method, cut = margins > min_margin, "threshold", float(min_margin)
    else:
        if not 0 <= min_quantile <= 1:
            raise UsageError(f"--min_quantile must be in [0, 1], got {min_quantile}.")
        cut = float(torch.quantile(margins, min_quantile))
        mask, method = margins >= cut, "quantile"
    kept = int(mask.sum())
    return _keep(dataset, mask, SelectionReport(method, kept, len(dataset) - kept, cut))


def select_by_alignment_potential(
    dataset: Dataset,
    implicit_margins: torch.Tensor,
    *,
    keep_fraction: float,
    logp_weight: float = 1.0,
    score_chosen_column: str = "score_chosen",
    score_rejected_column: str = "score_rejected",
    margin_column: str | None = None,
) -> tuple[Dataset, SelectionReport]:
    """The ``int(keep_fraction * n)`` pairs of highest `alignment_potential`, in input order."""
    if not 0 < keep_fraction <= 1:
        raise UsageError(f"--keep_fraction must be in (0, 1], got {keep_fraction}.")
    margins = pair_margins(dataset, score_chosen_column, score_rejected_column, margin_column)
    scores = alignment_potential(margins, implicit_margins, logp_weight)
    k = int(keep_fraction * len(dataset))
    top = torch.argsort(scores, stable=True)[len(scores) - k :]
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[top] = True
    cut = float(scores[top].min()) if k else float("inf")
    return _keep(dataset, mask, SelectionReport("alignment_potential", k, len(dataset) - k, cut))


def mean_logp_margins(model, tokenizer, dataset: Dataset, batch_size: int = 8, max_length: int | None = None):
    """The policy's mean token log-prob of chosen minus rejected per pair (the authors' `logps_norm` difference),
    tokenized as `trl.DPOTrainer` does."""
    from ..evaluation.rewards import completion_log_probs

    parts = completion_log_probs(model, tokenizer, dataset, batch_size, max_length)
    chosen = parts["chosen_logps"] / parts["chosen_lengths"].clamp(min=1)
    return chosen - parts["rejected_logps"] / parts["rejected_lengths"].clamp(min=1)
