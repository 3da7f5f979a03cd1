"""How the policy benchmark (`policy.py`) scores a policy: the implicit rewards of the held-out pairs against the
raters' preference probabilities, and the sentiment (VADER) and KL to the reference of completions it samples.

The log-probabilities are `trl_margins.evaluation.rewards`'s, on the pairs as chat turns (`conversational`), so the
rewards match the trainers'. The base model's are computed once for all runs (`ReferenceLogps`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import common
import torch

if TYPE_CHECKING:  # `policy` imports this module: its classes are for the annotations only
    from policy import Method, Sizes

SHIPPED_PROMPTS = (
    "Write a positive tweet.",
    "Write a positive one-sentence movie review.",
    "Write a positive one-sentence review of an electronics product.",
    "Write a positive sentence for a newspaper editorial.",
)
# Never seen in training: does the learned preference carry over to new requests?
NOVEL_PROMPTS = (
    "Write a positive one-sentence review of a restaurant.",
    "Write a positive sentence about your neighbourhood.",
    "Write a positive one-sentence book review.",
    "Write a positive sentence about a hotel you stayed in.",
)


def chat_prompt(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": ""}, {"role": "user", "content": prompt}]


def conversational(row: dict) -> dict:
    """A chat-formatted pair, so that training, scoring and generation all use SmolLM2-Instruct's template."""
    return {
        **row,
        "prompt": chat_prompt(row["prompt"]),
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    }


def autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


# ---- log-probabilities of completions ------------------------------------------------------------------------------
def completion_logps(model, tokenizer, rows: list[dict], sizes: Sizes) -> dict[str, torch.Tensor]:
    """`trl_margins.evaluation.rewards.completion_log_probs` (tokenized and collated exactly as `trl.DPOTrainer` does,
    so the rewards match the trainers') of the rows as chat turns, in bf16 autocast where the run trains in it.
    Returns float32 ``chosen_logps`` / ``rejected_logps`` and the token counts ``chosen_lengths`` /
    ``rejected_lengths``."""
    from trl_margins.evaluation.rewards import completion_log_probs

    # Batches of 16 in the rows' order, one call each: the library sorts pairs by length across a call, which changes
    # bf16 results in the third decimal; fixed batches keep every run of the benchmark (and its resumed or added
    # seeds) on the same batches as the results it is compared with.
    pairs = [conversational(r) for r in rows]
    with autocast(sizes.bf16):
        parts = [completion_log_probs(model, tokenizer, pairs[i : i + 16], 16, sizes.max_length)
                 for i in range(0, len(pairs), 16)]  # fmt: skip
    logps = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return {key: value.float() if key.endswith("_logps") else value for key, value in logps.items()}


