"""The command line: recipe keys and their renames, override rules, dataset sources, the entry point."""

import json
import logging
import math
import shlex

import pytest
import yaml
from datasets import Dataset

from tests.helpers import make_preference_dataset, subprocess_env
from trl_margins import cli, fit_gamma
from trl_margins.cli import recipe_keys, train
from trl_margins.cli.arguments import parse_args, split_argv
from trl_margins.cli.recipe_keys import map_key
from trl_margins.data.assets import BUNDLED_DATASET
from trl_margins.errors import UsageError
from trl_margins.evaluation import before_after


def write_recipe(path, **entries) -> str:
    path.write_text(yaml.safe_dump(entries))
    return str(path)


def base(tmp_path, **entries) -> dict:
    """The keys every test recipe needs: a model path (never loaded by the parser) and an output folder."""
    return {"model_name_or_path": "unused-model", "output_dir": str(tmp_path / "out"), **entries}


# The command line's warnings: old recipe keys (`recipe_keys`) and the parser's own (`cli.arguments`)
COMMAND_LINE_LOGGERS = ("trl_margins.cli.recipe_keys", "trl_margins.cli.arguments")


def cli_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in COMMAND_LINE_LOGGERS and r.levelno == logging.WARNING]


# ---- renamed and removed keys --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("torch_dtype", "bfloat16", ("dtype", "bfloat16")),
        ("evaluation_strategy", "steps", ("eval_strategy", "steps")),
        ("warmup_ratio", 0.3, ("warmup_steps", 0.3)),
        ("warmup_ratio", "0.1", ("warmup_steps", "0.1")),  # a command-line string stays a string
        ("use_flash_attention_2", True, ("attn_implementation", "flash_attention_2")),
        ("use_flash_attention_2", recipe_keys.FLAG, ("attn_implementation", "flash_attention_2")),
        ("bt_beta", 2.2, ("mmpo_gamma", 2.2)),
        ("preprocessing_num_workers", 12, ("dataset_num_proc", 12)),
        ("hub_model_revision", "main", ("hub_revision", "main")),
        ("max_seq_length", 512, ("max_length", 512)),
    ],
)
def test_renamed_keys_warn_once(caplog, key, value, expected):
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        assert map_key(key, value, "recipe") == expected
    (message,) = cli_warnings(caplog)
    assert key in message and expected[0] in message and "\n" not in message


@pytest.mark.parametrize(
    "key, value",
    [("torch_dtype", None), ("torch_dtype", "null"), ("use_flash_attention_2", False), ("max_prompt_length", 512)],
)
def test_keys_without_effect_are_dropped_with_a_warning(caplog, key, value):
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        assert map_key(key, value, "recipe") is None
    assert len(cli_warnings(caplog)) == 1


def test_warmup_ratio_must_be_a_ratio():
    with pytest.raises(UsageError, match="warmup_ratio"):
        map_key("warmup_ratio", 1.0, "recipe")


def test_ambiguous_gamma_is_refused():
    with pytest.raises(UsageError, match="mmpo_gamma.*gamma_beta_ratio"):
        map_key("gamma", 0.5, "recipe")


def test_trl0_reference_free_is_refused(tmp_path):
    """TRL 0.x's `reference_free` (uniform reference, no length normalisation) is not SimPO's reward: say so."""
    recipe = write_recipe(tmp_path / "g.yaml", **base(tmp_path), reference_free=True)
    with pytest.raises(UsageError, match="TRL 0.x's uniform reference.*`reward_type: simpo`"):
        parse_args("gamma-po", [recipe])


def test_current_keys_pass_unchanged(caplog):
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        assert map_key("beta", 0.1, "recipe") == ("beta", 0.1)
    assert cli_warnings(caplog) == []


