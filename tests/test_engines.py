"""The trainers under the recipes' own accelerate configs (DDP, DeepSpeed ZeRO-2 and ZeRO-3, FSDP2) on 2 CPU
processes: the losses equal a 1-process run with the same global batch, the gamma-PO queues are identical across
ranks, and resuming from a checkpoint continues the uninterrupted run exactly (beta-DPO, whose moving averages take the
queue's place, under DDP only).

One `accelerate launch` per engine runs every scenario of `tests/engine_run.py` in sequence (process start-up and
DeepSpeed's set-up dominate the time); one plain process computes the 1-process reference for all engines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.helpers import build_tiny_model, free_port, make_preference_dataset, subprocess_env

from .engine_run import GLOBAL_BATCH, MAX_STEPS, POLICY_DIR, REF_DIR, REWARD_DIR, SAVE_STEP, SCENARIOS

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "recipes" / "accelerate_configs"
RUNNER = Path(__file__).resolve().parent / "engine_run.py"
TOLERANCE = 1e-5

CORE = ["mmpo_ref", "gamma_dpo", "gamma_simpo", "reward"]
ZERO3_EXTRAS = ["mmpo_lora", "mmpo_precompute", "gamma_dpo_accumulation", "gamma_simpo_eval"]
GAMMA_PO = [name for name in SCENARIOS if name.startswith("gamma")]
# engine: (the recipe's accelerate config, the distributed type accelerate must report, scenarios)
ENGINES = {
    "ddp": ("ddp.yaml", "MULTI_CPU", CORE + ["beta_dpo"]),  # accelerate's name for DDP over CPU processes
    "zero2": ("zero2.yaml", "DEEPSPEED", CORE),
    "zero3": ("zero3.yaml", "DEEPSPEED", CORE + ZERO3_EXTRAS),
    "fsdp2": ("fsdp.yaml", "FSDP", CORE),
}


def build_engine_models(root: Path) -> Path:
    """The policy, a different reference model, a reward model, and the training and evaluation pairs. The models
    are wider than the suite's tiny model, so that the embeddings and MLP weights (over 1e5 elements) exceed
    DeepSpeed's default `stage3_param_persistence_threshold` and ZeRO-3 really partitions them."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    small = build_tiny_model(str(root / "small"))
    tokenizer = AutoTokenizer.from_pretrained(small)
    config = AutoConfig.from_pretrained(small)
    config.hidden_size, config.intermediate_size = 256, 512
    for name, seed in ((POLICY_DIR, 0), (REF_DIR, 1)):
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    # The score head is saved, not drawn at load time, so that every process and run starts from the same weights
    torch.manual_seed(2)
    AutoModelForSequenceClassification.from_pretrained(root / POLICY_DIR, num_labels=1).save_pretrained(
        root / REWARD_DIR
    )
    tokenizer.save_pretrained(root / REWARD_DIR)
    make_preference_dataset(GLOBAL_BATCH * MAX_STEPS, seed=1).to_json(root / "train.jsonl")
    make_preference_dataset(8, seed=7).to_json(root / "eval.jsonl")
    return root


def cpu_config(recipe_config: str, out_dir: Path) -> Path:
    """The recipe's accelerate config with only the device switched: 2 CPU processes, no mixed precision."""
    config = yaml.safe_load((CONFIGS / recipe_config).read_text())
    config.update(use_cpu=True, num_processes=2, mixed_precision="no")
    path = out_dir / recipe_config
    path.write_text(yaml.safe_dump(config))
    return path


def _env(models: Path) -> dict[str, str]:
    env = subprocess_env(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    env["HF_DATASETS_CACHE"] = str(models / "datasets-cache")  # fresh, and shared by the ranks of a launch
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _load(out_dir: Path, scenarios: list[str], ranks: int) -> dict[str, list[dict]]:
    def read(name: str, rank: int) -> dict:
        return json.loads((out_dir / f"{name}.rank{rank}.json").read_text())

    return {name: [read(name, rank) for rank in range(ranks)] for name in scenarios}


def _run(cmd: list[str], models: Path, out_dir: Path, what: str) -> None:
    result = subprocess.run(cmd, env=_env(models), capture_output=True, text=True, cwd=REPO)
    (out_dir / "log.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stderr[-4000:]}"


@pytest.fixture(scope="session")
def engine_models(tmp_path_factory) -> Path:
    return build_engine_models(tmp_path_factory.mktemp("engine-models"))


@pytest.fixture(scope="session")
def reference(engine_models, tmp_path_factory) -> dict[str, dict]:
    """Every scenario in one plain process, with the same global batch."""
    out_dir = tmp_path_factory.mktemp("engine-reference")
    _run(
        [sys.executable, str(RUNNER), str(engine_models), str(out_dir), *SCENARIOS],
        engine_models,
        out_dir,
        "the 1-process run",
    )
    return {name: ranks[0] for name, ranks in _load(out_dir, list(SCENARIOS), 1).items()}


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request, engine_models, tmp_path_factory) -> tuple[str, Path, dict[str, list[dict]]]:
    name = request.param
    recipe_config, _, scenarios = ENGINES[name]
    if name.startswith("zero"):
        pytest.importorskip("deepspeed")  # a failure in CI (tests/ci_skips.py), where the dev extra installs it
    out_dir = tmp_path_factory.mktemp(f"engine-{name}")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cpu_config(recipe_config, out_dir)),
        "--main_process_port", free_port(), str(RUNNER), str(engine_models), str(out_dir), "--resume", *scenarios,
    ]  # fmt: skip
    if name == "fsdp2":
        cmd.append("--fsdp-on-cpu")  # tests/fsdp_on_cpu.py: accelerate never selects FSDP on CPU by itself
    _run(cmd, engine_models, out_dir, f"accelerate launch with {recipe_config}")
    return name, out_dir, _load(out_dir, scenarios, 2)


