#!/usr/bin/env python
"""Training-step time and memory of the margin trainers against TRL's stock trainers.

Every trainer gets the same model, the same VADER pairs and the same pre-collated batches, and all of them run in ONE
process, interleaved in rotating order, so that load from other jobs and thermal drift hit them alike. A step is
`trainer.training_step(model, batch)` (forward, loss, backward) plus the optimizer step, timed after warm-up.

To make the steps comparable, the trainers share one policy model, one reference model and one AdamW optimizer: they
then run identical kernels on identical weights, and memory holds one copy of each instead of one per trainer (which
would barely fit in 24 GiB for 135M parameters and eight trainers). The weights move a little every step, which changes
no kernel's cost. gamma-PO queues are pre-filled to capacity, so the measured steps sample from a full queue.

Each variant's ratio is taken twice:
  * against the stock TRL trainer (`trl.DPOTrainer`, or TRL's SimPO = `CPOTrainer(loss_type="simpo", cpo_alpha=0)`),
    the comparison that matters to a user; it also contains every difference between TRL's loss code and ours (metrics,
    host syncs, for SimPO even the LM head: TRL's CPOTrainer builds the full logits, ours the fused head), and
  * against our own trainer with the margin knob off, which isolates what the margins cost.
The ratio is the median over rounds of the per-round ratio (same batch, adjacent in time) with a bootstrap 95% CI.
`dpo_again` times the stock DPO trainer a second time: its ratio to `dpo` (an A/A comparison) is the noise floor. The
work the margins add to a step is also timed on its own, inside the trainer (`margin_work_us`), which is precise where
whole-step ratios are not.

Peak memory comes from each variant alone, with its own model, reference model and optimizer: in a fresh process on
the CPU (sampled RSS; the allocator keeps freed memory resident, so only a fresh process is clean) and in this process
on CUDA (`torch.cuda.max_memory_allocated`, counted above what was alive before; exact and quicker). RSS cannot tell
apart variants whose peaks differ by less than tens of MiB; `--memory allocator` adds, on the CPU, torch's allocator
peak of every step to the byte (`AllocatorPeak`: the profiler's memory events), the first step (AdamW allocates its
state) apart from the steady ones, with the sites that hold each peak, and measures the stock A/A repeat too.

    PYTHONPATH=. python benchmarks/overhead.py --threads 1 --output benchmarks/results/overhead_cpu.json
    PYTHONPATH=. python benchmarks/overhead.py --device cuda --dtype bfloat16 --model random:qwen2-0.5b
    PYTHONPATH=. python benchmarks/overhead.py --quick     # tiny random model, 2 rounds: checks the script only
    PYTHONPATH=. python benchmarks/overhead.py --threads 1 --rounds 0 --memory allocator --memory_steps 3 \
        --variants dpo,dpo_again,mmpo,gamma_dpo,beta_dpo --output benchmarks/results/step_memory_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "benchmarks"):  # as a script: `trl_margins`, `tests` and the helpers importable
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import overhead_report  # noqa: E402
from helpers import build_random_model, quiet_libraries  # noqa: E402

MIB = 2**20
RESULT_MARKER = "OVERHEAD_MEMORY_RESULT "


# ---- what is compared ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    baseline: str | None  # the stock TRL trainer it replaces
    control: str | None  # our trainer with the margin knob off: the ratio to it is the cost of the margins alone
    simpo: bool  # SimPO rewards: no reference model


VARIANTS: tuple[Variant, ...] = (
    Variant("dpo", "trl.DPOTrainer (sigmoid)", None, None, False),
    # The same stock trainer again: its ratio to `dpo` is the noise floor of the measurement (an A/A comparison)
    Variant("dpo_again", "trl.DPOTrainer again (A/A: noise floor)", "dpo", None, False),
    Variant("dpo_ours", "MMPOTrainer, mmpo_gamma=None (our DPO)", "dpo", None, False),
    Variant("mmpo", "MMPOTrainer, mmpo_gamma=1", "dpo", "dpo_ours", False),
    Variant("gamma_dpo", "GammaPOTrainer (DPO rewards)", "dpo", "dpo_ours", False),
    Variant("simpo", "TRL SimPO (CPOTrainer simpo, cpo_alpha=0)", None, None, True),
    Variant("simpo_ours", "MMPOTrainer, reward_type=simpo (our SimPO)", "simpo", None, True),
    Variant("gamma_simpo", "GammaPOTrainer, reward_type=simpo (gamma-SimPO)", "simpo", "simpo_ours", True),
    # Per-pair weights, ODPO and beta-DPO, each against our DPO with every knob off (the same code path without it)
    Variant("dpo_weighted", "MMPOTrainer, weight_column (per-pair weights)", "dpo", "dpo_ours", False),
    Variant("odpo", "MMPOTrainer, odpo_alpha=1 (ODPO offsets)", "dpo", "dpo_ours", False),
    Variant("beta_dpo", "MMPOTrainer, beta_dpo_alpha=6 (beta-DPO: batch beta, 80% kept)", "dpo", "dpo_ours", False),
    # KTO times unpaired samples: each pair of the batch gives one desirable and one undesirable sample
    Variant("kto", "trl.KTOTrainer", None, None, False),
    Variant("kto_ours", "MMPOKTOTrainer, mmpo_gamma=None (our KTO)", "kto", None, False),
    Variant("mmpo_kto", "MMPOKTOTrainer, mmpo_gamma=1 (MMPO's KTO weights)", "kto", "kto_ours", False),
)
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}
GAMMA_VARIANTS = ("gamma_dpo", "gamma_simpo")
KTO_VARIANTS = ("kto", "kto_ours", "mmpo_kto")
NO_MEMORY = ("dpo_again",)  # the same trainer as `dpo`: one memory measurement is enough

DPO_BETA = 0.1  # TRL's default
SIMPO_BETA, SIMPO_GAMMA_BETA_RATIO = 2.5, 0.5  # SimPO-scale rewards (the gamma-PO paper's Mistral setting)


@dataclass
class Options:
    device: str = "cpu"
    model: str = "smollm2"
    dtype: str = "float32"
    # Sized for SmolLM2-135M on 2 shared CPU cores (a DPO step takes seconds there); pass more on a GPU
    batch_size: int = 2
    rounds: int = 16  # a multiple of the number of variants: each then runs equally often in each position
    warmup: int = 1
    num_batches: int = 1  # one batch: the spread of step times is then timing noise, not batch-length differences
    max_length: int = 128
    queue_size: int = 2048
    sample_size: int = 256
    memory: str | None = None  # None: subprocess on CPU, inprocess on CUDA (see `run_memory`)
    memory_steps: int = 2
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)
    seed: int = 0
    threads: int | None = None
    work_dir: str | None = None

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


# ---- models --------------------------------------------------------------------------------------------------------
def resolve_model(spec: str, work_dir: str) -> str:
    """`smollm2` (the package's SmolLM2-135M asset), `tiny` (the test suite's 2-layer model), `random:<preset>` (see
    `RANDOM_PRESETS`), or a local checkpoint folder."""
    if spec == "smollm2":
        from trl_margins.data.assets import smollm2_path

        return smollm2_path()
    if spec == "tiny":
        from tests.conftest import build_tiny_model

        return build_tiny_model(str(Path(work_dir) / "tiny-qwen2"))
    if spec.startswith("random:"):
        preset = spec.removeprefix("random:")
        return build_random_model(Path(work_dir) / preset, preset)
    if not Path(spec).is_dir():
        raise FileNotFoundError(f"--model {spec!r}: not a folder, nor one of smollm2, tiny, random:<preset>")
    return spec


def load_model(path: str, opts: Options) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    attn = "sdpa" if opts.device == "cuda" else None  # SDPA on GPU, as in practice; CPU: the model's default
    model = AutoModelForCausalLM.from_pretrained(path, dtype=opts.torch_dtype, attn_implementation=attn)
    return model.to(opts.device)


# ---- trainers ------------------------------------------------------------------------------------------------------
def _common_args(opts: Options, out_dir: str) -> dict[str, Any]:
    return dict(
        output_dir=out_dir,
        per_device_train_batch_size=opts.batch_size,
        max_length=opts.max_length,
        report_to=[],
        save_strategy="no",
        logging_steps=10**9,
        use_cpu=opts.device == "cpu",
        bf16=opts.device == "cuda" and opts.dtype == "bfloat16",
        seed=opts.seed,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def build_trainer(name: str, model, ref_model, tokenizer, dataset, opts: Options, out_dir: str):
    trainer = _make_trainer(name, model, ref_model, tokenizer, dataset, opts, out_dir)
    if name in GAMMA_VARIANTS:  # measured steps run with a full queue, as after the first 2048 pairs of training
        trainer.margin_queue.push(torch.randn(opts.queue_size, device=opts.device))
    # `Trainer.training_step` reads this, which only the training loop sets
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def _make_trainer(name: str, model, ref_model, tokenizer, dataset, opts: Options, out_dir: str):
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from trl_margins import GammaPOConfig, GammaPOTrainer, MMPOConfig, MMPOKTOConfig, MMPOKTOTrainer, MMPOTrainer
    from trl_margins.data.formatting import unpair_preferences

    # DPOTrainer patches `model.forward` with its fused LM head, wrapping whatever forward it finds: drop an earlier
    # trainer's patch so that every trainer sharing the models starts from the model's own forward.
    for m in (model, ref_model):
        if m is not None:
            vars(m).pop("forward", None)
    common = _common_args(opts, out_dir)
    gamma = dict(margin_queue_size=opts.queue_size, margin_sample_size=opts.sample_size)
    simpo = dict(beta=SIMPO_BETA, reward_type="simpo")
    if name == "simpo":
        args = CPOConfig(**common, loss_type="simpo", cpo_alpha=0.0, beta=SIMPO_BETA,
                         simpo_gamma=SIMPO_GAMMA_BETA_RATIO * SIMPO_BETA)  # fmt: skip
        return CPOTrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer)
    if name in KTO_VARIANTS:
        kto = dict(common, per_device_train_batch_size=2 * opts.batch_size, beta=DPO_BETA)
        if name == "kto":
            cls, args = KTOTrainer, KTOConfig(**kto)
        else:
            cls, args = MMPOKTOTrainer, MMPOKTOConfig(**kto, mmpo_gamma=None if name == "kto_ours" else 1.0)
        return cls(model, ref_model, args=args, train_dataset=unpair_preferences(dataset), processing_class=tokenizer)
    cls, args, ref = {
        "dpo": (DPOTrainer, lambda: DPOConfig(**common, loss_type=["sigmoid"], beta=DPO_BETA), ref_model),
        "dpo_again": (DPOTrainer, lambda: DPOConfig(**common, loss_type=["sigmoid"], beta=DPO_BETA), ref_model),
        "dpo_ours": (MMPOTrainer, lambda: MMPOConfig(**common, beta=DPO_BETA), ref_model),
        "mmpo": (MMPOTrainer, lambda: MMPOConfig(**common, beta=DPO_BETA, mmpo_gamma=1.0), ref_model),
        "gamma_dpo": (GammaPOTrainer, lambda: GammaPOConfig(**common, beta=DPO_BETA, **gamma), ref_model),
        "dpo_weighted": (MMPOTrainer, lambda: MMPOConfig(**common, beta=DPO_BETA, weight_column="weight"), ref_model),
        "odpo": (MMPOTrainer, lambda: MMPOConfig(**common, beta=DPO_BETA, odpo_alpha=1.0), ref_model),
        "beta_dpo": (MMPOTrainer, lambda: MMPOConfig(**common, beta=DPO_BETA, beta_dpo_alpha=6.0), ref_model),
        "simpo_ours": (MMPOTrainer, lambda: MMPOConfig(**common, **simpo), None),
        "gamma_simpo": (GammaPOTrainer, lambda: GammaPOConfig(
            **common, **simpo, gamma_beta_ratio=SIMPO_GAMMA_BETA_RATIO, **gamma), None),
    }[name]  # fmt: skip
    return cls(model, ref, args=args(), train_dataset=dataset, processing_class=tokenizer)


def collate_batches(trainer, opts: Options) -> tuple[list[dict[str, Any]], float]:
    """`opts.num_batches` consecutive batches of the trainer's own (tokenized) dataset, collated by its own collator
    and moved to the device; and the mean number of non-padding tokens per batch."""
    dataset = trainer._remove_unused_columns(trainer.train_dataset, description="training")
    batches, tokens = [], []
    for i in range(opts.num_batches):
        size = trainer.args.per_device_train_batch_size  # KTO: twice the pairs' count, one sample per sentence
        rows = [dataset[j] for j in range(i * size, (i + 1) * size)]
        batch = trainer._prepare_inputs(trainer.data_collator(rows))
        masks = [v for k, v in batch.items() if k.endswith("attention_mask") and isinstance(v, torch.Tensor)]
        tokens.append(sum(int(m.sum()) for m in masks))
        batches.append(batch)
    return batches, float(np.mean(tokens))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_step(trainer, optimizer: torch.optim.Optimizer, batch: dict[str, Any], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    trainer.training_step(trainer.model, batch)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - start


def load_inputs(opts: Options, model_path: str):
    from transformers import AutoTokenizer

    from trl_margins.data.assets import load_vader_preferences

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = load_vader_preferences("train").select(range(opts.num_batches * opts.batch_size))
    # A pair's weight for `dpo_weighted`: the raters' confidence in its order, |2 p - 1|, never all zero
    dataset = dataset.map(lambda r: {"weight": abs(2 * r["human_pref_prob"] - 1)})
    return tokenizer, dataset


# ---- timing --------------------------------------------------------------------------------------------------------
def run_timing(opts: Options, model_path: str, work_dir: str) -> dict[str, Any]:
    tokenizer, dataset = load_inputs(opts, model_path)
    model = load_model(model_path, opts)
    needs_ref = any(not VARIANTS_BY_NAME[n].simpo for n in opts.variants)
    ref_model = load_model(model_path, opts).eval().requires_grad_(False) if needs_ref else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)

    trainers, batches, tokens, errors, forwards = {}, {}, {}, {}, {}
    shared = [m for m in (model, ref_model) if m is not None]
    for name in opts.variants:
        try:
            trainers[name] = build_trainer(name, model, ref_model, tokenizer, dataset, opts, f"{work_dir}/{name}")
            # Each trainer patches the shared models' forward with its own fused LM head (its outputs depend on the
            # trainer's options, e.g. WPO's): keep each one's, and put it back before that trainer's steps
            forwards[name] = [vars(m).get("forward") for m in shared]  # None: the class's own forward
            batches[name], tokens[name] = collate_batches(trainers[name], opts)
        except Exception as e:  # record it and time the others: a GPU lease is too short to lose to one failure
            errors[name] = f"{type(e).__name__}: {e}"
            trainers.pop(name, None)
            print(f"[overhead] {name} failed to build: {errors[name]}", file=sys.stderr)
    names = list(trainers)
    if not names:
        raise RuntimeError(f"no trainer could be built: {errors}")
    times: dict[str, list[float]] = {n: [] for n in names}
    loads: list[float] = []
    cpu_start, busy_start, wall_start = _process_cpu_seconds(), _machine_busy_seconds(), time.perf_counter()
    for r in range(-opts.warmup, opts.rounds):
        shift = r % len(names)
        order = names[shift:] + names[:shift]  # rotate so that no trainer always follows the same one
        gc.collect()
        gc.disable()  # a collection inside a timed step would charge one trainer for all of them
        try:
            for name in order:
                for m, forward in zip(shared, forwards[name]):
                    if forward is None:
                        vars(m).pop("forward", None)
                    else:
                        m.forward = forward
                seconds = timed_step(trainers[name], optimizer, batches[name][r % opts.num_batches], opts.device)
                if r >= 0:
                    times[name].append(seconds)
        finally:
            gc.enable()
        if r >= 0:
            loads.append(os.getloadavg()[0])
    wall = time.perf_counter() - wall_start
    own = (_process_cpu_seconds() - cpu_start) / wall
    return {
        "times": times,
        "tokens_per_batch": tokens,
        "errors": errors,
        "load_1min_during": loads,
        # Busy CPUs over the timed rounds: this process (near torch's thread count when it had the cores to itself),
        # and everything else on the machine (other jobs competing for the same cores)
        "process_cpu_utilisation": own,
        "other_cpu_utilisation": (_machine_busy_seconds() - busy_start) / wall - own,
        "margin_work_us": {n: _margin_work_us(trainers[n], opts) for n in names},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "trainer_classes": {n: f"{type(t).__module__}.{type(t).__name__}" for n, t in trainers.items()},
    }


def _process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (user, nice, system, irq, softirq, steal of /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _margin_work_us(trainer, opts: Options, calls: int = 200) -> float | None:
    """Microseconds per step of the work a margin variant adds to its control: `target_margins` (sample, solve, push)
    for gamma-PO, `beta_dpo_scale` for beta-DPO, `target_probs` for MMPO. Timed in the trainer itself, so it includes
    the gather and the metrics."""
    from trl_margins import GammaPOTrainer, MMPOTrainer

    gaps = torch.randn(opts.batch_size, device=opts.device)
    if isinstance(trainer, GammaPOTrainer):

        def work() -> None:
            trainer.target_margins(gaps, "train")
    elif isinstance(trainer, MMPOTrainer) and getattr(trainer.args, "beta_dpo_alpha", None) is not None:

        def work() -> None:  # gather, filter draw, batch beta, moving-average update
            trainer.beta_dpo_scale(gaps, "train")
    elif isinstance(trainer, MMPOTrainer) and trainer.args.mmpo_gamma is not None:
        margins = torch.rand(opts.batch_size, device=opts.device)

        def work() -> None:
            trainer.target_probs(margins, like=gaps)
    else:
        return None
    for _ in range(5):
        work()
    _sync(opts.device)
    start = time.perf_counter()
    for _ in range(calls):
        work()
    _sync(opts.device)
    trainer._pending_scalars = {}
    return (time.perf_counter() - start) / calls * 1e6


# ---- memory --------------------------------------------------------------------------------------------------------
class PeakRSS:
    """Samples this process's resident set size every `interval` seconds in a thread, keeping the maximum: activations
    live for a fraction of a step, so RSS read between steps would miss the step's peak."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


