"""`MMPORewardConfig`: `trl.RewardConfig` plus MMPO's soft targets for reward models."""

from __future__ import annotations

from dataclasses import dataclass

from trl import RewardConfig

from ._base_config import PairMarginFields


@dataclass
class MMPORewardConfig(PairMarginFields, RewardConfig):
    r"""
    Configuration class for [`MMPORewardTrainer`]: [`~trl.RewardConfig`] plus Margin Matching Preference Optimization
    for reward models.

    MMPO (Kim et al., https://arxiv.org/abs/2410.03145, Section 3.2; reward models in Section 4.3) trains the reward
    model `r` towards the Bradley-Terry probability of each pair's quality margin `m`, `p = sigmoid(mmpo_gamma * m)`,
    with the soft-target cross-entropy `-p log sigmoid(r_w - r_l) - (1 - p) log sigmoid(r_l - r_w)`, instead of the
    Bradley-Terry loss `-log sigmoid(r_w - r_l)` (its case `p = 1`). With `mmpo_gamma=None` (the default) training is
    exactly [`~trl.RewardTrainer`]'s.

    Parameters:
        > Parameters that control the MMPO targets

        mmpo_gamma (`float` or `None`, *optional*, defaults to `None`):
            Rationality coefficient `gamma` of the target probability `sigmoid(gamma * m)` (`bt_beta` in the paper's
            code). `None` trains on hard labels (plain Bradley-Terry) and needs no score columns; `0` makes every
            target 0.5. Must be `>= 0`.
        score_chosen_column (`str`, *optional*, defaults to `"score_chosen"`):
            Column with the score of the chosen response.
        score_rejected_column (`str`, *optional*, defaults to `"score_rejected"`):
            Column with the score of the rejected response.
        margin_column (`str` or `None`, *optional*, defaults to `None`):
            Column with a precomputed MMPO margin `m >= 0`; when set, the score columns are not read.
        negative_margins (`str`, *optional*, defaults to `"error"`):
            What to do with pairs whose chosen response scored below the rejected one: `"error"` stops before
            training, `"swap"` exchanges chosen and rejected, `"drop"` removes the pair (both are logged with a count).

        > Parameters that control the pair weights

        weight_column (`str` or `None`, *optional*, defaults to `None`):
            Column with a weight `w_i >= 0` per pair: the loss is `mean_i(w_i * loss_i)` over the pairs of the
            micro-batch (plus TRL's `center_rewards_coefficient` term, unweighted). Bad weights are refused as in
            [`MMPOConfig`].

        > Parameters that control evaluation

        calibration_bins (`int`, *optional*, defaults to `15`):
            Number of equal-width bins of the expected calibration error logged in evaluation (`mmpo/ece`).

    MMPO's margin and TRL's `margin` column are different knobs. A dataset column named `margin` (Llama 2 style, read
    by [`~trl.RewardTrainer`] whether or not MMPO is on) *shifts the logit*: the loss becomes
    `-log sigmoid(r_w - r_l - margin)`, which asks for a reward gap of more than `margin` and, with its hard target,
    never stops pushing the gap up. MMPO's margin *sets the target probability*: the loss is minimised at the finite
    gap `r_w - r_l = mmpo_gamma * m`. With both, the loss is `soft_target_loss(r_w - r_l - margin,
    sigmoid(mmpo_gamma * m))`, minimised at `r_w - r_l = margin + mmpo_gamma * m`.
    Pointing `margin_column` at TRL's `margin` column applies the same values both ways; rename the column to use it
    only as MMPO's margin.
    """