class ReferenceLogps:
    """The base model's summed log-probability of each (prompt, sentence), computed once for all runs."""

    def __init__(self, model_path: str, tokenizer, rows: list[dict], sizes: Sizes, cache: Path | None = None):
        key = common.rows_fingerprint([model_path, rows, sizes.max_length, sizes.bf16])
        cached = common.load_results(cache) if cache is not None else None
        if cached is not None and cached["key"] == key:  # shards and resumed runs share one computation
            self.table = {(p, s): v for p, s, v in cached["table"]}
            return
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        logps = completion_logps(model, tokenizer, rows, sizes)
        self.table: dict[tuple[str, str], float] = {}
        for i, row in enumerate(rows):
            self.table[(row["prompt"], row["chosen"])] = float(logps["chosen_logps"][i])
            self.table[(row["prompt"], row["rejected"])] = float(logps["rejected_logps"][i])
        if cache is not None:
            common.write_json(cache, {"key": key, "table": [[p, s, v] for (p, s), v in self.table.items()]})

    def attach(self, rows: list[dict]) -> list[dict]:
        """Rows with TRL's precomputed-reference columns, following each row's own chosen/rejected order."""
        return [
            {
                **r,
                "ref_chosen_logps": self.table[(r["prompt"], r["chosen"])],
                "ref_rejected_logps": self.table[(r["prompt"], r["rejected"])],
            }
            for r in rows
        ]

    def of(self, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        with_ref = self.attach(rows)
        return (
            torch.tensor([r["ref_chosen_logps"] for r in with_ref]),
            torch.tensor([r["ref_rejected_logps"] for r in with_ref]),
        )


# ---- evaluation ----------------------------------------------------------------------------------------------------
def preference_eval(
    model, tokenizer, test_rows: list[dict], method: Method, sizes: Sizes, reference: ReferenceLogps
) -> dict[str, Any]:
    from trl_margins.evaluation.calibration import preference_metrics

    logps = completion_logps(model, tokenizer, test_rows, sizes)
    if method.reward == "simpo":  # beta / |y| * log pi(y)
        chosen = method.beta * logps["chosen_logps"] / logps["chosen_lengths"].clamp(min=1)
        rejected = method.beta * logps["rejected_logps"] / logps["rejected_lengths"].clamp(min=1)
    else:  # beta * (log pi(y) - log pi_ref(y))
        ref_chosen, ref_rejected = reference.of(test_rows)
        chosen = method.beta * (logps["chosen_logps"] - ref_chosen)
        rejected = method.beta * (logps["rejected_logps"] - ref_rejected)
    targets = torch.tensor([r["human_pref_prob"] for r in test_rows])
    metrics = preference_metrics(chosen, rejected, target_probs=targets, n_bins=10)
    return {**metrics, "margins": chosen.double() - rejected.double()}


@torch.no_grad()
def _sequence_logps(model, sequences: torch.Tensor, prompt_len: int, mask: torch.Tensor, bf16: bool) -> torch.Tensor:
    with autocast(bf16):
        logits = model(input_ids=sequences, attention_mask=torch.ones_like(sequences)).logits
    logits = logits[:, prompt_len - 1 : -1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, sequences[:, prompt_len:, None]).squeeze(-1)
    return (logps * mask).sum(dim=1)


@torch.no_grad()
def generation_eval(model, tokenizer, prompts: tuple[str, ...], seed: int, sizes: Sizes, peft: bool) -> dict:
    """Sample completions, score them with VADER and estimate KL(pi || pi_ref) from the same samples."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    eos = tokenizer.eos_token_id
    model.eval()
    torch.manual_seed(10_000 + seed)  # the same sampling noise for every method of a seed
    samples = []
    for prompt in prompts:
        # One prompt per batch: no padding, so positions match generation exactly
        ids = tokenizer.apply_chat_template(
            chat_prompt(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"].repeat(sizes.samples_per_prompt, 1)
        with autocast(sizes.bf16):
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                top_p=1.0, max_new_tokens=sizes.max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
            )  # fmt: skip
        completion = out[:, ids.shape[1] :]
        is_eos = (completion == eos).long()
        mask = ((is_eos.cumsum(dim=1) - is_eos) == 0).float()  # up to and including the first EOS
        logp = _sequence_logps(model, out, ids.shape[1], mask, sizes.bf16)
        if peft:
            with model.disable_adapter():
                logp_ref = _sequence_logps(model, out, ids.shape[1], mask, sizes.bf16)
        else:
            logp_ref = logp
        for i in range(out.shape[0]):
            text = tokenizer.decode(completion[i][mask[i].bool()], skip_special_tokens=True).strip()
            samples.append(
                {
                    "prompt": prompt,
                    "text": text,
                    "compound": analyzer.polarity_scores(text)["compound"],
                    "log_ratio": float(logp[i] - logp_ref[i]),
                    "tokens": int(mask[i].sum()),
                }
            )

    def mean(key: str, group: tuple[str, ...] = prompts) -> float:
        values = [s[key] for s in samples if s["prompt"] in group]
        return sum(values) / len(values) if values else float("nan")

    return {
        "vader_compound": mean("compound"),
        "vader_compound_shipped": mean("compound", SHIPPED_PROMPTS),
        "vader_compound_novel": mean("compound", NOVEL_PROMPTS),
        "vader_positive_rate": sum(s["compound"] >= 0.05 for s in samples) / len(samples),
        "kl": mean("log_ratio"),
        "completion_tokens": mean("tokens"),
        "examples": samples[:: sizes.samples_per_prompt],  # the first sample of each prompt, to eyeball
    }
