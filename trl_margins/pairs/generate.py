"""N sampled completions per prompt from a policy (`trl-margins generate`): the on-policy responses that gamma-SimPO's
recipes train on, in the `prompt` / `all_generated_responses` layout that `annotate` scores and the
`reward_annotated` adapter pairs best against worst.

Two backends sample from the same prompt tokens with the same seeds and write the same rows: transformers'
`generate` (the default, on any device) and vLLM (`backend="vllm"`, the `vllm` extra, on a GPU; the SimPO and gamma-PO
authors sampled their Llama-3 data with it). Prompt ``i`` (its index in the prompt list) is sampled with the seed
``seed + i``, all its completions in one call, so a row does not depend on which other prompts were sampled with
it, nor on how the prompts were split among processes. With ``completion_seeds`` (SimPO's recipe: one completion per
seed, 13 21 42 79 100 for its Llama-3 data), completion ``j`` of prompt ``i`` is sampled alone with the seed
``completion_seeds[j] + i``. Each row records its seeds; the settings go into a sidecar ``<output>.generation.json``.

The prompts are split in shards (`trl_margins.pairs.shards`): under `torchrun` / `accelerate launch` each process
samples its shards, a stopped run resumes from its finished ones, and the output is the one-process output.

Imports torch, `datasets`, transformers, `pairs.shards` and `errors`: no trainer, no command line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import DataError, UsageError, row_label
from .shards import (
    acquire_lock,
    check_manifest,
    kept_shard,
    merge_shards,
    shard_fingerprint,
    shard_path,
    shard_ranges,
    shards_of_rank,
    write_atomically,
    write_shard,
)

logger = logging.getLogger(__name__)

SEED_COLUMN = "generation_seed"
BACKENDS = ("transformers", "vllm")
MANIFEST_FILE = "generate_config.json"


@dataclass
class GenerateConfig:
    """How `generate_completions` samples (the `trl-margins generate` options besides model and prompts)."""

    num_completions: int = field(default=5, metadata={"help": "Completions per prompt (gamma-PO's recipes: 5)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens generated at most per completion."})
    min_new_tokens: int = field(
        default=1, metadata={"help": "Tokens generated at least (EOS held back until then): no empty completions."}
    )
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling: the smallest top-p share of tokens."})
    seed: int = field(default=42, metadata={"help": "Prompt i is sampled with seed + i."})
    completion_seeds: list[int] | None = field(
        default=None,
        metadata={
            "help": "SimPO's recipe: completion j of prompt i is sampled alone with seed completion_seeds[j] + i "
            "(the SimPO / gamma-PO Llama-3 data: 13 21 42 79 100); sets num_completions to their number."
        },
    )
    use_chat_template: bool = field(
        default=True,
        metadata={"help": "Render each prompt as a user turn with the policy's chat template (else the raw text)."},
    )
    backend: str = field(
        default="transformers",
        metadata={
            "help": "transformers (`generate`, any device) or vllm (a GPU, the `vllm` extra: `pip install "
            "'trl-margins[vllm]'`).",
            "choices": list(BACKENDS),
        },
    )
    shard_size: int = field(
        default=64, metadata={"help": "Prompts per shard: the unit of resuming and of the split across processes."}
    )

    def __post_init__(self):
        if self.completion_seeds:
            self.num_completions = len(self.completion_seeds)
        if self.num_completions < 2:
            raise UsageError(f"--num_completions must be >= 2 to pair best against worst, got {self.num_completions}.")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {BACKENDS}, got {self.backend!r}.")


# ---- what both backends share: prompt tokens, seeds and rows --------------------------------------------------------
def prompt_token_ids(prompt: Any, tokenizer: PreTrainedTokenizerBase, use_chat_template: bool, idx: int) -> list[int]:
    """The tokens a policy continues for one prompt: the raw text, or a user turn in the chat template."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError(f"{row_label(idx)}: `prompt` is empty; drop such rows (`dataset.filter`).")
        if not use_chat_template:
            return list(tokenizer(prompt)["input_ids"])
        prompt = [{"role": "user", "content": prompt}]
    elif not use_chat_template:
        raise UsageError(f"{row_label(idx)}: the prompt is a conversation, which needs the chat template.")
    encoded = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
    return list(encoded["input_ids"])


