"""The report of the overhead benchmark (`overhead.py`): statistics of the step times (medians, paired ratios with a
bootstrap CI against the goal), the machine it ran on, and the JSON report with its Markdown table.

Pure functions of what `overhead.py` measured: nothing here builds a model or a trainer.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "quality"))
import common  # noqa: E402  (the quality benchmarks' machine facts: CPU flags, commit, date)

TIME_GOAL = 1.01  # the goal: at most 1% slower per step than the stock trainer


# ---- statistics ----------------------------------------------------------------------------------------------------
def summarize(times: list[float]) -> dict[str, float]:
    t = np.asarray(times)
    q25, q50, q75 = np.percentile(t, [25, 50, 75])
    return {
        "n": int(t.size),
        "median_s": float(q50),
        "iqr_s": float(q75 - q25),
        "mad_s": float(np.median(np.abs(t - q50))),
        "min_s": float(t.min()),
        "mean_s": float(t.mean()),
    }


def paired_ratio(times: list[float], base: list[float], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Median over rounds of `times[r] / base[r]` (same batch, run side by side), its bootstrap 95% CI, and the
    verdict on the goal: `met` when the whole CI is <= 1.01, `not met` when all of it is above, else `inconclusive`."""
    ratios = np.asarray(times) / np.asarray(base)
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(ratios, size=(resamples, ratios.size), replace=True), axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    verdict = "met" if high <= TIME_GOAL else "not met" if low > TIME_GOAL else "inconclusive"
    return {
        "median": float(np.median(ratios)),
        "ci95": [float(low), float(high)],
        "ratio_of_medians": float(np.median(times) / np.median(base)),
        "goal_le_1.01": verdict,
    }


