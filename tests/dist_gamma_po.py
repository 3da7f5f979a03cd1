"""Run by tests/test_gamma_po.py under `torchrun --nproc_per_node 2`: a few gamma-PO steps on 2 CPU processes, then
each rank writes its margin queue and its view of the last global batch's margins to OUT_DIR/rank{R}.pt."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.helpers import base_args, make_preference_dataset  # noqa: E402
from trl_margins import GammaPOConfig, GammaPOTrainer  # noqa: E402


def main(model_dir: str, out_dir: str) -> None:
    args = GammaPOConfig(
        **base_args(
            out_dir, max_steps=3, per_device_train_batch_size=2, gamma_beta_ratio=0.5, tau=2.0, margin_sample_size=8
        )
    )
    trainer = GammaPOTrainer(model_dir, args=args, train_dataset=make_preference_dataset(24, seed=1))
    seen = []
    original = trainer.target_margins

    def recording(reward_gaps, mode):
        local = original(reward_gaps, mode)
        seen.append(trainer.accelerator.gather(local))  # the global batch's margins as this rank sees them
        return local

    trainer.target_margins = recording
    trainer.train()
    rank = trainer.accelerator.process_index
    torch.save(
        {
            "queue": trainer.margin_queue.values(),
            "margins": torch.stack(seen),
            "world": trainer.accelerator.num_processes,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    # Tear the gloo group down before the interpreter exits: left to exit-time destructors, its threads can abort
    # the process ("terminate called without an active exception", seen once in the TRL 1.9 leg of .ci/run).
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
