"""Run state that checkpoints save and resumes restore: gamma-PO's queue of reward gaps, beta-DPO's gap
statistics, and the seeded device generator both draw from.

Both are fed the gaps of the *global* batch in distributed training (every rank updates with the same gathered gaps,
so all ranks hold the same state and draw the same samples), live on the training device, change in training only,
and have a state dict that a trainer saves in every checkpoint (`QUEUE_STATE_FILE`, `GAP_STATE_FILE`) and restores on
resume, generator included, so that a resumed run continues the uninterrupted one.

`MarginQueue`: the FIFO queue of recent reward gaps of gamma-PO (https://arxiv.org/abs/2506.03690, Appendix C,
Algorithm 2: the queue `H`). Unlike the published code (sunjie279/gammaPO@4f2e09c1:scripts/xpo_trainer.py,
`reward_gap_queue`, a host-side `deque` per GPU seeded with 8 random numbers), it starts empty and is a ring buffer on
the device with host-side bookkeeping: its size and write position follow from tensor shapes, so sampling never waits
for the device, and a push waits once, to count the finite gaps it keeps (a NaN or infinite gap never enters).

`GapStatistics`: beta-DPO's moving averages of the reward gaps' mean `M_0` and spread `sigma`
(https://arxiv.org/abs/2407.08639, Section 4), and the generator of its filter's random draw.

Pure torch, imports nothing of this package: the trainers save and restore these objects.
"""

from __future__ import annotations

import torch

__all__ = ["GAP_STATE_FILE", "QUEUE_STATE_FILE", "DeviceGenerator", "GapStatistics", "MarginQueue"]

QUEUE_STATE_FILE = "margin_queue.pt"
"""File name of the queue state inside a checkpoint folder."""


class DeviceGenerator:
    """A seeded generator that lives on the device of the draws it serves: created there on first use, moved with its
    state when that device changes, and restorable from a checkpoint's state before it has a device (a resume loads
    on the host, the next draw places it). Shared by gamma-PO's queue and beta-DPO's statistics."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None  # restored, waiting for the device of the next draw

    def on(self, device: torch.device | str, advance: bool = True) -> torch.Generator:
        """The generator on ``device``. With ``advance=False`` a copy: a draw from it (evaluation) leaves the draws
        of later training steps unchanged."""
        device = torch.device(device)
        if self._generator is None or self._generator.device != device:
            state = self.get_state()
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
            if state is not None:
                self._generator.set_state(state)
            self._pending_state = None
        if advance:
            return self._generator
        copy = torch.Generator(device=device)
        copy.set_state(self._generator.get_state())
        return copy

    def get_state(self) -> torch.Tensor | None:
        """The generator's state, or None before its first draw (then it starts from ``seed``)."""
        return self._generator.get_state() if self._generator is not None else self._pending_state

    def set_state(self, seed: int, state: torch.Tensor | None) -> None:
        self.seed, self._generator, self._pending_state = seed, None, state


class MarginQueue:
    """Ring buffer of the most recent ``capacity`` reward gaps, with reproducible sampling.

    Args:
        capacity: the most gaps kept (the gamma-PO code uses 2048). ``0`` keeps none.
        seed: seed of the sampling generator. Use the same seed on every rank so that all ranks draw the same history.
        device: where the buffer lives; ``None`` picks the device of the first pushed gaps.
    """

    def __init__(self, capacity: int, seed: int = 0, device: torch.device | str | None = None):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}.")
        self.capacity = capacity
        self.size = 0  # valid entries
        self.position = 0  # next write index
        self._buffer: torch.Tensor | None = None
        self._rng = DeviceGenerator(seed)
        if device is not None:
            self._ensure_on(torch.device(device))

    @property
    def seed(self) -> int:
        return self._rng.seed

    def _ensure_on(self, device: torch.device) -> None:
        if self._buffer is None or self._buffer.device != device:
            buffer = torch.zeros(self.capacity, dtype=torch.float32, device=device)
            if self._buffer is not None:
                buffer.copy_(self._buffer)
            self._buffer = buffer
        self._rng.on(device)  # the generator follows the buffer (its state is kept across a move)

    def __len__(self) -> int:
        return self.size

    def values(self) -> torch.Tensor:
        """The stored gaps, oldest first (a copy)."""
        if self._buffer is None or self.size == 0:
            return torch.zeros(0)
        if self.size < self.capacity:
            return self._buffer[: self.size].clone()
        return torch.roll(self._buffer, -self.position).clone()

    @torch.no_grad()
    def push(self, gaps: torch.Tensor) -> int:
        """Append the finite detached gaps; the oldest entries are overwritten once the queue is full.

        A NaN or infinite gap never enters: it would make every margin solved over the queue NaN for as long as it
        stays there. Returns how many gaps were left out.
        """
        gaps = gaps.detach().flatten().float()
        self._ensure_on(gaps.device)
        given = gaps.numel()
        gaps = gaps[torch.isfinite(gaps)]  # how many remain sets the bookkeeping: the one host sync of a push
        left_out = given - gaps.numel()
        if self.capacity == 0 or gaps.numel() == 0:
            return left_out
        if gaps.numel() > self.capacity:
            gaps = gaps[-self.capacity :]
        k = gaps.numel()
        index = (self.position + torch.arange(k, device=gaps.device)) % self.capacity
        self._buffer.index_copy_(0, index, gaps)
        self.position = (self.position + k) % self.capacity
        self.size = min(self.size + k, self.capacity)
        return left_out

    @torch.no_grad()
    def sample(self, n: int, device: torch.device | str | None = None, advance: bool = True) -> torch.Tensor:
        """Up to ``n`` stored gaps drawn without replacement (fewer while the queue holds fewer).

        With ``advance=False`` the draw leaves the sampling generator where it was: evaluation uses it, so that it is
        a pure function of the training state and never changes the draws of later training steps.
        """
        if device is None:
            device = self._buffer.device if self._buffer is not None else "cpu"
        self._ensure_on(torch.device(device))
        k = min(n, self.size)
        if k <= 0:
            return torch.zeros(0, device=self._buffer.device)
        generator = self._rng.on(self._buffer.device, advance)
        index = torch.randperm(self.size, generator=generator, device=self._buffer.device)[:k]
        # While filling, the valid entries are the first `size` slots; once full, all of them
        return self._buffer[index]

    def state_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "seed": self.seed,
            "size": self.size,
            "position": self.position,
            "buffer": torch.zeros(self.capacity) if self._buffer is None else self._buffer.detach().cpu().clone(),
            "generator": self._rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"The saved margin queue holds {state['capacity']} entries but this one {self.capacity}: resume with "
                "the same `margin_queue_size`."
            )
        self.size, self.position = state["size"], state["position"]
        # Kept on the host until the next push or sample places buffer and generator on the training device
        self._buffer = state["buffer"].detach().float().cpu().clone()
        self._rng.set_state(state["seed"], state["generator"])


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
