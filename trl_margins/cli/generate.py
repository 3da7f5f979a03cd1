"""`trl-margins generate`: sample N completions per prompt from a policy (see `trl_margins.pairs.generate`).

    trl-margins generate --policy PATH_OR_ID|trl_margins:smollm2 --dataset NAME_OR_FILE --output FILE.jsonl
        [--num_completions 5] [--max_new_tokens 256] [--temperature 0.8] [--top_p 0.95] [--seed 42] [--max_prompts N]
        [--completion_seeds 13 21 42 79 100] [--backend transformers|vllm] [--shard_size 64]
    torchrun --nproc_per_node 2 -m trl_margins.cli generate ...   # each process samples its shards (transformers)

Writes one row per distinct prompt (`prompt`, `all_generated_responses`, `generation_seed`) and the sampling settings
in `FILE.generation.json`; the shards, from which a stopped run resumes, are kept in `FILE.shards/`. Then
`trl-margins annotate` scores the completions.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._compat import process_state
from ..data.loading import load_preference_dataset, resolve_model
from ..errors import UsageError, run_command
from ..pairs.annotate import resolve_dtype
from ..pairs.generate import (
    GenerateConfig,
    generate_to_file,
    transformers_sampler,
    unique_prompts,
    vllm_sampler,
)
from .arguments import DataclassParser
from .output import check_writable

logger = logging.getLogger(__name__)


@dataclass
class GenerateArguments:
    """The policy, the prompts and the output of `trl-margins generate`."""

    policy: str = field(metadata={"help": "Path or hub id of a causal LM, or trl_margins:smollm2 (bundled)."})
    dataset: str = field(
        metadata={"help": "Dataset with a `prompt` column: a local file, a hub id, trl_margins:vader."}
    )
    output: str = field(metadata={"help": "The .jsonl file to write."})
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a hub dataset."})
    split: str | None = field(default=None, metadata={"help": "Split to read (default: the only one, or 'test')."})
    max_prompts: int | None = field(default=None, metadata={"help": "Sample for the first max_prompts prompts."})
    dtype: str = field(default="auto", metadata={"help": "auto (bfloat16 on a GPU, float32 on a CPU), or a dtype."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the hub model's own modelling code."})
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "vLLM only: GPUs one model is split over (vLLM's own parallelism)."}
    )


def build_parser() -> DataclassParser:
    """The parser of `trl-margins generate`: the policy, the prompts and the output, and the sampling settings."""
    return DataclassParser((GenerateArguments, GenerateConfig), prog="trl-margins generate")


def run(argv: Sequence[str]) -> Path:
    args, config, unknown = build_parser().parse_args_into_dataclasses(list(argv), return_remaining_strings=True)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    if Path(args.output).suffix != ".jsonl":
        raise UsageError(f"--output must be a .jsonl file, got {args.output}.")
    state = process_state()  # one process, or this one's rank under `accelerate launch` / `torchrun`
    if config.backend == "vllm" and state.num_processes > 1:
        raise UsageError(
            "--backend vllm runs in one process, with vLLM's own parallelism (--tensor_parallel_size): launch it "
            "without torchrun or accelerate launch."
        )
    check_writable(args.output, "--output", file=True)
    policy = resolve_model(args.policy, "--policy")
    prompts = unique_prompts(load_preference_dataset(args.dataset, args.split, args.dataset_config), args.max_prompts)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy, trust_remote_code=args.trust_remote_code)
    if config.backend == "vllm":
        llm_kwargs = {"tensor_parallel_size": args.tensor_parallel_size, "trust_remote_code": args.trust_remote_code}
        sampler = vllm_sampler(policy, config, dtype=args.dtype, **llm_kwargs)
    else:
        dtype = resolve_dtype(args.dtype, state.device)
        model = AutoModelForCausalLM.from_pretrained(policy, dtype=dtype, trust_remote_code=args.trust_remote_code)
        sampler = transformers_sampler(model.to(state.device), tokenizer, config)
    source = {"policy": args.policy, "dataset": args.dataset, "split": args.split, "dtype": args.dtype}
    sidecar = generate_to_file(
        sampler, tokenizer, prompts, config, args.output, source=source, rank=state.process_index,
        world_size=state.num_processes, barrier=state.wait_for_everyone,
    )  # fmt: skip
    if sidecar is not None:
        print(
            f"generate: {len(prompts)} prompts x {config.num_completions} completions -> {args.output} "
            f"(settings: {sidecar})"
        )
    return Path(args.output)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `trl-margins generate`; ``argv`` without the program and subcommand names."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    return run_command("generate", sys.argv[1:] if argv is None else argv, run)


if __name__ == "__main__":
    sys.exit(main())
