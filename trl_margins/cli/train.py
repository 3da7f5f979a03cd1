"""`trl-margins mmpo|gamma-po|reward|kto`: one training script for MMPO, gamma-PO, MMPO reward models and KTO with
MMPO's weights, driven by alignment-handbook style recipes.

`examples/run_mmpo.py`, `examples/run_gamma_po.py`, `examples/run_mmpo_rm.py` and the `trl-margins` console command are
thin wrappers around `train_main`. The arguments come from `trl_margins.cli.arguments`; this module loads the splits
they name, builds the trainer of the mode (`MODES`), trains (resuming from the last checkpoint), saves, and runs the
evaluations the recipe asks for, `preference_eval` included (`trl_margins.evaluation.before_after`).
"""

import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset, DatasetDict, IterableDataset
from transformers import AutoTokenizer, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import DatasetMixtureConfig, ModelConfig, get_peft_config, get_quantization_config

from .._compat import process_state, settle_attention
from ..data.adapters import apply_dataset_adapter
from ..data.formatting import as_conversational, unpair_preferences
from ..data.loading import check_split, load_source
from ..data.mixtures import ColumnNeeds, handbook_mixer, handbook_mixture, trl_mixture
from ..errors import UsageError, run_command
from ..evaluation.before_after import constant_half, evaluate_pairs, format_comparison, preference_targets
from ..evaluation.calibration import CALIBRATION_BINS
from .arguments import MODES, MarginScriptArguments, make_parser, parse_args
from .output import check_writable
from .recipe_keys import REMOVED_KEYS, RENAMED_KEYS

logger = logging.getLogger(__name__)


# ---- data -----------------------------------------------------------------------------------------------------------
def score_columns(training_args: TrainingArguments, script_args: MarginScriptArguments) -> ColumnNeeds:
    """`(required, optional)` columns that must survive a mixture's column selection.

    The margin columns are required when `mmpo_gamma` is set (and no adapter makes them), kept if present otherwise.
    """
    margin = getattr(training_args, "margin_column", None)
    if margin is not None:
        needed = [margin]
    else:
        needed = [getattr(training_args, name, None) for name in ("score_chosen_column", "score_rejected_column")]
        needed = [c for c in needed if c is not None]
    optional = [script_args.target_prob_column] if script_args.target_prob_column else []
    if script_args.dataset_adapter is not None or getattr(training_args, "mmpo_gamma", None) is None:
        return [], needed + optional
    return needed, optional


def load_splits(
    script_args: MarginScriptArguments, training_args: TrainingArguments, dataset_args: DatasetMixtureConfig
) -> tuple[Dataset | IterableDataset, Dataset | IterableDataset | None]:
    """The train and evaluation splits, from whichever dataset source the arguments name, after the adapter."""
    needed = score_columns(training_args, script_args)
    train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
    if dataset_args.datasets:
        dataset, train_split, test_split = trl_mixture(dataset_args, needed), "train", "test"
    elif script_args.dataset_mixture is not None:
        mixture, streaming = script_args.dataset_mixture, script_args.dataset_streaming
        dataset, train_split, test_split = handbook_mixture(mixture, needed, streaming), "train", "test"
    elif script_args.dataset_mixer is not None:
        mixed = handbook_mixer(script_args.dataset_mixer, script_args.dataset_splits, script_args.dataset_configs)
        dataset, train_split, test_split = mixed, "train", "test"
    elif script_args.dataset_name is not None:
        dataset = load_source(
            script_args.dataset_name, script_args.dataset_config, streaming=script_args.dataset_streaming
        )
    else:
        raise UsageError("Name a dataset: `dataset_name`, `dataset_mixture`, `dataset_mixer` or TRL's `datasets`.")
    if isinstance(dataset, (Dataset, IterableDataset)):  # a single local file: one split
        dataset = DatasetDict({train_split: dataset})
    check_split(dataset, train_split, "--dataset_train_split")
    train, test = dataset[train_split], dataset.get(test_split)

    adapter_kwargs = script_args.dataset_adapter_kwargs or {}
    train = apply_dataset_adapter(script_args.dataset_adapter, train, **adapter_kwargs)
    if test is not None:
        test = apply_dataset_adapter(script_args.dataset_adapter, test, **adapter_kwargs)
    train = _head(train, script_args.max_train_samples)
    test = _head(test, script_args.max_eval_samples)
    if script_args.conversational:
        train = train.map(as_conversational)
        test = test.map(as_conversational) if test is not None else None
    return train, test


def _head(dataset, n: int | None):
    if dataset is None or n is None:
        return dataset
    if isinstance(dataset, IterableDataset):
        return dataset.take(n)
    return dataset.select(range(min(n, len(dataset))))


