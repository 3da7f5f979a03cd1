"""`GammaPOTrainer`: dynamic per-pair target margins from a FIFO queue of reward gaps (gamma-PO, Sun et al.,
https://arxiv.org/abs/2506.03690, Section 3, Algorithm 2, Appendix C), on DPO or SimPO rewards, alone or with MMPO
soft targets.

`GammaPOTrainer` is `MMPOTrainer` with one knob turned: `target_margins` returns `gamma_i` instead of nothing. The
forward, reference handling, data path and metrics are MMPOTrainer's. A thin subclass: the math is
`trl_margins.losses.dynamic_target_margins` and the queue `trl_margins.state.MarginQueue`.
"""

from __future__ import annotations

import torch
from transformers.utils import logging

from ..losses import dynamic_target_margins
from ..state import QUEUE_STATE_FILE, MarginQueue
from ._base import GAMMA_PO_PAPER, Paper
from .dpo_trainer import MMPOTrainer
from .gamma_po_config import GammaPOConfig

logger = logging.get_logger(__name__)


class GammaPOTrainer(MMPOTrainer):
    """[`~trl.DPOTrainer`] with gamma-PO's dynamic target margins (and optionally MMPO soft targets).

    Each step (Algorithm 2): the batch's reward gaps are gathered across processes; up to `margin_sample_size` minus
    the global batch size gaps are sampled from the queue; `dynamic_target_margins` solves for `gamma_i` over both;
    in training the batch's gaps then enter the queue. The loss is `soft_target_loss(z - gamma_i, p_i)`, with no
    gradient through `gamma_i`. Which margin enters the loss follows `margin_mode`: as published, gamma-SimPO
    (`reward_type="simpo"`) uses `gamma_i` and gamma-DPO `gamma_i - gamma0`.

    Margins are solved per forward pass: under gradient accumulation, each micro-batch solves over its own global
    micro-batch plus queue samples and pushes its gaps, so one optimizer step pushes `gradient_accumulation_steps`
    micro-batches (the order the published code sees them in). Evaluation solves the same way but neither pushes to
    the queue nor advances its sampling generator, so evaluating never changes training. A NaN or infinite reward gap
    gets the base margin, stays out of the solve and the queue, and is counted (`gamma/nonfinite_gaps`, and a
    warning naming the step).

    The queue is saved in every checkpoint (`margin_queue.pt`) and restored by `train(resume_from_checkpoint=...)`.
    The model card cites gamma-PO, and the paper of every other knob that is on.
    Logs `gamma/mean`, `gamma/std`, `gamma/min`, `gamma/max` (over the global batch, before any `gamma0` offset),
    `gamma/queue_size` and `gamma/nonfinite_gaps`, besides MMPOTrainer's metrics.
    """

    config_class = GammaPOConfig
    default_output_suffix = "GammaPO"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.margin_queue = MarginQueue(self.args.margin_queue_size, seed=self.args.seed)
        global_batch = self.args.per_device_train_batch_size * self.accelerator.num_processes
        if self.args.margin_sample_size <= global_batch:
            logger.warning(
                f"margin_sample_size={self.args.margin_sample_size} is not larger than the global batch "
                f"({global_batch} pairs): the queue is never sampled, and each step's margins are solved over its "
                "own batch alone. Set margin_sample_size above the global batch (the paper's code: 256)."
            )

    def model_card_papers(self) -> list[Paper]:
        return [GAMMA_PO_PAPER, *super().model_card_papers()]

    @property
    def _margin_offset(self) -> float:
        mode = self.args.margin_mode
        subtract = mode == "deviation" or (mode == "published" and not self.args.simpo)
        return self.args.gamma0 if subtract else 0.0

    def target_margins(self, reward_gaps: torch.Tensor, mode: str) -> torch.Tensor:
        args = self.args
        local_size = reward_gaps.numel()
        training = mode == "train"
        # The global batch: every rank solves the same problem and pushes the same gaps, so the queues agree
        batch_gaps = self.accelerator.gather(reward_gaps.detach().float())
        # Evaluation reads the queue without advancing its generator: it never changes what training draws next
        history = self.margin_queue.sample(
            args.margin_sample_size - batch_gaps.numel(), device=batch_gaps.device, advance=training
        )
        # A NaN or infinite gap gets the base margin and stays out of the solve, which it would turn all NaN
        finite = torch.isfinite(batch_gaps)
        gammas = torch.full_like(batch_gaps, args.gamma0)
        solved = dynamic_target_margins(
            torch.cat([batch_gaps[finite], history]),
            gamma0=args.gamma0,
            tau=args.tau,
            num_iters=args.margin_iters,
            step_size=args.margin_step_size,
        )
        gammas[finite] = solved[: int(finite.sum())]
        nonfinite = batch_gaps.numel() - int(finite.sum())
        if training:
            self.margin_queue.push(batch_gaps)  # keeps the finite gaps only
        if nonfinite:
            logger.warning(
                f"Step {self.state.global_step} ({mode}): {nonfinite} of {batch_gaps.numel()} reward gaps are NaN or "
                "infinite; they got the base margin and were kept out of the margin queue."
            )
        # Logged with the other metrics of the step, in one host transfer
        self._pending_scalars.update(
            {
                "gamma/mean": gammas.mean(),
                "gamma/std": gammas.std(unbiased=False),
                "gamma/min": gammas.min(),
                "gamma/max": gammas.max(),
                "gamma/queue_size": torch.tensor(float(len(self.margin_queue))),
                "gamma/nonfinite_gaps": torch.tensor(float(nonfinite)),
            }
        )
        start = self.accelerator.process_index * local_size
        return gammas[start : start + local_size] - self._margin_offset

    # ---- checkpoints: the queue is saved in every checkpoint and restored on resume ---------------------------------
    def checkpoint_states(self) -> dict[str, object]:
        return {**super().checkpoint_states(), QUEUE_STATE_FILE: self.margin_queue}
