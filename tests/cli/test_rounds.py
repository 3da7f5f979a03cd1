"""`trl-margins rounds`: the offline recipe's two rounds on tiny models, resumable by stage (`kill -9` at any point,
then the same command, gives the uninterrupted result), and the rounds recipes parse."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import REPO_ROOT, make_preference_dataset, subprocess_env
from trl_margins.cli import main
from trl_margins.cli.arguments import parse_args
from trl_margins.cli.rounds import load_config
from trl_margins.errors import UsageError
from trl_margins.pairs.rounds import STAGES, Round, Rounds, RoundsConfig

RECIPES = Path(REPO_ROOT) / "recipes"
OFFLINE = RECIPES / "smollm2-135m-instruct" / "rounds-mmpo" / "config_vader.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("rounds-data")
    make_preference_dataset(12, seed=4).to_json(folder / "prompts.jsonl")
    heldout = make_preference_dataset(8, seed=5).add_column("p", [0.6, 0.7, 0.8, 0.9, 0.55, 0.65, 0.75, 0.85])
    heldout.to_json(folder / "heldout.jsonl")
    return {"prompts": str(folder / "prompts.jsonl"), "heldout": str(folder / "heldout.jsonl")}


def _argv(tiny_model_dir, tiny_rm_dir, data, out, *extra) -> list[str]:
    """The offline recipe, on the tiny models and data: every stage of every round, in seconds."""
    return [
        "rounds", str(OFFLINE), "--output_dir", str(out), "--policy", tiny_model_dir, "--reward_model", tiny_rm_dir,
        "--prompts", data["prompts"], "--prompts_per_round", "4", "--heldout", data["heldout"], "--heldout_split",
        "train", "--heldout_prob_column", "p", "--generate.max_new_tokens", "6", "--generate.num_completions", "3",
        "--train.use_peft", "false", "--train.max_steps", "3", "--train.per_device_train_batch_size", "2",
        "--train.max_length", "64", *extra,
    ]  # fmt: skip


def _weights(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_the_offline_recipe_runs_two_rounds(tiny_model_dir, tiny_rm_dir, data, tmp_path):
    out = tmp_path / "out"
    assert main(_argv(tiny_model_dir, tiny_rm_dir, data, out)) == 0
    summary = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    for r in summary["rounds"]:
        assert list(r["stages"]) == list(STAGES) and all("seconds" in s for s in r["stages"].values())
        assert all(Round(out / f"round-{r['round']}").done(stage).is_file() for stage in STAGES)
        metrics = r["stages"]["evaluate"]["metrics"]
        assert metrics["hard labels"]["num_pairs"] == 8 and 0 <= metrics["p"]["ece"] <= 1
        rewards = json.loads(Round(out / f"round-{r['round']}").heldout_rewards.read_text())
        margins = [c - j for c, j in zip(rewards["chosen"], rewards["rejected"], strict=True)]
        assert len(margins) == 8
        assert abs(sum(margins) / 8 - metrics["hard labels"]["mean_margin"]) < 1e-6
    first, second = summary["rounds"]
    # round 1 starts from round 0's policy; the reference stays the first policy; new prompts each round
    assert (
        second["stages"]["generate"]["policy"] == first["stages"]["train"]["policy"] == str(out / "round-0" / "model")
    )
    assert second["stages"]["train"]["reference"] == tiny_model_dir
    prompts = [[json.loads(x)["prompt"] for x in (out / f"round-{r}" / "completions.jsonl").read_text().splitlines()]
               for r in (0, 1)]  # fmt: skip
    assert len(prompts[0]) == len(prompts[1]) == 4 and not set(prompts[0]) & set(prompts[1])
    pairs = [json.loads(x) for x in (out / "round-0" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["score_chosen"] > p["score_rejected"] for p in pairs)
    assert (out / "rounds.png").is_file()
    # DPO rounds on the same recipe: hard labels, the same prompts and first pairs
    dpo = tmp_path / "dpo"
    assert main(_argv(tiny_model_dir, tiny_rm_dir, data, dpo, "--train.mmpo_gamma", "null")) == 0
    assert (dpo / "round-0" / "pairs.jsonl").read_text() == (out / "round-0" / "pairs.jsonl").read_text()


def _run(argv: list[str], kill_when: Path | None = None) -> subprocess.CompletedProcess | None:
    """The console command in a child process; with `kill_when`, SIGKILLed as soon as that file exists."""
    env = subprocess_env(OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    command = [sys.executable, "-m", "trl_margins.cli", *argv]
    if kill_when is None:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not kill_when.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, f"the run ended before {kill_when} appeared"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return None


def test_kill_9_at_any_point_then_the_same_command_gives_the_uninterrupted_result(
    tiny_model_dir, tiny_rm_dir, data, tmp_path
):
    checkpoints = ("--train.save_strategy", "steps", "--train.save_steps", "1")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(_argv(tiny_model_dir, tiny_rm_dir, data, whole, *checkpoints))
    argv = _argv(tiny_model_dir, tiny_rm_dir, data, killed, *checkpoints)
    _run(argv, kill_when=killed / "round-0" / "completions.shards" / "shards" / "shard-00000.jsonl")  # in generate
    _run(argv, kill_when=killed / "round-0" / "model" / "checkpoint-1")  # in training, with a checkpoint
    _run(argv, kill_when=killed / "round-1" / "scored" / "shards" / "shard-00000.jsonl")  # in annotate
    _run(argv)
    stages = lambda out: [r["stages"] for r in json.loads((out / "rounds.json").read_text())["rounds"]]  # noqa: E731
    for ours, theirs in zip(stages(killed), stages(whole), strict=True):
        assert ours["evaluate"]["metrics"] == theirs["evaluate"]["metrics"]
        assert ours["select"] == {**theirs["select"], "seconds": ours["select"]["seconds"]}
    assert _weights(killed / "round-1" / "model") == _weights(whole / "round-1" / "model")


def test_the_rounds_recipes_parse(tiny_model_dir):
    recipes = sorted(RECIPES.glob("*/rounds-*/*.yaml"))
    assert len(recipes) == 2
    for recipe in recipes:
        config = load_config([str(recipe), "--policy", tiny_model_dir])
        mode = config.train.get("mode", "mmpo")
        train = {k: v for k, v in config.train.items() if k != "mode"}
        train.update(model_name_or_path=tiny_model_dir, dataset_name="pairs.jsonl", output_dir="out")
        recipe_file = Path(config.output_dir).name + ".yaml"
        Path(recipe_file).write_text(json.dumps(train))  # JSON is YAML
        try:
            _, args, _, _ = parse_args(mode, [recipe_file])
        finally:
            Path(recipe_file).unlink()
        assert args.mmpo_gamma == 1.0  # MMPO on the reward model's margins
        assert config.generate["temperature"] == 0.8 and config.generate["top_p"] == 0.95  # SimPO's sampling


def test_a_reference_of_previous_follows_the_policy(tmp_path):
    config = RoundsConfig(output_dir=str(tmp_path), policy="first", reward_model="rm", prompts="p", ref="previous")
    rounds = Rounds(config, train=None, state=SimpleNamespace(process_index=0))
    (tmp_path / "round-0").mkdir()
    Round(tmp_path / "round-0").done("train").write_text(json.dumps({"policy": "round-0 policy"}))
    assert (rounds.policy_of(0), rounds.reference_of(0)) == ("first", "first")
    assert (rounds.policy_of(1), rounds.reference_of(1)) == ("round-0 policy", "round-0 policy")
    first = Rounds(RoundsConfig(**{**config.__dict__, "ref": "first"}), train=None, state=SimpleNamespace())
    assert first.reference_of(1) == "first"


def test_bad_rounds_settings_stop_in_one_line(tiny_model_dir, tiny_rm_dir, data, tmp_path, capsys):
    argv = _argv(tiny_model_dir, tiny_rm_dir, data, tmp_path / "out")
    assert main([*argv, "--prompts_per_round", "8", "--rounds", "3"]) == 2  # 12 prompts: slices of 8, 4 and none
    assert "Round 2 has no prompts" in capsys.readouterr().err
    assert main([*argv, "--train.mode", "reward"]) == 2
    assert "`train.mode` must be one of" in capsys.readouterr().err
    assert main([*argv, "--roundz", "3"]) == 2
    assert "Did you mean `rounds`?" in capsys.readouterr().err
    with pytest.raises(UsageError, match="`ref` must be one of"):
        RoundsConfig(output_dir="o", policy="p", reward_model="r", prompts="q", ref="last")
