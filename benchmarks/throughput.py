#!/usr/bin/env python
"""Throughput of the data side: `annotate` and `evaluate`'s pair scoring against a plain loop, as paired ratios.

Both sides score the same VADER pairs with the same model in float32, tokenized the same way (the package's
`tokenize_for_reward_model` / `tokenize_for_policy`, i.e. as TRL's trainers do):

* the package's path: `pairs.annotate.annotate` (shards, length-sorted batches, JSONL written and merged), or
  `evaluation.rewards.reward_model_scores` / `completion_log_probs` (what `trl-margins evaluate` runs for a reward
  model, and once per model for a DPO or SimPO policy);
* the plain loop: the rows in input order, `batch_size` sequences (`batch_size / 2` pairs) per forward, each batch
  padded to its longest sequence. For a policy it makes the batches TRL's `DataCollatorForPreference` makes of
  those pairs, and the model call of the package (TRL's fused LM head through `_compat.token_outputs`), so that the
  two differ only in how they batch.

Three process layouts, all in the same two worker processes and interleaved round by round, so that load from other
jobs hits each alike: one process with one thread (the other rank waits in a gloo barrier, which sleeps), one process
with two threads, and two processes with one thread each. Two processes is the package's own data-parallel path where
it has one: `annotate` shards over ranks (what `torchrun ... trl-margins annotate` runs), against the plain loop split
in two halves; `evaluate` refuses to run under more than one process, so it is measured with one only.

The workers run with `OMP_WAIT_POLICY=PASSIVE` (`--omp_wait_policy`): on cores shared with other jobs, an OpenMP
thread that spins waiting for a descheduled sibling takes the time the sibling needs.

Each round times every case, layout and side once, in rotating order; the ratio is the median over rounds of the
per-round `plain time / package time` (> 1: the package is faster) with a bootstrap 95% CI. The scores of the first
round are compared with `torch.equal`; where they differ, `probe` finds out why on a few rows (the package against
the plain loop run in the package's own batch order, and with eager attention instead of SDPA).

Where the time goes comes from `torch.profiler` (CPU), one untimed pass per case and side at one thread: the top ops by
self CPU time, the time inside the model's forward (hooks), the real and padding tokens each path sends through the
model, and the peak of torch's CPU allocator (the sum of the profiler's allocation events, each exact to the byte,
above what was allocated when the pass began; memory that MKL or oneDNN allocate themselves is not in it).

    PYTHONPATH=. python benchmarks/throughput.py --output benchmarks/results/throughput_cpu.json \
        --markdown benchmarks/results/throughput_cpu.md
    PYTHONPATH=. python benchmarks/throughput.py --quick     # tiny random models: checks the script, not speed
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "benchmarks"):  # as a script: `trl_margins`, `tests` and the helpers importable
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import throughput_report  # noqa: E402
from helpers import build_random_model, quiet_libraries  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    command: str  # "annotate" or "evaluate"
    model: str  # a key of `build_models`
    kind: str  # "rm" (sequence classifier) or "policy" (causal LM log-probs)
    label: str


CASES: tuple[Case, ...] = (
    Case("annotate_minilm", "annotate", "minilm_rm", "rm", "annotate, MiniLM reward model"),
    Case("annotate_smollm2", "annotate", "smollm2_rm", "rm", "annotate, SmolLM2 with a score head"),
    Case("evaluate_minilm", "evaluate", "minilm_rm", "rm", "evaluate, MiniLM reward model"),
    Case("evaluate_smollm2", "evaluate", "smollm2_lm", "policy", "evaluate, SmolLM2 policy log-probs"),
)
CASES_BY_NAME = {c.name: c for c in CASES}
CONFIGS: dict[str, tuple[int, int]] = {"1p1t": (1, 1), "1p2t": (1, 2), "2p1t": (2, 1)}  # (processes, threads each)
SIDES = ("package", "plain")
MULTI_PROCESS_COMMANDS = ("annotate",)  # `trl-margins evaluate` raises a UsageError under torchrun
NOT_MULTI_PROCESS = "evaluate scores in one process (a UsageError under torchrun or accelerate launch)"


@dataclass
class Options:
    # Sized for ~20 minutes on 2 shared CPU cores; the SmolLM2 cases are most of it
    minilm_rows: int = 192
    smollm2_rows: int = 40
    batch_size: int = 16  # sequences per forward: annotate's default, and evaluate's 8 pairs
    rounds: int = 3
    warmup_rows: int = 4
    probe_rows: int = 8
    split: str = "test"
    cases: tuple[str, ...] = tuple(c.name for c in CASES)
    configs: tuple[str, ...] = tuple(CONFIGS)
    profile: bool = True
    top_ops: int = 10
    # Two cores shared with other jobs: a spinning OpenMP thread burns the time slice its descheduled sibling needs
    # (2 threads ran a MiniLM batch 3.5x slower than 1 with the default policy, as fast as 1 with PASSIVE)
    omp_wait_policy: str = "PASSIVE"
    seed: int = 0
    quick: bool = False
    work_dir: str | None = None
    models: dict[str, str] = field(default_factory=dict)

    def rows(self, case: Case) -> int:
        return self.minilm_rows if case.model.startswith("minilm") else self.smollm2_rows

    def runs(self, case: Case, config: str) -> bool:
        return CONFIGS[config][0] == 1 or case.command in MULTI_PROCESS_COMMANDS


# ---- models and rows -----------------------------------------------------------------------------------------------
def build_models(opts: Options, work_dir: Path) -> dict[str, str]:
    """Folders of the scored models: MiniLM and SmolLM2 as reward models (a score head, new and seeded) and SmolLM2 as
    a policy; with `quick`, a 2-layer BERT and a tiny random Qwen2 (with a VADER-trained tokenizer) in their place."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if opts.quick:
        from tests.helpers import build_tiny_bert

        encoder = build_tiny_bert(str(work_dir / "tiny-bert"))
        causal = build_random_model(work_dir / "lm", "qwen2-tiny")
    else:
        from trl_margins.data.assets import minilm_path, smollm2_path

        encoder, causal = minilm_path(), smollm2_path()
    paths = {"smollm2_lm": causal}
    for name, base in (("minilm_rm", encoder), ("smollm2_rm", causal)):
        torch.manual_seed(opts.seed)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
        model.save_pretrained(work_dir / name)
        AutoTokenizer.from_pretrained(base).save_pretrained(work_dir / name)
        paths[name] = str(work_dir / name)
    return paths


