# Copyright 2025 The trl-margins developers. Apache-2.0.
"""Reward modelling with MMPO soft targets (`MMPORewardTrainer`), as `trl/scripts/reward.py`.

With no arguments, trains a SmolLM2-135M-Instruct reward model on the bundled VADER pairs, offline and on a CPU. With a
recipe (alignment-handbook layout; `--key value` overrides it):

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml \\
        examples/run_mmpo_rm.py recipes/gemma-7b/mmpo-rm/config_full.yaml
"""

import sys

from trl_margins.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main("reward"))
