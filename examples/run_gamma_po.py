# Copyright 2025 The trl-margins developers. Apache-2.0.
"""gamma-PO: dynamic per-pair target margins on DPO or SimPO rewards (`GammaPOTrainer`), as `trl/scripts/dpo.py`.

With no arguments, trains gamma-SimPO (with MMPO soft targets) on SmolLM2-135M-Instruct and the bundled VADER pairs,
offline and on a CPU. With a recipe (alignment-handbook layout; `--key value` overrides it):

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml \\
        examples/run_gamma_po.py recipes/llama-3-8b-instruct/gamma-simpo/config_full.yaml
"""

import sys

from trl_margins.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main("gamma-po"))