# ---- report --------------------------------------------------------------------------------------------------------
def machine_info(device: str) -> dict[str, Any]:
    import transformers
    import trl

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    info = {
        "cpu_model": cpu,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }
    facts = common.machine_info()
    info.update({key: facts[key] for key in ("accelerate", "peft", "cpu_flags", "git_commit", "date")})
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def _fmt_ratio(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    return f"{r['median']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] {r['goal_le_1.01']}"


def markdown_table(report: dict[str, Any]) -> str:
    mem_kind = "GPU allocated" if report["config"]["device"] == "cuda" else "RSS"
    lines = [
        "| trainer | tokens/batch | median step (ms) | IQR (ms) | vs stock TRL: paired ratio [95% CI] | "
        f"vs margin off (same code) | margin work (us/step, % of step) | peak {mem_kind} in steps (MiB) | "
        "peak minus stock's / margin-off's (MiB) |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for name, v in report["variants"].items():
        if "step_time" not in v:
            lines.append(f"| {name} | failed: {v.get('error', '?')} ||||||||")
            continue
        st, mem = v["step_time"], v.get("memory") or {}
        peak = f"{mem['step_peak_mib']:.0f}" if "step_peak_mib" in mem else "-"
        deltas = [mem.get(f"step_peak_delta_{k}_mib") for k in ("vs_stock", "vs_control")]
        delta = (
            " / ".join("-" if d is None else f"{d:+.0f}" for d in deltas)
            if any(d is not None for d in deltas)
            else "-"
        )
        work = "-"
        if v.get("margin_work_us") is not None:
            share = v.get("margin_work_share_of_step")
            work = f"{v['margin_work_us']:.0f}" + (f" ({share * 100:.2g}%)" if share is not None else "")
        lines.append(
            f"| {name} | {v['tokens_per_batch']:.0f} | {st['median_s'] * 1e3:.1f} | {st['iqr_s'] * 1e3:.1f} | "
            f"{_fmt_ratio(v.get('vs_stock'))} | {_fmt_ratio(v.get('vs_control'))} | {work} | {peak} | {delta} |"
        )
    return "\n".join(lines)


def build_report(
    config: dict[str, Any],
    compared: list,
    no_memory: tuple[str, ...],
    timing: dict[str, Any] | None,
    memory: dict[str, Any] | None,
    load_before: tuple[float, ...],
    started: float,
) -> dict[str, Any]:
    """The report: `config` (the options), each of the `compared` variants' timings (none with `timing` None) and
    memory (but for those in `no_memory`) with their ratios to their stock and margin-off counterparts, the machine
    and its load."""
    variants: dict[str, Any] = {}
    times = timing["times"] if timing else {}
    for v in compared:
        name = v.name
        entry: dict[str, Any] = {"label": v.label, "baseline": v.baseline, "control": v.control}
        if timing and name in timing["errors"]:
            entry["error"] = timing["errors"][name]
        elif timing:
            entry.update(
                trainer_class=timing["trainer_classes"][name],
                tokens_per_batch=timing["tokens_per_batch"][name],
                step_time=summarize(times[name]),
                times_s=times[name],
                margin_work_us=timing["margin_work_us"][name],
            )
            if entry["margin_work_us"] is not None and v.control in times:
                # The margins' cost as a share of the control's step: precise where the step ratio is noisy
                entry["margin_work_share_of_step"] = (
                    entry["margin_work_us"] * 1e-6 / float(np.median(times[v.control]))
                )
            for key, other in (("vs_stock", v.baseline), ("vs_control", v.control)):
                if other in times:
                    entry[key] = {"against": other, **paired_ratio(times[name], times[other])}
        if memory is not None and name not in no_memory:
            entry["memory"] = mem = memory.get(name) or {}
            # The memory goal: nothing beyond the stock trainer's (and beyond our own with the knob off)
            for key, other in (("vs_stock", v.baseline), ("vs_control", v.control)):
                other_mem = memory.get(other) or {}
                if "step_peak_mib" in mem and "step_peak_mib" in other_mem:
                    mem[f"step_peak_delta_{key}_mib"] = mem["step_peak_mib"] - other_mem["step_peak_mib"]
                if "allocator" in mem and "allocator" in other_mem:
                    mem["allocator"][key] = allocator_comparison(mem["allocator"], other_mem["allocator"], other)
        variants[name] = entry
    if memory is not None:
        add_allocator_verdicts(variants)
    load: dict[str, Any] = {"loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())}
    if timing:
        load.update(
            load_1min_during_timing=_range(timing["load_1min_during"]),
            process_cpu_utilisation_during_timing=timing["process_cpu_utilisation"],
            other_cpu_utilisation_during_timing=timing["other_cpu_utilisation"],
        )
    report = {
        "benchmark": "overhead",
        "goal": {"max_step_time_ratio": TIME_GOAL, "extra_memory": "none beyond the margin queue"},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "config": config,
        "machine": machine_info(config["device"]),
        "load": load,
        "wall_seconds": time.perf_counter() - started,
        "variants": variants,
    }
    tables = [markdown_table(report)] if timing else []
    if any("allocator" in (v.get("memory") or {}) for v in variants.values()):
        tables.append(allocator_table(report))
    report["table"] = "\n\n".join(tables)
    return report


# ---- torch's allocator peak per step (`--memory allocator`) --------------------------------------------------------
A_A = ("dpo_again", "dpo")  # the stock trainer measured twice: the difference between them is the noise floor


def allocator_comparison(mem: dict[str, Any], other: dict[str, Any], against: str) -> dict[str, Any]:
    """A variant's allocator peaks against another's, in bytes: the steady step's (the goal's ratio), its forward and
    loss part's, and the first step's."""
    steady, base = mem["steps"], other["steps"]
    return {
        "against": against,
        "step_peak_ratio": mem["step_peak_bytes"] / other["step_peak_bytes"],
        "step_peak_delta_bytes": mem["step_peak_bytes"] - other["step_peak_bytes"],
        "forward_peak_delta_bytes": _forward_peak(steady) - _forward_peak(base),
        "first_step_peak_delta_bytes": mem["first_step"]["peak_bytes"] - other["first_step"]["peak_bytes"],
        "trainer_delta_bytes": mem["trainer_bytes"] - other["trainer_bytes"],  # kept between steps: queues, state
        # What makes a difference: the bytes alive at each peak by site, against the other's (last steady step)
        "step_peak_sites_delta": _sites_delta(steady[-1]["sites_at_peak"], base[-1]["sites_at_peak"]),
        "forward_peak_sites_delta": _sites_delta(
            steady[-1]["forward_sites_at_peak"], base[-1]["forward_sites_at_peak"]
        ),
    }


def _sites_delta(sites: dict[str, int], base: dict[str, int]) -> dict[str, int]:
    delta = {site: sites.get(site, 0) - base.get(site, 0) for site in sites.keys() | base.keys()}
    return dict(sorted(((k, d) for k, d in delta.items() if d), key=lambda kv: -abs(kv[1])))


def _forward_peak(steps: list[dict[str, Any]]) -> int:
    return max(s["forward_peak_bytes"] for s in steps)


def add_allocator_verdicts(variants: dict[str, Any]) -> None:
    """The goal, 1.00x of the stock trainer's peak within noise: `met` when a variant's steady-step peak differs from
    its stock trainer's by no more than the A/A difference plus the spread of either over its steps."""
    allocs = {n: (v.get("memory") or {}).get("allocator") for n, v in variants.items()}
    if not all(allocs.get(n) for n in A_A):
        return
    noise = abs(allocs[A_A[0]]["step_peak_bytes"] - allocs[A_A[1]]["step_peak_bytes"])
    for alloc in allocs.values():
        if alloc and "vs_stock" in alloc:
            other = allocs[alloc["vs_stock"]["against"]]
            allowed = noise + _spread(alloc["steps"]) + _spread(other["steps"])
            alloc["vs_stock"]["noise_bytes"] = allowed
            alloc["vs_stock"]["goal_1.00x"] = (
                "met" if abs(alloc["vs_stock"]["step_peak_delta_bytes"]) <= allowed else "not met"
            )


def _spread(steps: list[dict[str, Any]]) -> int:
    peaks = [s["peak_bytes"] for s in steps]
    return max(peaks) - min(peaks)


def allocator_table(report: dict[str, Any]) -> str:
    """Torch's allocator peak per step against the stock trainer's, with the peak RSS of the same steps beside it."""
    lines = [
        "| trainer | steady step: peak allocated (MiB) | minus stock (bytes) | ratio to stock | 1.00x within noise | "
        "first step: peak (MiB) | minus stock (bytes) | forward+loss peak minus stock's (bytes) | "
        "kept by the trainer minus stock's (bytes) | peak RSS in steps (MiB) | RSS minus stock's (MiB) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in report["variants"].items():
        mem = v.get("memory") or {}
        alloc = mem.get("allocator")
        if not alloc:
            if "memory" in v:
                lines.append(f"| {name} | failed: {mem.get('error', '?')} ||||||||||")
            continue
        cmp = alloc.get("vs_stock") or {}

        def delta(key: str, cmp: dict[str, Any] = cmp) -> str:
            return f"{cmp[key]:+d}" if cmp else "-"

        rss = mem.get("step_peak_delta_vs_stock_mib")
        cells = [
            name,
            f"{alloc['step_peak_bytes'] / MIB:.2f}",
            delta("step_peak_delta_bytes"),
            f"{cmp['step_peak_ratio']:.6f}" if cmp else "-",
            cmp.get("goal_1.00x", "-"),
            f"{alloc['first_step']['peak_bytes'] / MIB:.2f}",
            delta("first_step_peak_delta_bytes"),
            delta("forward_peak_delta_bytes"),
            delta("trainer_delta_bytes"),
            f"{mem['step_peak_mib']:.0f}",
            "-" if rss is None else f"{rss:+.0f}",
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


MIB = 2**20


def _range(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": float(np.median(values)), "max": max(values)}