def load_model(key: str, path: str, attn: str | None = None):
    """A reward model as `trl-margins annotate` loads it, or a policy as `trl-margins evaluate` does (float32, CPU);
    `attn` replaces the default attention (the probe's eager)."""
    from transformers import AutoTokenizer

    from trl_margins.evaluation.rewards import _pad_token_id, load_scoring_model
    from trl_margins.pairs.annotate import load_reward_model

    if key.endswith("_rm"):
        model, tokenizer = load_reward_model(path)
    else:
        model = load_scoring_model(path, "dpo", False, torch.float32, "cpu")
        tokenizer = AutoTokenizer.from_pretrained(path)
    if attn is not None:
        model.set_attn_implementation(attn)
    if model.config.pad_token_id is None:  # what the package's scoring sets on first use; the plain loop needs it too
        model.config.pad_token_id = _pad_token_id(tokenizer)
    return model.eval(), tokenizer


def load_rows(opts: Options, n: int):
    from trl_margins.data.assets import load_bundled_pairs

    # Pairs without their scores: what annotate is for (it refuses to overwrite score columns)
    pairs = load_bundled_pairs(opts.split).select_columns(["prompt", "chosen", "rejected"])
    return pairs.select(range(min(n, len(pairs))))


# ---- the two sides -------------------------------------------------------------------------------------------------
def rm_sequences(rows, tokenizer) -> list[list[int]]:
    """Prompt+chosen and prompt+rejected of each row, interleaved in row order, as the package tokenizes them."""
    from trl_margins.data.formatting import tokenize_for_reward_model

    return [ids for row in rows for ids in tokenize_for_reward_model(dict(row), tokenizer).values()]


def chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[start : start + size] for start in range(0, len(order), size)]


def plain_rm_scores(model, tokenizer, rows, batch_size: int, batches: list[list[int]] | None = None) -> torch.Tensor:
    """`(rows, 2)` scores of the sequences of `rm_sequences`, padded right, one forward per batch of `batches`
    (default: `batch_size` at a time in input order)."""
    from torch.nn.utils.rnn import pad_sequence

    sequences = rm_sequences(rows, tokenizer)
    batches = chunks(list(range(len(sequences))), batch_size) if batches is None else batches
    scores = torch.empty(len(sequences))
    with torch.no_grad():
        for idx in batches:
            batch = [torch.tensor(sequences[i]) for i in idx]
            input_ids = pad_sequence(batch, batch_first=True, padding_value=model.config.pad_token_id)
            attention_mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in batch], batch_first=True)
            scores[idx] = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
    return scores.view(-1, 2)


def policy_sequences(rows, tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of every chosen completion, then of every rejected one (pair `i`: `i`, `n + i`),
    as the package tokenizes them."""
    from trl_margins.data.formatting import tokenize_for_policy

    tokenized = [tokenize_for_policy(dict(row), tokenizer) for row in rows]
    return [(t["prompt_ids"], t[side]) for side in ("chosen_ids", "rejected_ids") for t in tokenized]


def pairs_in_input_order(n: int, pairs_per_batch: int) -> list[int]:
    """Batches of `pairs_per_batch` pairs in input order, each as TRL's collator lays one out: its chosen completions,
    then its rejected ones."""
    k = pairs_per_batch
    return [i + side * n for start in range(0, n, k) for side in (0, 1) for i in range(start, min(start + k, n))]


def collate(sequences: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Prompt+completion padded right, with the attention and completion masks (TRL's `DataCollatorForPreference`
    makes the same of the pairs of `pairs_in_input_order`)."""
    from torch.nn.utils.rnn import pad_sequence

    def padded(rows: list[list[int]], value: int) -> torch.Tensor:
        return pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True, padding_value=value)

    return {
        "input_ids": padded([p + c for p, c in sequences], pad_token_id),
        "attention_mask": padded([[1] * (len(p) + len(c)) for p, c in sequences], 0),
        "completion_mask": padded([[0] * len(p) + [1] * len(c) for p, c in sequences], 0),
    }


def policy_batches(model, tokenizer, rows, batches: list[list[int]]) -> Iterator[tuple[list[int], Any]]:
    """Per-token completion log-probs `(batch, length - 1)` of the completions of each of `batches`, from the model
    call of the trainers (`_compat.token_outputs`, TRL's fused LM head), with their completion mask."""
    from trl_margins._compat import fused_lm_heads, token_outputs

    sequences = policy_sequences(rows, tokenizer)
    with torch.no_grad(), fused_lm_heads(model):
        for idx in batches:
            batch = collate([sequences[i] for i in idx], model.config.pad_token_id)
            ids, mask = batch["input_ids"], batch["completion_mask"]
            kwargs = {"input_ids": ids, "attention_mask": batch["attention_mask"], "use_cache": False}
            yield idx, token_outputs(model, kwargs, ids, mask, metrics=False).log_probs, mask


