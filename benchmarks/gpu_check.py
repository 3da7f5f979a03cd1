#!/usr/bin/env python
"""The Python half of `benchmarks/gpu_check.sh`: a model to time on, and short real training runs.

    python benchmarks/gpu_check.py build-model DIR [--preset qwen2-0.5b]
        A Qwen2 model of Qwen2-0.5B's shape with random weights and a BPE tokenizer trained on the bundled VADER
        sentences, saved to DIR (the GPU machine has no hub; random weights time like trained ones).
    python benchmarks/gpu_check.py train --model DIR [--device cuda --dtype bfloat16] [--trainers ...] [--output F]
        `trainer.train()` for a few steps of each trainer, with the model loaded by the trainer from DIR in `--dtype`
        with SDPA attention, and checks: finite losses, the attention and dtype actually used, gamma-PO's margin
        metrics and a queue holding the pushed gaps, no reference model for reference-free runs. Records step time and
        peak GPU memory. Also runs under `accelerate launch` with the recipes' configs (DeepSpeed ZeRO-2 and ZeRO-3,
        FSDP2): that is the engines check. `--check NAME=CLASS:key=value,...` adds a check from the command line
        (e.g. a knob another branch adds, as its config fields: `--check beta_dpo=MMPOTrainer:beta=0.1,<field>=...`).
    python benchmarks/gpu_check.py train ... --dry-run
        Builds every check's config without loading a model or training: the names, classes and fields are valid.

Exit status 1 when a check fails. Both run on the CPU too (`--device cpu --dtype float32`), which the tests use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (REPO_ROOT, REPO_ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402

TRAIN_CHECKS: dict[str, dict[str, Any]] = {
    "mmpo": dict(cls="MMPOTrainer", beta=0.1, mmpo_gamma=1.0),
    "gamma_dpo": dict(cls="GammaPOTrainer", beta=0.1),
    "gamma_simpo": dict(cls="GammaPOTrainer", beta=2.5, gamma_beta_ratio=0.5, reward_type="simpo"),
    "gamma_mmpo_simpo": dict(
        cls="GammaPOTrainer", beta=2.5, gamma_beta_ratio=0.5, reward_type="simpo", mmpo_gamma=1.0
    ),
    # The newer knobs: per-pair weights (a column WEIGHT_COLUMN, added below), ODPO offsets, MMPO's KTO weights.
    # A knob added later is one more line here (or a `--check` on the command line)
    "mmpo_weights": dict(cls="MMPOTrainer", beta=0.1, weight_column="pair_weight"),
    "odpo": dict(cls="MMPOTrainer", beta=0.1, odpo_alpha=1.0, odpo_scaling="log"),
    "kto": dict(cls="KTOTrainer", beta=0.1),  # stock TRL, the baseline of the next one
    "mmpo_kto": dict(cls="MMPOKTOTrainer", beta=0.1, mmpo_gamma=1.0),
    "beta_dpo": dict(cls="MMPOTrainer", beta=0.1, beta_dpo_alpha=6.0),  # the authors' a = 0.6 at beta 0.1
}
WEIGHT_COLUMN = "pair_weight"


def parse_check(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME=CLASS:key=value,key=value` (values read as JSON where they parse, else as strings) -> (name, spec)."""
    name, _, rest = text.partition("=")
    cls, _, fields = rest.partition(":")
    if not name or not cls:
        raise ValueError(f"--check wants NAME=CLASS:key=value,...; got {text!r}")
    spec: dict[str, Any] = {"cls": cls}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        try:
            spec[key] = json.loads(value)
        except json.JSONDecodeError:
            spec[key] = value
    return name, spec


def _classes(spec: dict[str, Any]) -> tuple[type, type]:
    """The trainer class of a check (this package's, else TRL's) and its config class, named alike: MMPOTrainer and
    MMPOConfig, KTOTrainer and KTOConfig."""
    import trl

    import trl_margins

    module = trl_margins if hasattr(trl_margins, spec["cls"]) else trl
    return getattr(module, spec["cls"]), getattr(module, spec["cls"].replace("Trainer", "Config"))


