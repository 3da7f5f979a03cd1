"""The formulas, as pure torch functions (no trainer imports).

Every loss in this package is one expression, ``w_i * soft_target_loss(z_i - gamma_i, p_i)``: ``z_i`` is the reward
gap of a pair, ``p_i`` its target preference probability (MMPO), ``gamma_i`` its target margin (gamma-PO's dynamic
margins, or ODPO's offsets) and ``w_i`` its weight. The documentation's "Concepts" page lays the knobs out.

Papers:
    * MMPO: Kim et al., "Margin Matching Preference Optimization: Enhanced Model Alignment with Granular Feedback"
      (Findings of EMNLP 2024, https://arxiv.org/abs/2410.03145), Section 3.2 and Appendix B.
    * gamma-PO: Sun et al., "Robust Preference Optimization via Dynamic Target Margins" (Findings of ACL 2025,
      https://arxiv.org/abs/2506.03690), Section 3 and Appendix C.
    * ODPO: Amini, Vieira and Cotterell, "Direct Preference Optimization with an Offset"
      (https://arxiv.org/abs/2402.10571), Section 3.
    * beta-DPO: Wu et al., "beta-DPO: Direct Preference Optimization with Dynamic beta" (NeurIPS 2024,
      https://arxiv.org/abs/2407.08639), Section 4 (batch-level dynamic beta, beta-guided data filtering).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "REWARD_TYPES",
    "soft_target_probs",
    "soft_target_loss",
    "dynamic_target_margins",
    "default_step_size",
    "weighted_pair_mean",
    "wpo_weights",
    "score_offsets",
    "OFFSET_SCALINGS",
    "kto_sample_weights",
    "BETA_DPO_MIN_BETA",
    "beta_dpo_keep_count",
    "beta_guided_keep_mask",
    "dynamic_beta",
]

REWARD_TYPES = ("dpo", "simpo")
"""What the reward gap ``z`` of a policy is built from (the trainers' ``reward_type``): DPO's implicit reward
``beta * log pi/pi_ref(y)``, or SimPO's length-normalised, reference-free ``beta / |y| * log pi(y)``."""

OFFSET_SCALINGS = ("log", "identity")
"""The scaling functions `f` of ODPO's offset `alpha * f(score_w - score_l)`: the paper's `log`, or none."""


def soft_target_probs(margins: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """Bradley-Terry target probabilities ``p = sigmoid(gamma * m)`` (MMPO, Section 3.2, the equation for
    ``p(y_w > y_l)``).

    Args:
        margins: quality margins ``m = score_chosen - score_rejected``, any shape.
        gamma: the rationality coefficient (``bt_beta`` in the MMPO code). ``None`` gives hard labels (all ones), i.e.
            the standard Bradley-Terry / DPO objective. ``0`` gives ``p = 0.5`` everywhere.

    Returns:
        A float32 tensor of the shape of ``margins``, without gradient.
    """
    margins = torch.as_tensor(margins)
    if gamma is None:
        return torch.ones(margins.shape, dtype=torch.float32, device=margins.device)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0 (or None for hard labels), got {gamma}.")
    return torch.sigmoid(gamma * margins.detach().float())


def soft_target_loss(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Per-example soft-target cross-entropy ``-p * log sigmoid(z) - (1 - p) * log sigmoid(-z)``.

    This is the MMPO loss (Section 3.2, the generalised cross-entropy ``L`` and its DPO form ``L_DPO``), of which the
    Bradley-Terry loss (Eq. 1) and the DPO loss are the case ``p = 1``, and the gamma-PO loss (Eq. 10,
    ``-log sigmoid(r_w - r_l - gamma_i)``) the case ``p = 1`` with ``z = r_w - r_l - gamma_i``.

    Computed in float32 with ``logsigmoid`` so that it is finite, with the exact gradient ``sigmoid(z) - p``, for
    ``|z|`` far beyond the range where ``log(sigmoid(z))`` underflows (bf16 and fp16 inputs are upcast first).

    Args:
        logits: ``z``, the reward gap of each pair (any shape, any float dtype).
        target_probs: ``p`` in ``[0, 1]``, broadcastable to ``logits``.

    Returns:
        Float32 tensor of per-example losses, the broadcast shape of the inputs.
    """
    z = logits.float()
    p = torch.as_tensor(target_probs, device=z.device).float()
    return -(p * F.logsigmoid(z) + (1.0 - p) * F.logsigmoid(-z))


def weighted_pair_mean(per_pair_loss: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The batch loss from per-pair losses and pair weights: ``mean_i(w_i * loss_i)`` (the ``w_i`` knob of the one
    loss), the plain mean without weights.

    Normalised by the number of pairs ``B``, not by ``sum_i w_i``: the same reduction as TRL's DPO loss and its WPO
    weights (``(losses * weights).mean()``), and the one that composes with gradient accumulation and data
    parallelism, since micro-batches of equal size average to the full batch's value whatever their weights (a
    ``sum(w * loss) / sum(w)`` per micro-batch would give each micro-batch the same say however much weight it holds).
    The loss scale therefore follows the weights' mean: weights with mean 1 over the dataset keep the learning rate's
    meaning.

    Args:
        per_pair_loss: ``[B]`` per-pair losses.
        weights: ``[B]`` weights ``>= 0`` (validated on the dataset by
            `trl_margins.data.margins.add_weight_column`), or None.
    """
    if weights is None:
        return per_pair_loss.mean()
    return (per_pair_loss * weights.to(per_pair_loss.device)).mean()


@torch.no_grad()
def wpo_weights(per_token_logps: torch.Tensor, log_sum_sq_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """WPO's pair weight (Zhou et al., https://arxiv.org/abs/2406.11827, Eq. 2), as TRL's `DPOTrainer` computes it:
    per completion ``exp(mean over its tokens of log p(y_t) - log sum_v p(v)^2)``, the chosen one's times the
    rejected one's, without gradient. (The authors' code, wzhouad/WPO@a1044581:scripts/run_wpo.py, also clamps the
    weight at 1; TRL does not, and neither does this.)

    Args:
        per_token_logps: ``[2B, T]`` log-probs of the completion tokens (0 elsewhere), chosen rows then rejected.
        log_sum_sq_probs: ``[2B, >= T]`` ``log sum_v p(v)^2`` per position; the last ``T`` are used.
        mask: ``[2B, T]`` completion mask.
    """
    seq_len = mask.size(1)
    aligned_logps = (per_token_logps - log_sum_sq_probs[:, -seq_len:]) * mask
    weights = torch.exp(aligned_logps.sum(dim=1) / mask.sum(dim=1).clamp_min(1))
    chosen_weights, rejected_weights = weights.chunk(2, dim=0)
    return chosen_weights * rejected_weights


def score_offsets(margins: torch.Tensor, alpha: float, scaling: str = "log") -> torch.Tensor:
    """ODPO's per-pair offset ``delta_i = alpha * f(score_w - score_l)``, a target margin from the score difference.

    ODPO (Amini et al., 2024, arXiv 2402.10571, Section 3, the ODPO loss ``L_ODPO``) trains with
    ``-log sigmoid(z - delta_i)``, ``z`` being DPO's reward gap ``beta * (log pi/pi_ref(y_w) - log pi/pi_ref(y_l))``:
    the chosen response must win by more than the offset, which grows with how much better it scored. The offset is
    ``delta_i = alpha * f(score(y_w) - score(y_l))`` with ``f`` monotone increasing; the paper's experiments use
    ``f = log`` (``"log"``), as its code does (rycolab/odpo@6152f67c:trainers.py, ``preference_loss``:
    ``margin = log(chosen_rewards - rejected_rewards)``, ``-logsigmoid(beta * logits - alpha * margin)``), and its
    ablation compares it with other scalings; ``"identity"`` gives ``alpha * (score_w - score_l)``. The offset is not
    multiplied by ``beta``. With ``f = log`` a score difference below 1 gives a negative offset, as published.

    In this package's one loss it is the target margin ``gamma_i``: ``soft_target_loss(z - delta_i, p_i)``, so it
    composes with MMPO's soft targets (both read the same margin) and pair weights.

    Args:
        margins: score differences ``score_w - score_l``, any shape; ``> 0`` for ``"log"`` (``log 0 = -inf`` would
            give the pair a loss of 0), ``>= 0`` otherwise.
        alpha: the offset strength, a finite number ``>= 0`` (the paper's ``alpha``; its code's default is 1).
        scaling: ``f``, one of ``OFFSET_SCALINGS``.

    Returns:
        A float32 tensor of offsets, the shape of ``margins``, without gradient.
    """
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}.")
    if scaling not in OFFSET_SCALINGS:
        raise ValueError(f"scaling must be one of {OFFSET_SCALINGS}, got {scaling!r}.")
    m = torch.as_tensor(margins).detach().float()
    if scaling == "log":
        if (m <= 0).any():
            raise ValueError("ODPO's log scaling needs score differences > 0; got one <= 0.")
        return alpha * torch.log(m)
    return alpha * m


def kto_sample_weights(scores: torch.Tensor, desirable: torch.Tensor, median: float, gamma: float) -> torch.Tensor:
    """MMPO's per-sample weight factors for binary (KTO) feedback (MMPO paper, Appendix B, "Extension to Binary
    Feedback"): the Bradley-Terry probability of each sample against the median score ``s_med``,

        desirable: ``sigmoid(gamma * (s - s_med))``;   undesirable: ``sigmoid(gamma * (s_med - s))``.

    The appendix describes one rule for every sample, label aside ("a sigmoid function [of] the difference between
    the sample's score and the median score"), which is the desirable form here. The undesirable form is this
    package's choice, not the paper's: its mirror image, the probability that a median sample beats it, so that the
    worse an undesirable sample, the more it weighs (the appendix's rule, applied as written, would weigh the worst
    undesirable samples least). They multiply KTO's ``desirable_weight`` / ``undesirable_weight``. ``gamma = 0``
    gives 0.5 everywhere.

    Args:
        scores: ``[N]`` scores. desirable: ``[N]`` booleans (KTO's ``label``). median: ``s_med``, the training set's.
        gamma: finite, ``>= 0``.
    """
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}.")
    diff = torch.as_tensor(scores).detach().float() - median
    sign = torch.where(torch.as_tensor(desirable, dtype=torch.bool), 1.0, -1.0)
    return torch.sigmoid(gamma * sign * diff)


BETA_DPO_MIN_BETA = 1e-3
"""The floor of beta-DPO's batch beta, as in both published codes (`clamp(min=1e-3)`): the linear rule can go <= 0."""


def beta_dpo_keep_count(n: int, keep_ratio: float) -> int:
    """How many of ``n`` pairs beta-DPO's filter keeps: ``keep_ratio * n`` rounded half up, at least 1 (of ``n >= 1``).

    Both published codes truncate (``int(n * 0.8)``); rounding keeps the ratio closest to the one asked for, and at
    least one pair keeps a batch from training on nothing (a batch of 1 is kept whole).
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must lie in (0, 1], got {keep_ratio}.")
    if n <= 0:
        return 0
    return min(n, max(1, math.floor(keep_ratio * n + 0.5)))


@torch.no_grad()
def beta_guided_keep_mask(
    gaps: torch.Tensor,
    running_mean: torch.Tensor | float,
    running_std: torch.Tensor | float,
    keep_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """beta-DPO's beta-guided data filtering (Section 4.2): keep ``beta_dpo_keep_count(n, keep_ratio)`` of the ``n``
    reward gaps ``M_i``, drawn without replacement with probability proportional to the Gaussian weight
    ``exp(-(M_i - M_0)^2 / (2 * sigma^2))`` around the running gap mean ``M_0`` (running std ``sigma``): pairs whose
    gap is far from the usual one, in either direction, are the likelier to be left out.

    The draw is a Gumbel top-k (the ``k`` largest ``log w_i + G_i``, ``G_i`` standard Gumbel), which has the law of
    successive sampling without replacement that the published codes draw with ``torch.multinomial(w, k,
    replacement=False)``, and works in log space: a weight that underflows to 0 in float32 (a gap many sigmas out)
    still takes part in the ranking, where ``multinomial`` would fail once fewer than ``k`` weights are non-zero.
    A NaN or infinite gap is never kept, and does not count in ``n``.

    Args:
        gaps: 1-D reward gaps of the (global) batch.
        running_mean, running_std: ``M_0`` and ``sigma``; ``sigma`` is floored at 1e-8 (the published codes start it
            at 0 or add 1e-10), which keeps a zero spread (all gaps equal, as at the first DPO step) finite.
        keep_ratio: the fraction kept, in ``(0, 1]`` (the authors' ``1 - mode_weight``, 0.8).
        generator: the source of the Gumbel noise; the same state on every rank gives every rank the same mask.

    Returns:
        A boolean mask of the shape of ``gaps``.
    """
    if gaps.dim() != 1:
        raise ValueError(f"gaps must be 1-D, got shape {tuple(gaps.shape)}.")
    gaps = gaps.detach().float()
    finite = torch.isfinite(gaps)
    k = beta_dpo_keep_count(int(finite.sum()), keep_ratio)
    mean = torch.as_tensor(running_mean, dtype=torch.float32, device=gaps.device)
    std = torch.as_tensor(running_std, dtype=torch.float32, device=gaps.device).clamp_min(1e-8)
    log_weights = -0.5 * ((gaps - mean) / std) ** 2
    uniform = torch.rand(gaps.shape, generator=generator, device=gaps.device).clamp(1e-20, 1.0)
    keys = torch.where(finite, log_weights - torch.log(-torch.log(uniform)), -math.inf)
    mask = torch.zeros_like(finite)
    mask[torch.topk(keys, k).indices] = True
    return mask


def dynamic_beta(
    kept_gap_mean: torch.Tensor | float,
    running_mean: torch.Tensor | float,
    beta0: float,
    alpha: float,
    min_beta: float = BETA_DPO_MIN_BETA,
) -> torch.Tensor:
    """beta-DPO's batch-level beta (Section 4.1): ``beta_batch = beta0 * (1 + alpha * (mean_kept(M_i) - M_0))``,
    floored at ``min_beta``, without gradient.

    The paper writes the per-pair form ``beta_i = beta0 + alpha * (M_i - M_0) * beta0`` (restated in the gamma-PO
    paper's Table 6) and applies it at the batch level, over the batch's mean gap, with ``M_0`` a moving average of
    the gaps; here, as in both published codes, the mean is over the pairs the filter kept. ``M_i`` is the reward gap
    on the scale of ``beta0`` (``beta0 * log-ratio difference``, the paper's and the gamma-PO authors' ``b-dpo``);
    the beta-DPO authors' code measures the gap without ``beta0``, so its ``a`` equals ``alpha * beta0`` here. A
    larger gap than usual (an easy or mislabelled batch) raises beta (a more conservative update), a smaller one
    lowers it.

    How the whole method (this function, `beta_guided_keep_mask`, `trl_margins.state.GapStatistics` and
    `MMPOTrainer.beta_dpo_scale`) compares with the paper and the two published codes, the beta-DPO authors'
    (junkangwu/beta-DPO@16290473:trainers.py: ``preference_loss`` with ``mode_loss="beta_DPO"``,
    ``update_and_sync_tensor_mean``, ``get_batch_metrics``) and the gamma-PO authors' re-implementation of it
    (sunjie279/gammaPO@4f2e09c1:scripts/xpo_trainer.py: ``xpo_loss`` with ``loss_type="b-dpo"``,
    ``get_batch_loss_metrics``):

    - the gap ``M_i``: the paper's and gamma-PO's code: ``beta0 * (log pi/pi_ref(y_w) - log pi/pi_ref(y_l))``, the
      implicit reward gap, reference included; the authors' code: the same without ``beta0`` (only ``alpha``'s
      scale changes, the filter's weights are scale-free). Ours: the paper's, ``z`` (SimPO's ``z`` with SimPO
      rewards).
    - the mean in ``beta_batch``: the paper writes the batch mean; both codes take the mean of the kept pairs. Ours:
      the kept pairs'.
    - the filter: both codes draw ``int(0.8 * B)`` (truncated) with ``torch.multinomial`` without replacement, each
      rank from its own generator, so the ranks' masks of the same global batch can disagree. Ours: rounded, one
      generator state on every rank (one mask), a Gumbel top-k draw (same law).
    - the loss: the paper and the authors' code train the kept pairs only; the authors' code normalises each rank by
      its own kept count (under DDP each rank, not each pair, gets the same say); gamma-PO's code builds the mask and
      never applies it (every pair trains, the filter only moves beta). Ours: the mean over the kept pairs of the
      global batch.
    - the moving averages (momentum 0.9, of the batch mean and of the batch std, unbiased): the authors' code starts
      both at 0 and updates them *before* using them; gamma-PO's code starts at (0, 1), adds 1e-10 to the std and
      updates *after* the loss. Both update them on evaluation batches too, and neither checkpoints them. Ours: the
      authors' order and start, training batches only, checkpointed.
    - the floor: the paper has none (its linear rule can make beta negative); both codes clamp at 1e-3, and detach
      beta. Ours: the same.
    """
    if not (math.isfinite(beta0) and beta0 > 0):
        raise ValueError(f"beta0 must be a finite number > 0, got {beta0}.")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}.")
    kept = torch.as_tensor(kept_gap_mean).detach().float()
    mean = torch.as_tensor(running_mean, device=kept.device).detach().float()
    return (beta0 * (1.0 + alpha * (kept - mean))).clamp_min(min_beta)


def default_step_size(tau: float) -> float:
    """The mirror-descent step size of the gamma-PO paper, ``eta = min(0.5 / tau, 1)`` (Appendix C)."""
    return min(0.5 / tau, 1.0)


@torch.no_grad()
def dynamic_target_margins(
    reward_gaps: torch.Tensor,
    gamma0: float,
    tau: float,
    num_iters: int = 20,
    step_size: float | None = None,
) -> torch.Tensor:
    """Per-pair target margins ``gamma_i`` of gamma-PO (https://arxiv.org/abs/2506.03690, Appendix C, Eqs. 22-24;
    the authors' code: sunjie279/gammaPO@4f2e09c1:scripts/xpo_trainer.py, ``get_gamma_dq``, which returns
    ``gamma_i - gamma0``).

    ``p`` is a distribution over the ``n = m_n`` reward gaps, starting uniform. Each of ``num_iters`` mirror-descent
    (multiplicative-weights) iterations computes the gradient of Eq. 23,

        ``grad_i = gamma0 / (1 + exp(gap_i - n * p_i * gamma0)) + tau * (1 + log(n * p_i))``,

    and applies Eq. 24, ``p_i <- p_i * exp(-eta * grad_i) / sum_j p_j * exp(-eta * grad_j)``. The result is
    ``gamma_i = gamma0 * n * p_i``: the margins average to ``gamma0``, and larger reward gaps get larger margins. The
    update runs in log space (same iterates, no underflow of ``p``).

    Args:
        reward_gaps: 1-D tensor of reward gaps ``r_w - r_l`` (queue samples and batch together). Detached here.
        gamma0: the base margin (``gamma_beta_ratio * beta`` in the paper's code). ``0`` gives all-zero margins.
        tau: KL-regularisation strength, ``> 0``. As ``tau`` grows, ``gamma_i -> gamma0``.
        num_iters: number of mirror-descent iterations (the paper uses 20).
        step_size: ``eta``; ``None`` means the paper's ``min(0.5 / tau, 1)``.

    Returns:
        Float32 tensor of ``gamma_i``, one per entry of ``reward_gaps``, on its device, without gradient.
    """
    if reward_gaps.dim() != 1:
        raise ValueError(f"reward_gaps must be 1-D, got shape {tuple(reward_gaps.shape)}.")
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a finite number > 0, got {tau}.")
    if not math.isfinite(gamma0):
        raise ValueError(f"gamma0 must be finite, got {gamma0}.")
    if num_iters < 0:
        raise ValueError(f"num_iters must be >= 0, got {num_iters}.")
    eta = default_step_size(tau) if step_size is None else step_size
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size}.")

    gaps = reward_gaps.detach().float()
    n = gaps.numel()
    if n == 0:
        return gaps.clone()
    log_n = math.log(n)
    log_p = torch.full_like(gaps, -log_n)
    for _ in range(num_iters):
        n_p = torch.exp(log_p + log_n)
        # gamma0 / (1 + exp(gap - n p gamma0)) == gamma0 * sigmoid(n p gamma0 - gap), without overflow
        grad = gamma0 * torch.sigmoid(n_p * gamma0 - gaps) + tau * (1.0 + log_p + log_n)
        log_p = torch.log_softmax(log_p - eta * grad, dim=0)
    return gamma0 * torch.exp(log_p + log_n)
