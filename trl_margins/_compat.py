"""The one module that touches TRL's or transformers' private code, or that differs between their releases.

The rest of the package reads no private attribute of TRL or transformers and patches none of their modules
(`tests/test_layout.py` checks the package's syntax trees for it): it calls the functions and mixins here. When TRL
changes one of these internals (it is moving DPO and KTO to chunked log-probs, trl#7243 and trl#7075), this module
is what changes.

- **The supported TRL range**, checked at import before TRL is imported (`check_trl_version`).
- **Differences between the supported releases**, each with the release it concerns:
  - 1.9: `DPOTrainer.compute_ref_log_probs(model, inputs)`; before 1.9 it took `(inputs)`. This is why 1.9 is the
    floor: every supported release has the two-argument form, so nothing here adapts it.
  - 1.13: `DPOTrainer._tp_size` (tensor-parallel ranks see the same batch); before, the token count had no correction.
  - 1.14: `trl.trainer.utils.global_then_local_main_first`; before, TRL used `PartialState().main_process_first()`.
  - 1.14: `compute_loss` no longer routes `use_liger_kernel=True` to `_compute_loss_liger`, which skipped
    `_compute_loss` (and so this package's loss) through 1.13 (`refuse_liger_bypass`).
  - 1.15: `add_fused_lm_head` (`model(..., labels=..., fused_lm_head=True).log_probs`, no full logits). Before, TRL's
    `_compute_loss` took per-token log-probs from the full logits with `selective_log_softmax`, and so does
    `token_outputs` there. 1.15.0 itself is excluded: its fused head needs triton; 1.16 added the CPU path.
- **TRL's private hooks**, mapped onto public methods of the margin trainers (`TrainerHooks`, `DPOHooks`, `KTOHooks`):
  dataset preparation, signature columns, checkpoints, the loss, and the model card's name, paper and tags.
- **TRL's metric store** (`record_metrics`) and DPO's token metrics (`record_token_metrics`), the reference-load guard
  (`without_reference_model`) and KTO's per-call weights (`kto_weights`).
- **The device policy** of machines without a GPU: precision, attention and process groups (`settle_devices`,
  `process_state`).
- **Removals TRL 1.16 announces for 2.0** that reach this package: `DPOConfig.use_liger_kernel` (the new way,
  `model_init_kwargs={"use_kernels": True}`, exists from TRL 1.16 only, so the old flag stays accepted here and
  passed through; `refuse_liger_bypass` reads it) and `compute_loss(..., return_outputs=True)` (the margin loss
  warns as TRL does). Neither is used by the package itself.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version

# ---- the supported TRL range (before anything imports TRL) ----------------------------------------------------------
# Keep in sync with `dependencies` in pyproject.toml: the releases the CI matrix proves (.ci/trl_matrix.sh)
TRL_MIN = "1.9.0"
TRL_MAX_EXCLUSIVE = "1.17.0"
EXCLUDED = {
    "1.15": "whose DPO trainer needs triton for its fused LM head, with no CPU fallback (TRL's own DPOTrainer "
    "fails there too; the CPU path arrived in 1.16), so this package's CI, which runs on CPUs, cannot prove it",
}
SUPPORTED = f">={TRL_MIN},<{TRL_MAX_EXCLUSIVE}, except " + ", ".join(f"{minor}.*" for minor in EXCLUDED)
INSTALL = f"pip install 'trl>={TRL_MIN},<{TRL_MAX_EXCLUSIVE},{','.join(f'!={m}.*' for m in EXCLUDED)}'"


def trl_version_problem(installed: str) -> str | None:
    """Why TRL `installed` is not supported, or None if it is."""
    release = Version(installed)
    minor = f"{release.major}.{release.minor}"
    if minor in EXCLUDED:
        return f"TRL {installed} is installed, {EXCLUDED[minor]}"
    if not Version(TRL_MIN) <= release < Version(TRL_MAX_EXCLUSIVE):
        return (
            f"TRL {installed} is installed. TRL's DPOTrainer internals (fused LM head, reference log-prob "
            "computation, preference collator) that these trainers build on change between 1.x releases"
        )
    return None


def check_trl_version() -> None:
    try:
        installed = version("trl")
    except PackageNotFoundError as e:
        raise ImportError(f"trl-margins needs TRL {SUPPORTED}: `{INSTALL}`.") from e
    problem = trl_version_problem(installed)
    if problem is not None:
        raise ImportError(
            f"trl-margins supports TRL {SUPPORTED}, but {problem}. Install a supported TRL: `{INSTALL}`."
        )


check_trl_version()

import contextlib  # noqa: E402
import contextvars  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator, Mapping  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import trl.trainer.dpo_trainer as _trl_dpo  # noqa: E402
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR  # noqa: E402
from trl.trainer.utils import entropy_from_logits, selective_log_softmax  # noqa: E402

logger = logging.getLogger(__name__)

TRL_VERSION = Version(version("trl"))


def _since(release: str) -> bool:
    return Version(release) <= TRL_VERSION


HAS_FUSED_LM_HEAD = _since("1.15")
HAS_GLOBAL_THEN_LOCAL_MAIN_FIRST = _since("1.14")
LIGER_BYPASSES_LOSS = not _since("1.14")


# ---- log-probs: TRL's fused head from 1.15, the full logits before ------------------------------------------------
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


def refuse_liger_bypass(use_liger_kernel: bool, knobs: list[str]) -> None:
    """Through TRL 1.13, `DPOTrainer.compute_loss` sends `use_liger_kernel=True` to `_compute_loss_liger`, TRL's own
    loss, so the knobs would silently do nothing: refuse the combination at config time."""
    if use_liger_kernel and knobs and LIGER_BYPASSES_LOSS:
        from .errors import UsageError

        raise UsageError(
            f"`use_liger_kernel=True` with {', '.join(knobs)} needs TRL >= 1.14 (TRL {TRL_VERSION} is installed): "
            "through TRL 1.13, DPOTrainer sends `use_liger_kernel` to its own Liger loss, which skips the "
            "trl-margins loss. Unset `use_liger_kernel`, or upgrade TRL."
        )


# ---- TRL's private hooks, mapped onto public methods --------------------------------------------------------------
class TrainerHooks:
    """Mixed in before a TRL trainer class: TRL's private hooks call public methods of the margin trainer.

    The trainer defines `method_name`, `model_card_paper()`, `model_card_tags()`, `before_tokenization(...)`,
    `after_tokenization(...)`, `extra_signature_columns()`, `save_checkpoint_states(folder)` and
    `restore_checkpoint_states(folder)` (`trainers/_base.py` has them). A `method_name` or paper of None means TRL's
    own (every knob off: the trainer is TRL's).
    """

    # The model card (TRL's `create_model_card`) and the model's tags (`add_model_tags` in TRL's `__init__`)
    @property
    def _name(self) -> str:
        return self.method_name or super()._name

    @property
    def _paper(self) -> dict[str, str]:
        return self.model_card_paper() or super()._paper

    @property
    def _tag_names(self) -> list[str]:
        return [*super()._tag_names, *self.model_card_tags()]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = self.before_tokenization(dataset, processing_class, args, dataset_name)
        prepared = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        return self.after_tokenization(dataset, prepared, args, dataset_name)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        extra = [c for c in self.extra_signature_columns() if c not in self._signature_columns]
        self._signature_columns = [*self._signature_columns, *extra]

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:  # the run state is identical on every rank: the main process writes it
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            self.save_checkpoint_states(folder)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.restore_checkpoint_states(checkpoint)


class DPOHooks(TrainerHooks):
    """`TrainerHooks` for `trl.DPOTrainer`: its `_compute_loss` calls the trainer's `margin_loss`, and `trl_loss` is
    TRL's own."""

    def _compute_loss(self, model, inputs, return_outputs):
        return self.margin_loss(model, inputs, return_outputs)

    def trl_loss(self, model, inputs, return_outputs):
        """TRL's own loss and metrics for this batch."""
        return super()._compute_loss(model, inputs, return_outputs)


class KTOHooks(DPOHooks):
    """The same hooks for `trl.KTOTrainer`, whose `_compute_loss` has DPO's signature."""


def recompute_outputs(model, model_kwargs: dict):
    """The model outputs that `compute_loss(..., return_outputs=True)` returns, from an extra forward pass: TRL's fused
    LM head (1.15+) builds no logits. TRL 1.16 deprecates `return_outputs=True` (and the logits it passes to
    `compute_metrics`) for removal in 2.0; this warns as TRL does, and goes when TRL drops it."""
    warnings.warn(
        "`return_outputs=True` recomputes the logits with an extra forward pass (the fused LM head of TRL 1.15+ "
        "builds none), like TRL's DPOTrainer; TRL 1.16 deprecates it for removal in 2.0.",
        FutureWarning,
        stacklevel=3,
    )
    with torch.no_grad():
        return model(**model_kwargs)


# ---- TRL's metric store ---------------------------------------------------------------------------------------------
def record_metrics(trainer, mode: str, values: Mapping[str, float]) -> None:
    """Append each value to TRL's per-mode metric lists, which TRL averages and logs at each logging step."""
    for name, value in values.items():
        trainer._metrics[mode][name].append(value)


def record_token_metrics(trainer, mode: str, inputs, outputs, seq_len: int) -> None:
    """TRL's token-level DPO metrics: `aux_loss` (MoE), `entropy`, `num_tokens`, `logits/chosen`, `logits/rejected`,
    `mean_token_accuracy`.

    A minimal re-implementation of the metric block of `DPOTrainer._compute_loss` (the same keys and values in TRL
    1.9-1.16), which offers no hook to reuse it: the same sums and ratios, gathered in one transfer.
    tests/trainers/test_parity.py checks each value against TRL's, on each release of the CI matrix.
    """
    mask = inputs["completion_mask"][:, 1:]
    chosen_mask, rejected_mask = mask.bool().chunk(2, dim=0)
    chosen_logits, rejected_logits = outputs.mean_logits[:, -seq_len:].detach().chunk(2, dim=0)
    chosen_is_top1 = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)[0]
    sums = [
        (outputs.entropy[:, -seq_len:].detach() * mask).sum(),
        mask.sum(),
        chosen_logits[chosen_mask].sum(),
        chosen_mask.sum(),
        rejected_logits[rejected_mask].sum(),
        rejected_mask.sum(),
        (chosen_is_top1 & chosen_mask).sum(),
        inputs["attention_mask"].sum(),
    ]
    if trainer.aux_loss_enabled:
        sums.append(outputs.aux_loss.detach())
    # [processes, sums] -> totals over the processes; float64 keeps the token counts exact (MPS has no float64)
    dtype = torch.float32 if mask.device.type == "mps" else torch.float64
    totals = trainer.accelerator.gather(torch.stack([s.to(dtype) for s in sums])[None]).sum(dim=0).tolist()
    entropy, tokens, chosen_logit, chosen_tokens, rejected_logit, rejected_tokens, correct, attended = totals[:8]

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else 0.0

    metrics = trainer._metrics[mode]
    if trainer.aux_loss_enabled:
        metrics["aux_loss"].append(totals[8] / trainer.accelerator.num_processes)
    metrics["entropy"].append(ratio(entropy, tokens))
    if mode == "train":
        # Tensor-parallel ranks (TRL 1.13+) see the same batch, which the token count divides by
        trainer._total_train_tokens += int(attended) // getattr(trainer, "_tp_size", 1)
    metrics["num_tokens"] = [trainer._total_train_tokens]
    metrics["logits/chosen"].append(ratio(chosen_logit, chosen_tokens))
    metrics["logits/rejected"].append(ratio(rejected_logit, rejected_tokens))
    metrics["mean_token_accuracy"].append(ratio(correct, chosen_tokens))


