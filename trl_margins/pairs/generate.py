"""N sampled completions per prompt from a policy (`trl-margins generate`): the on-policy responses that gamma-SimPO's
recipes train on, in the `prompt` / `all_generated_responses` layout that `annotate` scores and the
`reward_annotated` adapter pairs best against worst.

Sampling uses transformers' `generate` (vLLM is not used: it is not a dependency). Prompt ``i`` is sampled with the
seed ``seed + i``, all its completions in one call, so a row does not depend on which other prompts were sampled
with it: rerunning with the same settings gives the same rows. Each row records its seed; the sampling settings go
into a sidecar ``<output>.generation.json``.

Imports torch, `datasets`, transformers and `errors`: no trainer, no command line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import DataError, UsageError, row_label

logger = logging.getLogger(__name__)

SEED_COLUMN = "generation_seed"


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
    use_chat_template: bool = field(
        default=True,
        metadata={"help": "Render each prompt as a user turn with the policy's chat template (else the raw text)."},
    )


def _prompt_ids(prompt: Any, tokenizer: PreTrainedTokenizerBase, use_chat_template: bool, idx: int) -> list[int]:
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


def generate_completions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Any], config: GenerateConfig
) -> Dataset:
    """One row per prompt: ``prompt`` (as given), ``all_generated_responses`` (``num_completions`` strings) and
    ``generation_seed``."""
    if config.num_completions < 2:
        raise UsageError(f"--num_completions must be >= 2 to pair best against worst, got {config.num_completions}.")
    if config.use_chat_template and not getattr(tokenizer, "chat_template", None):
        raise UsageError(
            "The policy's tokenizer has no chat template: pass --use_chat_template false to sample from the raw "
            "prompt text, or use a chat model's tokenizer."
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    rows, empty = [], 0
    model.eval()
    for i, prompt in enumerate(tqdm(prompts, desc="Sampling completions", unit="prompt")):
        ids = torch.tensor([_prompt_ids(prompt, tokenizer, config.use_chat_template, i)], device=device)
        transformers.set_seed(config.seed + i)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=0,  # nucleus sampling only, not also the checkpoint's generation_config top_k
                max_new_tokens=config.max_new_tokens,
                min_new_tokens=config.min_new_tokens,
                num_return_sequences=config.num_completions,
                pad_token_id=pad_id,
            )
        responses = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        empty += sum(not r.strip() for r in responses)
        rows.append({"prompt": prompt, "all_generated_responses": responses, SEED_COLUMN: config.seed + i})
    if empty:
        # Kept, not dropped: `annotate` stops at them with their row, so the choice is the user's
        logger.warning(
            "generate: %d of %d completions are empty or whitespace.", empty, len(rows) * config.num_completions
        )
    return Dataset.from_list(rows)


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


def write_generation(rows: Dataset, output: str | Path, config: GenerateConfig, source: dict[str, Any]) -> Path:
    """Write ``rows`` as .jsonl and the sampling settings beside it; returns the sidecar's path."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    rows.to_json(output, lines=True, force_ascii=False)
    settings = {**source, **asdict(config), "prompts": len(rows), "transformers": transformers.__version__}
    sidecar = sidecar_path(output)
    sidecar.write_text(json.dumps(settings, indent=2))
    return sidecar
