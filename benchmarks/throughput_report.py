"""The report of the throughput benchmark (`throughput.py`): the profiled pass (top ops, tokens, allocator peak), the
paired speedups with their bootstrap CI against the goal, the machine, and the JSON report with its Markdown tables.

The statistics are `overhead_report`'s (`summarize`, `paired_ratio`) and the machine facts `quality/common.py`'s, so
that every benchmark reports them alike.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "quality"))
import common  # noqa: E402
from overhead_report import paired_ratio, summarize  # noqa: E402

SPEEDUP_GOAL = 1.3  # the package's path at least 1.3x the plain loop's rows/s, at the same scores
MIB = 2**20


# ---- the profiled pass ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def profiled(model: torch.nn.Module, top_ops: int) -> Iterator[dict[str, Any]]:
    """Profile what runs inside (torch.profiler, CPU, with allocations) and count what goes through `model`'s forward:
    the calls, their time, and the tokens, real (attention mask 1) and padding. The dict yielded is filled on exit."""
    from torch.profiler import ProfilerActivity, profile

    result: dict[str, Any] = {}
    counts = {"forwards": 0, "forward_s": 0.0, "tokens": 0, "real_tokens": 0}
    starts: list[float] = []

    def before(_module, args, kwargs) -> None:
        ids, mask = kwargs.get("input_ids", args[0] if args else None), kwargs.get("attention_mask")
        counts["forwards"] += 1
        counts["tokens"] += ids.numel()
        counts["real_tokens"] += int(mask.sum()) if mask is not None else ids.numel()
        starts.append(time.perf_counter())

    def after(_module, _args, _kwargs, _output) -> None:
        counts["forward_s"] += time.perf_counter() - starts.pop()

    hooks = [model.register_forward_pre_hook(before, with_kwargs=True),
             model.register_forward_hook(after, with_kwargs=True)]  # fmt: skip
    start = time.perf_counter()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            yield result
    finally:
        for hook in hooks:
            hook.remove()
    wall = time.perf_counter() - start
    ops = prof.key_averages()
    op_us = sum(e.self_cpu_time_total for e in ops)
    result.update(
        counts,
        wall_s=wall,
        pad_tokens=counts["tokens"] - counts["real_tokens"],
        pad_share=1 - counts["real_tokens"] / max(counts["tokens"], 1),
        forward_share_of_wall=counts["forward_s"] / wall,
        ops_share_of_wall=op_us * 1e-6 / wall,  # the rest is Python: tokenizing, collating, writing shards
        peak_allocated_mib=allocator_peak(prof) / MIB,
        top_ops=[
            {
                "op": e.key,
                "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / max(op_us, 1),
                "calls": e.count,
            }
            for e in sorted(ops, key=lambda e: -e.self_cpu_time_total)[:top_ops]
        ],  # fmt: skip
    )


def allocator_peak(prof) -> int:
    """Bytes of torch's CPU allocator at its peak, above what it held when profiling began: the running sum of the
    profiler's allocation events (each exact, one per malloc and free) in time order."""
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


# ---- statistics ----------------------------------------------------------------------------------------------------
def speedup(package: list[float], plain: list[float]) -> dict[str, Any]:
    """The plain loop's time over the package's, round by round (> 1: the package is faster), against the goal:
    `met` when the whole CI is at or above it, `not met` when all of it is below, else `inconclusive`."""
    ratio = paired_ratio(plain, package)
    del ratio["goal_le_1.01"]  # the overhead benchmark's goal, not this one's
    low, high = ratio["ci95"]
    ratio["goal"] = "met" if low >= SPEEDUP_GOAL else "not met" if high < SPEEDUP_GOAL else "inconclusive"
    return ratio