# ---- the reference model of a trainer that needs none -------------------------------------------------------------
_skip_reference_for: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "trl_margins_skip_reference_for", default=None
)
_guard_lock = threading.Lock()
_guard_depth = 0
_unguarded_load = None


def _guarded_load(model_id, **kwargs):
    trainer = _skip_reference_for.get()
    # The policy given by path loads before `Trainer.__init__`, the reference copy after it: only the latter has
    # the trainer's accelerator set
    if trainer is not None and hasattr(trainer, "accelerator"):
        return None
    return _unguarded_load(model_id, **kwargs)


@contextlib.contextmanager
def without_reference_model(trainer) -> Iterator[None]:
    """Around `DPOTrainer.__init__` of a trainer that needs no reference model (SimPO rewards): the reference copy
    that TRL would load is None.

    `DPOTrainer.__init__` has no option to skip that load (only PEFT and `precompute_ref_log_probs` avoid a copy, and
    the latter still loads one), but looks `create_model_from_path` up in its module on each call. So, for the
    duration of this context only, that function is wrapped; the wrapper acts only for this trainer, in this context
    (a context variable: other threads and other trainers see TRL's function), and the last context to leave puts
    TRL's function back. Nothing is wrapped at import or outside a trainer's construction.
    """
    global _guard_depth, _unguarded_load
    with _guard_lock:
        if _guard_depth == 0:
            _unguarded_load = _trl_dpo.create_model_from_path
            _trl_dpo.create_model_from_path = _guarded_load
        _guard_depth += 1
    token = _skip_reference_for.set(trainer)
    try:
        yield
    finally:
        _skip_reference_for.reset(token)
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                _trl_dpo.create_model_from_path = _unguarded_load
                _unguarded_load = None


