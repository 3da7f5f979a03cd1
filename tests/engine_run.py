"""Run by tests/test_engines.py: every trainer scenario in sequence, in one process or under `accelerate launch`
(DDP, ZeRO-2, ZeRO-3, FSDP2 on 2 CPU processes), each rank writing its results to OUT_DIR/<scenario>.rank<R>.json.

    python tests/engine_run.py MODELS_DIR OUT_DIR [--resume] [--fsdp-on-cpu] SCENARIO [SCENARIO ...]

The global batch is the same for any number of processes (`per_device_train_batch_size` = GLOBAL_BATCH / world
size), so a 2-process run must log the losses of the 1-process one. With `--resume` each scenario also restarts
from its step-`SAVE_STEP` checkpoint in a fresh trainer, and records what the resumed run logs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GLOBAL_BATCH = 4
MAX_STEPS = 4
SAVE_STEP = 2
REF_DIR, POLICY_DIR, REWARD_DIR = "ref", "policy", "reward"  # under MODELS_DIR, with {train,eval}.jsonl, written by
# tests/test_engines.py


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _args(config_class, out_dir: str, micro_batches: int = 1, **overrides):
    from tests.helpers import base_args

    per_device, remainder = divmod(GLOBAL_BATCH // micro_batches, _world_size())
    assert remainder == 0, f"a global batch of {GLOBAL_BATCH} does not split over {_world_size()} processes"
    args = base_args(
        out_dir,
        max_steps=MAX_STEPS,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        gradient_accumulation_steps=micro_batches,
        save_strategy="steps",
        save_steps=SAVE_STEP,
        **overrides,
    )
    if not hasattr(config_class, "beta"):  # a DPO knob, which the reward model's config does not take
        args.pop("beta")
    return config_class(**args)


def _dataset(models: str, split: str = "train"):
    from datasets import load_dataset

    # Read from a file, as a user's run reads it: TRL's `precompute_ref_log_probs` shares its cache file between ranks
    # through the dataset's cache directory, which an in-memory dataset lacks (each process has its own temp dir)
    return load_dataset("json", data_files=os.path.join(models, f"{split}.jsonl"), split="train")


def mmpo_ref(models: str, out_dir: str):
    """MMPO with a separate reference model (not the policy's initial weights)."""
    from transformers import AutoModelForCausalLM

    from trl_margins import MMPOConfig, MMPOTrainer

    args = _args(MMPOConfig, out_dir, mmpo_gamma=1.0)
    # Loaded after the config, as a user script does: under ZeRO-3 the config makes `from_pretrained` partition it
    ref_model = AutoModelForCausalLM.from_pretrained(os.path.join(models, REF_DIR))
    return MMPOTrainer(os.path.join(models, POLICY_DIR), ref_model, args=args, train_dataset=_dataset(models))


def _gamma_po(models: str, out_dir: str, micro_batches: int = 1, eval_dataset=None, **overrides):
    from trl_margins import GammaPOConfig, GammaPOTrainer

    args = _args(
        GammaPOConfig, out_dir, micro_batches, tau=1.0, margin_sample_size=12, margin_queue_size=10, **overrides
    )
    return GammaPOTrainer(
        os.path.join(models, POLICY_DIR), args=args, train_dataset=_dataset(models), eval_dataset=eval_dataset
    )


def gamma_dpo(models: str, out_dir: str):
    return _gamma_po(models, out_dir, beta=1.0)


def gamma_simpo(models: str, out_dir: str):
    return _gamma_po(models, out_dir, reward_type="simpo", beta=2.0, gamma_beta_ratio=0.5)


def beta_dpo(models: str, out_dir: str):
    """beta-DPO: the filter and the moving averages over the global batch, one mask on every rank."""
    from trl_margins import MMPOConfig, MMPOTrainer

    args = _args(MMPOConfig, out_dir, beta=1.0, beta_dpo_alpha=2.0)
    return MMPOTrainer(os.path.join(models, POLICY_DIR), args=args, train_dataset=_dataset(models))


def reward(models: str, out_dir: str):
    from trl_margins import MMPORewardConfig, MMPORewardTrainer

    args = _args(MMPORewardConfig, out_dir, mmpo_gamma=1.0)
    return MMPORewardTrainer(os.path.join(models, REWARD_DIR), args=args, train_dataset=_dataset(models))


def mmpo_lora(models: str, out_dir: str):
    """MMPO on a LoRA adapter: the reference is the adapter-disabled base."""
    from peft import LoraConfig

    from trl_margins import MMPOConfig, MMPOTrainer

    args = _args(MMPOConfig, out_dir, mmpo_gamma=1.0, learning_rate=1e-2)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    return MMPOTrainer(
        os.path.join(models, POLICY_DIR), args=args, train_dataset=_dataset(models), peft_config=peft_config
    )


def mmpo_precompute(models: str, out_dir: str):
    from trl_margins import MMPOConfig, MMPOTrainer

    args = _args(MMPOConfig, out_dir, mmpo_gamma=1.0, precompute_ref_log_probs=True)
    return MMPOTrainer(os.path.join(models, POLICY_DIR), args=args, train_dataset=_dataset(models))


def gamma_dpo_accumulation(models: str, out_dir: str):
    """2 micro-batches per optimizer step: each solves its margins and pushes its gaps."""
    return _gamma_po(models, out_dir, micro_batches=2, beta=1.0)


def gamma_simpo_eval(models: str, out_dir: str):
    """An evaluation every 2 steps: it reads the queue but must not change it, nor what training draws."""
    return _gamma_po(
        models, out_dir, eval_dataset=_dataset(models, "eval"), eval_strategy="steps", eval_steps=2,
        reward_type="simpo", beta=2.0, gamma_beta_ratio=0.5,
    )  # fmt: skip


SCENARIOS: dict[str, Callable] = {
    f.__name__: f
    for f in (mmpo_ref, gamma_dpo, gamma_simpo, reward, mmpo_lora, mmpo_precompute, gamma_dpo_accumulation,
              gamma_simpo_eval, beta_dpo)
}  # fmt: skip


def _history(trainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]


def _queue(trainer) -> list[float] | None:
    """The state carried across steps: gamma-PO's queue, or beta-DPO's moving averages (mean, std, updates)."""
    queue = getattr(trainer, "margin_queue", None)
    if queue is not None:
        return queue.values().tolist()
    stats = getattr(trainer, "gap_statistics", None)
    return None if stats is None else [stats.mean.item(), stats.std.item(), float(stats.updates)]


def _sharding(trainer) -> dict:
    """How the trained model is really held, so that a silent fallback to plain data parallel fails the test."""
    import torch
    from torch.distributed.tensor import DTensor

    accelerator = trainer.accelerator
    params = list(trainer.model.parameters())
    description = {
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "dtensor_params": sum(isinstance(p, DTensor) for p in params),
        "params": len(params),
    }
    if accelerator.state.deepspeed_plugin is not None:
        description["zero_stage"] = accelerator.state.deepspeed_plugin.zero_stage
        # Under ZeRO-3 each rank keeps its own part of a partitioned parameter; parameters below DeepSpeed's
        # `stage3_param_persistence_threshold` (1e5 elements by default) stay whole on every rank
        description["zero3_partitioned_params"] = sum(
            hasattr(p, "ds_tensor") and p.ds_tensor.numel() < p.ds_numel for p in params
        )
    if torch.distributed.is_initialized():
        description["backend"] = torch.distributed.get_backend()
    return description


def run_scenario(name: str, models: str, out_dir: str, resume: bool) -> dict:
    start, start_cpu = time.perf_counter(), time.process_time()
    trainer = SCENARIOS[name](models, os.path.join(out_dir, name, "full"))
    trainer.train()
    result = {
        "loss": _history(trainer, "loss"),
        "eval_loss": _history(trainer, "eval_loss"),
        "queue": _queue(trainer),
        "engine": _sharding(trainer),
    }
    if resume:
        checkpoint = os.path.join(out_dir, name, "full", f"checkpoint-{SAVE_STEP}")
        resumed = SCENARIOS[name](models, os.path.join(out_dir, name, "resumed"))
        resumed.train(resume_from_checkpoint=checkpoint)
        result["resumed_loss"] = _history(resumed, "loss")
        result["resumed_queue"] = _queue(resumed)
        del resumed
    del trainer
    # Timings are for the report (CI logs), never asserted
    result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - start_cpu
    print(f"engine_run: {name} took {result['seconds']:.1f} s ({result['cpu_seconds']:.1f} s CPU)", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models")
    parser.add_argument("out_dir")
    parser.add_argument("scenarios", nargs="+", choices=sorted(SCENARIOS))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--fsdp-on-cpu", action="store_true")
    options = parser.parse_args()
    if options.fsdp_on_cpu:
        from tests.fsdp_on_cpu import enable_fsdp_on_cpu

        enable_fsdp_on_cpu()
    rank = int(os.environ.get("RANK", "0"))
    for name in options.scenarios:
        result = run_scenario(name, options.models, options.out_dir, options.resume)
        with open(os.path.join(options.out_dir, f"{name}.rank{rank}.json"), "w") as f:
            json.dump(result, f)
    # Tear the process group down here rather than at interpreter exit, where gloo's threads may still be running
    # while static objects are destroyed (the one "terminate called without an active exception" a ZeRO-3 run
    # once showed after train() had returned)
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