# ---- the run --------------------------------------------------------------------------------------------------------
def last_complete_checkpoint(folder: str) -> str | None:
    """The newest `checkpoint-N` in `folder` that its run finished writing, or None.

    The Trainer writes `trainer_state.json` last, so a checkpoint without a readable one was cut short (the run was
    killed while saving it). transformers' `get_last_checkpoint` would pick it, and resuming would fail on the missing
    state; it is passed over, with a warning, and training later writes that step's checkpoint again."""
    pattern = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
    found = [(int(m[1]), name) for name in os.listdir(folder) if (m := pattern.fullmatch(name))]
    for _, name in sorted(found, reverse=True):
        path = os.path.join(folder, name)
        try:
            with open(os.path.join(path, "trainer_state.json")) as f:
                json.load(f)
        except (OSError, ValueError):
            logger.warning("%s is incomplete (a run stopped while saving it): not resuming from it.", path)
            continue
        return path
    return None


def _setup_logging(training_args: TrainingArguments) -> None:
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S")
    level = training_args.get_process_log_level()
    logging.getLogger("trl_margins").setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def _tokenizer(model_args: ModelConfig, script_args: MarginScriptArguments, training_args: TrainingArguments):
    name = script_args.tokenizer_name_or_path or model_args.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name, revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code
        )
    except OSError as e:  # not on the hub, the hub unreachable, or a folder without a tokenizer
        reason = " ".join(str(e).split())[:400]
        raise UsageError(f"could not load the tokenizer of {name}: {reason}") from e
    if script_args.chat_template is not None:
        tokenizer.chat_template = script_args.chat_template
    return tokenizer