# ---- KTO's weights --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def kto_weights(trainer, desirable: torch.Tensor, undesirable: torch.Tensor) -> Iterator[None]:
    """For one `KTOTrainer._compute_loss` call, per-sample `desirable_weight` and `undesirable_weight`.

    TRL 1.9-1.16's KTO loss is `cat(desirable_weight * chosen_losses, undesirable_weight * rejected_losses)`, with the
    samples selected by `nonzero(label)` / `nonzero(~label)` in ascending order: tensors in that order weigh each
    sample, and the loss, KL term, reference handling and metrics stay TRL's. The constants come back afterwards.
    """
    trainer.desirable_weight, trainer.undesirable_weight = desirable, undesirable
    try:
        yield
    finally:
        trainer.desirable_weight = trainer.args.desirable_weight
        trainer.undesirable_weight = trainer.args.undesirable_weight


# ---- machines without a GPU: precision and processes ----------------------------------------------------------------
def has_accelerator() -> bool:
    """Whether a GPU (or XLA / MPS device) is there to train on."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    mps = getattr(torch.backends, "mps", None)
    return (
        torch.cuda.is_available()
        or is_torch_bf16_gpu_available()
        or is_torch_xla_available()
        or (mps is not None and mps.is_available())
    )


def cpu_flags() -> dict[str, str | bool]:
    """torch's reading of the CPU features that decide whether bf16 is fast: its capability (`AVX2`, `AVX512`, ...),
    AVX512-BF16, AMX and AVX2 (what benchmarks record beside their numbers)."""
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        "amx": bool(torch.cpu._is_amx_tile_supported()),
        "avx2": bool(torch.cpu._is_avx2_supported()),
    }


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX), as torch detects it. Without
    either, torch runs bf16 matmuls in software: measured 55x slower than fp32 on an AVX2-only AMD EPYC
    (benchmarks/RESULTS.md)."""
    flags = cpu_flags()
    return bool(flags["avx512_bf16"] or flags["amx"])


