"""`MMPOKTOConfig`: `trl.KTOConfig` plus MMPO's per-sample weights for binary feedback."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import KTOConfig

from ..errors import UsageError
from ._base_config import MarginFields


@dataclass
class MMPOKTOConfig(MarginFields, KTOConfig):
    r"""
    Configuration class for [`MMPOKTOTrainer`]: [`~trl.KTOConfig`] plus MMPO's per-sample weights for binary feedback
    (MMPO, https://arxiv.org/abs/2410.03145, Appendix B, "Extension to Binary Feedback").

    KTO weighs every desirable sample's loss by the constant `desirable_weight` and every undesirable one's by
    `undesirable_weight`. With `mmpo_gamma` set, each sample's weight is refined by how desirable its score `s` makes
    it, relative to the median score `s_med` of the training set (computed once over all of its samples, desirable
    and undesirable, before training, and used for evaluation too):

    - desirable: `desirable_weight * sigmoid(mmpo_gamma * (s - s_med))`, the appendix's rule;
    - undesirable: `undesirable_weight * sigmoid(mmpo_gamma * (s_med - s))`, the Bradley-Terry probability that a
      median response beats it. The appendix states one rule for every sample; this mirror image for undesirable
      samples is this package's choice (see `trl_margins.losses.kto_sample_weights`), so that a worse undesirable
      response weighs more.

    Parameters:
        > Parameters that control the MMPO weights

        mmpo_gamma (`float` or `None`, *optional*, defaults to `None`):
            Rationality coefficient of the weights. `None`: exactly [`~trl.KTOTrainer`] (constant weights, no score
            column read).
        score_column (`str`, *optional*, defaults to `"score"`):
            Column with each sample's quality score. A missing column, a non-numeric, NaN or infinite score stops
            before training, naming the column and the row.
    """

    score_column: str = field(
        default="score", metadata={"help": "Column with each sample's score. Only read when `mmpo_gamma` is set."}
    )

    def check_margin_fields(self) -> None:
        super().check_margin_fields()
        if not isinstance(self.score_column, str) or not self.score_column:
            raise UsageError(f"`score_column` must be a column name, got {self.score_column!r}.")

    def check_knobs(self) -> None:
        if self.use_liger_kernel and self.mmpo_gamma is not None:
            raise UsageError(
                "`use_liger_kernel=True` with `mmpo_gamma`: TRL's Liger KTO loss has no per-sample weights, so the "
                "MMPO weights would be skipped. Unset `use_liger_kernel`, or `mmpo_gamma`."
            )