def sampling_seeds(index: int, config: GenerateConfig) -> list[int]:
    """The seeds of prompt `index`: one for all its completions, or one per completion (`completion_seeds`)."""
    if config.completion_seeds:
        return [s + index for s in config.completion_seeds]
    return [config.seed + index]


def completion_row(prompt: Any, responses: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """One output row: the prompt as given, its completions, and the seed (or seeds) they were sampled with."""
    seed = seeds[0] if len(seeds) == 1 else list(seeds)
    return {"prompt": prompt, "all_generated_responses": list(responses), SEED_COLUMN: seed}


def check_chat_template(tokenizer: PreTrainedTokenizerBase, config: GenerateConfig) -> None:
    if config.use_chat_template and not getattr(tokenizer, "chat_template", None):
        raise UsageError(
            "The policy's tokenizer has no chat template: pass --use_chat_template false to sample from the raw "
            "prompt text, or use a chat model's tokenizer."
        )


# ---- the backends ---------------------------------------------------------------------------------------------------
Sampler = Callable[[list[list[int]], list[list[int]]], list[list[str]]]
"""`(prompt token ids, seeds per prompt) -> completions per prompt`."""


def transformers_sampler(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: GenerateConfig
) -> Sampler:
    """Sampling with transformers' `generate`, one prompt (or one completion) per call, seeded before each."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    model.eval()

    def sample(prompts: list[list[int]], seeds: list[list[int]]) -> list[list[str]]:
        results = []
        for ids, prompt_seeds in zip(tqdm(prompts, desc="Sampling completions", unit="prompt"), seeds, strict=True):
            input_ids = torch.tensor([ids], device=device)
            per_call = config.num_completions if len(prompt_seeds) == 1 else 1
            responses = []
            for seed in prompt_seeds:
                transformers.set_seed(seed)
                with torch.no_grad():
                    out = model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        do_sample=True,
                        temperature=config.temperature,
                        top_p=config.top_p,
                        top_k=0,  # nucleus sampling only, not also the checkpoint's generation_config top_k
                        max_new_tokens=config.max_new_tokens,
                        min_new_tokens=config.min_new_tokens,
                        num_return_sequences=per_call,
                        pad_token_id=pad_id,
                    )
                responses += tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)
            results.append(responses)
        return results

    return sample


def vllm_sampler(model_path: str, config: GenerateConfig, dtype: str = "auto", **llm_kwargs) -> Sampler:
    """Sampling with vLLM (a GPU): the same prompt tokens, seeds and settings as `transformers_sampler`, each prompt a
    request with its own seed (vLLM's per-request `SamplingParams.seed`)."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise UsageError("--backend vllm needs vLLM on a GPU machine: `pip install 'trl-margins[vllm]'`.") from e
    llm = LLM(model=model_path, seed=config.seed, dtype=dtype, **llm_kwargs)

    def sample(prompts: list[list[int]], seeds: list[list[int]]) -> list[list[str]]:
        requests, params = [], []
        for ids, prompt_seeds in zip(prompts, seeds, strict=True):
            n = config.num_completions if len(prompt_seeds) == 1 else 1
            for seed in prompt_seeds:
                requests.append({"prompt_token_ids": ids})
                params.append(
                    SamplingParams(
                        n=n, temperature=config.temperature, top_p=config.top_p, top_k=-1, seed=seed,
                        max_tokens=config.max_new_tokens, min_tokens=config.min_new_tokens, skip_special_tokens=True,
                    )
                )  # fmt: skip
        outputs = iter(llm.generate(requests, params, use_tqdm=True))
        return [
            [completion.text for _ in prompt_seeds for completion in next(outputs).outputs] for prompt_seeds in seeds
        ]

    return sample


# ---- sampling a list of prompts ------------------------------------------------------------------------------------
def generate_completions(
    sampler: Sampler, tokenizer: PreTrainedTokenizerBase, prompts: list[Any], config: GenerateConfig, offset: int = 0
) -> list[dict[str, Any]]:
    """One row per prompt (`completion_row`); `offset` is the index of the first prompt in the whole prompt list,
    which its seeds follow."""
    check_chat_template(tokenizer, config)
    ids = [prompt_token_ids(p, tokenizer, config.use_chat_template, offset + i) for i, p in enumerate(prompts)]
    seeds = [sampling_seeds(offset + i, config) for i in range(len(prompts))]
    completions = sampler(ids, seeds)
    return [completion_row(p, c, s) for p, c, s in zip(prompts, completions, seeds, strict=True)]


def unique_prompts(dataset: Dataset, max_prompts: int | None = None) -> list[Any]:
    """The distinct prompts of ``dataset`` in order of first appearance (pair datasets repeat each prompt)."""
    if "prompt" not in dataset.column_names:
        raise DataError(f"The dataset has no `prompt` column to sample from; its columns: {dataset.column_names}.")
    seen, prompts = set(), []
    for prompt in dataset["prompt"]:
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
    return prompts[:max_prompts] if max_prompts is not None else prompts


def sidecar_path(output: str | Path) -> Path:
    return Path(output).with_suffix(".generation.json")


def shard_dir(output: str | Path) -> Path:
    """Where the shards of `output` (a .jsonl file) are kept: beside it, `<name>.shards/`."""
    return Path(output).with_suffix(".shards")


def generate_to_file(
    sampler: Sampler,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Any],
    config: GenerateConfig,
    output: str | Path,
    *,
    source: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> Path | None:
    """Sample every prompt into ``output`` (a .jsonl file), shard by shard; rank 0 merges the shards and writes the
    sidecar, and returns the sidecar's path (the other ranks None). A finished shard whose prompts are the same is
    kept: a stopped run resumes."""
    output = Path(output)
    shards = shard_dir(output)
    ranges = shard_ranges(len(prompts), config.shard_size)
    settings = {**(source or {}), **asdict(config), "transformers": transformers.__version__}
    manifest = {k: v for k, v in settings.items() if k != "shard_size"}
    shards.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(shards)
    try:
        check_manifest(shards, manifest, MANIFEST_FILE, rank)
        barrier()
        kept = []
        for k in shards_of_rank(len(ranges), rank, world_size):
            part = prompts[ranges[k].start : ranges[k].stop]
            fingerprint = shard_fingerprint([ranges[k].start, *part])  # the seeds follow the first index
            path = shard_path(shards, k)
            if kept_shard(path, fingerprint):
                kept.append(k)
                continue
            rows = generate_completions(sampler, tokenizer, part, config, offset=ranges[k].start)
            write_shard(rows, path, fingerprint)
        if kept:
            logger.warning(
                "generate: %d shards were already sampled from the same prompts and were kept: %s", len(kept), kept
            )
        barrier()
        if rank != 0:
            return None
        merge_shards(shards, len(ranges), output)
        empty = sum(
            not r.strip()
            for line in output.read_text().splitlines()
            for r in json.loads(line)["all_generated_responses"]
        )
        if empty:  # kept, not dropped: `annotate` stops at them with their row, so the choice is the user's
            logger.warning(
                "generate: %d of %d completions are empty or whitespace.", empty, len(prompts) * config.num_completions
            )
        sidecar = sidecar_path(output)
        write_atomically(sidecar, json.dumps({**settings, "prompts": len(prompts)}, indent=2))
        return sidecar
    finally:
        if rank == 0:
            lock.unlink(missing_ok=True)