@functools.cache
def _warn_slow_cpu_bf16(remedy: str = "Set bf16=False to train in float32.") -> None:
    logger.warning(
        "bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): torch runs bf16 matrix products in software, "
        "many times slower than float32 (55x measured on an AVX2-only CPU). %s",
        remedy,
    )


def warn_if_slow_bf16(dtype: torch.dtype, device: str | torch.device) -> None:
    """Warn once when a command would run a model in bf16 on a CPU that computes bf16 in software."""
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu" and not cpu_has_native_bf16():
        _warn_slow_cpu_bf16("Pass --dtype float32 to run in float32.")


def launched_processes() -> int:
    """How many processes a launcher (`torchrun`, `accelerate launch`) started for this run: `WORLD_SIZE`, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def settle_attention(model_init_kwargs: dict | None) -> None:
    """Without a GPU, a FlashAttention implementation (which needs CUDA, and would stop the run with an import error
    while loading the model) becomes PyTorch's SDPA, with a warning; changes `model_init_kwargs` in place."""
    attention = (model_init_kwargs or {}).get("attn_implementation")
    if attention and str(attention).startswith("flash_attention") and not has_accelerator():
        logger.warning("No GPU: `attn_implementation=%s` needs CUDA; using 'sdpa' instead.", attention)
        model_init_kwargs["attn_implementation"] = "sdpa"


