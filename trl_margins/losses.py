"""The formulas, as pure torch functions (no trainer imports).

Every loss in this package is one expression, ``soft_target_loss(z - gamma_i, p_i)``: ``z`` is the reward gap of a
pair, ``p_i`` its target preference probability (MMPO) and ``gamma_i`` its target margin (gamma-PO). See
``DESIGN.md`` ("One loss, orthogonal knobs").

Papers:
    * MMPO: Kim et al., "Margin Matching Preference Optimization", Section 3.2.
    * gamma-PO: "Robust Preference Optimization via Dynamic Target Margins", Section 3 and Appendix C.
    * ODPO: Amini, Vieira and Cotterell, "Direct Preference Optimization with an Offset" (arXiv 2402.10571).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "soft_target_probs",
    "soft_target_loss",
    "dynamic_target_margins",
    "default_step_size",
    "weighted_pair_mean",
    "score_offsets",
    "OFFSET_SCALINGS",
    "kto_sample_weights",
]

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
    loss, ``DESIGN.md``), the plain mean without weights.

    Normalised by the number of pairs ``B``, not by ``sum_i w_i``: the same reduction as TRL's DPO loss and its WPO
    weights (``(losses * weights).mean()``), and the one that composes with gradient accumulation and data
    parallelism, since micro-batches of equal size average to the full batch's value whatever their weights (a
    ``sum(w * loss) / sum(w)`` per micro-batch would give each micro-batch the same say however much weight it holds).
    The loss scale therefore follows the weights' mean: weights with mean 1 over the dataset keep the learning rate's
    meaning.

    Args:
        per_pair_loss: ``[B]`` per-pair losses.
        weights: ``[B]`` weights ``>= 0`` (validated on the dataset, `margins.add_weight_column`), or None.
    """
    if weights is None:
        return per_pair_loss.mean()
    return (per_pair_loss * weights.to(per_pair_loss.device)).mean()


def score_offsets(margins: torch.Tensor, alpha: float, scaling: str = "log") -> torch.Tensor:
    """ODPO's per-pair offset ``delta_i = alpha * f(score_w - score_l)``, a target margin from the score difference.

    ODPO (Amini et al., 2024, arXiv 2402.10571, Section 3, the ODPO loss ``L_ODPO``) trains with
    ``-log sigmoid(z - delta_i)``, ``z`` being DPO's reward gap ``beta * (log pi/pi_ref(y_w) - log pi/pi_ref(y_l))``:
    the chosen response must win by more than the offset, which grows with how much better it scored. The offset is
    ``delta_i = alpha * f(score(y_w) - score(y_l))`` with ``f`` monotone increasing; the paper's experiments use
    ``f = log`` (``"log"``), as its code does (``rycolab/odpo``, ``trainers.py``, ``preference_loss``:
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

    The appendix gives the desirable form ("a sigmoid function [of] the difference between the sample's score and
    the median score"); the undesirable one is its mirror image, the probability that a median sample beats it, so
    the worse an undesirable sample, the more it weighs. They multiply KTO's ``desirable_weight`` /
    ``undesirable_weight``. ``gamma = 0`` gives 0.5 everywhere.

    Args:
        scores: ``[N]`` scores. desirable: ``[N]`` booleans (KTO's ``label``). median: ``s_med``, the training set's.
        gamma: finite, ``>= 0``.
    """
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}.")
    diff = torch.as_tensor(scores).detach().float() - median
    sign = torch.where(torch.as_tensor(desirable, dtype=torch.bool), 1.0, -1.0)
    return torch.sigmoid(gamma * sign * diff)


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
    """Per-pair target margins ``gamma_i`` of gamma-PO (Appendix C, Eqs. 22-24).

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
