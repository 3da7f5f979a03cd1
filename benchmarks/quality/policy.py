"""Policy benchmark: DPO, cDPO, MMPO, gamma-DPO, SimPO, gamma-SimPO and MMPO + dynamic margins on human-rated pairs.

Trains SmolLM2-135M-Instruct (the same LoRA adapter, optimiser and steps for every method) on a fixed subset of the
bundled VADER preference pairs under three label settings (see `common.py`), with several seeds, and measures on
held-out test pairs and prompts:

* preference accuracy of the implicit reward against the mean human ratings (the test pairs' shipped orientation);
* calibration of ``sigmoid(r_w - r_l)`` against the empirical human preference probability ``human_pref_prob``
  (ECE over 10 bins, counting each pair in both orders, and the Brier score);
* generation: completions sampled (temperature 1, no top-k/top-p) for prompts that ask for a positive sentence (the
  4 training prompts and 4 new ones), scored by VADER's rule-based sentiment analyser (compound score in [-1, 1]), and
  the KL to the reference model, estimated as the mean over samples of ``log pi(y|x) - log pi_ref(y|x)`` (unbiased,
  since ``y ~ pi``).

Stock TRL runs DPO and cDPO (`trl.DPOTrainer`, ``label_smoothing=0.1``). SimPO is this package's reference-free
reward with the FIXED margin ``gamma0 = gamma_beta_ratio * beta`` (`GammaPOTrainer` with ``margin_iters=0``, so
``gamma_i = gamma0``), not TRL's `CPOTrainer`.

Sized for a shared 2-core CPU: pairs whose sentences have at most 24 tokens, the chat template with an empty system
message (SmolLM2's template otherwise inserts a 20-token default one), bf16 autocast, one thread, and the reference
log-probabilities computed ONCE with the base model for every (prompt, sentence) and handed to every trainer as TRL's
precomputed ``ref_chosen_logps``/``ref_rejected_logps`` columns (exact for LoRA, whose reference is the base model;
TRL's own `precompute_ref_log_probs` would redo them in each run).

    PYTHONPATH=. python benchmarks/quality/policy.py                        # the benchmark (see RESULTS.md)
    PYTHONPATH=. python benchmarks/quality/policy.py --quick --out /tmp/q   # tiny random model, seconds (the tests)
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import common
import torch

# MMPO's rationality coefficient: the fit of sigmoid(gamma * margin) to the empirical human preference probability of
# all training pairs (soft-target cross-entropy minimised at 1.327; `trl_margins.fit_gamma`), so that the soft targets
# are the raters' own preference probabilities.
MMPO_GAMMA = 1.33
DPO_BETA = 0.1
SIMPO_BETA = 2.5  # SimPO's beta for Mistral/Llama-3 Instruct; gamma0 = 0.5 * 2.5 = 1.25 (the package default ratio)
MAX_SENTENCE_TOKENS = 24

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


@dataclass(frozen=True)
class Method:
    label: str
    trainer: str  # "trl_dpo" (stock trl.DPOTrainer), "mmpo" (MMPOTrainer) or "gamma_po" (GammaPOTrainer)
    reward: str  # "dpo" or "simpo": the implicit reward it is trained and evaluated with
    data: str  # "binary", "scored" or "scored_1rater": which rows of `common.LabelledPairs` it trains on
    config: dict[str, Any] = field(default_factory=dict)
    settings: tuple[str, ...] = common.SETTINGS

    @property
    def beta(self) -> float:
        return self.config.get("beta", DPO_BETA)


METHODS: dict[str, Method] = {
    "dpo": Method("DPO (trl.DPOTrainer)", "trl_dpo", "dpo", "binary"),
    # TRL 1.16's DPOTrainer ignores `label_smoothing` for its sigmoid loss (only its robust and EXO losses read it), so
    # stock TRL has no cDPO: MMPOTrainer's smoothed target 1 - eps is the conservative-DPO loss
    "cdpo": Method("cDPO eps=0.1 (MMPOTrainer)", "mmpo", "dpo", "binary", {"label_smoothing": 0.1}),
    "mmpo": Method(f"MMPO gamma={MMPO_GAMMA}", "mmpo", "dpo", "scored", {"mmpo_gamma": MMPO_GAMMA}),
    "gamma_dpo": Method("gamma-DPO", "gamma_po", "dpo", "binary"),
    "simpo": Method(
        "SimPO (fixed margin 1.25)",
        "gamma_po",
        "simpo",
        "binary",
        {"reward_type": "simpo", "beta": SIMPO_BETA, "margin_iters": 0, "margin_mode": "full"},
    ),  # fmt: skip
    "gamma_simpo": Method("gamma-SimPO", "gamma_po", "simpo", "binary", {"reward_type": "simpo", "beta": SIMPO_BETA}),
    "mmpo_gamma_dpo": Method("MMPO + gamma-DPO", "gamma_po", "dpo", "scored", {"mmpo_gamma": MMPO_GAMMA}),
    # (b) only: MMPO whose scores are the single drawn rating per sentence that also decided the binary label
    "mmpo_1rater": Method(
        "MMPO, 1-rater scores", "mmpo", "dpo", "scored_1rater", {"mmpo_gamma": MMPO_GAMMA}, settings=("rater",)
    ),
}
TRACKED_METHODS = ("dpo", "mmpo")  # evaluated during training, for the margins-over-training figure


@dataclass
class Sizes:
    train_pairs: int = 96
    steps: int = 12
    batch_size: int = 8
    learning_rate: float = 1e-3
    lora_r: int = 16
    max_length: int = 64
    eval_pairs: int = 64
    track_pairs: int = 24
    track_points: int = 3
    samples_per_prompt: int = 3
    max_new_tokens: int = 24
    seeds: int = 3
    bf16: bool = True


QUICK_SIZES = Sizes(
    train_pairs=16, steps=4, batch_size=4, learning_rate=5e-3, lora_r=4, max_length=64, eval_pairs=12,
    track_pairs=8, track_points=2, samples_per_prompt=2, max_new_tokens=6, seeds=2, bf16=False,
)  # fmt: skip


def fit_train_gamma() -> float:
    """`trl_margins.fit_gamma` on the human preference probabilities of all train pairs (maximum likelihood)."""
    from trl_margins import fit_gamma

    rows = common.select_pairs("train", None)
    return fit_gamma([r["margin"] for r in rows], [r["human_pref_prob"] for r in rows])


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
@torch.no_grad()
def completion_logps(model, tokenizer, rows: list[dict], sizes: Sizes) -> dict[str, torch.Tensor]:
    """Summed log-probability and token count of each pair's chosen and rejected completion, tokenized and collated
    exactly as `trl.DPOTrainer` does (through `trl_margins.rewards_extraction`, whose rewards match the trainers')."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from trl_margins.rewards_extraction import _completion_log_probs, tokenize_for_policy
    from trl_margins.trl_compat import fused_lm_heads

    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=sizes.max_length)
    parts: dict[str, list[torch.Tensor]] = {"chosen": [], "rejected": [], "chosen_len": [], "rejected_len": []}
    was_training = model.training
    model.eval()
    with fused_lm_heads(model):
        for start in range(0, len(rows), 16):
            batch = collator([tokenize_for_policy(conversational(r), tokenizer) for r in rows[start : start + 16]])
            with autocast(sizes.bf16):
                logps, lengths = _completion_log_probs(model, batch)
            chosen, rejected = logps.float().chunk(2)
            chosen_len, rejected_len = lengths.chunk(2)
            for key, value in zip(parts, (chosen, rejected, chosen_len, rejected_len)):
                parts[key].append(value.cpu())
    model.train(was_training)
    return {key: torch.cat(values) for key, values in parts.items()}


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
            self.table[(row["prompt"], row["chosen"])] = float(logps["chosen"][i])
            self.table[(row["prompt"], row["rejected"])] = float(logps["rejected"][i])
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


