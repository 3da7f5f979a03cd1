"""Every recipe under recipes/ parses into this package's configs (no model or dataset is loaded), carries the papers'
published settings, and every accelerate configuration is one `accelerate launch` accepts."""

import logging
from pathlib import Path

import pytest
import yaml

from trl_margins.cli.arguments import parse_args
from trl_margins.data.assets import BUNDLED_DATASET

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ACCELERATE_CONFIGS = RECIPES / "accelerate_configs"
RECIPE_FILES = sorted(p for p in RECIPES.rglob("*.yaml") if ACCELERATE_CONFIGS not in p.parents)
ROUNDS_RECIPES = [p for p in RECIPE_FILES if p.parent.name.startswith("rounds")]  # tests/cli/test_rounds.py
TRAINING_RECIPES = [p for p in RECIPE_FILES if p not in ROUNDS_RECIPES]
MODE_OF_FOLDER = {"mmpo": "mmpo", "mmpo-rm": "reward", "gamma-simpo": "gamma-po", "beta-dpo": "mmpo"}
# Datasets already in TRL's preference format, which need no adapter
TRL_FORMAT_DATASETS = {"Anthropic/hh-rlhf"}


def mode_of(recipe: Path) -> str:
    return MODE_OF_FOLDER[recipe.parent.name]


def parse(recipe: Path):
    return parse_args(mode_of(recipe), [str(recipe)])


def test_every_model_folder_has_recipes_and_a_readme():
    assert len(TRAINING_RECIPES) == 13 and len(ROUNDS_RECIPES) == 2
    for folder in {p.parent.parent for p in RECIPE_FILES}:
        readme = (folder / "README.md").read_text()
        for recipe in folder.rglob("*.yaml"):
            assert str(recipe.relative_to(RECIPES.parent)) in readme or recipe.name in readme


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_parses_without_renamed_keys(recipe, caplog):
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        script, args, model, dataset_args = parse(recipe)
    # Our recipes are written in current keys: the only warning is the CPU fallback of this test machine
    loggers = ("trl_margins.cli.recipe_keys", "trl_margins.cli.arguments")
    warnings = [r.getMessage() for r in caplog.records if r.name in loggers and r.levelno >= logging.WARNING]
    assert all("No GPU" in w for w in warnings), warnings
    assert model.dtype == "bfloat16" and model.model_name_or_path
    assert script.dataset_name not in (None, BUNDLED_DATASET)
    assert script.dataset_adapter is not None or script.dataset_name in TRL_FORMAT_DATASETS
    assert args.output_dir.startswith("data/") and not args.push_to_hub
    assert args.gradient_checkpointing and args.seed == 42


def global_batch(recipe: Path, args) -> int:
    header = recipe.read_text().splitlines()[:6]
    line = next(line for line in header if "Global batch" in line)
    gpus = int(line.split(" x ")[2].split()[0])
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * gpus


# (beta, mmpo_gamma, learning rate, epochs, scheduler, warmup) from the MMPO paper's Table 8 (DPO) and the authors'
# published rm.yaml (reward models)
MMPO_SETTINGS = {
    "gemma-2b/mmpo/config_full.yaml": (0.01, 2.2, 1e-5, 3, "cosine", 0.3),
    "gemma-2b/mmpo/config_full_shp.yaml": (0.01, 0.15, 1e-5, 3, "cosine", 0.3),
    "gemma-7b/mmpo/config_full.yaml": (0.01, 1.1, 5e-7, 3, "cosine", 0.3),
    "gemma-7b/mmpo/config_full_shp.yaml": (0.01, 0.3, 5e-7, 3, "cosine", 0.3),
    "llama-3-8b/mmpo/config_full.yaml": (0.01, 1.1, 5e-7, 3, "cosine", 0.3),
    "gemma-2b/mmpo-rm/config_full.yaml": (None, 2.2, 1.41e-5, 3, "linear", 0.0),
    "gemma-7b/mmpo-rm/config_full.yaml": (None, 1.1, 3e-6, 2, "linear", 0.0),
    "llama-3-8b/mmpo-rm/config_full.yaml": (None, 1.1, 3e-6, 2, "linear", 0.0),
}


