"""`trl_margins.pairs.generate` and `trl-margins generate`: N seeded samples per prompt, the same rows from one process
or two, a resume that keeps what is still true, the settings recorded, bad input refused; and the vLLM backend on a
GPU (never faked: it needs one)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import make_preference_dataset, run_on_two_processes
from trl_margins.cli import main
from trl_margins.errors import UsageError
from trl_margins.pairs.generate import (
    GenerateConfig,
    completion_row,
    generate_completions,
    prompt_token_ids,
    sampling_seeds,
    shard_dir,
    sidecar_path,
    transformers_sampler,
)


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _generate(policy, prompts, config, offset=0):
    model, tokenizer = policy
    return generate_completions(transformers_sampler(model, tokenizer, config), tokenizer, prompts, config, offset)


def test_each_prompt_gets_n_reproducible_completions(policy):
    config = GenerateConfig(num_completions=3, max_new_tokens=6, seed=7)
    rows = _generate(policy, ["the movie", "a book"], config)
    assert [r["generation_seed"] for r in rows] == [7, 8]
    assert all(len(r["all_generated_responses"]) == 3 for r in rows)
    assert len(set(rows[0]["all_generated_responses"])) > 1  # sampled, not greedy
    # a prompt's completions depend on its own index (its seed), not on the prompts sampled with it
    again = _generate(policy, ["a book"], config, offset=1)
    assert again[0]["all_generated_responses"] == rows[1]["all_generated_responses"]


def test_simpo_recipe_samples_each_completion_with_its_own_seed(policy):
    config = GenerateConfig(completion_seeds=[13, 21, 42], max_new_tokens=6)
    assert config.num_completions == 3
    rows = _generate(policy, ["the movie", "a book"], config)
    assert [r["generation_seed"] for r in rows] == [[13, 21, 42], [14, 22, 43]]
    # completion j of prompt 1 is one sample with seed completion_seeds[j] + 1, whatever else is sampled
    alone = _generate(policy, ["a book"], GenerateConfig(completion_seeds=[22, 99], max_new_tokens=6))
    assert alone[0]["all_generated_responses"][0] == rows[1]["all_generated_responses"][1]


def test_the_backends_share_prompt_tokens_seeds_and_rows(policy):
    """What the vLLM backend reads and writes, computed on a CPU: it samples from these tokens with these seeds."""
    _, tokenizer = policy
    ids = prompt_token_ids("the movie", tokenizer, use_chat_template=True, idx=0)
    turn = [{"role": "user", "content": "the movie"}]
    assert ids == list(tokenizer.apply_chat_template(turn, add_generation_prompt=True, return_dict=True)["input_ids"])
    assert sampling_seeds(3, GenerateConfig(seed=10)) == [13]
    assert sampling_seeds(3, GenerateConfig(completion_seeds=[1, 2])) == [4, 5]
    assert completion_row("p", ["a", "b"], [7]) == {"prompt": "p", "all_generated_responses": ["a", "b"],
                                                    "generation_seed": 7}  # fmt: skip


def test_fewer_than_two_completions_or_no_chat_template_are_refused(policy):
    with pytest.raises(UsageError, match="num_completions must be >= 2"):
        GenerateConfig(num_completions=1)
    model, tokenizer = policy
    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    config = GenerateConfig(num_completions=2)
    with pytest.raises(UsageError, match="no chat template.*--use_chat_template false"):
        generate_completions(transformers_sampler(model, plain, config), plain, ["x"], config)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_generate_writes_rows_and_settings_and_resumes(tiny_model_dir, tmp_path, caplog):
    data = tmp_path / "pairs.jsonl"
    make_preference_dataset(6, seed=1).to_json(data, lines=True)
    out = tmp_path / "gen.jsonl"
    argv = ["generate", "--policy", tiny_model_dir, "--dataset", str(data), "--output", str(out), "--shard_size", "2"]
    argv += ["--num_completions", "2", "--max_new_tokens", "4", "--max_prompts", "5"]
    assert main(argv) == 0
    rows = _rows(out)
    assert len(rows) == 5 and all(len(r["all_generated_responses"]) == 2 for r in rows)
    assert [r["generation_seed"] for r in rows] == [42, 43, 44, 45, 46]
    settings = json.loads(sidecar_path(out).read_text())
    assert (settings["num_completions"], settings["max_new_tokens"], settings["seed"]) == (2, 4, 42)
    assert settings["policy"] == tiny_model_dir and settings["backend"] == "transformers"
    # a resume keeps the finished shards, and samples again the one whose prompts changed
    (shard_dir(out) / "shards" / "shard-00001.jsonl").unlink()
    with caplog.at_level("WARNING", logger="trl_margins.pairs.generate"):
        assert main(argv) == 0
    assert _rows(out) == rows and "kept: [0, 2]" in caplog.text
    assert main([*argv, "--seed", "1"]) == 2  # other settings can't reuse the shards: one line


def test_two_processes_write_the_rows_of_one(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    make_preference_dataset(7, seed=2).to_json(data, lines=True)
    argv = ["generate", "--policy", tiny_model_dir, "--dataset", str(data), "--shard_size", "2",
            "--num_completions", "2", "--max_new_tokens", "4"]  # fmt: skip
    assert main([*argv, "--output", str(tmp_path / "one.jsonl")]) == 0
    result = run_on_two_processes("-m", "trl_margins.cli", *argv, "--output", str(tmp_path / "two.jsonl"), timeout=300)
    assert result.stdout.count("generate: 7 prompts") == 1  # rank 0 merges and reports
    assert _rows(tmp_path / "two.jsonl") == _rows(tmp_path / "one.jsonl")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM samples on a GPU")
def test_vllm_backend_samples_seeded_rows_in_the_same_layout(tmp_path):
    """vLLM for real, on SmolLM2 or the model `TRL_MARGINS_VLLM_MODEL` names (benchmarks/gpu_check.sh: a Qwen2-0.5B
    shape; the tiny test models' head size is below vLLM's kernels'): the same row layout and seeds as the transformers
    backend, and the same rows again for the same seeds."""
    import os

    from trl_margins.data.assets import smollm2_path

    data = tmp_path / "prompts.jsonl"
    make_preference_dataset(4, seed=3).to_json(data, lines=True)
    model = os.environ.get("TRL_MARGINS_VLLM_MODEL") or smollm2_path()
    argv = ["generate", "--policy", model, "--dataset", str(data), "--num_completions", "3",
            "--max_new_tokens", "16", "--backend", "vllm"]  # fmt: skip
    assert main([*argv, "--output", str(tmp_path / "vllm.jsonl")]) == 0
    assert main([*argv, "--output", str(tmp_path / "again.jsonl")]) == 0
    rows = _rows(tmp_path / "vllm.jsonl")
    assert [r["generation_seed"] for r in rows] == [42, 43, 44, 45]
    assert all(len(r["all_generated_responses"]) == 3 and all(r["all_generated_responses"]) for r in rows)
    assert rows == _rows(tmp_path / "again.jsonl")
    assert json.loads(sidecar_path(tmp_path / "vllm.jsonl").read_text())["backend"] == "vllm"
