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
    timing: dict[str, Any],
    memory: dict[str, Any] | None,
    load_before: tuple[float, ...],
    started: float,
) -> dict[str, Any]:
    """The report: `config` (the options), each of the `compared` variants' timings (and memory, but for those in
    `no_memory`) with their ratios to their stock and margin-off counterparts, the machine and its load."""
    variants: dict[str, Any] = {}
    times = timing["times"]
    for v in compared:
        name = v.name
        entry: dict[str, Any] = {"label": v.label, "baseline": v.baseline, "control": v.control}
        if name in timing["errors"]:
            entry["error"] = timing["errors"][name]
        else:
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
            # What the issue asks about: memory beyond the stock trainer's (and beyond our own with the knob off)
            for key, other in (("vs_stock", v.baseline), ("vs_control", v.control)):
                other_mem = memory.get(other) or {}
                if "step_peak_mib" in mem and "step_peak_mib" in other_mem:
                    mem[f"step_peak_delta_{key}_mib"] = mem["step_peak_mib"] - other_mem["step_peak_mib"]
        variants[name] = entry
    report = {
        "benchmark": "overhead",
        "goal": {"max_step_time_ratio": TIME_GOAL, "extra_memory": "none beyond the margin queue"},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "config": config,
        "machine": machine_info(config["device"]),
        "load": {
            "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg()),
            "load_1min_during_timing": _range(timing["load_1min_during"]),
            "process_cpu_utilisation_during_timing": timing["process_cpu_utilisation"],
            "other_cpu_utilisation_during_timing": timing["other_cpu_utilisation"],
        },
        "wall_seconds": time.perf_counter() - started,
        "variants": variants,
    }
    report["table"] = markdown_table(report)
    return report


def _range(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": float(np.median(values)), "max": max(values)}