class AllocatorPeak:
    """torch's own allocator, exactly: inside the block, the peak of the bytes allocated there and still alive, counted
    above what was alive at its start (`peak_bytes`), the part of a training step it falls in (`peak_phase`: forward
    (with the loss), backward or optimizer), what is still alive at the end (`net_bytes`), and the sites that held the
    peak (`sites_at_peak`: bytes by the op and the nearest caller outside torch that allocated them). The same before
    the first backward op (`forward_peak_bytes`, `forward_sites_at_peak`): the activations and the loss's temporaries,
    the margins' work among them, peak there, below the gradients' peak later in the step.

    It reads the memory events of `torch.profiler` (`profile_memory=True`), which torch's allocator reports for every
    tensor it allocates or frees while a profiler runs; memory taken outside it (oneDNN's scratch buffers, Python
    objects) is not seen. Frees are reported only of blocks allocated while a profiler ran, so a block allocated
    before and freed inside still counts as held: run such blocks back to back, as `measure_memory` profiles every
    step, and keep tensors from being freed between them (a free no profiler sees leaves a stale size behind)."""

    def __init__(self, device: str = "cpu", stacks: bool = False):
        from torch.profiler import ProfilerActivity, profile

        self.device = device
        self._profile = profile(activities=[ProfilerActivity.CPU], profile_memory=True, with_stack=stacks)
        self.summary: dict[str, Any] = {}

    def __enter__(self) -> AllocatorPeak:
        self._profile.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._profile.__exit__(*exc)
        from torch._C._profiler import _EventType

        nodes, starts, stack = [], {}, list(self._profile.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.tag == _EventType.Allocation:
                if node.extra_fields.device.type == self.device:
                    nodes.append(node)
                continue
            phase = next((phase for phase, prefix in _PHASES if _name(node).startswith(prefix)), None)
            if phase is not None:  # where each part of the step begins: its first op
                starts[phase] = min(node.start_time_ns, starts.get(phase, node.start_time_ns))
        del self._profile  # its event records are megabytes
        nodes.sort(key=lambda n: n.start_time_ns)
        sizes = [n.extra_fields.alloc_size for n in nodes]
        peak, peak_ns, sites = _peak(nodes)
        forward = [n for n in nodes if n.start_time_ns < starts.get("backward", starts.get("optimizer", 2**63))]
        forward_peak, _, forward_sites = _peak(forward)
        phase = "forward"
        for name, start in sorted(starts.items(), key=lambda kv: kv[1]):
            phase = name if start <= peak_ns else phase
        self.summary = {
            "peak_bytes": peak,
            "peak_phase": phase,
            "net_bytes": sum(sizes),
            "allocated_bytes": sum(b for b in sizes if b > 0),
            "allocations": sum(b > 0 for b in sizes),
            "forward_peak_bytes": forward_peak,
            "sites_at_peak": sites,
            "forward_sites_at_peak": forward_sites,
        }


_BACKWARD_OP = "autograd::engine::evaluate_function: "
FREED_EARLIER = "(freed: allocated before)"
_PHASES = (("backward", _BACKWARD_OP), ("optimizer", "Optimizer.step#"))  # the name prefixes of their first ops


def _name(node) -> str:
    """An event's name; "?" where it is not UTF-8: the profiler's Python tracer sometimes hands out a garbled frame
    name with `with_stack=True` (pytorch/pytorch#136040), which would otherwise abort the measurement."""
    try:
        return node.name
    except UnicodeDecodeError:
        return "?"


def _peak(nodes: list) -> tuple[int, int, dict[str, int]]:
    """The peak of the running sum of allocation events (frees are negative), when it was reached, and the bytes
    alive then by site, largest first; the frees by then of blocks allocated before the block (an earlier step's)
    count as one negative site, so that the sites add up to the peak."""
    live, peak, peak_ns, alive, at_peak, freed, freed_at_peak = 0, 0, 0, {}, {}, 0, 0
    for node in nodes:
        size, ptr = node.extra_fields.alloc_size, node.extra_fields.ptr
        live += size
        if size > 0:
            alive[ptr] = node
        elif alive.pop(ptr, None) is None:
            freed += size
        if live > peak:
            peak, peak_ns, at_peak, freed_at_peak = live, node.start_time_ns, dict(alive), freed
    sites: dict[str, int] = {FREED_EARLIER: freed_at_peak} if freed_at_peak else {}
    for node in at_peak.values():
        site = _allocation_site(node)
        sites[site] = sites.get(site, 0) + node.extra_fields.alloc_size
    return peak, peak_ns, dict(sorted(sites.items(), key=lambda kv: -kv[1]))


def _allocation_site(node) -> str:
    """The op that allocated, its autograd node in backward, and the nearest Python caller outside torch (with
    `stacks`): `aten::mm < MmBackward0 < transformers/.../modeling_llama.py(88): forward`."""
    op = autograd = caller = None
    parent = node.parent
    while parent is not None and caller is None:
        name = _name(parent)
        if name.startswith("aten::") and op is None:
            op = name
        elif name.startswith(_BACKWARD_OP) and autograd is None:
            autograd = name.removeprefix(_BACKWARD_OP)
        elif "): " in name and not name.startswith(("torch/", "<built-in")):
            caller = name.split("site-packages/")[-1]
        parent = parent.parent
    return " < ".join(part for part in (op, autograd, caller) if part) or "?"


def measure_memory(name: str, opts: Options, model_path: str, work_dir: str) -> dict[str, Any]:
    """One variant alone, with its own model, reference model and optimizer: the memory held before the measured steps
    (after two warm-up steps, so AdamW's state exists) and the peak during them. On CUDA both count only what was
    allocated after this function started (`baseline_mib`: what was alive then). With `--memory allocator`, also
    torch's allocator peak of each step (`allocator_step`) and what the trainer keeps from its construction on (the
    gamma-PO queue, beta-DPO's statistics)."""
    gc.collect()
    baseline = 0
    if opts.device == "cuda":
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated()
    tokenizer, dataset = load_inputs(opts, model_path)
    model = load_model(model_path, opts)
    ref_model = None
    if not VARIANTS_BY_NAME[name].simpo:
        ref_model = load_model(model_path, opts).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)
    allocator = opts.memory == "allocator"
    with AllocatorPeak(opts.device) if allocator else contextlib.nullcontext() as built:  # what the trainer keeps
        trainer = build_trainer(name, model, ref_model, tokenizer, dataset, opts, f"{work_dir}/{name}")
    batches, _ = collate_batches(trainer, opts)
    # Every step profiled: the allocator's frees are seen only for blocks allocated while a profiler ran
    step = allocator_step if allocator else timed_step
    warmup = [step(trainer, optimizer, batches[i % len(batches)], opts.device) for i in range(2)]
    gc.collect()
    result: dict[str, Any] = {"variant": name}
    steps = [batches[i % len(batches)] for i in range(opts.memory_steps)]
    if opts.device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for batch in steps:
            timed_step(trainer, optimizer, batch, opts.device)
        peak = torch.cuda.max_memory_allocated()
        result.update(kind="cuda_allocated", baseline_mib=baseline / MIB, held_mib=(before - baseline) / MIB,
                      step_peak_mib=(peak - baseline) / MIB)  # fmt: skip
    else:
        before = PeakRSS.current()
        with PeakRSS() as sampler:
            measured = [step(trainer, optimizer, batch, opts.device) for batch in steps]
        result.update(kind="cpu_rss", held_mib=before / MIB, step_peak_mib=sampler.peak / MIB)
        if allocator:  # the first step apart: AdamW allocates its state in it
            peak = max(s["peak_bytes"] for s in measured)
            result["allocator"] = {"trainer_bytes": built.summary["net_bytes"], "first_step": warmup[0],
                                   "steps": measured, "step_peak_bytes": peak}  # fmt: skip
    result["step_extra_mib"] = result["step_peak_mib"] - result["held_mib"]
    result["process_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # KiB on Linux
    if name in GAMMA_VARIANTS:
        result["queue_bytes"] = trainer.margin_queue.capacity * 4
    del trainer, model, ref_model, optimizer, batches, steps
    gc.collect()
    return result


def allocator_step(trainer, optimizer: torch.optim.Optimizer, batch: dict[str, Any], device: str) -> dict[str, Any]:
    """One step under `AllocatorPeak`, without garbage collection: a collection would free an earlier step's cycles
    inside this one."""
    gc.collect()
    gc.disable()
    try:
        with AllocatorPeak(device, stacks=True) as peak:
            timed_step(trainer, optimizer, batch, device)
    finally:
        gc.enable()
    return peak.summary


def run_memory(opts: Options, model_path: str, work_dir: str) -> dict[str, Any]:
    """Each variant's memory, in a fresh process (`subprocess`, and `allocator`, which adds torch's allocator peak of
    every step to the RSS) or in this one (`inprocess`). On CUDA in-process is exact (allocations above those alive at
    its start) and saves a GPU lease minutes; on the CPU the allocator keeps freed memory resident, so only a fresh
    process gives a clean RSS. `allocator` measures the A/A repeat too: its difference is the noise floor."""
    mode = opts.memory or ("inprocess" if opts.device == "cuda" else "subprocess")
    results: dict[str, Any] = {}
    for name in opts.variants:
        if name in NO_MEMORY and mode != "allocator":
            continue
        try:
            if mode == "inprocess":
                results[name] = measure_memory(name, opts, model_path, work_dir)
            else:
                results[name] = _memory_subprocess(name, opts, model_path, work_dir)
        except Exception as e:
            results[name] = {"variant": name, "error": f"{type(e).__name__}: {e}"}
            print(f"[overhead] memory of {name} failed: {results[name]['error']}", file=sys.stderr)
    return results


def _memory_subprocess(name: str, opts: Options, model_path: str, work_dir: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", name, "--model", model_path,
           "--work-dir", work_dir, *_forwarded_flags(opts)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return json.loads(lines[-1].removeprefix(RESULT_MARKER))


def _forwarded_flags(opts: Options) -> list[str]:
    return ["--device", opts.device, "--dtype", opts.dtype, "--batch_size", str(opts.batch_size),
            "--num_batches", str(opts.num_batches), "--max_length", str(opts.max_length),
            "--queue_size", str(opts.queue_size), "--sample_size", str(opts.sample_size),
            "--memory_steps", str(opts.memory_steps), "--seed", str(opts.seed),
            *(["--memory", opts.memory] if opts.memory else []),
            *(["--threads", str(opts.threads)] if opts.threads else [])]  # fmt: skip


def build_report(opts: Options, model_path: str, timing: dict[str, Any] | None, memory: dict[str, Any] | None,
                 load_before: tuple[float, ...], started: float) -> dict[str, Any]:  # fmt: skip
    config = {**asdict(opts), "model_path": model_path}
    if timing:
        config["num_parameters"] = timing["num_parameters"]
    compared = [VARIANTS_BY_NAME[name] for name in opts.variants]
    no_memory = () if opts.memory == "allocator" else NO_MEMORY
    return overhead_report.build_report(config, compared, no_memory, timing, memory, load_before, started)


# ---- entry points --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    p.add_argument("--device", choices=["cpu", "cuda"], default=d.device)
    p.add_argument("--model", default=None, help="smollm2 (default), tiny, random:<preset>, or a checkpoint folder")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=d.dtype)
    p.add_argument("--batch_size", "--batch-size", type=int, default=None, help=f"pairs per step ({d.batch_size})")
    p.add_argument("--rounds", type=int, default=None, help=f"timed rounds ({d.rounds}; 0: memory only)")
    p.add_argument("--warmup", type=int, default=None, help=f"untimed rounds first ({d.warmup})")
    p.add_argument("--num_batches", "--num-batches", type=int, default=None, help="distinct batches, cycled")
    p.add_argument("--max_length", "--max-length", type=int, default=d.max_length)
    p.add_argument("--queue_size", "--queue-size", type=int, default=d.queue_size)
    p.add_argument("--sample_size", "--sample-size", type=int, default=d.sample_size)
    p.add_argument("--memory", choices=["subprocess", "allocator", "inprocess", "none"], default=None,
                   help="subprocess: a fresh process per variant; allocator: that plus torch's allocator peak per "
                        "step (CPU, exact); inprocess (quick): cheap, unclean")  # fmt: skip
    p.add_argument("--memory_steps", "--memory-steps", type=int, default=d.memory_steps)
    p.add_argument("--variants", default=",".join(d.variants), help="comma-separated subset")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch's choice; quick: 1)")
    p.add_argument("--work-dir", "--work_dir", default=None, help="where models and trainer outputs go (temp dir)")
    p.add_argument("--quick", action="store_true", help="tiny random model, 2 rounds: checks the script, not speed")
    p.add_argument("--output", default=None, help="write the JSON report here")
    p.add_argument("--markdown", default=None, help="write the Markdown table here")
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    # The machine's cores are shared: one thread does not stall waiting for a descheduled sibling thread
    quick = dict(model="tiny", batch_size=4, rounds=2, warmup=1, num_batches=2, memory="inprocess", threads=1)
    full = dict(model=d.model, batch_size=d.batch_size, rounds=d.rounds, warmup=d.warmup,
                num_batches=d.num_batches, memory=d.memory, threads=d.threads)  # fmt: skip
    defaults = quick if a.quick else full
    pick = {k: (getattr(a, k) if getattr(a, k) is not None else defaults[k]) for k in defaults}
    variants = tuple(s.strip() for s in a.variants.split(",") if s.strip())
    unknown = set(variants) - set(VARIANTS_BY_NAME)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS_BY_NAME)}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no GPU")
    if a.memory == "allocator" and a.device == "cuda":
        p.error("--memory allocator reads the CPU allocator; on CUDA, inprocess is exact")
    opts = Options(device=a.device, dtype=a.dtype, max_length=a.max_length, queue_size=a.queue_size,
                   sample_size=a.sample_size, memory_steps=a.memory_steps, variants=variants, seed=a.seed,
                   work_dir=a.work_dir, **pick)  # fmt: skip
    return opts, a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written to `--output`). Restores torch's thread count."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    opts, a = parse_args(argv)
    threads = torch.get_num_threads()
    with warnings.catch_warnings(), quiet_libraries():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        if opts.threads:
            torch.set_num_threads(opts.threads)
        try:
            return _run(opts, a)
        finally:
            torch.set_num_threads(threads)


