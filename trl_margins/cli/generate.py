"""`trl-margins generate`: sample N completions per prompt from a policy (see `trl_margins.pairs.generate`).

    trl-margins generate --policy PATH_OR_ID|trl_margins:smollm2 --dataset NAME_OR_FILE --output FILE.jsonl
        [--num_completions 5] [--max_new_tokens 256] [--temperature 0.8] [--top_p 0.95] [--seed 42] [--max_prompts N]

Writes one row per distinct prompt (`prompt`, `all_generated_responses`, `generation_seed`) and the sampling settings
in `FILE.generation.json`. Then `trl-margins annotate` scores the completions.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data.assets import BUNDLED_MODEL, smollm2_path
from ..data.loading import load_preference_dataset
from ..errors import UsageError, run_command
from ..pairs.annotate import resolve_dtype
from ..pairs.generate import GenerateConfig, generate_completions, unique_prompts, write_generation
from .arguments import DataclassParser

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


def _load_policy(name: str, dtype, device: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(smollm2_path()) if name == BUNDLED_MODEL else name
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    return model.to(device), AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def build_parser() -> DataclassParser:
    """The parser of `trl-margins generate`: the policy, the prompts and the output, and the sampling settings."""
    return DataclassParser((GenerateArguments, GenerateConfig), prog="trl-margins generate")


def run(argv: Sequence[str]) -> Path:
    parser = build_parser()
    args, config, unknown = parser.parse_args_into_dataclasses(list(argv), return_remaining_strings=True)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    if Path(args.output).suffix != ".jsonl":
        raise UsageError(f"--output must be a .jsonl file, got {args.output}.")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    prompts = unique_prompts(load_preference_dataset(args.dataset, args.split, args.dataset_config), args.max_prompts)
    model, tokenizer = _load_policy(args.policy, resolve_dtype(args.dtype, device), device, args.trust_remote_code)
    rows = generate_completions(model, tokenizer, prompts, config)
    source = {"policy": args.policy, "dataset": args.dataset, "split": args.split, "dtype": args.dtype}
    sidecar = write_generation(rows, args.output, config, source)
    print(
        f"generate: {len(rows)} prompts x {config.num_completions} completions -> {args.output} (settings: {sidecar})"
    )
    return Path(args.output)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `trl-margins generate`; ``argv`` without the program and subcommand names."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    return run_command("generate", sys.argv[1:] if argv is None else argv, run)


if __name__ == "__main__":
    sys.exit(main())