def layout_entry(rows: int, times: dict[str, list[float]], identity: dict[str, Any]) -> dict[str, Any]:
    stats = {side: summarize(t) for side, t in times.items()}
    return {
        "time": stats,
        "times_s": times,
        "rows_per_s": {side: rows / s["median_s"] for side, s in stats.items()},
        "speedup": speedup(times["package"], times["plain"]),
        "identity": identity,
    }


# ---- report --------------------------------------------------------------------------------------------------------
def build_report(
    config: dict[str, Any], cases: list, raw: dict[str, Any], load_before, started: float, not_multi_process: str
) -> dict[str, Any]:
    """The report: each case's layouts (times, rows/s, speedup, bit-identity), its profiled passes and its probe,
    with the machine, its load and the command; `markdown` holds the tables."""
    out: dict[str, Any] = {}
    for case in cases:
        rows = raw["rows"][case.name]
        layouts = raw["times"][case.name]
        entry: dict[str, Any] = {
            "label": case.label, "command": case.command, "kind": case.kind, "rows": rows, "sequences": 2 * rows,
            "layouts": {k: layout_entry(rows, t, raw["identity"][case.name][k]) for k, t in layouts.items()},
            "profile": raw["profiles"].get(case.name, {}),
            "probe": raw["probe"].get(case.name, {}),
        }  # fmt: skip
        skipped = [k for k in config["configs"] if k not in layouts]
        if skipped:
            entry["not_measured"] = {k: not_multi_process for k in skipped}
        out[case.name] = entry
    machine = common.machine_info()
    machine["cpus_usable"] = len(os.sched_getaffinity(0))
    report = {
        "benchmark": "throughput",
        "goal": {"min_speedup": SPEEDUP_GOAL, "scores": "bit-identical in float32 (torch.equal)"},
        "command": " ".join(["python benchmarks/throughput.py", *sys.argv[1:]]) if sys.argv else "",
        "config": config,
        "machine": machine,
        "load": {
            "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg()),
            "load_1min_per_round": raw["load_1min_per_round"],
        },
        "wall_seconds": time.perf_counter() - started,
        "cases": out,
        "padding_by_scope": raw["padding_by_scope"],
    }
    report["markdown"] = markdown(report)
    return report


def _identity_cell(ident: dict[str, Any]) -> str:
    if ident["bit_identical"]:
        return "yes"
    return f"no: {ident['scores_differing']}/{ident['scores']}, max {ident['max_abs_diff']:.2g}"


def _peak(profile: dict[str, Any], layout: str, side: str) -> str:
    ranks = profile.get(layout, {}).get(side) or []
    return f"{max(r['peak_allocated_mib'] for r in ranks):.0f}" if ranks else "-"


def _head(caption: str, columns: list[str], align: str) -> list[str]:
    """A table's caption, header and rule; `align` has an `r` for each right-aligned column."""
    rule = "".join("---:|" if a == "r" else "---|" for a in align)
    return [caption, "", "| " + " | ".join(columns) + " |", "|" + rule]


def markdown(report: dict[str, Any]) -> str:
    lines = _head(
        f"Goal: the package's path at least {SPEEDUP_GOAL}x the plain loop's rows/s, scores bit-identical in float32. "
        "Layouts: processes x threads each. Peak: torch's CPU allocator above the loaded model, per process.",
        ["case", "layout", "rows", "package rows/s", "plain rows/s", "speedup [95% CI]", "goal",
         "peak MiB package / plain", "bit-identical"],
        "llrrrllrl",
    )  # fmt: skip
    for name, case in report["cases"].items():
        for layout, v in case["layouts"].items():
            s, rps = v["speedup"], v["rows_per_s"]
            peak = f"{_peak(case['profile'], layout, 'package')} / {_peak(case['profile'], layout, 'plain')}"
            lines.append(
                f"| {name} | {layout} | {case['rows']} | {rps['package']:.1f} | {rps['plain']:.1f} | "
                f"{s['median']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] | {s['goal']} | {peak} | "
                f"{_identity_cell(v['identity'])} |"
            )
        for layout, why in case.get("not_measured", {}).items():
            lines.append(f"| {name} | {layout} | - | - | - | not measured: {why} | | | |")
    lines += ["", *profile_table(report), "", *scope_table(report), "", *probe_table(report), "",
              *top_ops_tables(report)]  # fmt: skip
    return "\n".join(lines)