def run(mode: str, script_args, training_args, model_args, dataset_args, end: bool = True) -> dict[str, Any]:
    """Train (resuming from the last checkpoint in `output_dir`), save, evaluate. Returns what it reports. With
    `end`, the trackers and the process group finish too (a caller that trains again, such as `rounds`, says no)."""
    started = time.monotonic()
    _setup_logging(training_args)
    process_state()  # several CPU processes form one gloo group, or stop here
    check_writable(training_args.output_dir, "--output_dir")
    set_seed(training_args.seed)
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and not script_args.overwrite_output_dir and os.path.isdir(training_args.output_dir):
        checkpoint = last_complete_checkpoint(training_args.output_dir)
        if checkpoint is not None:
            logger.warning("Resuming from the last checkpoint in the output folder, %s.", checkpoint)

    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    settle_attention(model_init_kwargs)
    training_args.model_init_kwargs = model_init_kwargs
    if mode == "reward" and model_args.use_peft and model_args.lora_task_type == "CAUSAL_LM":
        logger.info("A reward model is a sequence classifier: LoRA task type SEQ_CLS.")
        model_args.lora_task_type = "SEQ_CLS"

    tokenizer = _tokenizer(model_args, script_args, training_args)
    train_dataset, eval_dataset = load_splits(script_args, training_args, dataset_args)
    if mode == "kto":
        if script_args.preference_eval:
            raise UsageError("`preference_eval` scores preference pairs; `trl-margins kto` trains on binary feedback.")
        # Pairs with scores (the bundled VADER pairs, UltraFeedback) become one desirable and one undesirable row each
        train_dataset, eval_dataset = (
            None if d is None else unpair_preferences(d, training_args.score_column)
            for d in (train_dataset, eval_dataset)
        )
    wants_eval = training_args.eval_strategy != "no"
    if (wants_eval or script_args.preference_eval) and eval_dataset is None:
        raise UsageError(
            f"Evaluation needs a `{script_args.dataset_test_split}` split, which the dataset lacks: name one with "
            "`dataset_test_split`, or set `eval_strategy: no` (and `preference_eval: false`)."
        )

    ref_model = {}
    if script_args.ref_model_name_or_path is not None:
        from transformers import AutoModelForCausalLM

        ref_kwargs = {k: v for k, v in model_init_kwargs.items() if k not in ("revision",)}
        ref_model["ref_model"] = AutoModelForCausalLM.from_pretrained(script_args.ref_model_name_or_path, **ref_kwargs)
    trainer = MODES[mode].trainer_class(
        model=model_args.model_name_or_path,
        **ref_model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if wants_eval else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    if script_args.ignore_bias_buffers:  # torch distributed hack, as in TRL's scripts
        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]
    main_process = trainer.accelerator.is_main_process
    report: dict[str, Any] = {"mode": mode, "output_dir": training_args.output_dir, "resumed_from": checkpoint}

    targets, before = {}, None
    if script_args.preference_eval:
        targets = preference_targets(eval_dataset, training_args, script_args.target_prob_column)
        if main_process:
            print(f"Scoring {len(eval_dataset)} held-out pairs before training.")
        reference: dict[str, torch.Tensor] = {}  # the initial policy's log-probs: the DPO reference's
        before = evaluate_pairs(trainer, eval_dataset, mode, targets, before_training=True, reference=reference)

    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = train_result.metrics
    metrics["train_samples"] = len(train_dataset) if isinstance(train_dataset, Dataset) else None
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
    report["train"] = metrics

    if wants_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        report["eval"] = metrics
    if script_args.preference_eval:
        after = evaluate_pairs(trainer, eval_dataset, mode, targets, before_training=False, reference=reference)
        floor = constant_half(targets, len(eval_dataset), getattr(training_args, "calibration_bins", CALIBRATION_BINS))
        report["preference_metrics"] = {"before": before, "after": after, "constant_half": floor}
        if main_process:
            with open(os.path.join(training_args.output_dir, "preference_metrics.json"), "w") as f:
                json.dump(report["preference_metrics"], f, indent=2)
            title = f"Held-out preference metrics ({len(eval_dataset)} pairs):"
            print(format_comparison(before, after, title, floor))
            command = evaluate_command(mode, script_args, training_args, model_args)
            if command is not None:
                print(f"The same 'after' numbers from the saved model: {command}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    if main_process:
        minutes = (time.monotonic() - started) / 60
        print(f"Model saved to {os.path.abspath(training_args.output_dir)} ({minutes:.1f} min in all).")
    if end and hasattr(trainer, "end"):  # transformers >= 5.18: finish the trackers and the process group
        trainer.end()
    return report


def evaluate_command(mode: str, script_args, training_args, model_args) -> str | None:
    """The `trl-margins evaluate` command line that scores the saved model on the same held-out pairs, and so prints
    the same "after" numbers; None where the pairs are not one stored dataset as it is (a mixture, an adapter)."""
    if script_args.dataset_name is None or script_args.dataset_adapter is not None or script_args.conversational:
        return None
    parts = ["trl-margins evaluate", f"--model {training_args.output_dir}"]
    if mode == "reward":
        parts.append("--model_type rm")
    elif training_args.simpo:
        parts.append(f"--model_type simpo --beta {training_args.beta:g}")
    else:
        parts.append(f"--ref_model {model_args.model_name_or_path} --beta {training_args.beta:g}")
    parts.append(f"--dataset {script_args.dataset_name} --split {script_args.dataset_test_split}")
    if script_args.max_eval_samples is not None:
        parts.append(f"--max_samples {script_args.max_eval_samples}")
    if training_args.max_length is not None:
        parts.append(f"--max_length {training_args.max_length}")
    if script_args.target_prob_column is not None:
        parts.append(f"--prob_column {script_args.target_prob_column}")
    elif getattr(training_args, "mmpo_gamma", None) is not None and training_args.margin_column is None:
        parts.append(f"--gamma {training_args.mmpo_gamma:g}")
        parts.append(f"--score_chosen_column {training_args.score_chosen_column}")
        parts.append(f"--score_rejected_column {training_args.score_rejected_column}")
    return " ".join(parts)


# ---- entry points ---------------------------------------------------------------------------------------------------
def _help(mode: str) -> str:
    return (
        f"usage: trl-margins {mode} [RECIPE.yaml | --config RECIPE.yaml] [--key value | --key=value ...]\n\n"
        f"{MODES[mode].description}. With neither a recipe nor a model or dataset, runs the offline demo\n"
        "(SmolLM2-135M-Instruct on the bundled VADER pairs, CPU-sized).\n"
        "Renamed keys are mapped with a warning: "
        + ", ".join(f"{old} -> {new}" for old, (new, _) in RENAMED_KEYS.items())
        + f".\nIgnored keys: {', '.join(REMOVED_KEYS)}.\n\nKeys (TRL's argument classes plus this package's):"
    )


def train_main(mode: str, argv: Sequence[str] | None = None) -> int:
    """Parse a recipe and overrides for `mode` ("mmpo", "gamma-po", "reward" or "kto") and run it. Returns an exit
    status.

    A configuration or data error (`TrlMarginsError`), found while parsing or during the run, is printed as one line
    and gives status 2 (the command line or recipe must change) or 1 (the data must); `--debug` re-raises it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(_help(mode))
        make_parser(mode).print_help()
        return 0
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    return run_command(mode, argv, lambda rest: run(mode, *parse_args(mode, rest)))
