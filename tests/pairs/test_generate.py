"""`trl_margins.generation` and `trl-margins generate`: N seeded samples per prompt, settings recorded, bad input
refused."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import make_preference_dataset
from trl_margins.cli import main
from trl_margins.errors import UsageError
from trl_margins.pairs.generate import GenerateConfig, generate_completions, sidecar_path


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_each_prompt_gets_n_reproducible_completions(policy):
    model, tokenizer = policy
    config = GenerateConfig(num_completions=3, max_new_tokens=6, seed=7)
    rows = generate_completions(model, tokenizer, ["the movie", "a book"], config)
    assert rows["generation_seed"] == [7, 8]
    assert all(len(r) == 3 for r in rows["all_generated_responses"])
    assert len(set(rows["all_generated_responses"][0])) > 1  # sampled, not greedy
    # a prompt's completions depend on its own seed, not on the prompts sampled before it
    again = generate_completions(
        model, tokenizer, ["a book"], GenerateConfig(num_completions=3, max_new_tokens=6, seed=8)
    )
    assert again["all_generated_responses"][0] == rows["all_generated_responses"][1]


def test_fewer_than_two_completions_or_no_chat_template_are_refused(policy):
    model, tokenizer = policy
    with pytest.raises(UsageError, match="num_completions must be >= 2"):
        generate_completions(model, tokenizer, ["x"], GenerateConfig(num_completions=1))
    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    with pytest.raises(UsageError, match="no chat template.*--use_chat_template false"):
        generate_completions(model, plain, ["x"], GenerateConfig(num_completions=2))


def test_cli_generate_writes_rows_and_the_settings(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    make_preference_dataset(6, seed=1).to_json(data, lines=True)
    out = tmp_path / "gen.jsonl"
    argv = ["generate", "--policy", tiny_model_dir, "--dataset", str(data), "--output", str(out)]
    assert main([*argv, "--num_completions", "2", "--max_new_tokens", "4", "--max_prompts", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["all_generated_responses"]) == 2 for r in rows)
    settings = json.loads(sidecar_path(out).read_text())
    assert (settings["num_completions"], settings["max_new_tokens"], settings["seed"]) == (2, 4, 42)
    assert settings["policy"] == tiny_model_dir
