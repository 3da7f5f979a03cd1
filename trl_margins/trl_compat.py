"""Every difference between the TRL releases this package supports that its code meets, in one place.

The supported range itself is in `_version_check.py` (checked at import, before TRL is imported). Each difference
below names the TRL release it concerns; the rest of the package calls these functions and checks no version itself.

- 1.9: `DPOTrainer.compute_ref_log_probs(model, inputs)`; before 1.9 it took `(inputs)`. This is why 1.9 is the floor:
  every supported release has the two-argument form, so nothing here adapts it.
- 1.13: `DPOTrainer._tp_size` (tensor-parallel ranks see the same batch); before, the token count had no correction.
- 1.14: `trl.trainer.utils.global_then_local_main_first`; before, TRL used `PartialState().main_process_first()`.
- 1.14: `compute_loss` no longer routes `use_liger_kernel=True` to `_compute_loss_liger`, which skipped `_compute_loss`
  (and so this package's loss) through 1.13. In 1.14 TRL's Liger path is a chunked log-prob branch inside
  `_compute_loss`; with a knob on, ours replaces it and reads the full logits (Liger's layer kernels still apply).
- 1.15: `add_fused_lm_head` (`model(..., labels=..., fused_lm_head=True).log_probs`, no full logits). Before, TRL's
  `_compute_loss` took per-token log-probs from the full logits with `selective_log_softmax`, its metrics from the same
  logits, and so does `token_outputs` there. (1.15.0 itself is excluded: its fused head needs triton, see
  `_version_check.py`; 1.16 added the CPU path.)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from importlib.metadata import version

import torch
import torch.nn.functional as F
from packaging.version import Version
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

TRL_VERSION = Version(version("trl"))


def _since(release: str) -> bool:
    return Version(release) <= TRL_VERSION


HAS_FUSED_LM_HEAD = _since("1.15")
HAS_GLOBAL_THEN_LOCAL_MAIN_FIRST = _since("1.14")
LIGER_BYPASSES_LOSS = not _since("1.14")


@dataclasses.dataclass
class TokenOutputs:
    """The per-token fields of TRL's `FusedCausalLMOutput` (1.15+) that this package reads, from full logits.

    Each is `[batch, seq_len - 1]` (`logits` has the vocabulary as a third dimension), aligned with the shifted labels
    and with the real tokens only; fields not asked for are None.
    """

    log_probs: torch.Tensor
    logits: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    mean_logits: torch.Tensor | None = None
    is_top1: torch.Tensor | None = None
    log_sum_sq_probs: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


def token_outputs(model, model_kwargs: dict, input_ids: torch.Tensor, completion_mask: torch.Tensor, metrics: bool):
    """Per-token log-probs of the completion tokens (0 elsewhere) and, with `metrics`, the fields the DPO metrics and
    WPO weights read: TRL's fused head from 1.15 (which the model must carry, see `fused_lm_heads`), else computed
    from the logits as TRL 1.9-1.14's `_compute_loss` does."""
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    if HAS_FUSED_LM_HEAD:
        return model(**model_kwargs, labels=labels, fused_lm_head=True)
    outputs = model(**model_kwargs)
    # Prompt-learning PEFT prepends virtual tokens to the outputs; the real tokens are the last ones
    shift_logits = outputs.logits[:, -input_ids.size(1) : -1]
    shift_labels, shift_mask = input_ids[:, 1:], completion_mask[:, 1:]
    log_probs = selective_log_softmax(shift_logits, shift_labels).masked_fill(shift_mask == 0, 0.0)
    if not metrics:
        return TokenOutputs(log_probs)
    logits = shift_logits.detach()
    return TokenOutputs(
        log_probs=log_probs,
        logits=shift_logits,
        entropy=entropy_from_logits(logits),
        mean_logits=logits.mean(dim=-1),
        is_top1=logits.argmax(dim=-1) == shift_labels,
        log_sum_sq_probs=torch.logsumexp(2.0 * logits, dim=-1) - 2.0 * torch.logsumexp(logits, dim=-1),
        aux_loss=getattr(outputs, "aux_loss", None),
    )


def chosen_nll(outputs, per_token_logps: torch.Tensor, input_ids: torch.Tensor, shift_mask: torch.Tensor):
    """RPO's `sft` term, the mean NLL over the chosen completion tokens, computed as the installed TRL does: from the
    fused head's log-probs from 1.15, with `F.cross_entropy` of the logits before (equal in exact arithmetic, but not
    to the last float32 bit, and the parity tests compare with TRL's own result)."""
    chosen_mask = shift_mask.chunk(2, dim=0)[0].bool()
    if HAS_FUSED_LM_HEAD:
        return -per_token_logps.chunk(2, dim=0)[0][chosen_mask].mean()
    chosen_logits, chosen_labels = outputs.logits.chunk(2, dim=0)[0], input_ids[:, 1:].chunk(2, dim=0)[0]
    return F.cross_entropy(chosen_logits[chosen_mask], chosen_labels[chosen_mask])


@contextlib.contextmanager
def fused_lm_heads(*models) -> Iterator[None]:
    """From 1.15, give each model (below its PEFT wrapper, as TRL does) TRL's log-probs-only fused head for the
    duration, then restore its forward: the model may be a trainer's, whose head TRL built with more outputs. Before
    1.15 there is no head to add: `token_outputs` reads the logits."""
    if not HAS_FUSED_LM_HEAD:
        yield
        return
    from trl.trainer.utils import add_fused_lm_head

    patched = []
    for model in models:
        if model is None:
            continue
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel's, or itself
        patched.append((base, base.__dict__.get("forward")))
        add_fused_lm_head(base)
    try:
        yield
    finally:
        for base, forward in reversed(patched):
            if forward is None:
                del base.forward  # back to the class's forward
            else:
                base.forward = forward


def main_process_first() -> contextlib.AbstractContextManager:
    """The context TRL maps datasets under (the main process first, then the others read its cache)."""
    if HAS_GLOBAL_THEN_LOCAL_MAIN_FIRST:
        from trl.trainer.utils import global_then_local_main_first

        return global_then_local_main_first()
    from accelerate import PartialState

    return PartialState().main_process_first()


def tensor_parallel_size(trainer) -> int:
    """Ranks that share one batch under tensor parallelism, which DPO's token count divides by (TRL 1.13+)."""
    return getattr(trainer, "_tp_size", 1)


def refuse_liger_bypass(use_liger_kernel: bool, knobs: list[str]) -> None:
    """Through TRL 1.13, `DPOTrainer.compute_loss` sends `use_liger_kernel=True` to `_compute_loss_liger`, TRL's own
    loss, so the knobs would silently do nothing: refuse the combination at config time."""
    if use_liger_kernel and knobs and LIGER_BYPASSES_LOSS:
        raise ValueError(
            f"`use_liger_kernel=True` with {', '.join(knobs)} needs TRL >= 1.14 (TRL {TRL_VERSION} is installed): "
            "through TRL 1.13, DPOTrainer sends `use_liger_kernel` to its own Liger loss, which skips the "
            "trl-margins loss. Unset `use_liger_kernel`, or upgrade TRL."
        )