def _dataset(spec: dict[str, Any], n: int, kto: bool):
    """n VADER training pairs; for KTO unpaired (a desirable and an undesirable sample per pair, with its score); with
    `weight_column`, weights |2p - 1| of the raters' preference probability (mean 1)."""
    from datasets import Dataset

    from trl_margins.data.assets import load_vader_preferences

    rows = load_vader_preferences("train").select(range(n)).to_list()
    if kto:
        from trl_margins.data.formatting import unpair_preferences

        return unpair_preferences(Dataset.from_list(rows[: (n + 1) // 2])).select(range(n))
    if spec.get("weight_column"):
        raw = [abs(2 * r["human_pref_prob"] - 1) for r in rows]
        rows = [{**r, spec["weight_column"]: w * len(raw) / sum(raw)} for r, w in zip(rows, raw)]
    return Dataset.from_list(rows)


def build_config(name: str, spec: dict[str, Any], device: str, dtype: str, steps: int, batch_size: int):
    """The check's trainer class and its config, as `train_check` trains it."""
    spec = dict(spec)
    cls, config_cls = _classes(spec)
    spec.pop("cls")
    args = config_cls(
        output_dir=tempfile.mkdtemp(prefix=f"gpu-check-{name}-"),
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=1e-6,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        max_length=128,
        use_cpu=device == "cpu",
        bf16=dtype == "bfloat16",
        model_init_kwargs={"dtype": dtype, "attn_implementation": "sdpa"},
        disable_tqdm=True,
        seed=0,
        **spec,
    )
    return cls, args


def train_check(
    name: str, spec: dict[str, Any], model_path: str, device: str, dtype: str, steps: int, batch_size: int
) -> dict[str, Any]:
    import trl

    import trl_margins

    cls, args = build_config(name, spec, device, dtype, steps, batch_size)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    kto = issubclass(cls, trl.KTOTrainer)
    dataset = _dataset(spec, steps * batch_size * world, kto)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = cls(model_path, args=args, train_dataset=dataset)
    start = time.perf_counter()
    metrics = trainer.train().metrics
    seconds = time.perf_counter() - start

    model = trainer.accelerator.unwrap_model(trainer.model)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    result: dict[str, Any] = {
        "trainer": cls.__name__,
        "config": spec,
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "attn_implementation": model.config._attn_implementation,
        "param_dtype": str(next(model.parameters()).dtype),
        "losses": losses,
        "train_seconds": seconds,
        "train_steps_per_second": metrics.get("train_steps_per_second"),
        "has_ref_model": trainer.ref_model is not None,
    }
    problems = []
    if len(losses) != steps or not all(math.isfinite(v) for v in losses):
        problems.append(f"expected {steps} finite losses, got {losses}")
    if result["attn_implementation"] != "sdpa":
        problems.append(f"attention is {result['attn_implementation']}, not sdpa")
    if dtype not in result["param_dtype"] and trainer.accelerator.distributed_type.value != "FSDP":
        problems.append(f"parameters are {result['param_dtype']}, not {dtype}")  # FSDP may keep fp32 master weights
    if getattr(args, "simpo", False) and result["has_ref_model"]:
        problems.append("reference-free run holds a reference model")
    if isinstance(trainer, trl_margins.GammaPOTrainer):
        gamma_means = [h["gamma/mean"] for h in history if "gamma/mean" in h]
        result["gamma_mean"] = gamma_means
        result["queue_size"] = len(trainer.margin_queue)
        expected_queue = min(args.margin_queue_size, steps * batch_size * trainer.accelerator.num_processes)
        if len(gamma_means) != steps or not all(math.isfinite(v) for v in gamma_means):
            problems.append(f"expected {steps} finite gamma/mean values, got {gamma_means}")
        if result["queue_size"] != expected_queue:
            problems.append(f"queue holds {result['queue_size']} gaps, expected {expected_queue}")
    if device == "cuda":
        result["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    result["ok"] = not problems
    result["problems"] = problems
    return result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-model", help="random-weight model + VADER tokenizer")
    build.add_argument("path")
    build.add_argument("--preset", default="qwen2-0.5b")
    train = sub.add_parser("train", help="short training runs with checks")
    train.add_argument("--model", required=True)
    train.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    train.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    train.add_argument("--trainers", default="mmpo,gamma_dpo,gamma_simpo,gamma_mmpo_simpo")
    train.add_argument("--steps", type=int, default=4)
    train.add_argument("--batch_size", "--batch-size", type=int, default=4)
    train.add_argument("--output", default=None)
    train.add_argument("--check", action="append", default=[], help="NAME=CLASS:key=value,... (an extra check)")
    train.add_argument("--dry-run", action="store_true", help="build the configs only: no model, no training")
    a = p.parse_args(argv)

    if a.command == "build-model":
        from helpers import build_random_model

        start = time.perf_counter()
        build_random_model(a.path, a.preset)
        print(f"built {a.preset} with random weights in {a.path} ({time.perf_counter() - start:.0f} s)")
        return 0

    from helpers import quiet_libraries

    checks = {name: TRAIN_CHECKS[name] for name in [s.strip() for s in a.trainers.split(",") if s.strip()]}
    checks.update(parse_check(text) for text in a.check)
    if a.dry_run:
        for name, spec in checks.items():
            cls, args = build_config(name, spec, "cpu", "float32", a.steps, a.batch_size)
            print(f"[train-check] {name}: {cls.__name__} with {type(args).__name__} ok (dry run)")
        return 0
    results: dict[str, Any] = {}
    with warnings.catch_warnings(), quiet_libraries():
        warnings.simplefilter("ignore", FutureWarning)
        for name, spec in checks.items():
            try:
                results[name] = train_check(name, spec, a.model, a.device, a.dtype, a.steps, a.batch_size)
            except Exception as e:  # report and go on: one GPU call has to cover every check
                results[name] = {
                    "ok": False,
                    "problems": [f"{type(e).__name__}: {e}"],
                    "traceback": traceback.format_exc(),
                }
            r = results[name]
            shown = (
                "losses",
                "gamma_mean",
                "attn_implementation",
                "param_dtype",
                "train_seconds",
                "peak_gpu_memory_mib",
            )
            summary = json.dumps({k: r[k] for k in shown if k in r})
            status = "ok" if r["ok"] else "FAILED: " + "; ".join(r["problems"])
            print(f"[train-check] {name}: {status} {summary}", flush=True)
    rank = int(os.environ.get("RANK", "0"))
    if a.output and rank == 0:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(json.dumps({"checks": results, "torch": torch.__version__}, indent=2) + "\n")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
