"""Run by tests/test_beta_dpo.py under `torchrun --nproc_per_node 2`: a few beta-DPO steps on 2 CPU processes, then
each rank writes its running statistics and its view of every step's global gaps and keep weights to
OUT_DIR/rank{R}.pt."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.helpers import base_args, make_preference_dataset  # noqa: E402
from trl_margins import MMPOConfig, MMPOTrainer  # noqa: E402


def main(model_dir: str, out_dir: str) -> None:
    args = MMPOConfig(**base_args(out_dir, max_steps=3, per_device_train_batch_size=2, beta=1.0, beta_dpo_alpha=2.0))
    trainer = MMPOTrainer(model_dir, args=args, train_dataset=make_preference_dataset(24, seed=1))
    gaps, weights = [], []
    original = trainer.beta_dpo_scale

    def recording(reward_gaps, mode):
        scale, local_weights = original(reward_gaps, mode)
        gaps.append(trainer.accelerator.gather(reward_gaps.detach()))  # the global batch as this rank sees it
        weights.append(trainer.accelerator.gather(local_weights))
        return scale, local_weights

    trainer.beta_dpo_scale = recording
    trainer.train()
    stats = trainer.gap_statistics
    torch.save(
        {
            "mean": stats.mean.cpu(),
            "std": stats.std.cpu(),
            "updates": stats.updates,
            "gaps": torch.stack(gaps).cpu(),
            "weights": torch.stack(weights).cpu(),
            "world": trainer.accelerator.num_processes,
        },
        os.path.join(out_dir, f"rank{trainer.accelerator.process_index}.pt"),
    )
    # Tear the gloo group down before the interpreter exits: left to exit-time destructors, its threads can abort
    # the process ("terminate called without an active exception", seen once in the TRL 1.9 leg of .ci/run).
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
