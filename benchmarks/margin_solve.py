#!/usr/bin/env python
"""Micro-benchmark of gamma-PO's per-step extra work: the margin solve and the queue.

Times, in microseconds per call:
  * `dynamic_target_margins` (20 mirror-descent iterations) over m_n = 256 and 2048 reward gaps,
  * `MarginQueue.push` of a batch's gaps plus `MarginQueue.sample` of `m_n - batch` gaps from a full 2048-entry queue,
  * the whole per-step work of `GammaPOTrainer.target_margins` on one process: sample, concatenate, solve, push,
on the CPU and, when torch sees one, the GPU. On the GPU each timed block of calls ends with `cuda.synchronize()`, so
a call's time is its latency including kernel launches (about 10 small kernels per iteration: launch-bound, not
compute-bound, at these sizes).

    PYTHONPATH=. python benchmarks/margin_solve.py --output benchmarks/results/overhead_margin_solve_cpu.json
    PYTHONPATH=. python benchmarks/margin_solve.py --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def _load_math_modules() -> tuple[Any, Any]:
    """`trl_margins.losses` and `trl_margins.state` (the margin queue). Both are pure torch, but importing them through
    the package runs `trl_margins/__init__`, which needs TRL: on a machine with torch alone (a bare GPU image) load the
    two files directly, so that this benchmark still runs there."""
    try:
        from trl_margins import losses, state

        return losses, state
    except ImportError:
        modules = []
        for name in ("losses", "state"):
            spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO_ROOT / "trl_margins" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            modules.append(module)
        return modules[0], modules[1]


losses, state = _load_math_modules()

GAMMA0, TAU, ITERS = 1.25, 10.0, 20  # gamma-SimPO scale (beta 2.5, ratio 0.5), the paper's tau and iterations


def time_per_call(fn: Callable[[], Any], device: str, calls: int, repeats: int, warmup: int = 5) -> dict[str, float]:
    """Median and IQR over `repeats` blocks of the time per call, each block `calls` back-to-back calls."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        per_call.append((time.perf_counter() - start) / calls * 1e6)
    q25, q50, q75 = np.percentile(per_call, [25, 50, 75])
    return {"median_us": float(q50), "iqr_us": float(q75 - q25), "min_us": float(min(per_call)), "repeats": repeats}


def bench_device(device: str, sizes: tuple[int, ...], batch: int, capacity: int, calls: int, repeats: int):
    gen = torch.Generator(device="cpu").manual_seed(0)
    queue = state.MarginQueue(capacity, seed=0, device=device)
    queue.push(torch.randn(capacity, generator=gen).to(device))  # full, as in steady-state training
    batch_gaps = torch.randn(batch, generator=gen).to(device)
    rows = []
    for m_n in sizes:
        gaps = torch.randn(m_n, generator=gen).to(device)
        k = max(m_n - batch, 0)  # queue samples that complete the batch to m_n gaps

        def solve(gaps: torch.Tensor = gaps) -> torch.Tensor:
            return losses.dynamic_target_margins(gaps, GAMMA0, TAU, num_iters=ITERS)

        def push_sample(k: int = k) -> None:
            queue.sample(k)
            queue.push(batch_gaps)

        def gamma_step(k: int = k) -> torch.Tensor:
            # GammaPOTrainer.target_margins on one process, minus the gather (an identity there) and metric logging
            history = queue.sample(k)
            gammas = losses.dynamic_target_margins(torch.cat([batch_gaps, history]), GAMMA0, TAU, num_iters=ITERS)
            queue.push(batch_gaps)
            return gammas[:batch]

        for op, fn in (
            ("dynamic_target_margins", solve),
            ("queue push+sample", push_sample),
            ("gamma-PO step (sample+solve+push)", gamma_step),
        ):
            rows.append({"op": op, "device": device, "m_n": m_n, **time_per_call(fn, device, calls, repeats)})
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| op | device | m_n | median (us/call) | IQR (us) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['device']} | {r['m_n']} | {r['median_us']:.1f} | {r['iqr_us']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", default=None, help="comma-separated; default: cpu, plus cuda when available")
    p.add_argument("--sizes", default="256,2048", help="m_n values")
    p.add_argument("--batch_size", "--batch-size", type=int, default=8, help="pairs pushed per step")
    p.add_argument("--queue_size", "--queue-size", type=int, default=2048)
    p.add_argument("--calls", type=int, default=None, help="calls per timed block (200; quick: 5)")
    p.add_argument("--repeats", type=int, default=None, help="timed blocks (15; quick: 3)")
    p.add_argument("--quick", action="store_true", help="few calls: checks the script, not speed")
    p.add_argument("--output", default=None, help="write the JSON report here")
    a = p.parse_args(argv)
    calls = a.calls or (5 if a.quick else 200)
    repeats = a.repeats or (3 if a.quick else 15)
    devices = a.devices.split(",") if a.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = tuple(int(s) for s in a.sizes.split(","))

    load_before = os.getloadavg()
    rows = []
    for device in devices:
        rows += bench_device(device, sizes, a.batch_size, a.queue_size, calls, repeats)
    report = {
        "benchmark": "margin_solve",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else " ".join(argv),
        "config": {
            "gamma0": GAMMA0,
            "tau": TAU,
            "num_iters": ITERS,
            "batch_size": a.batch_size,
            "queue_size": a.queue_size,
            "calls": calls,
            "repeats": repeats,
        },  # fmt: skip
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            # what trl_margins._compat.cpu_flags records; this script runs without the package's TRL imports
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
            "amx": bool(torch.cpu._is_amx_tile_supported()),
            "gpu": torch.cuda.get_device_name() if "cuda" in devices else None,
        },
        "load": {"loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())},
        "results": rows,
    }
    print(markdown_table(rows))
    print(f"\nload avg before {report['load']['loadavg_before']}, after {report['load']['loadavg_after']}")
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
