"""`trl-margins evaluate` end to end on tiny local models and local JSONL / Parquet files."""

import json
import re

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tests.helpers import make_preference_dataset
from trl_margins.cli.evaluate import main
from trl_margins.data.formatting import as_conversational
from trl_margins.evaluation.rewards import policy_rewards, reward_model_scores

REWARDBENCH_SUBSETS = ["alpacaeval-easy", "mt-bench-hard", "donotanswer", "hep-python"]


def _is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def rewardbench_file(tmp_path_factory):
    """RewardBench-style pairs (prompt, chosen, rejected, subset) with UltraFeedback-style scores, as JSONL."""
    dataset = make_preference_dataset(12)
    dataset = dataset.add_column("subset", [REWARDBENCH_SUBSETS[i % 4] for i in range(12)])
    dataset = dataset.add_column("p", [0.5 + 0.04 * i for i in range(12)])
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    dataset.to_json(str(path))
    return path


@pytest.fixture(scope="module")
def policy_dir(tiny_model_dir, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("policy"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("rm"))
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def _read(output_dir):
    metrics = json.loads((output_dir / "metrics.json").read_text())
    rewards = [json.loads(line) for line in (output_dir / "rewards.jsonl").read_text().splitlines()]
    return metrics, rewards


def test_dpo_policy_on_rewardbench_style_jsonl(tiny_model_dir, policy_dir, rewardbench_file, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--model", policy_dir, "--ref_model", tiny_model_dir, "--dataset", str(rewardbench_file)]
    assert main([*argv, "--beta", "0.5", "--gamma", "0.5", "--batch_size", "5", "--output_dir", str(out)]) == 0
    metrics, rewards = _read(out)
    assert metrics["model_type"] == "dpo" and metrics["beta"] == 0.5  # detected from `architectures`
    assert metrics["targets"] == "sigmoid(0.5 * (score_chosen - score_rejected))"
    overall = metrics["overall"]
    assert overall["num_pairs"] == 12 and not overall["hard_labels"]
    assert set(overall) >= {"accuracy", "mean_margin", "ece", "brier", "nll", "reliability"}
    assert sum(overall["reliability"]["count"]) == 24  # each pair in both orders
    assert set(metrics["subsets"]) == set(REWARDBENCH_SUBSETS)
    assert all(s["num_pairs"] == 3 for s in metrics["subsets"].values())
    assert set(metrics["rewardbench_sections"]) == {"Chat", "Chat Hard", "Safety", "Reasoning", "Score"}
    # The rewards are those of the library function
    dataset = make_preference_dataset(12)
    chosen, rejected = policy_rewards(
        AutoModelForCausalLM.from_pretrained(policy_dir),
        AutoTokenizer.from_pretrained(policy_dir),
        dataset,
        0.5,
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        batch_size=5,  # the CLI's batches: other padding changes float32 sums in the last bits
    )
    assert [r["chosen_reward"] for r in rewards] == pytest.approx(chosen.tolist(), rel=1e-5, abs=1e-7)
    assert [r["rejected_reward"] for r in rewards] == pytest.approx(rejected.tolist(), rel=1e-5, abs=1e-7)
    margins = torch.tensor(dataset["score_chosen"]) - torch.tensor(dataset["score_rejected"])
    assert [r["target_prob"] for r in rewards] == pytest.approx(torch.sigmoid(0.5 * margins).tolist())
    assert _is_png(out / "reliability_diagram.png") and _is_png(out / "reward_margins.png")
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "ECE" in printed and "RewardBench sections" in printed


def test_reward_model_on_parquet_with_a_probability_column(rm_dir, rewardbench_file, tmp_path):
    from datasets import load_dataset

    parquet = tmp_path / "pairs.parquet"
    load_dataset("json", data_files=str(rewardbench_file), split="train").to_parquet(str(parquet))
    out = tmp_path / "eval"
    argv = ["--model", rm_dir, "--dataset", str(parquet), "--prob_column", "p", "--max_samples", "8"]
    assert main([*argv, "--output_dir", str(out)]) == 0
    metrics, rewards = _read(out)
    assert metrics["model_type"] == "rm" and metrics["beta"] is None  # detected from `architectures`
    assert metrics["targets"] == "column 'p'" and metrics["overall"]["num_pairs"] == 8
    chosen, rejected = reward_model_scores(
        AutoModelForSequenceClassification.from_pretrained(rm_dir),
        AutoTokenizer.from_pretrained(rm_dir),
        make_preference_dataset(8),
    )
    assert [r["chosen_reward"] for r in rewards] == pytest.approx(chosen.tolist(), rel=1e-5, abs=1e-6)
    assert [r["target_prob"] for r in rewards] == pytest.approx([0.5 + 0.04 * i for i in range(8)])
    assert metrics["overall"]["accuracy"] == pytest.approx((chosen > rejected).float().mean().item())
    assert _is_png(out / "reliability_diagram.png") and _is_png(out / "reward_margins.png")

    # RewardBench's strings as chat turns, through the model's chat template
    out = tmp_path / "chat"
    assert main([*argv, "--conversational", "--no_plots", "--output_dir", str(out)]) == 0
    _, chat_rewards = _read(out)
    chosen, _ = reward_model_scores(
        AutoModelForSequenceClassification.from_pretrained(rm_dir),
        AutoTokenizer.from_pretrained(rm_dir),
        make_preference_dataset(8).map(as_conversational),
    )
    assert [r["chosen_reward"] for r in chat_rewards] == pytest.approx(chosen.tolist(), rel=1e-5, abs=1e-6)
    assert chat_rewards != rewards


def test_peft_adapter_is_its_own_reference_and_simpo(tiny_model_dir, rewardbench_file, tmp_path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    adapter = tmp_path / "adapter"
    model.save_pretrained(str(adapter))  # no tokenizer saved: the base model's is used

    out = tmp_path / "dpo"
    argv = ["--model", str(adapter), "--dataset", str(rewardbench_file), "--beta", "0.5", "--no_plots"]
    assert main([*argv, "--output_dir", str(out)]) == 0
    metrics, rewards = _read(out)
    assert metrics["model_type"] == "dpo" and metrics["ref_model"] == tiny_model_dir
    assert metrics["targets"] == "hard labels" and metrics["overall"]["hard_labels"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chosen, _ = policy_rewards(model, tokenizer, make_preference_dataset(12), 0.5)
    assert [r["chosen_reward"] for r in rewards] == pytest.approx(chosen.tolist(), rel=1e-4, abs=1e-6)
    assert not (out / "reliability_diagram.png").exists()

    out = tmp_path / "simpo"
    assert main([*argv, "--reward_type", "simpo", "--output_dir", str(out)]) == 0
    metrics, rewards = _read(out)
    assert metrics["model_type"] == "simpo" and metrics["ref_model"] is None
    chosen, _ = policy_rewards(model, tokenizer, make_preference_dataset(12), 0.5, reward_type="simpo")
    assert [r["chosen_reward"] for r in rewards] == pytest.approx(chosen.tolist(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "extra, message, status",
    [
        ([], "--ref_model", 2),  # a full DPO policy without its reference
        (["--model_type", "rm", "--beta", "0.1"], "--beta are for policies", 2),
        (["--reward_type", "simpo", "--gamma", "1", "--prob_column", "p"], "not both", 2),
        (["--reward_type", "simpo", "--batch_size", "0"], "--batch_size must be >= 1", 2),
        (["--reward_type", "simpo", "--model_type", "rm"], "--reward_type simpo means --model_type simpo", 2),
        (["--model_type", "rn"], "argument --model_type: invalid choice: 'rn' (choose from", 2),
        # The data, not the command line, is wrong: status 1
        (["--reward_type", "simpo", "--gamma", "1", "--score_chosen_column", "nope"], "no column 'nope'", 1),
    ],
)
def test_usage_errors(policy_dir, rewardbench_file, tmp_path, capsys, extra, message, status):
    argv = ["--model", policy_dir, "--dataset", str(rewardbench_file), "--output_dir", str(tmp_path), *extra]
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith("trl-margins evaluate: error: ") and message in err
    assert "usage:" not in err and "Traceback" not in err
    with pytest.raises(ValueError, match=re.escape(message)):
        main([*argv, "--debug"])


def test_missing_dataset_file(policy_dir, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["--model", policy_dir, "--reward_type", "simpo", "--dataset", str(missing)]) == 2
    assert capsys.readouterr().err == f"trl-margins evaluate: error: dataset file {missing} not found\n"


# ---- RewardBench 2 rows ---------------------------------------------------------------------------------------------
RB2_ROWS = [  # allenai/reward-bench-2's layout: one prompt, lists of chosen and rejected completions
    {"id": "0", "subset": "Math", "prompt": "What is 2 + 3?", "chosen": ["It is 5."],
     "rejected": ["It is 6.", "It is 23.", "Five hundred."], "num_correct": 1, "num_incorrect": 3},
    {"id": "1", "subset": "Math", "prompt": "What is 3 * 3?", "chosen": ["Nine."],
     "rejected": ["Six.", "Twelve.", "Thirty three."], "num_correct": 1, "num_incorrect": 3},
    {"id": "2", "subset": "Focus", "prompt": "Name a fruit.", "chosen": ["An apple."],
     "rejected": ["A car.", "Blue.", "The sea."], "num_correct": 1, "num_incorrect": 3},
    # Ties: a reference prompt (one correct answer; 3 completions, an odd count) and its tied twin
    {"id": "ref:7", "subset": "Ties", "prompt": "Name the capital of France.", "chosen": ["Paris."],
     "rejected": ["Lyon.", "Rome."], "num_correct": 1, "num_incorrect": 2},
    {"id": "tied:7", "subset": "Ties", "prompt": "Name a primary colour.", "chosen": ["Red.", "Blue."],
     "rejected": ["Green.", "Pink."], "num_correct": 2, "num_incorrect": 2},
]  # fmt: skip


def test_rewardbench2_rows(rm_dir, tmp_path, capsys):
    from trl_margins.evaluation.rewardbench import best_of_n_result, ties_score

    path = tmp_path / "rb2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RB2_ROWS))
    out = tmp_path / "eval"
    assert main(["--model", rm_dir, "--dataset", str(path), "--no_plots", "--output_dir", str(out)]) == 0
    metrics, lines = _read(out)
    rb2 = metrics["rewardbench2"]  # detected from the lists of strings
    # Every completion's score is the reward model's score of prompt + completion, in the row's order
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir)
    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    for row, line in zip(RB2_ROWS, lines):
        completions = row["chosen"] + row["rejected"]
        single = Dataset.from_list([{"prompt": row["prompt"], "chosen": c, "rejected": c} for c in completions])
        expected, _ = reward_model_scores(model, tokenizer, single)
        assert line["scores"] == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-6)
        assert (line["id"], line["num_correct"]) == (row["id"], row["num_correct"])
    scores = [line["scores"] for line in lines]
    # Best of 4: right when the chosen completion scores highest
    math_score = sum(float(s[0] > max(s[1:])) for s in scores[:2]) / 2
    assert rb2["subsets"]["Math"]["score"] == pytest.approx(math_score)
    assert rb2["subsets"]["Focus"]["score"] == float(scores[2][0] > max(scores[2][1:]))
    assert rb2["subsets"]["Math"]["score"] == pytest.approx(
        (best_of_n_result(scores[0]) + best_of_n_result(scores[1])) / 2
    )
    ties = ties_score(["ref:7", "tied:7"], [1, 2], scores[3:])
    assert rb2["subsets"]["Ties"]["score"] == pytest.approx(ties["score"])
    assert rb2["subsets"]["Ties"]["num_pairs"] == 2 + 4 and rb2["subsets"]["Math"]["num_pairs"] == 6
    assert rb2["score"] == pytest.approx((math_score + rb2["subsets"]["Focus"]["score"] + ties["score"]) / 3)
    assert rb2["random_baseline"] == 0.25
    assert rb2["missing_subsets"] == ["Factuality", "Precise IF", "Safety"]
    # The overall metrics are over every (chosen, rejected) combination: 3 + 3 + 3 + 2 + 4 pairs
    assert metrics["overall"]["num_pairs"] == 15 and metrics["overall"]["hard_labels"]
    assert all(0 <= e["ece"] <= 1 for e in rb2["subsets"].values())
    assert "RewardBench 2" in capsys.readouterr().out
    # Soft targets make no sense for best-of-n ranks
    assert main(["--model", rm_dir, "--dataset", str(path), "--gamma", "1", "--output_dir", str(out)]) == 2