def test_engine_is_what_the_config_asks_for(engine):
    name, out_dir, results = engine
    for ranks in results.values():
        for rank in ranks:
            info = rank["engine"]
            assert (info["distributed_type"], info["num_processes"], info["backend"]) == (
                ENGINES[name][1],
                2,
                "gloo",
            ), info
            if name == "fsdp2":  # FSDP2 shards every parameter as a DTensor
                assert info["dtensor_params"] == info["params"] > 0, info
            if name == "zero3":
                assert info["zero_stage"] == 3 and info["zero3_partitioned_params"] > 0, info
            if name == "zero2":
                assert info["zero_stage"] == 2, info
    checkpoint = out_dir / "gamma_dpo" / "full" / f"checkpoint-{SAVE_STEP}"
    if name.startswith("zero"):  # each rank saved its own part of the optimizer state
        parts = sorted(p.name for p in checkpoint.glob(f"global_step{SAVE_STEP}/*optim_states.pt"))
        assert len(parts) == 2 and "rank_0" in parts[0] and "rank_1" in parts[1], parts
    if name == "fsdp2":  # SHARDED_STATE_DICT: torch.distributed.checkpoint files written by both ranks
        assert len(list(checkpoint.glob("pytorch_model_fsdp_0/*.distcp"))) == 2


def test_losses_equal_one_process_with_the_same_global_batch(engine, reference):
    name, _, results = engine
    for scenario, ranks in results.items():
        expected = reference[scenario]
        for rank in ranks:
            assert len(rank["loss"]) == MAX_STEPS
            np.testing.assert_allclose(rank["loss"], expected["loss"], rtol=TOLERANCE, err_msg=f"{name} {scenario}")
            np.testing.assert_allclose(rank["eval_loss"], expected["eval_loss"], rtol=TOLERANCE, err_msg=scenario)
        if expected["queue"] is not None:
            # The gaps are differences of per-sequence log-prob sums of size ~30, whose float32 rounding under another
            # padding and reduction order is ~1e-5 absolute: a relative tolerance alone would fail on small gaps
            np.testing.assert_allclose(
                ranks[0]["queue"], expected["queue"], rtol=TOLERANCE, atol=1e-4, err_msg=f"{name} {scenario}"
            )


def test_gamma_po_queues_are_identical_across_ranks(engine):
    _, _, results = engine
    for scenario in set(GAMMA_PO) & set(results):
        rank0, rank1 = results[scenario]
        assert len(rank0["queue"]) > 0
        assert rank0["queue"] == rank1["queue"], scenario  # exactly: every rank pushes the same gathered gaps
        assert rank0["resumed_queue"] == rank1["resumed_queue"], scenario


def test_resuming_continues_the_uninterrupted_run_exactly(engine):
    _, _, results = engine
    for scenario, ranks in results.items():
        for rank in ranks:
            # The resumed history restores the checkpoint's first steps, then logs its own
            assert rank["resumed_loss"][SAVE_STEP:] == rank["loss"][SAVE_STEP:], scenario
            assert rank["resumed_queue"] == rank["queue"], scenario


def test_zero3_extras_were_run_with_what_they_test(reference):
    # A guard on the scenarios themselves: an evaluation that never ran, or accumulation that changed nothing,
    # would make their ZeRO-3 comparison prove less than its name says
    assert len(reference["gamma_simpo_eval"]["eval_loss"]) == MAX_STEPS // 2
    assert reference["gamma_simpo_eval"]["loss"] == reference["gamma_simpo"]["loss"]
    assert reference["gamma_dpo_accumulation"]["loss"][1:] != reference["gamma_dpo"]["loss"][1:]