# ---- the command line ----------------------------------------------------------------------------------------------
def test_split_argv_forms():
    recipe, overrides = split_argv(
        ["r.yaml", "--beta", "0.1", "--learning-rate=1e-6", "--bf16", "--report_to", "wandb", "tensorboard"]
    )
    assert recipe == "r.yaml"
    assert overrides == [
        ("beta", "0.1"),
        ("learning_rate", "1e-6"),
        ("bf16", recipe_keys.FLAG),
        ("report_to", ["wandb", "tensorboard"]),
    ]
    assert split_argv(["--config", "r.yml", "--seed=1"]) == ("r.yml", [("seed", "1")])
    assert split_argv(["--margin_step_size", "-1"])[1] == [("margin_step_size", "-1")]  # a negative value, not a flag


@pytest.mark.parametrize(
    "argv, match",
    [
        (["a.yaml", "--config", "b.yaml"], "one recipe"),
        (["recipe.txt"], "first argument"),
        (["--beta", "0.1", "--", "x"], "Unexpected"),
        (["-v"], "Unexpected"),
    ],
)
def test_split_argv_errors(argv, match):
    with pytest.raises(UsageError, match=match):
        split_argv(argv)


# ---- recipes and overrides -----------------------------------------------------------------------------------------
def test_recipe_values_and_overrides(tmp_path, caplog):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        **base(tmp_path),
        torch_dtype="bfloat16",
        warmup_ratio=0.1,
        evaluation_strategy="steps",
        use_flash_attention_2=True,
        bt_beta=2.2,
        max_prompt_length=512,
        preprocessing_num_workers=2,
        loss_type="sigmoid",
        learning_rate="5e-7",  # PyYAML reads `5e-7` (no dot) as a string; argparse converts it
        beta=0.01,
        env={"TRL_MARGINS_TEST_ENV": "from-recipe"},
        model_init_kwargs={"torch_dtype": "bfloat16"},
    )
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        script, args, model, _ = parse_args("mmpo", [recipe, "--beta", "0.2", "--mmpo_gamma=1.5"])
    assert model.dtype == "bfloat16" and model.attn_implementation == "flash_attention_2"
    assert args.warmup_steps == 0.1 and args.eval_strategy == "steps" and args.dataset_num_proc == 2
    assert args.loss_type == ["sigmoid"] and args.learning_rate == 5e-7
    assert args.beta == 0.2 and args.mmpo_gamma == 1.5  # the command line wins, in both spellings
    assert args.model_init_kwargs == {"dtype": "bfloat16"}
    assert not args.bf16  # no GPU here
    assert script.dataset_name is None
    import os

    assert os.environ["TRL_MARGINS_TEST_ENV"] == "from-recipe"
    warnings = cli_warnings(caplog)
    assert sum("max_prompt_length" in w for w in warnings) == 1


def test_command_line_renames_and_flags(tmp_path):
    argv = ["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--warmup_ratio", "0.25"]
    argv += ["--use_flash_attention_2", "--torch_dtype=float32", "--bt_beta", "0.7", "--no_remove_unused_columns"]
    _, args, model, _ = parse_args("mmpo", argv)
    assert args.warmup_steps == 0.25 and args.mmpo_gamma == 0.7 and args.remove_unused_columns is False
    assert model.attn_implementation == "flash_attention_2" and model.dtype == "float32"


@pytest.mark.parametrize(
    "entries, argv, match",
    [
        ({"betta": 0.1}, [], "unknown key `betta`. Did you mean `beta`"),
        ({"warmup_ratios": 0.1}, [], r"Did you mean `warmup_steps` \(formerly `warmup_ratio`\)"),
        ({}, ["--lerning_rate", "1e-5"], "command line: unknown key `lerning_rate`. Did you mean `learning_rate`"),
        ({"dataset_adapter": "shpp"}, [], "Did you mean `shp`"),
        ({"dataset_adapter": "shp", "dataset_adapter_kwargs": {"max_pair_per_post": 3}}, [], "max_pairs_per_post"),
        ({"lr_scheduler_type": "cosin"}, [], "Did you mean `cosine`"),
        ({"beta": 0.1}, ["--gamma", "0.3"], "gamma_beta_ratio"),
        ({"dataset_name": "a", "dataset_mixer": {"b": 1.0}}, [], "one dataset source"),
    ],
)
def test_bad_recipes_stop_with_the_key_named(tmp_path, entries, argv, match):
    recipe = write_recipe(tmp_path / "r.yaml", **base(tmp_path), **entries)
    with pytest.raises(UsageError, match=match):
        parse_args("mmpo", [recipe, *argv])


