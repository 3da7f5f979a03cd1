# Copyright 2025 The trl-margins developers. Apache-2.0.
"""On-policy pairs with reward-model margins, then MMPO: the gamma-SimPO recipes' data, made here end to end.

    prompts -> `trl-margins generate` (N completions each, from the policy)
            -> `trl-margins annotate` (a reward model scores each one)
            -> the `reward_annotated` adapter (best vs worst; prompts whose completions all tie are skipped, counted)
            -> selection by margin (`trl_margins.selection`; every drop counted)
            -> `trl-margins mmpo` on the pairs, with their reward-model margins.

Offline, on the bundled VADER prompts and SmolLM2, with a reward model trained on VADER by `trl-margins reward`:

    trl-margins reward --output_dir vader-rm
    python examples/on_policy_pairs.py --reward_model vader-rm --output_dir on-policy

With a hub policy and reward model on a GPU:

    python examples/on_policy_pairs.py --policy HuggingFaceTB/SmolLM2-1.7B-Instruct \\
        --reward_model Skywork/Skywork-Reward-V2-Llama-3.1-8B --conversational \\
        --dataset HuggingFaceH4/ultrafeedback_binarized --split test_prefs --num_prompts 512 \\
        --num_completions 5 --max_new_tokens 512 --output_dir on-policy -- --max_steps 100 --bf16 true

Arguments after `--` go to `trl-margins mmpo` (they override the ones set here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from datasets import load_dataset

from trl_margins.adapters import apply_dataset_adapter
from trl_margins.assets import BUNDLED_DATASET, BUNDLED_MODEL
from trl_margins.cli import main as cli_main
from trl_margins.cli import train_main
from trl_margins.selection import select_by_margin


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward_model", required=True, help="Path or hub id of a single-output reward model.")
    parser.add_argument("--policy", default=BUNDLED_MODEL, help="Policy to sample from and train (default SmolLM2).")
    parser.add_argument("--dataset", default=BUNDLED_DATASET, help="Where the prompts come from.")
    parser.add_argument("--split", default="train")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_prompts", type=int, default=4, help="Distinct prompts (VADER has 4).")
    parser.add_argument("--num_completions", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--min_margin", type=float, default=0.0, help="Keep pairs whose margin is above this.")
    parser.add_argument("--conversational", action="store_true", help="Score with the reward model's chat template.")
    return parser.parse_args(ours), rest


def main(argv: list[str] | None = None) -> int:
    args, train_overrides = parse(sys.argv[1:] if argv is None else argv)
    out = Path(args.output_dir)
    generated, annotated_dir, pairs_dir = out / "generated.jsonl", out / "annotated", out / "pairs"
    steps = [
        ["generate", "--policy", args.policy, "--dataset", args.dataset, "--split", args.split,
         "--output", str(generated), "--max_prompts", str(args.num_prompts),
         "--num_completions", str(args.num_completions), "--max_new_tokens", str(args.max_new_tokens)],
        ["annotate", "--reward_model", args.reward_model, "--dataset", str(generated), "--output_dir",
         str(annotated_dir), *(["--conversational", "true"] if args.conversational else [])],
    ]  # fmt: skip
    for step in steps:
        if status := cli_main(step):
            return status
    scored = load_dataset("json", data_files=str(annotated_dir / "annotated.jsonl"), split="train")
    pairs = apply_dataset_adapter("reward_annotated", scored, conversational=args.conversational)
    selected, report = select_by_margin(pairs, min_margin=args.min_margin)
    print(f"pairs: {len(pairs)} from {len(scored)} prompts; select {report}")
    pairs_dir.mkdir(parents=True, exist_ok=True)
    selected.to_json(pairs_dir / "train.jsonl", lines=True, force_ascii=False)
    # A pair per prompt: a handful of pairs offline, so a few steps, batch 2, and no held-out evaluation
    return train_main(
        "mmpo",
        ["--model_name_or_path", args.policy, "--dataset_name", str(pairs_dir), "--output_dir", str(out / "mmpo"),
         "--mmpo_gamma", "1.0", "--max_steps", "2", "--per_device_train_batch_size", "2", "--eval_strategy", "no",
         "--preference_eval", "false", "--save_strategy", "no", "--report_to", "none", *train_overrides],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
