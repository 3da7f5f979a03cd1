# Copyright 2025 The trl-margins developers. Apache-2.0.
"""On-policy pairs with reward-model margins, then MMPO: the gamma-SimPO recipes' data, made here end to end.

    prompts -> `trl-margins generate` (N completions each, sampled from the policy with its chat template)
            -> `trl-margins annotate` (a reward model scores each one)
            -> `trl-margins select --dataset_adapter reward_annotated` (best vs worst per prompt, as chat turns;
               prompts whose completions all tie are skipped; then the pairs whose margin passes the rule; every
               drop counted)
            -> `trl-margins mmpo` on the kept pairs, with their reward-model margins.

Offline, on the bundled VADER prompts and SmolLM2, with a MiniLM reward model trained on the VADER pairs by
`examples/run_mmpo_rm.py` (the same as `trl-margins reward`; the README's section "Margins from a reward model" has
the commands one by one, with timings and results on 2 CPU cores):

    python examples/run_mmpo_rm.py --model_name_or_path trl_margins:minilm --dataset_name trl_margins:vader \\
        --max_train_samples 512 --max_steps 32 --per_device_train_batch_size 16 --learning_rate 2e-4 \\
        --lr_scheduler_type linear --warmup_steps 3 --max_length 64 --mmpo_gamma 1.0 --eval_strategy no \\
        --preference_eval false --save_strategy no --report_to none --output_dir vader-rm
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

from trl_margins.cli import main as cli_main
from trl_margins.cli import train_main
from trl_margins.data.assets import BUNDLED_DATASET, BUNDLED_MODEL


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward_model", required=True, help="Path or hub id of a single-output reward model.")
    parser.add_argument("--policy", default=BUNDLED_MODEL, help="Policy to sample from and train (default SmolLM2).")
    parser.add_argument("--dataset", default=BUNDLED_DATASET, help="Where the prompts come from.")
    parser.add_argument("--split", default="train")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_prompts", type=int, default=4, help="Distinct prompts (VADER has 4).")
    parser.add_argument("--num_completions", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--min_margin", type=float, help="Keep pairs whose margin is above this (default 0).")
    rule.add_argument("--min_quantile", type=float, help="Keep pairs whose margin is at or above this quantile.")
    parser.add_argument("--conversational", action="store_true", help="Score with the reward model's chat template.")
    return parser.parse_args(ours), rest


def main(argv: list[str] | None = None) -> int:
    args, train_overrides = parse(sys.argv[1:] if argv is None else argv)
    out = Path(args.output_dir)
    generated, annotated_dir, kept = out / "generated.jsonl", out / "annotated", out / "pairs" / "train.jsonl"
    rule = (
        ["--min_quantile", str(args.min_quantile)]
        if args.min_quantile is not None
        else ["--min_margin", str(0.0 if args.min_margin is None else args.min_margin)]
    )
    steps = [
        ["generate", "--policy", args.policy, "--dataset", args.dataset, "--split", args.split,
         "--output", str(generated), "--max_prompts", str(args.num_prompts),
         "--num_completions", str(args.num_completions), "--max_new_tokens", str(args.max_new_tokens)],
        ["annotate", "--reward_model", args.reward_model, "--dataset", str(generated), "--output_dir",
         str(annotated_dir), *(["--conversational", "true"] if args.conversational else [])],
        ["select", "--dataset", str(annotated_dir / "annotated.jsonl"), "--dataset_adapter", "reward_annotated",
         "--output", str(kept), *rule],
    ]  # fmt: skip
    for step in steps:
        if status := cli_main(step):
            return status
    # A pair per prompt: a handful of pairs offline, so a few steps, batch 2, and no held-out evaluation
    return train_main(
        "mmpo",
        ["--model_name_or_path", args.policy, "--dataset_name", str(kept), "--output_dir", str(out / "mmpo"),
         "--mmpo_gamma", "1.0", "--max_steps", "2", "--per_device_train_batch_size", "2", "--eval_strategy", "no",
         "--preference_eval", "false", "--save_strategy", "no", "--report_to", "none", *train_overrides],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
