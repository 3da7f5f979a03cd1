"""The overhead benchmarks (benchmarks/overhead.py, margin_solve.py, gpu_check.*) run end to end in quick mode and
report what they promise. Timings are the benchmarks' business: nothing here asserts how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import load_benchmark, subprocess_env

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


overhead = load_benchmark("overhead")
margin_solve = load_benchmark("margin_solve")
overhead_report = load_benchmark("overhead_report")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("overhead")
    report = overhead.main(["--quick", "--output", str(out / "o.json"), "--markdown", str(out / "o.md")])
    return report, out


def test_overhead_quick_times_every_trainer(quick_report):
    report, out = quick_report
    assert json.loads((out / "o.json").read_text()) == json.loads(json.dumps(report))
    assert set(report["variants"]) == {v.name for v in overhead.VARIANTS}
    for name, v in report["variants"].items():
        assert "error" not in v, (name, v.get("error"))
        assert v["step_time"]["n"] == 2 and len(v["times_s"]) == 2
        assert all(t > 0 for t in v["times_s"]) and v["step_time"]["median_s"] > 0
        assert v["step_time"]["iqr_s"] >= 0 and v["tokens_per_batch"] > 0
        spec = overhead.VARIANTS_BY_NAME[name]
        for key, other in (("vs_stock", spec.baseline), ("vs_control", spec.control)):
            if other is None:
                assert key not in v
                continue
            ratio = v[key]
            assert ratio["against"] == other and ratio["median"] > 0 and ratio["ratio_of_medians"] > 0
            assert ratio["ci95"][0] <= ratio["median"] <= ratio["ci95"][1]
            assert ratio["goal_le_1.01"] in {"met", "not met", "inconclusive"}
        margin_variant = name in ("mmpo", "gamma_dpo", "gamma_simpo", "beta_dpo")
        assert (v["margin_work_us"] is not None) == margin_variant
        if margin_variant:
            assert v["margin_work_us"] > 0 and v["margin_work_share_of_step"] > 0


def test_overhead_quick_reports_memory_machine_and_load(quick_report):
    report, out = quick_report
    for name, v in report["variants"].items():
        if name in overhead.NO_MEMORY:
            assert "memory" not in v
            continue
        mem = v["memory"]
        assert mem["kind"] == "cpu_rss" and mem["held_mib"] > 0 and mem["step_peak_mib"] > 0, (name, mem)
        assert mem["process_peak_mib"] >= 0.99 * mem["step_peak_mib"]
    gamma_dpo = report["variants"]["gamma_dpo"]["memory"]
    assert gamma_dpo["queue_bytes"] == 2048 * 4 and "step_peak_delta_vs_control_mib" in gamma_dpo
    assert report["config"]["queue_size"] == 2048 and report["config"]["sample_size"] == 256
    machine, load = report["machine"], report["load"]
    assert machine["cpu_model"] and machine["torch"] and machine["trl"] and machine["transformers"]
    assert len(load["loadavg_before"]) == 3 and "process_cpu_utilisation_during_timing" in load
    table = (out / "o.md").read_text()
    assert all(f"| {name} |" in table for name in report["variants"])


def test_allocator_peak_counts_known_allocations_exactly():
    import torch

    mib = 2**20
    alive_before = torch.empty(mib, dtype=torch.uint8)  # allocated before: not counted, its free not seen
    with overhead.AllocatorPeak(stacks=True) as first:
        big = torch.empty(100 * mib, dtype=torch.uint8)
        small = torch.empty(10 * mib, dtype=torch.uint8)
        del big, alive_before
    s = first.summary
    assert s["peak_bytes"] == 110 * mib and s["net_bytes"] == 10 * mib and s["peak_phase"] == "forward"
    assert s["allocated_bytes"] == 110 * mib and s["allocations"] == 2
    assert s["forward_peak_bytes"] == s["peak_bytes"] and sum(s["sites_at_peak"].values()) == s["peak_bytes"]
    assert all(site.startswith("aten::empty < ") for site in s["sites_at_peak"])
    # A block allocated under an earlier profiler is seen when freed: the peak is counted above the start
    with overhead.AllocatorPeak() as second:
        del small
        larger = torch.empty(30 * mib, dtype=torch.uint8)
    s = second.summary
    assert s["peak_bytes"] == 20 * mib and s["net_bytes"] == 20 * mib
    assert s["sites_at_peak"][overhead.FREED_EARLIER] == -10 * mib and sum(s["sites_at_peak"].values()) == 20 * mib
    del larger


def test_allocator_peak_splits_a_training_step():
    import torch

    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(model.parameters())
    with overhead.AllocatorPeak() as peak:
        model(torch.randn(8, 64)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    s = peak.summary
    state = 2 * sum(p.numel() * p.element_size() for p in model.parameters())  # AdamW's two moments
    assert s["net_bytes"] >= state and s["peak_phase"] == "optimizer"
    assert 0 < s["forward_peak_bytes"] < s["peak_bytes"] and sum(s["sites_at_peak"].values()) == s["peak_bytes"]


def test_overhead_allocator_mode_measures_each_step(tmp_path):
    variants = ("dpo", "dpo_again", "beta_dpo")
    argv = ["--quick", "--memory", "allocator", "--rounds", "0", "--variants", ",".join(variants),
            "--output", str(tmp_path / "m.json"), "--markdown", str(tmp_path / "m.md")]  # fmt: skip
    report = overhead.main(argv)
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads(json.dumps(report))
    assert set(report["variants"]) == set(variants)
    for name, v in report["variants"].items():
        assert "step_time" not in v  # no timed rounds
        mem = v["memory"]
        assert "error" not in mem, (name, mem.get("error"))
        assert mem["kind"] == "cpu_rss" and mem["step_peak_mib"] > 0  # the RSS beside the allocator's peak
        alloc = mem["allocator"]
        assert len(alloc["steps"]) == report["config"]["memory_steps"]
        assert alloc["step_peak_bytes"] == max(s["peak_bytes"] for s in alloc["steps"])
        assert alloc["first_step"]["net_bytes"] > 0  # AdamW's state, kept
        for step in [alloc["first_step"], *alloc["steps"]]:
            assert step["peak_phase"] in {"forward", "backward", "optimizer"}
            assert 0 < step["forward_peak_bytes"] <= step["peak_bytes"] <= step["allocated_bytes"]
            assert sum(step["sites_at_peak"].values()) == step["peak_bytes"]
        if name == "dpo":
            assert "vs_stock" not in alloc
            continue
        cmp = alloc["vs_stock"]
        assert cmp["against"] == "dpo" and cmp["step_peak_ratio"] > 0 and cmp["noise_bytes"] >= 0
        assert cmp["goal_1.00x"] in {"met", "not met"}
        assert sum(cmp["step_peak_sites_delta"].values()) == cmp["step_peak_delta_bytes"]
    machine = report["machine"]
    assert set(machine["cpu_flags"]) >= {"capability", "avx512_bf16", "amx"} and "git_commit" in machine
    table = (tmp_path / "m.md").read_text()
    assert "peak allocated" in table and "median step" not in table
    assert all(f"| {name} |" in table for name in variants)


def test_quick_mode_leaves_the_thread_count_alone():
    import torch

    before = torch.get_num_threads()
    overhead.main(["--quick", "--variants", "simpo_ours", "--memory", "none", "--rounds", "1"])
    assert torch.get_num_threads() == before


def test_paired_ratio_verdicts():
    base = [1.0, 1.1, 0.9, 1.2, 1.0]
    same = overhead_report.paired_ratio(base, base)
    assert same["median"] == pytest.approx(1.0) and same["goal_le_1.01"] == "met"
    slower = overhead_report.paired_ratio([1.5 * t for t in base], base)
    assert slower["median"] == pytest.approx(1.5) and slower["goal_le_1.01"] == "not met"
    mixed = overhead_report.paired_ratio([t * f for t, f in zip(base, [0.9, 1.1, 0.95, 1.08, 1.0])], base)
    assert mixed["goal_le_1.01"] == "inconclusive"


def test_margin_solve_quick(tmp_path):
    report = margin_solve.main(["--quick", "--devices", "cpu", "--output", str(tmp_path / "m.json")])
    assert json.loads((tmp_path / "m.json").read_text())["results"] == report["results"]
    ops = {(r["op"], r["m_n"]) for r in report["results"]}
    for op in ("dynamic_target_margins", "queue push+sample", "gamma-PO step (sample+solve+push)"):
        assert {(op, 256), (op, 2048)} <= ops
    assert all(r["median_us"] > 0 and r["iqr_us"] >= 0 and r["device"] == "cpu" for r in report["results"])


def test_gpu_check_script_parses_and_its_python_half_runs_on_cpu(tmp_path):
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_check.sh")]).returncode == 0
    gpu_check = load_benchmark("gpu_check")
    model = str(tmp_path / "model")
    assert gpu_check.main(["build-model", model, "--preset", "qwen2-tiny"]) == 0
    out = tmp_path / "train.json"
    argv = ["train", "--model", model, "--device", "cpu", "--dtype", "float32", "--trainers", "gamma_mmpo_simpo",
            "--check", "kto_weights=MMPOKTOTrainer:beta=0.1,mmpo_gamma=1.0",  # a check given on the command line
            "--steps", "2", "--batch_size", "2", "--output", str(out)]  # fmt: skip
    assert gpu_check.main(argv) == 0
    checks = json.loads(out.read_text())["checks"]
    check = checks["gamma_mmpo_simpo"]
    assert check["ok"], check["problems"]
    assert check["attn_implementation"] == "sdpa" and check["queue_size"] == 4 and not check["has_ref_model"]
    assert checks["kto_weights"]["ok"] and checks["kto_weights"]["trainer"] == "MMPOKTOTrainer"
    # Every knob's config builds (what the GPU call trains), without a model
    dry = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "--dry-run"],
        env=subprocess_env(PYTHON=sys.executable),
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert all(f"[train-check] {name}: " in dry.stdout for name in gpu_check.TRAIN_CHECKS)
