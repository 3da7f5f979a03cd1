"""Test-only: let accelerate run FSDP on CPU processes, so that CI (which has no GPU) tests a real FSDP2 launch.

accelerate 1.15 never selects FSDP on a CPU: with `use_cpu` its backend selection returns `DistributedType.MULTI_CPU`,
and `ACCELERATE_USE_FSDP` only upgrades the GPU-like types to FSDP, so a CPU "FSDP" run silently trains as plain
data parallel. This patch makes the backend selection answer gloo / `MULTI_GPU` (which accelerate then turns into
FSDP, as on a GPU cluster) and keeps the device on the CPU. It is never imported by the package.
"""

from __future__ import annotations

import inspect
import os

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType

# What the patch relies on in accelerate 1.15's `PartialState.__init__`: it calls `_prepare_backend(cpu,
# sagemaker_dp, backend)` for `(backend, distributed_type)`, with `cpu=True` it initializes no process group itself
# (the MULTI_CPU branch would), and it then calls `set_device()`.
_EXPECTED_PARAMETERS = ("self", "cpu", "sagemaker_dp", "backend")


def _check_accelerate_internals() -> None:
    problems = []
    prepare = getattr(PartialState, "_prepare_backend", None)
    if prepare is None:
        problems.append("PartialState._prepare_backend is gone")
    elif tuple(inspect.signature(prepare).parameters) != _EXPECTED_PARAMETERS:
        problems.append(f"PartialState._prepare_backend{inspect.signature(prepare)} changed its parameters")
    if not callable(getattr(PartialState, "set_device", None)):
        problems.append("PartialState.set_device is gone")
    init_source = inspect.getsource(PartialState.__init__)
    for call in ("self._prepare_backend(", "self.set_device()"):
        if call not in init_source:
            problems.append(f"PartialState.__init__ no longer calls {call}...)")
    if not hasattr(DistributedType, "MULTI_GPU") or not hasattr(DistributedType, "FSDP"):
        problems.append("DistributedType has no MULTI_GPU or FSDP")
    if problems:
        raise RuntimeError(
            "tests/fsdp_on_cpu.py patches accelerate's internals to run FSDP on CPU, and they changed: "
            + "; ".join(problems)
            + ". Update the patch for this accelerate version, or the FSDP engine test would not test FSDP."
        )


def enable_fsdp_on_cpu() -> None:
    """Patch `PartialState` (before any is created) so that an `accelerate launch` with an FSDP config and
    `use_cpu: true` really shards with FSDP, over gloo."""
    _check_accelerate_internals()
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        raise RuntimeError("enable_fsdp_on_cpu() is for processes launched with an FSDP accelerate config")

    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        # With `cpu=True` accelerate leaves the process group to its MULTI_CPU branch, which this type skips
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="gloo")
        return "gloo", DistributedType.MULTI_GPU

    def set_device(self):
        if self.device is None:
            self.device = torch.device("cpu")

    PartialState._prepare_backend = prepare_backend
    PartialState.set_device = set_device
