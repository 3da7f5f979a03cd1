"""Several CPU processes are one run: `torchrun --nproc_per_node 2 -m trl_margins.cli mmpo ...` on a machine without a
GPU trains data-parallel in one gloo group, exactly as one process with the doubled batch does."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import free_port, make_preference_dataset, subprocess_env
from trl_margins._compat import has_accelerator

pytestmark = pytest.mark.skipif(has_accelerator(), reason="CPU processes: the rule for machines without a GPU")


def _train(model_dir, data, out, batch_size: int, processes: int) -> subprocess.CompletedProcess:
    argv = ["mmpo", "--model_name_or_path", model_dir, "--dataset_name", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", str(batch_size), "--max_steps", "2", "--logging_steps", "1",
            "--mmpo_gamma", "1.0", "--learning_rate", "1e-3", "--max_length", "64", "--seed", "7",
            "--save_strategy", "no", "--report_to", "none", "--gradient_checkpointing", "false"]  # fmt: skip
    env = subprocess_env(OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    launcher = [sys.executable, "-m", "trl_margins.cli"]
    if processes > 1:
        torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", free_port()]
        launcher = [sys.executable, *torchrun, "-m", "trl_margins.cli"]
    result = subprocess.run([*launcher, *argv], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _step_logs(out) -> list[dict]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "loss" in h]


def test_two_cpu_processes_train_one_run_with_the_global_batch(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    make_preference_dataset(16).to_json(data, lines=True)
    one = _train(tiny_model_dir, data, tmp_path / "one", batch_size=4, processes=1)
    two = _train(tiny_model_dir, data, tmp_path / "two", batch_size=2, processes=2)
    # One run: one summary, the epoch of a global batch of 4 (not two copies at a batch of 2 each)
    assert two.stdout.count("Model saved to") == 1 == one.stdout.count("Model saved to")
    one_logs, two_logs = _step_logs(tmp_path / "one"), _step_logs(tmp_path / "two")
    assert [h["step"] for h in two_logs] == [1, 2] and [h["epoch"] for h in two_logs] == [h["epoch"] for h in one_logs]
    for ours, single in zip(two_logs, one_logs, strict=True):
        for key in ("loss", "rewards/margins", "mmpo/target_prob", "logps/chosen"):
            np.testing.assert_allclose(ours[key], single[key], rtol=1e-4, atol=1e-6, err_msg=key)
    train_results = json.loads((tmp_path / "two" / "train_results.json").read_text())
    assert train_results["train_samples"] == 16
