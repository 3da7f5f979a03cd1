# Copyright 2025 The trl-margins developers. Apache-2.0.
"""DPO with Margin Matching Preference Optimization (MMPO soft targets), as `trl/scripts/dpo.py` with `MMPOTrainer`.

With no arguments, trains SmolLM2-135M-Instruct on the bundled human-rated VADER pairs, offline and on a CPU, then
prints the held-out preference accuracy and calibration before and after training:

    python examples/run_mmpo.py
    accelerate launch examples/run_mmpo.py

With a recipe (alignment-handbook layout; `--key value` overrides it):

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml \\
        examples/run_mmpo.py recipes/gemma-7b/mmpo/config_full.yaml

Or with TRL's own arguments:

    python examples/run_mmpo.py --model_name_or_path Qwen/Qwen2-0.5B-Instruct \\
        --dataset_name allenai/ultrafeedback_binarized_cleaned --dataset_adapter ultrafeedback_binarized \\
        --dataset_train_split train_prefs --dataset_test_split test_prefs --mmpo_gamma 1.1 --beta 0.01 \\
        --learning_rate 5e-7 --output_dir Qwen2-0.5B-MMPO
"""

import sys

from trl_margins.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main("mmpo"))