def plain_policy_logps(
    model, tokenizer, rows, batch_size: int, batches: list[list[int]] | None = None
) -> torch.Tensor:
    """`(rows, 2)` summed completion log-probs, summed over the padded length as the package and TRL sum them, one
    forward per batch of `batches` (default: the pairs in input order, `batch_size / 2` per forward)."""
    n = len(rows)
    out = torch.empty(2 * n)
    batches = chunks(pairs_in_input_order(n, batch_size // 2), batch_size) if batches is None else batches
    for idx, log_probs, _ in policy_batches(model, tokenizer, rows, batches):
        out[idx] = log_probs.sum(dim=1).float()
    return out.view(2, n).T


def run_package(case: Case, model, tokenizer, rows, opts: Options, out_dir: Path, rank: int, world: int):
    """The package's path on `rows`; returns a function that reads its `(rows, 2)` scores back (on rank 0) after the
    timer stops."""
    from trl_margins.evaluation.rewards import completion_log_probs, reward_model_scores
    from trl_margins.pairs.annotate import AnnotateConfig, annotate

    if case.command == "annotate":
        import torch.distributed as dist

        config = AnnotateConfig(str(out_dir), batch_size=opts.batch_size, shard_size=shard_rows(len(rows)))
        barrier = dist.barrier if world > 1 else (lambda: None)
        report = annotate(model, tokenizer, rows, config, rank=rank, world_size=world, barrier=barrier)
        return lambda: read_annotated(report.output) if report.output is not None else None
    if case.kind == "rm":
        chosen, rejected = reward_model_scores(model, tokenizer, rows, opts.batch_size // 2)
    else:
        logps = completion_log_probs(model, tokenizer, rows, opts.batch_size // 2)
        chosen, rejected = logps["chosen_logps"], logps["rejected_logps"]
    scores = torch.stack([chosen, rejected], dim=1)
    return lambda: scores


def run_plain(case: Case, model, tokenizer, rows, opts: Options) -> Callable[[], torch.Tensor]:
    if case.kind == "rm":
        scores = plain_rm_scores(model, tokenizer, rows, opts.batch_size)
    else:
        scores = plain_policy_logps(model, tokenizer, rows, opts.batch_size)
    return lambda: scores


def read_annotated(path: Path) -> torch.Tensor:
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return torch.tensor([[r["score_chosen"], r["score_rejected"]] for r in lines], dtype=torch.float32)


def identity(package: torch.Tensor, plain: torch.Tensor) -> dict[str, Any]:
    diff = (package.double() - plain.double()).abs()
    rel = diff / plain.double().abs().clamp(min=1e-30)
    return {
        "bit_identical": bool(torch.equal(package, plain)),
        "scores": diff.numel(),
        "scores_differing": int((diff > 0).sum()),
        "max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
        "max_rel_diff": float(rel.max()) if rel.numel() else 0.0,
    }


# ---- the worker: timing, profiles, probe ---------------------------------------------------------------------------
class Worker:
    """One of the two processes. Every call is collective: both ranks make it, the inactive one waits at barriers."""

    def __init__(self, opts: Options, rank: int, world: int):
        import torch.distributed as dist

        self.opts, self.rank, self.world, self.dist = opts, rank, world, dist
        self.cases = [CASES_BY_NAME[n] for n in opts.cases]
        keys = sorted({c.model for c in self.cases})
        self.models = {key: load_model(key, opts.models[key]) for key in keys}
        self.rows = {c.name: load_rows(opts, opts.rows(c)) for c in self.cases}
        self.scratch = Path(opts.work_dir) / f"rank{rank}"
        self.runs = 0

    def _side(self, side: str, case: Case, processes: int, rows=None):
        """Run one side on this rank's part of the rows (all of them for the package: it shards them itself)."""
        model, tokenizer = self.models[case.model]
        rows = self.rows[case.name] if rows is None else rows
        if side == "package":
            # Both ranks count every run, active or not, so that the two processes of a run share its folder
            out_dir = Path(self.opts.work_dir) / f"annotate-{self.runs}"
            rank = self.rank if processes > 1 else 0
            return run_package(case, model, tokenizer, rows, self.opts, out_dir, rank, processes)
        half = math.ceil(len(rows) / processes)
        part = rows.select(range(self.rank * half, min(len(rows), (self.rank + 1) * half)))
        return run_plain(case, model, tokenizer, part, self.opts)

    def _collect(self, side: str, processes: int, read: Callable | None) -> torch.Tensor | None:
        scores = read() if read is not None else None
        if side == "plain" and processes > 1:  # each rank scored one half: put them together in row order
            parts = [None] * self.world
            self.dist.all_gather_object(parts, scores)
            scores = torch.cat(parts) if self.rank == 0 else None
        return scores

    def timed(self, side: str, case: Case, config: str) -> tuple[float, torch.Tensor | None]:
        processes, threads = CONFIGS[config]
        torch.set_num_threads(threads)
        self.runs += 1
        gc.collect()
        self.dist.barrier()
        start = time.perf_counter()
        read = self._side(side, case, processes) if self.rank < processes else None
        self.dist.barrier()
        seconds = time.perf_counter() - start
        return seconds, self._collect(side, processes, read)

    def warm_up(self) -> None:
        """First calls pay for lazy initialisation (oneDNN primitives, the allocator's pools) at each thread count."""
        for config in self.opts.configs:
            for case in self.cases:
                rows = self.rows[case.name].select(range(self.opts.warmup_rows))
                self.runs += 1
                if self.opts.runs(case, config) and self.rank < CONFIGS[config][0]:
                    torch.set_num_threads(CONFIGS[config][1])
                    for side in SIDES:
                        self._side(side, case, CONFIGS[config][0], rows)
        self.dist.barrier()

    def time_rounds(self) -> dict[str, Any]:
        opts = self.opts
        times = {c.name: {k: {s: [] for s in SIDES} for k in opts.configs if opts.runs(c, k)} for c in self.cases}
        scores: dict[str, dict[str, dict[str, torch.Tensor | None]]] = {c.name: {} for c in self.cases}
        loads = []
        for r in range(opts.rounds):
            for config in _rotate(list(opts.configs), r):
                for case in _rotate(self.cases, r):
                    if not opts.runs(case, config):
                        continue
                    for side in _rotate(list(SIDES), r):
                        seconds, result = self.timed(side, case, config)
                        times[case.name][config][side].append(seconds)
                        if self.rank == 0:  # progress, in the worker's log
                            print(f"[throughput] round {r} {config} {case.name} {side}: {seconds:.2f} s", flush=True)
                        if r == 0:
                            scores[case.name].setdefault(config, {})[side] = result
            loads.append(os.getloadavg()[0])
        checks = {}
        if self.rank == 0:
            for name, by_config in scores.items():
                first = by_config[opts.configs[0]]["package"]
                checks[name] = {
                    config: {
                        **identity(s["package"], s["plain"]),
                        "package_equals_first_layout": bool(torch.equal(s["package"], first)),
                    }
                    for config, s in by_config.items()
                }
        return {"times": times, "identity": checks, "load_1min_per_round": loads}

    def profiles(self) -> dict[str, Any]:
        """One profiled pass per case, side and process count, at one thread (memory and tokens don't depend on the
        thread count; the 2-process passes give each rank's own peak)."""
        out: dict[str, Any] = {c.name: {} for c in self.cases}
        for config in [k for k in self.opts.configs if CONFIGS[k][1] == 1]:
            for case in self.cases:
                if not self.opts.runs(case, config):
                    continue
                for side in SIDES:
                    torch.set_num_threads(1)
                    self.runs += 1
                    self.dist.barrier()
                    result = None
                    if self.rank < CONFIGS[config][0]:
                        with throughput_report.profiled(self.models[case.model][0], self.opts.top_ops) as result:
                            self._side(side, case, CONFIGS[config][0])
                    parts = [None] * self.world
                    self.dist.all_gather_object(parts, result)
                    out[case.name].setdefault(config, {})[side] = [p for p in parts if p is not None]
        return out

    def probe(self) -> dict[str, Any]:
        """Why scores differ, on a few rows, on rank 0: the package against the plain loop in input order and in the
        package's own batch order, with the model's default attention and with eager attention; for a policy, also
        whether the per-token log-probs (before the sum over the padded length) are the same bits."""
        torch.set_num_threads(1)
        result: dict[str, Any] = {}
        if self.rank == 0:
            for case in self.cases:
                rows = self.rows[case.name].select(range(min(self.opts.probe_rows, len(self.rows[case.name]))))
                result[case.name] = {}
                for attn in ("default", "eager"):
                    model, tokenizer = self.models[case.model]
                    if attn == "eager":
                        model, tokenizer = load_model(case.model, self.opts.models[case.model], "eager")
                    result[case.name][attn] = self._probe_case(case, model, tokenizer, rows)
        self.dist.barrier()
        return result

    def _probe_case(self, case: Case, model, tokenizer, rows) -> dict[str, Any]:
        self.runs += 1
        bs = self.opts.batch_size
        package = run_package(case, model, tokenizer, rows, self.opts, self.scratch / f"probe-{self.runs}", 0, 1)()
        if case.kind == "rm":
            shards = shard_rows(len(rows)) if case.command == "annotate" else None
            batches = package_rm_batches([len(s) for s in rm_sequences(rows, tokenizer)], bs, shards)
            input_order = plain_rm_scores(model, tokenizer, rows, bs)
            in_package_order = plain_rm_scores(model, tokenizer, rows, bs, batches)
            return {"input_order": identity(package, input_order),
                    "package_order": identity(package, in_package_order)}  # fmt: skip
        batches = chunks(package_policy_order(rows, tokenizer), bs)
        inputs = chunks(pairs_in_input_order(len(rows), bs // 2), bs)
        tokens = [policy_token_logps(model, tokenizer, rows, b) for b in (inputs, batches)]
        same_tokens = all(torch.equal(a, b) for a, b in zip(*tokens))
        # A sum in float64 of each completion's own tokens does not depend on how far the batch was padded
        exact = [torch.tensor([t.double().sum() for t in ts]) for ts in tokens]
        # The float32 sum over the padded row (prompt positions and padding are zeros), as the package and TRL take
        # it, of the same values padded to 64 other lengths
        prompts = [len(prompt) for prompt, _ in policy_sequences(rows, tokenizer)]
        varying = sum(
            len({float(torch.cat([torch.zeros(max(p - 1, 0)), t, torch.zeros(extra)]).sum()) for extra in range(64)})
            > 1
            for p, t in zip(prompts, tokens[1])
        )
        return {
            "input_order": identity(package, plain_policy_logps(model, tokenizer, rows, bs)),
            "package_order": identity(package, plain_policy_logps(model, tokenizer, rows, bs, batches)),
            "per_token_log_probs_bit_identical": same_tokens,
            "float64_sums_of_real_tokens": identity(exact[1], exact[0]),
            "float32_sum_depends_on_padding": {"completions": len(prompts), "varying": varying},
        }


def shard_rows(rows: int) -> int:
    """Annotate's shard size here: two shards, one per rank with two processes, the same sorting scope with one."""
    return math.ceil(rows / 2)


def package_rm_batches(lengths: list[int], batch_size: int, shard: int | None) -> list[list[int]]:
    """The package's batches of the sequences of `rm_sequences`: longest first, ties in the order it lists them;
    annotate sorts each shard of `shard` rows on its own (interleaved), `reward_model_scores` (`shard=None`) all of
    them at once (every chosen, then every rejected)."""
    n = len(lengths) // 2
    if shard is None:
        scopes = [[2 * j for j in range(n)] + [2 * j + 1 for j in range(n)]]
    else:
        scopes = [list(range(2 * start, 2 * min(start + shard, n))) for start in range(0, n, shard)]
    return [b for scope in scopes for b in chunks(sorted(scope, key=lambda i: -lengths[i]), batch_size)]


def package_policy_order(rows, tokenizer) -> list[int]:
    """The completions' order in the package's `_length_sorted_batches`: prompt plus completion, longest first."""
    lengths = [len(prompt) + len(completion) for prompt, completion in policy_sequences(rows, tokenizer)]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def policy_token_logps(model, tokenizer, rows, batches: list[list[int]]) -> list[torch.Tensor]:
    """Each completion's token log-probs, without the padding, scored in `batches` (pair `i`: `i`, `n + i`)."""
    out = [torch.empty(0)] * (2 * len(rows))
    for idx, log_probs, mask in policy_batches(model, tokenizer, rows, batches):
        real = mask[:, 1:].bool()
        for j, i in enumerate(idx):
            out[i] = log_probs[j][real[j]]
    return out


def _rotate(items: list, r: int) -> list:
    shift = r % len(items)
    return items[shift:] + items[:shift]


def worker_main(job_path: str) -> None:
    import torch.distributed as dist

    job = json.loads(Path(job_path).read_text())
    opts = Options(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["options"].items()})
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        worker = Worker(opts, rank, world)
        worker.warm_up()
        raw = worker.time_rounds()
        raw["profiles"] = worker.profiles() if opts.profile else {}
        raw["probe"] = worker.probe()
        raw["rows"] = {name: len(rows) for name, rows in worker.rows.items()}
        if rank == 0:
            Path(job["result"]).write_text(json.dumps(raw))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def padding_by_scope(opts: Options) -> dict[str, Any]:
    """Tokens each path sends through the model on every pair of the split, from the tokenizers alone: the plain
    loop's against the package's at several sorting scopes (annotate sorts within a shard of `--shard_size` rows, 512
    by default; this run's shards are smaller), and for a policy, pairs kept whole (each padded to its longer
    completion, as the package batched them before) against completions placed one by one (as it does now)."""
    from transformers import AutoTokenizer

    rows, bs = load_rows(opts, 10**9), opts.batch_size
    n = len(rows)

    def tokens(batches: list[list[int]], lengths: list[int]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    out: dict[str, Any] = {"rows": n, "batch_size": bs, "paths": []}
    for key, rows_here in (("minilm_rm", opts.minilm_rows), ("smollm2_rm", opts.smollm2_rows)):
        lengths = [len(ids) for ids in rm_sequences(rows, AutoTokenizer.from_pretrained(opts.models[key]))]
        plain = tokens(chunks(list(range(2 * n)), bs), lengths)
        scopes = [(f"annotate, shards of {k} rows", k) for k in (shard_rows(rows_here), 64, 512)]
        for path, shard in [*scopes, (f"evaluate, all {n} pairs", None)]:
            package = tokens(package_rm_batches(lengths, bs, shard), lengths)
            out["paths"].append({"model": key, "path": path, "real": sum(lengths), "plain": plain, "package": package})
    tokenizer = AutoTokenizer.from_pretrained(opts.models["smollm2_lm"])
    lengths = [len(prompt) + len(completion) for prompt, completion in policy_sequences(rows, tokenizer)]
    plain = tokens(chunks(pairs_in_input_order(n, bs // 2), bs), lengths)
    by_pair = sorted(range(n), key=lambda i: -max(lengths[i], lengths[n + i]))
    whole = [[*c, *(n + i for i in c)] for c in chunks(by_pair, bs // 2)]
    one_by_one = chunks(package_policy_order(rows, tokenizer), bs)
    for path, batches in (("evaluate, pairs kept whole", whole), ("evaluate, completions one by one", one_by_one)):
        package = tokens(batches, lengths)
        out["paths"].append({"model": "smollm2_lm", "path": f"{path}, all {n}", "real": sum(lengths), "plain": plain,
                             "package": package})  # fmt: skip
    for entry in out["paths"]:
        entry["plain_over_package"] = entry["plain"] / entry["package"]
    return out


# ---- entry points --------------------------------------------------------------------------------------------------
def launch_workers(opts: Options, work_dir: Path) -> dict[str, Any]:
    """The two worker processes (one with `--configs 1p1t,1p2t`), on a free port; their raw results."""
    world = max(CONFIGS[k][0] for k in opts.configs)
    job, result = work_dir / "job.json", work_dir / "raw.json"
    job.write_text(json.dumps({"options": asdict(opts), "result": str(result)}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(world),
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": opts.omp_wait_policy, "KINETO_LOG_LEVEL": "5",
           "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    procs, logs = [], []
    for rank in range(world):
        logs.append(open(work_dir / f"worker{rank}.log", "w"))  # noqa: SIM115 (closed below)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(job)]
        procs.append(subprocess.Popen(cmd, env={**env, "RANK": str(rank)}, stdout=logs[-1], stderr=subprocess.STDOUT))
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break  # one failed: the other would wait at a barrier forever
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for f in logs:
            f.close()
    if any(p.returncode != 0 for p in procs) or not result.is_file():
        tails = [(work_dir / f"worker{r}.log").read_text()[-3000:] for r in range(world)]
        raise RuntimeError(f"a worker failed (exit codes {[p.returncode for p in procs]}):\n" + "\n---\n".join(tails))
    return json.loads(result.read_text())


def parse_args(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    p.add_argument("--minilm_rows", type=int, default=None, help=f"pairs scored by MiniLM ({d.minilm_rows})")
    p.add_argument("--smollm2_rows", type=int, default=None, help=f"pairs scored by SmolLM2 ({d.smollm2_rows})")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="sequences per forward (even)")
    p.add_argument("--rounds", type=int, default=None, help=f"timed rounds ({d.rounds})")
    p.add_argument("--probe_rows", type=int, default=None, help=f"rows of the bit-identity probe ({d.probe_rows})")
    p.add_argument("--cases", default=",".join(d.cases), help="comma-separated subset of " + ",".join(CASES_BY_NAME))
    p.add_argument("--configs", default=",".join(d.configs), help="comma-separated subset of " + ",".join(CONFIGS))
    p.add_argument("--no_profile", action="store_true", help="skip the profiled passes (no memory, no top ops)")
    p.add_argument("--omp_wait_policy", choices=["PASSIVE", "ACTIVE"], default=d.omp_wait_policy,
                   help="OMP_WAIT_POLICY of the workers (PASSIVE: idle threads sleep)")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--work_dir", default=None, help="models, shards and worker logs (a temporary folder)")
    p.add_argument("--quick", action="store_true", help="tiny random models, 2 rounds: checks the script, not speed")
    p.add_argument("--output", default=None, help="write the JSON report here")
    p.add_argument("--markdown", default=None, help="write the Markdown tables here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    quick = dict(minilm_rows=12, smollm2_rows=8, rounds=2, probe_rows=4)
    full = {f.name: getattr(d, f.name) for f in fields(d) if f.name in quick}
    pick = {k: (getattr(a, k) if getattr(a, k) is not None else (quick if a.quick else full)[k]) for k in quick}
    cases, configs = (tuple(s.strip() for s in v.split(",") if s.strip()) for v in (a.cases, a.configs))
    for given, known in ((cases, CASES_BY_NAME), (configs, CONFIGS)):
        if not given or set(given) - set(known):
            p.error(f"choose from {list(known)}, got {list(given)}")
    if a.batch_size < 2 or a.batch_size % 2:
        p.error("--batch_size must be even: evaluate puts batch_size / 2 pairs in a forward")
    opts = Options(batch_size=a.batch_size, cases=cases, configs=configs, profile=not a.no_profile, seed=a.seed,
                   quick=a.quick, work_dir=a.work_dir, omp_wait_policy=a.omp_wait_policy, **pick)  # fmt: skip
    return opts, a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written to `--output`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    opts, a = parse_args(argv)
    if a.worker:
        with warnings.catch_warnings(), quiet_libraries():
            warnings.simplefilter("ignore")
            worker_main(a.worker)
        return {}
    started, load_before = time.perf_counter(), os.getloadavg()
    with contextlib.ExitStack() as stack, warnings.catch_warnings(), quiet_libraries():
        warnings.simplefilter("ignore")
        work_dir = Path(opts.work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="throughput-")))
        opts.work_dir = str(work_dir)
        opts.models = build_models(opts, work_dir)
        raw = launch_workers(opts, work_dir)
        raw["padding_by_scope"] = padding_by_scope(opts)
    cases = [CASES_BY_NAME[n] for n in opts.cases]
    report = throughput_report.build_report(asdict(opts), cases, raw, load_before, started, NOT_MULTI_PROCESS)
    print(report["markdown"])
    for path, text in ((a.output, json.dumps(report, indent=2)), (a.markdown, report["markdown"])):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