def test_mode_specific_keys(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", **base(tmp_path), beta=0.1)
    with pytest.raises(UsageError, match="unknown key `beta`"):  # a reward model has no beta
        parse_args("reward", [recipe])
    recipe = write_recipe(tmp_path / "g.yaml", **base(tmp_path), reward_type="simpo", gamma_beta_ratio=0.4, tau=10)
    _, args, _, _ = parse_args("gamma-po", [recipe])
    assert args.gamma0 == pytest.approx(0.4 * args.beta)


def test_command_line_dataset_replaces_the_recipes(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", **base(tmp_path), dataset_mixer={"a": 1.0}, dataset_splits=["train_prefs", "test_prefs"]
    )
    script, *_ = parse_args("mmpo", [recipe, "--dataset_name", "local"])
    assert script.dataset_name == "local" and script.dataset_mixer is None and script.dataset_splits is None


def test_demo_recipe_without_arguments(monkeypatch, tmp_path):
    from trl_margins.data import loading

    (tmp_path / "smollm2").mkdir()
    monkeypatch.setattr(loading, "smollm2_path", lambda: str(tmp_path / "smollm2"))
    script, args, model, _ = parse_args("mmpo", [])
    assert model.model_name_or_path == str(tmp_path / "smollm2")
    assert script.dataset_name == BUNDLED_DATASET and script.preference_eval
    assert args.mmpo_gamma == 1.35 and not args.bf16 and not args.gradient_checkpointing
    # Overrides apply to the demo recipe as to any other
    _, args, _, _ = parse_args("mmpo", ["--max_steps", "2"])
    assert args.max_steps == 2 and args.mmpo_gamma == 1.35
    # Naming a model or a dataset starts from TRL's defaults instead, as TRL's scripts do
    script, args, _, _ = parse_args("mmpo", ["--model_name_or_path", "m", "--dataset_name", "d"])
    assert not script.preference_eval and args.mmpo_gamma is None and args.learning_rate == 1e-6


# ---- dataset sources -----------------------------------------------------------------------------------------------
@pytest.fixture
def local_data(tmp_path):
    """A folder with train.jsonl / test.jsonl, and one single-file dataset with an extra column."""
    folder = tmp_path / "data"
    folder.mkdir()
    make_preference_dataset(12, seed=0).to_json(folder / "train.jsonl")
    make_preference_dataset(6, seed=1).to_json(folder / "test.jsonl")
    return folder


def splits(tmp_path, mode="mmpo", **entries):
    recipe = write_recipe(tmp_path / "r.yaml", **base(tmp_path), **entries)
    script, args, _, dataset_args = parse_args(mode, [recipe])
    return train.load_splits(script, args, dataset_args)


def test_dataset_name_folder_and_single_file(tmp_path, local_data):
    train, test = splits(tmp_path, dataset_name=str(local_data), max_train_samples=5)
    assert len(train) == 5 and len(test) == 6
    train, test = splits(tmp_path, dataset_name=str(local_data / "train.jsonl"))
    assert len(train) == 12 and test is None


def test_handbook_mixture_keeps_score_columns(tmp_path, local_data, caplog):
    mixture = {
        "datasets": [
            {"id": str(local_data / "train.jsonl"), "columns": ["prompt", "chosen", "rejected"], "weight": 0.5},
            {"id": str(local_data / "test.jsonl"), "columns": ["prompt", "chosen", "rejected"]},
        ],
        "seed": 0,
        "test_split_size": 4,
    }
    train, test = splits(tmp_path, dataset_mixture=mixture, mmpo_gamma=1.0)
    assert len(train) + len(test) == 6 + 6 and len(test) == 4
    assert {"score_chosen", "score_rejected"} <= set(train.column_names)


def test_mixture_without_score_columns_fails_clearly(tmp_path):
    make_preference_dataset(4, scores=False).to_json(tmp_path / "plain.jsonl")
    mixture = {"datasets": [{"id": str(tmp_path / "plain.jsonl"), "columns": ["prompt", "chosen", "rejected"]}]}
    with pytest.raises(UsageError, match="score_chosen.*mmpo_gamma"):
        splits(tmp_path, dataset_mixture=mixture, mmpo_gamma=1.0)
    train, _ = splits(tmp_path, dataset_mixture=mixture)  # hard labels need no scores
    assert len(train) == 4


def test_trl_mixture_keeps_score_columns(tmp_path, local_data):
    datasets = [{"path": "json", "data_files": str(local_data / "train.jsonl"), "columns": ["prompt", "chosen"]}]
    train, test = splits(tmp_path, datasets=datasets, mmpo_gamma=0.5)
    assert test is None
    assert train.column_names == ["prompt", "chosen", "score_chosen", "score_rejected"]


def test_old_handbook_mixer(tmp_path, local_data):
    train, test = splits(tmp_path, dataset_mixer={str(local_data): 0.5}, dataset_splits=["train", "test"])
    assert len(train) == 6 and len(test) == 6  # a fraction of the train splits, the test splits whole


def test_adapter_and_chat_wrapping(tmp_path):
    rows = [
        {
            "prompt": "say something nice",
            "all_generated_responses": ["good day", "bad day", "fine day"],
            "all_rm_scores": [0.9, 0.1, 0.5],
        }
    ] * 3
    folder = tmp_path / "rm"
    folder.mkdir()
    for split in ("train", "test"):
        Dataset.from_list(rows).to_json(folder / f"{split}.jsonl")
    train, test = splits(
        tmp_path,
        dataset_name=str(folder),
        dataset_adapter="reward_annotated",
        dataset_adapter_kwargs={"conversational": False},
        conversational=True,
        mmpo_gamma=1.0,
    )
    assert train[0]["chosen"] == [{"role": "assistant", "content": "good day"}]
    assert train[0]["score_chosen"] == 0.9 and len(test) == 3


def test_preference_targets(tmp_path):
    data = make_preference_dataset(4).add_column("human_pref_prob", [0.6, 0.7, 0.8, 0.9])
    recipe = write_recipe(tmp_path / "r.yaml", **base(tmp_path), mmpo_gamma=0.5, target_prob_column="human_pref_prob")
    script, args, _, _ = parse_args("mmpo", [recipe])
    targets = before_after.preference_targets(data, args, script.target_prob_column)
    assert list(targets) == ["hard labels", "MMPO targets (gamma=0.5)", "human_pref_prob"]
    assert targets["human_pref_prob"].tolist() == [0.6, 0.7, 0.8, 0.9]
    with pytest.raises(UsageError, match="probabilities"):
        before_after.preference_targets(data, args, "score_chosen")  # scores, not probabilities


# ---- entry point ---------------------------------------------------------------------------------------------------
def test_main_commands(capsys, monkeypatch):
    assert cli.main(["--help"]) == 0
    assert "gamma-po" in capsys.readouterr().out
    assert cli.main(["mmpoo"]) == 2
    assert "Did you mean `mmpo`" in capsys.readouterr().err
    assert cli.main(["reward", "--help"]) == 0
    assert "mmpo_gamma" in capsys.readouterr().out
    seen = []
    monkeypatch.setattr("trl_margins.cli.evaluate.main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["evaluate", "--model", "m", "--dataset", "d"]) == 0
    assert seen == [["--model", "m", "--dataset", "d"]]


def test_usage_errors_exit_with_status_2(tmp_path, capsys):
    assert cli.main(["mmpo", "--model_name_or_path", "m", "--output_dir", str(tmp_path), "--betta", "1"]) == 2
    assert "Did you mean `beta`" in capsys.readouterr().err


# ---- the error path: one line, the flag named, no traceback (`--debug` shows it) -----------------------------------
def error_line(capsys, command: str) -> str:
    """The one error line of `trl-margins <command>` on stderr (log warnings may precede it), checked to be alone."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err
    lines = [line for line in err.splitlines() if line.startswith("trl-margins")]
    assert len(lines) == 1 and lines[0].startswith(f"trl-margins {command}: error: "), err
    return lines[0]


def test_config_error_names_the_key_and_debug_reraises(tmp_path, capsys):
    argv = ["mmpo", "--model_name_or_path", "m", "--output_dir", str(tmp_path), "--mmpo_gamma", "-1"]
    assert cli.main(argv) == 2
    assert "`mmpo_gamma` must be a finite number >= 0" in error_line(capsys, "mmpo")
    with pytest.raises(ValueError, match="mmpo_gamma"):
        cli.main([*argv, "--debug"])


def test_data_error_during_the_run_names_the_flag(tmp_path, tiny_model_dir, capsys):
    rows = make_preference_dataset(8).to_list()
    rows[2]["score_chosen"], rows[2]["score_rejected"] = 1.0, 5.0  # a pair whose chosen response scored lower
    Dataset.from_list(rows).to_json(tmp_path / "pairs.jsonl")
    argv = ["mmpo", "--model_name_or_path", tiny_model_dir, "--dataset_name", str(tmp_path / "pairs.jsonl")]
    argv += ["--output_dir", str(tmp_path / "out"), "--mmpo_gamma", "1", "--max_steps", "1", "--report_to", "none"]
    assert cli.main(argv) == 1  # found inside the trainer's construction: the data, not the command line, is wrong
    line = error_line(capsys, "mmpo")
    assert "negative margin" in line and "`--negative_margins swap`" in line
    with pytest.raises(ValueError, match="negative margin"):
        cli.main([*argv, "--debug"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--negative_margins", "swp"], "argument --negative_margins/--negative-margins: invalid choice: 'swp'"),
        (["--mmpo_gamma", "abc"], "invalid float value: 'abc'"),
        (["--dataset_name", "missing.jsonl"], "dataset file missing.jsonl not found"),
        # The suite runs offline (HF_HUB_OFFLINE): a hub id that is not in the cache cannot be reached
        (["--dataset_name", "someorg/not-cached"], "dataset 'someorg/not-cached' could not be loaded"),
    ],
)
def test_bad_values_print_the_error_without_the_usage(tmp_path, tiny_model_dir, capsys, argv, message):
    # A real model: the dataset is loaded after the tokenizer
    assert cli.main(["mmpo", "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path), *argv]) == 2
    line = error_line(capsys, "mmpo")
    assert message in line
    if "invalid choice" in message:
        assert all(choice in line for choice in ("error", "swap", "drop"))


def test_missing_recipe_file(tmp_path, capsys):
    assert cli.main(["mmpo", "nope.yaml"]) == 2
    assert error_line(capsys, "mmpo") == "trl-margins mmpo: error: recipe file nope.yaml not found"
    (tmp_path / "bad.yaml").write_text("beta: [0.1\n")
    assert cli.main(["mmpo", str(tmp_path / "bad.yaml")]) == 2
    assert "is not valid YAML" in error_line(capsys, "mmpo")


@pytest.mark.parametrize(
    "mode, key, expected",
    [
        ("mmpo", "bta", "Did you mean `beta`?"),
        # A reward model has no beta: no look-alike (`bt_beta`, the old `mmpo_gamma`), but where the key belongs
        ("reward", "beta", "it is a key of `trl-margins mmpo` and `trl-margins gamma-po`"),
        ("reward", "bta", "unknown key `bta`."),
        ("mmpo", "tau", "it is a key of `trl-margins gamma-po`"),
        # An old name is suggested by its new name, and only where that exists
        ("reward", "bt_bta", "Did you mean `mmpo_gamma` (formerly `bt_beta`)?"),
        ("mmpo", "torch_dtyp", "Did you mean `dtype` (formerly `torch_dtype`)?"),
    ],
)
def test_suggestions_are_keys_of_the_command(tmp_path, capsys, mode, key, expected):
    assert cli.main([mode, "--model_name_or_path", "m", "--output_dir", str(tmp_path), f"--{key}", "1"]) == 2
    line = error_line(capsys, mode)
    assert line.endswith(expected) or expected in line
    if mode == "reward":
        assert "beta`?" not in line


def test_error_path_in_a_subprocess(tmp_path):
    import subprocess
    import sys

    env = subprocess_env()
    result = subprocess.run(
        [sys.executable, "-m", "trl_margins.cli", "mmpo", "nope.yaml"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "trl-margins mmpo: error: recipe file nope.yaml not found"
    assert "Traceback" not in result.stderr


# ---- fit-gamma -----------------------------------------------------------------------------------------------------
def test_fit_gamma_command(tmp_path, capsys):

    margins = [0.5, 1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 6.0]
    rows = [
        {"score_chosen": 5.0 + m, "score_rejected": 5.0, "margin": m, "p": 1 / (1 + math.exp(-0.7 * m))}
        for m in margins
    ]
    for i, row in enumerate(rows):  # votes drawn near the same probabilities
        row["up"], row["down"] = round(20 * row["p"]) + i % 2, 20 - round(20 * row["p"])
    path = tmp_path / "pairs.jsonl"
    Dataset.from_list(rows).to_json(path)
    assert cli.main(["fit-gamma", "--dataset", str(path), "--prob_column", "p"]) == 0
    out = capsys.readouterr().out
    assert "(train, 8 pairs): sigmoid(gamma * (score_chosen - score_rejected)) fitted to p" in out
    assert "mmpo_gamma          0.7000" in out and "NLL" in out
    assert cli.main(["fit-gamma", "--dataset", str(path), "--margin_column", "margin", "--prob_column", "p"]) == 0
    assert "mmpo_gamma          0.7000" in capsys.readouterr().out
    votes = ["--votes_chosen_column", "up", "--votes_rejected_column", "down"]
    assert cli.main(["fit-gamma", "--dataset", str(path), *votes, "--weight_by_votes"]) == 0
    up, down = [r["up"] for r in rows], [r["down"] for r in rows]
    expected = fit_gamma(margins, [u / (u + d) for u, d in zip(up, down)], weights=[u + d for u, d in zip(up, down)])
    assert f"mmpo_gamma          {expected:.4f}" in capsys.readouterr().out

    assert cli.main(["fit-gamma", "--dataset", str(path)]) == 2
    assert "--prob_column" in error_line(capsys, "fit-gamma")
    assert cli.main(["fit-gamma", "--dataset", str(path), "--prob_column", "nope"]) == 1
    assert "no column 'nope'" in error_line(capsys, "fit-gamma")
    Dataset.from_list([{"score_chosen": 2.0, "score_rejected": 1.0, "p": 1.0}] * 3).to_json(tmp_path / "hard.jsonl")
    assert cli.main(["fit-gamma", "--dataset", str(tmp_path / "hard.jsonl"), "--prob_column", "p"]) == 1
    assert "carry no information about gamma" in error_line(capsys, "fit-gamma")
    assert cli.main(["fit-gamma", "--dataset", str(path), "--prob_column", "p", "--split", "test"]) == 2
    assert "no split 'test'" in error_line(capsys, "fit-gamma")


def test_fit_gamma_on_the_bundled_vader_pairs(capsys):
    assert cli.main(["fit-gamma", "--dataset", BUNDLED_DATASET, "--prob_column", "human_pref_prob"]) == 0
    out = capsys.readouterr().out
    assert "(train, 4000 pairs)" in out and "mmpo_gamma          1.3272" in out  # the README's number


def test_preference_metrics_json_is_written(tmp_path, tiny_model_dir, local_data):
    argv = ["--model_name_or_path", tiny_model_dir, "--dataset_name", str(local_data), "--output_dir", str(tmp_path)]
    argv += ["--max_steps", "1", "--per_device_train_batch_size", "4", "--max_eval_samples", "4", "--max_length"]
    argv += ["32", "--mmpo_gamma", "0.5", "--learning_rate", "1e-3", "--preference_eval", "--disable_tqdm", "true"]
    report = train.run("mmpo", *parse_args("mmpo", argv))
    before, after = report["preference_metrics"]["before"], report["preference_metrics"]["after"]
    # Before training the policy is its own reference (every implicit reward 0): the baseline is its likelihood
    assert "log-likelihood per completion token" in before["rewards"] and "DPO implicit" in after["rewards"]
    assert before["metrics"]["hard labels"]["mean_margin"] != 0.0
    assert after["metrics"]["hard labels"]["mean_margin"] != 0.0
    saved = json.loads((tmp_path / "preference_metrics.json").read_text())
    assert saved["after"]["metrics"]["MMPO targets (gamma=0.5)"]["num_pairs"] == 4


def test_evaluate_command_reproduces_the_after_numbers(tmp_path, tiny_model_dir, local_data, capsys):
    # One ECE and one accuracy: the command the run prints gives the numbers of its own "after" column
    from trl_margins.cli import evaluate as evaluate_cli

    out = tmp_path / "out"
    argv = ["--model_name_or_path", tiny_model_dir, "--dataset_name", str(local_data), "--output_dir", str(out)]
    argv += ["--max_steps", "2", "--per_device_train_batch_size", "4", "--max_eval_samples", "5", "--max_length"]
    argv += ["24", "--mmpo_gamma", "0.5", "--learning_rate", "1e-2", "--preference_eval", "--disable_tqdm", "true"]
    after = train.run("mmpo", *parse_args("mmpo", argv))["preference_metrics"]["after"]["metrics"]
    printed = capsys.readouterr().out
    assert "ECE (both orders, 15 bins)" in printed
    command = next(line for line in printed.splitlines() if "trl-margins evaluate --model" in line)
    command = shlex.split(command[command.index("trl-margins evaluate --model") :])[2:]
    assert "--max_length" in command and "--gamma" in command
    assert evaluate_cli.main([*command, "--output_dir", str(tmp_path / "eval"), "--no_plots"]) == 0
    overall = json.loads((tmp_path / "eval" / "metrics.json").read_text())["overall"]
    expected = after["MMPO targets (gamma=0.5)"]
    assert overall["num_pairs"] == expected["num_pairs"] == 5
    assert overall["mean_margin"] != 0.0
    for key in ("accuracy", "mean_margin", "ece", "brier", "nll"):
        assert overall[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


def test_an_adapter_in_a_recipe_can_be_unset_from_the_command_line(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", **base(tmp_path), dataset_adapter="shp", dataset_adapter_kwargs={"max_pairs_per_post": 5}
    )
    assert parse_args("mmpo", [recipe])[0].dataset_adapter == "shp"
    for unset in ("none", "null", ""):
        script = parse_args("mmpo", [recipe, "--dataset_adapter", unset])[0]
        assert script.dataset_adapter is None and script.dataset_adapter_kwargs is None