def settle_devices(config) -> None:
    """What the margin configs do before TRL's `__post_init__`: pass TRL's gradient-checkpointing defaults under their
    transformers 5.23 names and, on a machine without a GPU, settle half precision, attention, pinned memory and the
    process group.

    The rule without a GPU, the same for the Python API and the command line: half precision needs `use_cpu=True`.
    TRL's configs turn an unset `bf16` on, and transformers then refuses to start without a GPU unless `use_cpu` is
    set, so a script or recipe written for a GPU would stop on a CPU at its config. There, an unset `bf16` stays off
    (float32); a `bf16` or `fp16` that was asked for is turned off with a warning, unless `use_cpu=True` asks for
    the CPU explicitly: then it is kept, and warned about once when the CPU has no native bf16.

    Several processes launched on a machine without a GPU (`torchrun --nproc_per_node N`, `accelerate launch
    --num_processes N`) form one gloo group only with `use_cpu=True`; without it each would train its own copy of
    the model on all the data, and all would write the same `output_dir`. So there `use_cpu` is set, with a note.
    """
    # TRL defaults the old name `gradient_checkpointing` to True, and recipes set `gradient_checkpointing_kwargs`,
    # which transformers 5.23+ warns about on every config: the same values under the new names
    for old, new in (("gradient_checkpointing", "activation_checkpointing"), ("gradient_checkpointing_kwargs",
                     "activation_checkpointing_kwargs")):  # fmt: skip
        if getattr(config, new, False) is None and getattr(config, old) is not None:
            setattr(config, new, getattr(config, old))
    if has_accelerator():
        return
    settle_attention(config.model_init_kwargs if isinstance(config.model_init_kwargs, dict) else None)
    # Pinned memory only speeds up copies to a GPU: without one it does nothing, and torch warns on every loader
    config.dataloader_pin_memory = False
    asked = [name for name in ("bf16", "fp16") if getattr(config, name)]
    if config.use_cpu and asked:
        if config.bf16 and not cpu_has_native_bf16():
            _warn_slow_cpu_bf16()
    else:
        if asked:
            logger.warning(
                "No GPU: %s is off, training in float32 (pass use_cpu=True to train in %s on the CPU).",
                " and ".join(asked),
                asked[0],
            )
        elif config.bf16 is None:
            logger.info("No GPU: bf16 (TRL's default) is off, training in float32.")
        for name in ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval"):
            setattr(config, name, False)
    if launched_processes() > 1 and not config.use_cpu:
        logger.info("%d processes on CPUs: use_cpu=True, so that they train as one gloo group.", launched_processes())
        config.use_cpu = True


def process_state():
    """This process's place among the data-parallel ones (`accelerate.PartialState`).

    accelerate starts a CPU process group only when told the run is on CPUs (`cpu=True`, `accelerate launch --cpu`):
    under `torchrun` on a machine without a GPU it would leave every process alone, each believing it is rank 0 of 1,
    and each would do all the work. So several launched processes and no GPU mean CPU processes (gloo), and a
    launch that still ends up as one process is an error rather than duplicated work.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from .errors import UsageError

    launched = launched_processes()
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (launched > 1 and not has_accelerator())
    state = PartialState(cpu=cpu)
    if launched > 1 and state.num_processes != launched:
        raise UsageError(
            f"{launched} processes were launched (WORLD_SIZE), but accelerate sees {state.num_processes}: each would "
            "do all the work. Launch with `accelerate launch` (add --cpu on a machine without GPUs)."
        )
    return state