def profile_table(report: dict[str, Any]) -> list[str]:
    lines = _head(
        "Where the time goes (one profiled pass, 1 process, 1 thread): tokens through the model, the padding among "
        "them, and the shares of the wall time spent in the model's forward and in torch ops.",
        ["case", "side", "tokens", "padding", "forward / wall", "ops / wall", "top op (share of op time)"],
        "llrrrrl",
    )
    for name, case in report["cases"].items():
        for side, ranks in case["profile"].get("1p1t", {}).items():
            p = ranks[0]
            top = p["top_ops"][0] if p["top_ops"] else {"op": "-", "share": 0}
            lines.append(
                f"| {name} | {side} | {p['tokens']} | {p['pad_share']:.1%} | {p['forward_share_of_wall']:.1%} | "
                f"{p['ops_share_of_wall']:.1%} | {top['op']} ({top['share']:.0%}) |"
            )
    return lines


def scope_table(report: dict[str, Any]) -> list[str]:
    scope = report["padding_by_scope"]
    lines = _head(
        f"Tokens through the model on all {scope['rows']} pairs, from the tokenizers alone ({scope['batch_size']} "
        "sequences per forward): the package's batches by sorting scope, against the plain loop's.",
        ["model", "package path", "padding: package", "padding: plain", "plain / package tokens"],
        "llrrr",
    )
    for p in scope["paths"]:
        lines.append(
            f"| {p['model']} | {p['path']} | {1 - p['real'] / p['package']:.1%} | {1 - p['real'] / p['plain']:.1%} | "
            f"{p['plain_over_package']:.2f} |"
        )
    return lines


def probe_table(report: dict[str, Any]) -> list[str]:
    lines = _head(
        "Bit-identity probe (a few rows): the package against the plain loop in input order and in the package's own "
        "batch order, with the model's default attention (SDPA) and with eager attention.",
        [
            "case",
            "attention",
            "vs input order",
            "vs package order",
            "per-token log-probs identical",
            "float64 sums",
            "fp32 sum changes with padding",
        ],
        "lllllll",
    )
    for name, case in report["cases"].items():
        for attn, p in case["probe"].items():
            tokens = p.get("per_token_log_probs_bit_identical")
            sums = p.get("float64_sums_of_real_tokens")
            tokens_cell = "-" if tokens is None else "yes" if tokens else "no"
            varying = p.get("float32_sum_depends_on_padding")
            varying_cell = "-" if varying is None else f"{varying['varying']}/{varying['completions']} completions"
            lines.append(
                f"| {name} | {attn} | {_identity_cell(p['input_order'])} | {_identity_cell(p['package_order'])} | "
                f"{tokens_cell} | {'-' if sums is None else _identity_cell(sums)} | {varying_cell} |"
            )
    return lines


def top_ops_tables(report: dict[str, Any], rows: int = 8) -> list[str]:
    lines = ["Top ops by self CPU time (1 process, 1 thread): ms (share of op time)."]
    for name, case in report["cases"].items():
        sides = case["profile"].get("1p1t", {})
        if not sides:
            continue
        tables = {side: {o["op"]: o for o in ranks[0]["top_ops"]} for side, ranks in sides.items()}
        ops = list(dict.fromkeys(op for t in tables.values() for op in list(t)[:rows]))
        lines += ["", *_head(f"{name}:", ["op", *tables], "l" + "r" * len(tables))]
        for op in ops:
            cells = [f"{t[op]['self_cpu_ms']:.1f} ({t[op]['share']:.0%})" if op in t else "-" for t in tables.values()]
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return lines