@pytest.mark.parametrize("name", sorted(MMPO_SETTINGS))
def test_mmpo_recipes_match_the_paper(name):
    recipe = RECIPES / name
    script, args, _, _ = parse(recipe)
    beta, gamma, lr, epochs, scheduler, warmup = MMPO_SETTINGS[name]
    assert getattr(args, "beta", None) == beta and args.mmpo_gamma == gamma and args.learning_rate == lr
    assert args.num_train_epochs == epochs and args.lr_scheduler_type.value == scheduler
    assert args.warmup_steps == warmup and args.max_length == 1024
    assert global_batch(recipe, args) == (32 if "rm" in name and "2b" not in name else 64)
    shp = name.endswith("_shp.yaml")
    assert script.dataset_name == ("stanfordnlp/SHP" if shp else "allenai/ultrafeedback_binarized_cleaned")
    assert script.dataset_adapter == ("shp" if shp else "ultrafeedback_binarized")
    assert script.conversational == shp


# (model, beta, gamma_beta_ratio, tau, learning rate) from the gamma-PO paper's Table 7
GAMMA_PO_SETTINGS = {
    "llama-3-8b-instruct": ("meta-llama/Meta-Llama-3-8B-Instruct", 10.0, 0.4, 10.0, 1e-6),
    "mistral-7b-instruct": ("mistralai/Mistral-7B-Instruct-v0.2", 2.5, 0.15, 10.0, 6e-7),
    "gemma-2-9b-it": ("google/gemma-2-9b-it", 10.0, 0.5, 20.0, 8e-7),
    "qwen2.5-7b-instruct": ("Qwen/Qwen2.5-7B-Instruct", 10.0, 0.3, 3.0, 1e-6),
}


@pytest.mark.parametrize("folder", sorted(GAMMA_PO_SETTINGS))
def test_gamma_po_recipes_match_the_paper(folder):
    recipe = RECIPES / folder / "gamma-simpo" / "config_full.yaml"
    script, args, model, _ = parse(recipe)
    name, beta, ratio, tau, lr = GAMMA_PO_SETTINGS[folder]
    assert model.model_name_or_path == name
    assert (args.beta, args.gamma_beta_ratio, args.tau, args.learning_rate) == (beta, ratio, tau, lr)
    assert args.reward_type == "simpo" and args.mmpo_gamma is None and args.margin_mode == "published"
    assert global_batch(recipe, args) == 128
    assert args.num_train_epochs == 1 and args.warmup_steps == 0.1 and args.lr_scheduler_type.value == "cosine"
    assert args.max_length == 2048 and script.dataset_adapter == "reward_annotated"


# ---- accelerate configurations -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["deepspeed_zero3", "zero3", "zero2", "multi_gpu", "ddp", "fsdp"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    path = ACCELERATE_CONFIGS / f"{name}.yaml"
    config = load_config_from_file(str(path))  # rejects unknown top-level keys
    assert config.mixed_precision == "bf16" and config.num_machines == 1
    # Nested DeepSpeed / FSDP keys are `accelerate launch` options: an unknown one would be ignored silently
    options = {o.lstrip("-") for o in launch_command_parser()._option_string_actions}
    nested = {**(config.deepspeed_config or {}), **(config.fsdp_config or {})}
    assert set(nested) <= options, set(nested) - options
    expected = "DEEPSPEED" if "zero" in name else {"fsdp": "FSDP"}.get(name, "MULTI_GPU")
    assert config.distributed_type.value == expected


def test_handbook_names_are_the_same_configs():
    def settings(name):
        return yaml.safe_load((ACCELERATE_CONFIGS / f"{name}.yaml").read_text())

    assert settings("zero3") == settings("deepspeed_zero3")
    assert settings("ddp") == settings("multi_gpu")


def test_beta_dpo_recipe_matches_the_authors_run():
    recipe = RECIPES / "pythia-2.8b/beta-dpo/config_full.yaml"
    script, args, model, _ = parse(recipe)
    # junkangwu/beta-DPO README: beta 0.1, a 0.6 on the unscaled gap (= 6.0 x beta here), filtering ratio 0.2
    assert (args.beta, args.beta_dpo_alpha * args.beta, args.beta_dpo_keep_ratio) == (0.1, pytest.approx(0.6), 0.8)
    assert args.beta_dpo_momentum == 0.9 and args.margin_knobs() == ["beta_dpo_alpha=6.0 (beta-DPO)"]
    # its config/config.yaml: lr 5e-7, RMSprop, 150 warmup steps, clip 10, length 512, 1 epoch; batch 64
    assert (args.learning_rate, args.optim.value, args.warmup_steps, args.max_grad_norm) == (5e-7, "rmsprop", 150, 10)
    assert args.max_length == 512 and args.num_train_epochs == 1 and global_batch(recipe, args) == 64
    assert script.dataset_name == "Anthropic/hh-rlhf" and model.model_name_or_path == "EleutherAI/pythia-2.8b"
