"""beta-DPO's running statistics of the reward gaps: the moving averages of their mean `M_0` and spread `sigma`
(beta-DPO paper, Section 4), and the generator of its filter's random draw.

Like gamma-PO's queue (`margin_queue.py`): fed the gaps of the *global* batch (every rank updates with the same
gathered gaps, so all ranks hold the same statistics and draw the same mask), kept on the training device (an update
never waits for the host), updated in training only, and saved in checkpoints and restored on resume, generator
included, so that a resumed run continues the uninterrupted one.

Pure torch, imports only the queue's `DeviceGenerator` of this package: no trainer (the trainer saves and restores
it).
"""

from __future__ import annotations

import torch

from .margin_queue import DeviceGenerator

__all__ = ["GapStatistics", "GAP_STATE_FILE"]

GAP_STATE_FILE = "beta_dpo_state.pt"
"""File name of the statistics inside a checkpoint folder."""


class GapStatistics:
    """Exponential moving averages of the batch mean and batch standard deviation of the reward gaps.

    ``update(gaps)`` sets ``mean <- m * mean + (1 - m) * mean(gaps)`` and ``std <- m * std + (1 - m) * std(gaps)``
    (the moving average of the batch std, not the square root of one of the variance: both published codes), over
    the finite gaps, with the unbiased batch std (torch's default, as both codes; 0 for a single gap). Both start at
    0, as in the beta-DPO authors' code (the gamma-PO authors' ``b-dpo`` starts the std at 1).

    Args:
        momentum: ``m`` (0.9 in both codes).
        seed: seed of the filter's generator; the same on every rank.
    """

    def __init__(self, momentum: float = 0.9, seed: int = 0):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}.")
        self.momentum = momentum
        self.updates = 0
        self.mean = torch.zeros(())
        self.std = torch.zeros(())
        self._rng = DeviceGenerator(seed)

    @property
    def seed(self) -> int:
        return self._rng.seed

    def _to(self, device: torch.device) -> None:
        if self.mean.device != device:
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        self._rng.on(device)

    @torch.no_grad()
    def update(self, gaps: torch.Tensor) -> None:
        """Fold the finite gaps of one (global) batch into the moving averages; a batch with none changes nothing."""
        gaps = gaps.detach().flatten().float()
        self._to(gaps.device)
        gaps = gaps[torch.isfinite(gaps)]
        if gaps.numel() == 0:
            return
        batch_std = gaps.std() if gaps.numel() > 1 else torch.zeros((), device=gaps.device)
        m = self.momentum
        self.mean = m * self.mean + (1.0 - m) * gaps.mean()
        self.std = m * self.std + (1.0 - m) * batch_std
        self.updates += 1

    def generator(self, device: torch.device | str, advance: bool = True) -> torch.Generator:
        """The filter's generator on ``device``. With ``advance=False`` a copy: a draw from it (evaluation) leaves the
        draws of later training steps unchanged."""
        device = torch.device(device)
        self._to(device)
        return self._rng.on(device, advance)

    def state_dict(self) -> dict:
        return {
            "momentum": self.momentum,
            "seed": self.seed,
            "updates": self.updates,
            "mean": self.mean.detach().cpu().clone(),
            "std": self.std.detach().cpu().clone(),
            "generator": self._rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["momentum"] != self.momentum:
            raise ValueError(
                f"The saved beta-DPO statistics have momentum {state['momentum']} but this run {self.momentum}: "
                "resume with the same `beta_dpo_momentum`."
            )
        self.updates = state["updates"]
        # On the host until the next update or draw places them (and the generator) on the training device
        self.mean, self.std = state["mean"].float().clone(), state["std"].float().clone()
        self._rng.set_state(state["seed"], state["generator"])