# ---- training ------------------------------------------------------------------------------------------------------
def trainer_classes() -> dict[str, tuple[type, type]]:
    from trl import DPOConfig, DPOTrainer

    from trl_margins import GammaPOConfig, GammaPOTrainer, MMPOConfig, MMPOTrainer

    class RecordingGammaPOTrainer(GammaPOTrainer):
        """Keeps each training step's (reward gap, gamma_i) pairs, for the figure of gamma_i against the gap."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.gamma_trace: list[tuple[int, list[float], list[float]]] = []

        def target_margins(self, reward_gaps, mode):
            applied = super().target_margins(reward_gaps, mode)
            if mode == "train":
                gammas = applied + self._margin_offset  # undo the published gamma-DPO offset: the solved gamma_i
                self.gamma_trace.append((self.state.global_step, reward_gaps.tolist(), gammas.tolist()))
            return applied

    return {
        "trl_dpo": (DPOTrainer, DPOConfig),
        "mmpo": (MMPOTrainer, MMPOConfig),
        "gamma_po": (RecordingGammaPOTrainer, GammaPOConfig),
    }


def train_policy(
    method: Method,
    model_path: str,
    tokenizer,
    rows: list[dict],
    seed: int,
    sizes: Sizes,
    reference: ReferenceLogps,
    track_rows: list[dict] | None,
) -> tuple[Any, dict[str, Any]]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    trainer_cls, config_cls = trainer_classes()[method.trainer]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    extra: dict[str, Any] = {"beta": DPO_BETA, **method.config}
    uses_reference = method.reward == "dpo"
    if uses_reference:
        rows = reference.attach(rows)
        track_rows = None if track_rows is None else reference.attach(track_rows)
    if track_rows is not None:
        every = max(1, sizes.steps // sizes.track_points)
        extra.update(eval_strategy="steps", eval_steps=every, per_device_eval_batch_size=16)
    with tempfile.TemporaryDirectory() as out:
        args = config_cls(
            output_dir=out,
            per_device_train_batch_size=sizes.batch_size,
            max_steps=sizes.steps,
            learning_rate=sizes.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=max(1, sizes.steps // 10),
            logging_steps=max(1, sizes.steps // 8),
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            bf16=sizes.bf16,
            seed=seed,
            max_length=sizes.max_length,
            gradient_checkpointing=False,
            dataloader_num_workers=0,
            disable_tqdm=True,
            **extra,
        )
        lora = LoraConfig(
            r=sizes.lora_r, lora_alpha=2 * sizes.lora_r, lora_dropout=0.0, target_modules="all-linear",
            task_type="CAUSAL_LM",
        )  # fmt: skip
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=Dataset.from_list([conversational(r) for r in rows]),
            eval_dataset=None if track_rows is None else Dataset.from_list([conversational(r) for r in track_rows]),
            processing_class=tokenizer,
            peft_config=lora,
        )
        # TRL's precomputed-reference path (what `precompute_ref_log_probs=True` sets up), fed with the log-probs
        # computed once for all runs: the datasets carry `ref_chosen_logps`/`ref_rejected_logps`
        trainer.precompute_ref_logps = uses_reference
        trainer.train()
    history = trainer.state.log_history
    info: dict[str, Any] = {"train_loss": next((e["train_loss"] for e in history if "train_loss" in e), None)}
    if track_rows is not None:
        info["margin_trace"] = [
            {"step": e["step"], "margin": e["eval_rewards/margins"], "accuracy": e["eval_rewards/accuracies"]}
            for e in history
            if "eval_rewards/margins" in e
        ]
    if hasattr(trainer, "gamma_trace"):
        info["gamma_trace"] = {
            "gamma0": trainer.args.gamma0,
            "margin_offset": trainer._margin_offset,
            "steps": trainer.gamma_trace,
        }
    model = trainer.model
    del trainer
    return model, info


# ---- evaluation ----------------------------------------------------------------------------------------------------
def preference_eval(
    model, tokenizer, test_rows: list[dict], method: Method, sizes: Sizes, reference: ReferenceLogps
) -> dict[str, Any]:
    from trl_margins.evaluation import preference_metrics

    logps = completion_logps(model, tokenizer, test_rows, sizes)
    if method.reward == "simpo":  # beta / |y| * log pi(y)
        chosen = method.beta * logps["chosen"] / logps["chosen_len"].clamp(min=1)
        rejected = method.beta * logps["rejected"] / logps["rejected_len"].clamp(min=1)
    else:  # beta * (log pi(y) - log pi_ref(y))
        ref_chosen, ref_rejected = reference.of(test_rows)
        chosen = method.beta * (logps["chosen"] - ref_chosen)
        rejected = method.beta * (logps["rejected"] - ref_rejected)
    targets = torch.tensor([r["human_pref_prob"] for r in test_rows])
    return preference_metrics(chosen, rejected, target_probs=targets, n_bins=10)


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


# ---- the benchmark -------------------------------------------------------------------------------------------------
def resolve_model(quick: bool) -> str:
    if quick:
        sys.path.insert(0, str(common.REPO_ROOT))
        from tests.conftest import build_tiny_model

        return build_tiny_model(tempfile.mkdtemp(prefix="tiny-policy-"))
    from trl_margins.assets import smollm2_path

    return smollm2_path()


def short_pairs(split: str, n: int, tokenizer, quick: bool) -> list[dict]:
    """A fixed random subset of the pairs whose two sentences have at most MAX_SENTENCE_TOKENS tokens."""
    rows = common.select_pairs(split, None)
    if not quick:  # the tiny test tokenizer splits real text into many byte tokens: no length filter there
        rows = [
            r
            for r in rows
            if max(len(tokenizer(r["chosen"])["input_ids"]), len(tokenizer(r["rejected"])["input_ids"]))
            <= MAX_SENTENCE_TOKENS
        ]
    import random

    return random.Random(0).sample(rows, min(n, len(rows)))


PREFERENCE_KEYS = ("accuracy", "ece", "brier", "nll", "mean_margin")
GENERATION_KEYS = ("vader_compound", "vader_compound_shipped", "vader_compound_novel", "vader_positive_rate", "kl")
SUMMARY_KEYS = (*PREFERENCE_KEYS, *GENERATION_KEYS)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.benchmark_parser(__doc__.split("\n\n")[0], "policy.json", METHODS, "Qwen2")
    parser.add_argument("--only-seeds", type=int, nargs="+", help="run only these of the seeds (for parallel shards)")
    parser.add_argument(
        "--reference-cache",
        type=Path,
        default=common.RESULTS_DIR / "reference_logps.json",
        help="file of the base model's log-probs, shared by shards and resumed runs",
    )
    parser.add_argument("--no-reference-rows", action="store_true", help="skip the untrained model's own rows")
    parser.add_argument("--merge", type=Path, nargs="+", help="merge these policy.json shards into <out>/policy.json")
    args, argv, out_path, figures = common.parse_benchmark_args(parser, argv, "policy.json")
    if args.merge:
        return merge(args.merge, out_path, figures, argv)
    if args.figures_only:
        results = common.load_results(out_path)
        draw_figures(results, figures)
        return results

    sizes = common.resolve_sizes(args, QUICK_SIZES if args.quick else Sizes())
    started = time.time()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = resolve_model(args.quick)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_rows = short_pairs("train", sizes.train_pairs, tokenizer, args.quick)
    test_rows = short_pairs("test", sizes.eval_pairs, tokenizer, args.quick)
    # Scores ride along for MMPO's evaluation loss; the tracked metrics are the rewards, the same for every method
    track_keys = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")
    track_rows = [{k: r[k] for k in track_keys} for r in test_rows[: sizes.track_pairs]]
    ratings = common.load_ratings()
    prompts = SHIPPED_PROMPTS[:2] + NOVEL_PROMPTS[:2] if args.quick else SHIPPED_PROMPTS + NOVEL_PROMPTS
    config = {
        "model": "tiny random Qwen2 (tests/conftest.build_tiny_model)" if args.quick else "SmolLM2-135M-Instruct",
        "sizes": asdict(sizes),
        "max_sentence_tokens": None if args.quick else MAX_SENTENCE_TOKENS,
        "dpo_beta": DPO_BETA,
        "simpo_beta": SIMPO_BETA,
        "mmpo_gamma": MMPO_GAMMA,
        "mmpo_gamma_fit_on_all_train_pairs": round(fit_train_gamma(), 4),
        "gamma_po": "GammaPOConfig defaults: gamma_beta_ratio=0.5, tau=10, margin_sample_size=256, 20 iterations, "
        "margin_mode='published' (gamma-DPO applies gamma_i - gamma0, gamma-SimPO gamma_i)",
        "lora": f"r={sizes.lora_r}, alpha={2 * sizes.lora_r}, dropout 0, all linear layers",
        "methods": {name: asdict(m) for name, m in METHODS.items()},
        "prompts": {"shipped": list(SHIPPED_PROMPTS), "novel": list(NOVEL_PROMPTS)},
        "generation": "temperature 1, top_k 0, top_p 1 (pure sampling, so the KL estimate is unbiased)",
    }
    extra = {"reference": [], "dropped_runs": [], "gamma_traces": {}}
    results = common.start_results("policy", argv, args, config, out_path, extra)
    drop_stale_runs(results)
    seeds = [s for s in range(sizes.seeds) if args.only_seeds is None or s in args.only_seeds]
    save = common.ResultsWriter(results, out_path, summarize)
    save.mark = started

    # The base model: reference log-probs for every run (computed on first use), and its own generations and
    # SimPO-style ranking
    lazy: dict[str, ReferenceLogps] = {}

    def reference() -> ReferenceLogps:
        if "ref" not in lazy:
            cache = None if args.quick else args.reference_cache
            lazy["ref"] = ReferenceLogps(model_path, tokenizer, train_rows + test_rows, sizes, cache)
            print(f"[policy] reference log-probs of {2 * len(train_rows + test_rows)} sentences", flush=True)
        return lazy["ref"]

    for seed in [] if args.no_reference_rows else seeds:
        if common.find_run(results["reference"], seed=seed):
            continue
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        pref = preference_eval(base, tokenizer, test_rows, METHODS["simpo"], sizes, reference())
        gen = generation_eval(base, tokenizer, prompts, seed, sizes, peft=False)
        results["reference"].append({"seed": seed, "metrics": {**{k: pref[k] for k in PREFERENCE_KEYS}, **gen}})
        save()
        del base

    runs = common.pending_runs(
        results, args.settings, seeds, args.methods, METHODS, train_rows, ratings, save, "policy"
    )
    for setting, seed, name, method, rows in runs:
        t0 = time.time()
        tracked = track_rows if name in TRACKED_METHODS else None
        model, info = train_policy(method, model_path, tokenizer, rows, seed, sizes, reference(), tracked)
        t1 = time.time()
        pref = preference_eval(model, tokenizer, test_rows, method, sizes, reference())
        gen = generation_eval(model, tokenizer, prompts, seed, sizes, peft=True)
        t2 = time.time()
        run_result = {
            "method": name,
            "method_config": asdict(method),
            "setting": setting,
            "seed": seed,
            "data": common.rows_fingerprint(rows),
            "metrics": {**{k: pref[k] for k in PREFERENCE_KEYS}, **gen},
            "reliability": pref["reliability"],
            "train_loss": info["train_loss"],
            "margin_trace": info.get("margin_trace"),
            "timing_s": {"train": round(t1 - t0, 1), "eval": round(t2 - t1, 1)},
        }
        if "gamma_trace" in info and seed == 0 and name != "simpo":
            results["gamma_traces"].setdefault(setting, {})[name] = info["gamma_trace"]
        results["runs"].append(run_result)
        m = run_result["metrics"]
        print(
            f"[policy] {setting} seed {seed} {name}: acc {m['accuracy']:.3f} ece {m['ece']:.3f} "
            f"vader {m['vader_compound']:+.3f} kl {m['kl']:.2f} ({t1 - t0:.0f}s train, {t2 - t1:.0f}s eval)",
            flush=True,
        )
        del model
        save()
    save()
    draw_figures(results, figures)
    return results


def summarize(results: dict[str, Any]) -> None:
    results["summary"] = common.summarize(results["runs"], SUMMARY_KEYS, baseline="dpo")
    results["reference_summary"] = {
        k: common.mean_std([r["metrics"][k] for r in results["reference"]]) for k in SUMMARY_KEYS
    }


def drop_stale_runs(results: dict[str, Any]) -> None:
    """Drop (and list) the runs trained under an older definition of their method: the first cDPO runs used stock
    TRL, whose sigmoid loss ignores `label_smoothing`, so they were plain DPO."""
    # Compared as JSON, as stored: a tuple comes back from the file as a list
    current = json.loads(json.dumps({name: asdict(m) for name, m in METHODS.items()}))

    def stale(run: dict) -> bool:
        if "method_config" not in run:
            return run["method"] == "cdpo"
        return run["method_config"] != current[run["method"]]

    results.setdefault("dropped_runs", [])
    results["dropped_runs"] += [{k: r[k] for k in ("method", "setting", "seed")} for r in results["runs"] if stale(r)]
    results["runs"] = [r for r in results["runs"] if not stale(r)]


def fill_reused(results: dict[str, Any], train_rows: list[dict]) -> None:
    """Add the runs that need no training because a finished run of the same method and seed trained on exactly the
    same data (MMPO in (b) keeps the mean ratings of (a)); what the training loop does, for merged shards."""
    ratings = common.load_ratings()
    for setting in common.SETTINGS:
        for seed in range(results["config"]["sizes"]["seeds"]):
            labelled = common.make_label_setting(train_rows, setting, seed, ratings)
            for name, method in METHODS.items():
                if setting not in method.settings or common.find_run(
                    results["runs"], method=name, setting=setting, seed=seed
                ):
                    continue
                fingerprint = common.rows_fingerprint(getattr(labelled, method.data))
                same = common.find_run(results["runs"], method=name, seed=seed, data=fingerprint)
                if same is not None:
                    results["runs"].append({**same, "setting": setting, "reused_from": same["setting"]})


def merge(paths: list[Path], out_path: Path, figures: Path, argv: list[str]) -> dict[str, Any]:
    """One policy.json from shards run in parallel processes, with reused runs filled in and the summaries redone."""
    from transformers import AutoTokenizer

    results = common.merge_results([common.load_results(p) for p in paths])
    results["config"]["methods"] = {name: asdict(m) for name, m in METHODS.items()}
    drop_stale_runs(results)
    sizes = Sizes(**results["config"]["sizes"])
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(results["quick"]))
    fill_reused(results, short_pairs("train", sizes.train_pairs, tokenizer, results["quick"]))
    results["command"] = common.command_line("policy", argv)
    summarize(results)
    common.write_json(out_path, results)
    draw_figures(results, figures)
    return results


def draw_figures(results: dict[str, Any], folder: Path) -> list[Path]:
    """The figures whose data `results` has (a shard of other methods may have none of them)."""
    import plots

    prefix = "quick_" if results.get("quick") else ""
    drawn = [
        plots.reliability_grid(results, folder / f"{prefix}policy_reliability.png"),
        plots.gamma_vs_gap(results, folder / f"{prefix}policy_gamma_vs_gap.png"),
        plots.margins_over_training(results, folder / f"{prefix}policy_margins_over_training.png"),
    ]
    return [path for path in drawn if path is not None]


if __name__ == "__main__":
    run()