def _run(opts: Options, a: argparse.Namespace) -> dict[str, Any]:
    started, load_before = time.perf_counter(), os.getloadavg()
    torch.manual_seed(opts.seed)
    with contextlib.ExitStack() as stack:
        work_dir = opts.work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="overhead-"))
        model_path = resolve_model(opts.model, work_dir)
        if a.memory_worker:  # child of `run_memory`: one variant, result on stdout
            result = measure_memory(a.memory_worker, opts, model_path, work_dir)
            print(RESULT_MARKER + json.dumps(result), flush=True)
            return result
        timing = run_timing(opts, model_path, work_dir) if opts.rounds > 0 else None
        # Written now too, so that a run stopped during the memory part (a GPU lease ending) keeps its timings
        if timing:
            _write(a, build_report(opts, model_path, timing, None, load_before, started))
        gc.collect()
        memory = None if opts.memory == "none" else run_memory(opts, model_path, work_dir)
        report = build_report(opts, model_path, timing, memory, load_before, started)
    load = report["load"]
    print(report["table"])
    if timing:
        print(f"\nload avg before {load['loadavg_before']}, during (1 min) {load['load_1min_during_timing']}; "
              f"CPUs busy with this process {load['process_cpu_utilisation_during_timing']:.2f}, with others "
              f"{load['other_cpu_utilisation_during_timing']:.2f}; {report['wall_seconds']:.0f} s")  # fmt: skip
    else:
        print(f"\nload avg before {load['loadavg_before']}, after {load['loadavg_after']}; "
              f"{report['wall_seconds']:.0f} s")  # fmt: skip
    _write(a, report)
    return report


def _write(a: argparse.Namespace, report: dict[str, Any]) -> None:
    for path, text in ((a.output, json.dumps(report, indent=2)), (a.markdown, report["table"])):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")


if __name__ == "__main__":
    main()
