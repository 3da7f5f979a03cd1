"""The example scripts run end to end on a CPU, in-process: a tiny local model, a small local JSONL dataset, a couple
of steps, the before/after evaluation, saving, and resuming from the last checkpoint."""

import json
import logging
import runpy
import sys
from pathlib import Path

import pytest

from tests.helpers import make_preference_dataset

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    for split, n, seed in (("train", 8, 0), ("test", 4, 1)):
        pairs = make_preference_dataset(n, seed=seed)
        pairs.add_column("human_pref_prob", [0.6 + 0.3 * i / n for i in range(n)]).to_json(folder / f"{split}.jsonl")
    return folder


def run_example(script: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert exit_info.value.code == 0


def small_run(model: str, data: Path, output_dir: Path, max_steps: int, *extra: str) -> list[str]:
    # Naming a model and a dataset starts from TRL's defaults, as TRL's scripts do
    return [
        "--model_name_or_path", model, "--dataset_name", str(data), "--output_dir", str(output_dir),
        "--max_steps", str(max_steps), "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--max_length", "32", "--learning_rate", "1e-3", "--mmpo_gamma", "0.5", "--gradient_checkpointing", "false",
        "--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "1", "--disable_tqdm", "true",
        "--preference_eval", "--target_prob_column", "human_pref_prob",
        *extra,
    ]  # fmt: skip


EXAMPLE_CASES = {
    "run_mmpo.py": ["--eval_strategy", "steps", "--eval_steps", "1"],
    "run_gamma_po.py": ["--margin_sample_size", "16"],
    "run_mmpo_rm.py": [],
}


@pytest.mark.parametrize("script", sorted(EXAMPLE_CASES))
def test_example_trains_evaluates_saves_and_resumes(script, tiny_model_dir, data_dir, tmp_path, monkeypatch, caplog):
    output_dir = tmp_path / "out"
    argv = small_run(tiny_model_dir, data_dir, output_dir, 1, *EXAMPLE_CASES[script])
    run_example(script, argv, monkeypatch)
    assert (output_dir / "checkpoint-1").is_dir() and (output_dir / "model.safetensors").is_file()
    if "--eval_strategy" in argv:  # the trainer's own evaluation ran too, with MMPO's calibration metrics
        assert "eval_mmpo/ece" in json.loads((output_dir / "eval_results.json").read_text())
    metrics = json.loads((output_dir / "preference_metrics.json").read_text())
    assert metrics["after"]["metrics"]["hard labels"]["num_pairs"] == 4
    assert set(metrics["before"]["metrics"]) == {"hard labels", "MMPO targets (gamma=0.5)", "human_pref_prob"}

    # Asked for one more step, the same command resumes from checkpoint-1 instead of starting over
    with caplog.at_level(logging.WARNING, logger="trl_margins.cli"):
        run_example(script, small_run(tiny_model_dir, data_dir, output_dir, 2, *EXAMPLE_CASES[script]), monkeypatch)
    assert any("Resuming" in r.getMessage() and "checkpoint-1" in r.getMessage() for r in caplog.records)
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2]


def test_on_policy_pairs_generates_annotates_selects_and_trains(tiny_model_dir, tiny_rm_dir, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.jsonl"
    make_preference_dataset(6, seed=4).to_json(prompts)
    out = tmp_path / "on-policy"
    argv = ["--policy", tiny_model_dir, "--reward_model", tiny_rm_dir, "--dataset", str(prompts), "--output_dir",
            str(out), "--num_prompts", "3", "--num_completions", "3", "--max_new_tokens", "6",
            "--", "--max_length", "32", "--gradient_checkpointing", "false", "--disable_tqdm", "true"]  # fmt: skip
    run_example("on_policy_pairs.py", argv, monkeypatch)
    rows = [json.loads(line) for line in (out / "annotated" / "annotated.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["all_rm_scores"]) == 3 for r in rows)
    pairs = [json.loads(line) for line in (out / "pairs" / "train.jsonl").read_text().splitlines()]
    assert pairs and all(p["score_chosen"] > p["score_rejected"] for p in pairs)
    assert (out / "mmpo" / "model.safetensors").is_file()
