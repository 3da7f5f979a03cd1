"""Policy benchmark: DPO, cDPO, MMPO, gamma-DPO, SimPO, gamma-SimPO, MMPO + dynamic margins, per-pair weights, ODPO,
KTO and MMPO-KTO, and MMPO on reward-model margins, on human-rated pairs.

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

Stock TRL runs DPO (`trl.DPOTrainer`) and KTO (`trl.KTOTrainer`). KTO-style methods train on the pairs unpaired:
each pair gives one desirable (chosen) and one undesirable (rejected) completion, two samples per pair in a batch of
twice as many samples, so that every method sees the same pairs per step; their reference is the base model (the
LoRA adapter disabled, exact), and they are evaluated by the same DPO implicit reward on the test pairs. SimPO is this
package's reference-free reward with the FIXED margin ``gamma0 = gamma_beta_ratio * beta`` (`GammaPOTrainer` with
``margin_iters=0``, so ``gamma_i = gamma0``), not TRL's `CPOTrainer`.

Sized for a shared 2-core CPU: pairs whose sentences have at most 24 tokens, the chat template with an empty system
message (SmolLM2's template otherwise inserts a 20-token default one), bf16 autocast, one thread, and the reference
log-probabilities computed ONCE with the base model for every (prompt, sentence) and handed to every trainer as TRL's
precomputed ``ref_chosen_logps``/``ref_rejected_logps`` columns (exact for LoRA, whose reference is the base model;
TRL's own `precompute_ref_log_probs` would redo them in each run).

    PYTHONPATH=. python benchmarks/quality/policy.py                        # the benchmark (see RESULTS.md)
    PYTHONPATH=. python benchmarks/quality/policy.py --quick --out /tmp/q   # tiny random model, seconds (the tests)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import common
import torch
from policy_eval import (
    NOVEL_PROMPTS,
    SHIPPED_PROMPTS,
    ReferenceLogps,
    conversational,
    generation_eval,
    preference_eval,
)

# MMPO's rationality coefficient: the fit of sigmoid(gamma * margin) to the empirical human preference probability of
# all training pairs (soft-target cross-entropy minimised at 1.327; `trl_margins.fit_gamma`), so that the soft targets
# are the raters' own preference probabilities.
MMPO_GAMMA = 1.33
DPO_BETA = 0.1
SIMPO_BETA = 2.5  # SimPO's beta for Mistral/Llama-3 Instruct; gamma0 = 0.5 * 2.5 = 1.25 (the package default ratio)
MAX_SENTENCE_TOKENS = 24
# ODPO (Amini et al., 2024): offset delta = alpha * log(score_chosen - score_rejected), the paper's log scaling and its
# default alpha = 1 (every VADER training margin is > 0: the smallest is 0.003)
ODPO_ALPHA = 1.0
# The reward-model margins of `mmpo_rm`: a MiniLM reward model's scores of the training pairs (`trl-margins annotate`).
# A Bradley-Terry reward model's own probability is sigmoid(r_chosen - r_rejected): gamma 1 takes it as the target
RM_ANNOTATIONS = common.RESULTS_DIR / "rm_annotated_train.jsonl"
RM_MMPO_GAMMA = 1.0


@dataclass(frozen=True)
class Method:
    label: str
    # "trl_dpo" (stock trl.DPOTrainer), "mmpo" (MMPOTrainer), "gamma_po" (GammaPOTrainer), "trl_kto" (stock
    # trl.KTOTrainer) or "mmpo_kto" (MMPOKTOTrainer)
    trainer: str
    reward: str  # "dpo" or "simpo": the implicit reward it is trained and evaluated with
    data: str  # "binary", "scored" or "scored_1rater": which rows of `common.LabelledPairs` it trains on
    config: dict[str, Any] = field(default_factory=dict)
    settings: tuple[str, ...] = common.SETTINGS
    rows: str | None = None  # a transform of the training rows in ROW_TRANSFORMS (a weight column, RM scores)

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
    # DPO with per-pair weights (MADPO-style): the raters' confidence |2p - 1| in the pair's orientation, p the
    # MMPO target sigmoid(1.33 * m) (1.33: the fit to the raters' preference probabilities), normalised to mean 1 so
    # the loss keeps DPO's scale. A near-tie (p ~ 1/2) counts little; a pair the raters agree on counts most
    "weighted_dpo": Method(
        "DPO, weights |2p-1|", "mmpo", "dpo", "scored", {"weight_column": "pair_weight"}, rows="confidence_weights"
    ),
    "odpo": Method(
        f"ODPO alpha={ODPO_ALPHA:g}, log", "mmpo", "dpo", "scored", {"odpo_alpha": ODPO_ALPHA, "odpo_scaling": "log"}
    ),
    "kto": Method("KTO (trl.KTOTrainer)", "trl_kto", "dpo", "binary"),
    # MMPO's KTO weights (MMPO paper, App. B): each sentence's mean rating against the training median
    "mmpo_kto": Method(f"MMPO-KTO gamma={MMPO_GAMMA}", "mmpo_kto", "dpo", "scored", {"mmpo_gamma": MMPO_GAMMA}),
    # What a user without human scores gets: the setting's labels, margins from a MiniLM reward model's scores (RM
    # disagreeing with a label gives p < 1/2, i.e. the pair swapped: `negative_margins="swap"`)
    "mmpo_rm": Method(
        f"MMPO on RM margins, gamma={RM_MMPO_GAMMA:g}",
        "mmpo",
        "dpo",
        "binary",
        {"mmpo_gamma": RM_MMPO_GAMMA, "negative_margins": "swap"},
        rows="rm_scores",
    ),
    # beta-DPO with its authors' HH setting: a = 0.6 on the gap without beta0, i.e. beta_dpo_alpha = 0.6 / 0.1 on
    # ours (which includes beta0); 80% of each batch of 8 kept (6 pairs)
    "beta_dpo": Method("beta-DPO a=0.6", "mmpo", "dpo", "binary", {"beta_dpo_alpha": 0.6 / DPO_BETA}),
}
TRACKED_METHODS = ("dpo", "mmpo")  # evaluated during training, for the margins-over-training figure


def confidence_weights(rows: list[dict], annotations: Path) -> list[dict]:
    """`pair_weight` = |2 sigmoid(gamma * m) - 1| = tanh(gamma * |m| / 2) of each pair's margin, with mean 1."""
    import math

    raw = [math.tanh(MMPO_GAMMA * abs(r["score_chosen"] - r["score_rejected"]) / 2) for r in rows]
    mean = sum(raw) / len(raw)
    return [{**r, "pair_weight": w / mean} for r, w in zip(rows, raw)]


def load_rm_annotations(path: Path) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(prompt, chosen, rejected) -> (score_chosen, score_rejected) of the reward-model-annotated training pairs."""
    if not path.is_file():
        raise SystemExit(
            f"[policy] mmpo_rm needs the reward-model scores of the training pairs in {path} (JSONL rows with "
            "prompt, chosen, rejected, score_chosen, score_rejected from `trl-margins annotate` with the MiniLM "
            "reward model); it is missing. Produce it first, pass --rm-annotations, or leave mmpo_rm out of --methods."
        )
    table = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            table[(row["prompt"], row["chosen"], row["rejected"])] = (
                float(row["score_chosen"]), float(row["score_rejected"])
            )  # fmt: skip
    return table


def rm_scores(rows: list[dict], annotations: Path) -> list[dict]:
    """The rows with the reward model's scores, matched by (prompt, chosen, rejected) in either order (a label
    setting may have swapped the pair)."""
    table = load_rm_annotations(annotations)
    out, missing = [], 0
    for r in rows:
        if (key := (r["prompt"], r["chosen"], r["rejected"])) in table:
            chosen, rejected = table[key]
        elif (key := (r["prompt"], r["rejected"], r["chosen"])) in table:
            rejected, chosen = table[key]
        else:
            missing += 1
            continue
        out.append({**r, "score_chosen": chosen, "score_rejected": rejected})
    if missing:
        raise SystemExit(f"[policy] {annotations} lacks the reward-model scores of {missing} of {len(rows)} pairs.")
    return out


ROW_TRANSFORMS = {"confidence_weights": confidence_weights, "rm_scores": rm_scores}


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


# ---- training ------------------------------------------------------------------------------------------------------
def trainer_classes() -> dict[str, tuple[type, type]]:
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    from trl_margins import GammaPOConfig, GammaPOTrainer, MMPOConfig, MMPOKTOConfig, MMPOKTOTrainer, MMPOTrainer

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
        "trl_kto": (KTOTrainer, KTOConfig),
        "mmpo_kto": (MMPOKTOTrainer, MMPOKTOConfig),
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

    from trl_margins.data.formatting import unpair_preferences

    trainer_cls, config_cls = trainer_classes()[method.trainer]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    extra: dict[str, Any] = {"beta": DPO_BETA, **method.config}
    kto = method.trainer.endswith("kto")
    batch_size = 2 * sizes.batch_size if kto else sizes.batch_size  # two samples per pair: the same pairs per step
    # KTO's reference is the base model through the disabled adapter (TRL's precomputed columns are DPO's)
    uses_reference = method.reward == "dpo" and not kto
    if kto:
        # one desirable + one undesirable row per pair, each with its sentence's score where the rows are scored
        train_data = unpair_preferences(Dataset.from_list([conversational(r) for r in rows])).to_list()
        track_rows = None
    elif uses_reference:
        train_data = [conversational(r) for r in reference.attach(rows)]
    else:
        train_data = [conversational(r) for r in rows]
    if uses_reference:
        track_rows = None if track_rows is None else reference.attach(track_rows)
    if track_rows is not None:
        every = max(1, sizes.steps // sizes.track_points)
        extra.update(eval_strategy="steps", eval_steps=every, per_device_eval_batch_size=16)
    with tempfile.TemporaryDirectory() as out:
        args = config_cls(
            output_dir=out,
            per_device_train_batch_size=batch_size,
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
            train_dataset=Dataset.from_list(train_data),
            eval_dataset=None if track_rows is None else Dataset.from_list([conversational(r) for r in track_rows]),
            processing_class=tokenizer,
            peft_config=lora,
        )
        # TRL's precomputed-reference path (what `precompute_ref_log_probs=True` sets up), fed with the log-probs
        # computed once for all runs: the datasets carry `ref_chosen_logps`/`ref_rejected_logps`
        if not kto:
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


# ---- the benchmark -------------------------------------------------------------------------------------------------
def resolve_model(quick: bool) -> str:
    if quick:
        sys.path.insert(0, str(common.REPO_ROOT))
        from tests.conftest import build_tiny_model

        return build_tiny_model(tempfile.mkdtemp(prefix="tiny-policy-"))
    from trl_margins.data.assets import smollm2_path

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
    parser.add_argument(
        "--rm-annotations", type=Path, default=RM_ANNOTATIONS, help="the training pairs' reward-model scores (mmpo_rm)"
    )
    parser.add_argument("--merge", type=Path, nargs="+", help="merge these policy.json shards into <out>/policy.json")
    args, argv, out_path, figures = common.parse_benchmark_args(parser, argv, "policy.json")
    if args.merge:
        return merge(args.merge, out_path, figures, argv)
    if (redrawn := common.redraw_figures(args, out_path, figures, draw_figures)) is not None:
        return redrawn

    sizes = common.resolve_sizes(args, QUICK_SIZES if args.quick else Sizes())
    common.require_fast_bf16(sizes.bf16, "pass --fp32 and write to its own --out", args.allow_software_bf16)
    if any(METHODS[m].rows == "rm_scores" for m in args.methods):
        load_rm_annotations(args.rm_annotations)  # fail now, with the message, not after hours of other runs
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
    seeds = [s for s in common.seeds_to_run(args, sizes) if args.only_seeds is None or s in args.only_seeds]
    results["heldout"] = common.heldout_record(test_rows, [r["human_pref_prob"] for r in test_rows])
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
        if method.rows is not None:
            rows = ROW_TRANSFORMS[method.rows](rows, args.rm_annotations)
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
            "predictions": common.pack_floats(pref["margins"]),
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
        # A field added to `Method` later (e.g. `rows`) is absent from older runs: at its default None it is the same
        mine = {k: v for k, v in current[run["method"]].items() if k in run["method_config"] or v is not None}
        return _renamed_keys(run["method_config"]) != mine

    results.setdefault("dropped_runs", [])
    results["dropped_runs"] += [{k: r[k] for k in ("method", "setting", "seed")} for r in results["runs"] if stale(r)]
    results["runs"] = [r for r in results["runs"] if not stale(r)]


# Trainer options renamed since runs were stored, with the same meaning: (old key, old value) -> (new key, new value)
RENAMED_OPTIONS = {("reference_free", True): ("reward_type", "simpo")}  # GammaPOConfig, renamed in f9dd64c


def _renamed_keys(method_config: dict[str, Any]) -> dict[str, Any]:
    config = {}
    for key, value in method_config.get("config", {}).items():
        new_key, new_value = RENAMED_OPTIONS.get((key, value), (key, value))
        config[new_key] = new_value
    return {**method_config, "config": config}


def fill_reused(results: dict[str, Any], train_rows: list[dict]) -> None:
    """Add the runs that need no training because a finished run of the same method and seed trained on exactly the
    same data (MMPO in (b) keeps the mean ratings of (a)); what the training loop does, for merged shards."""
    ratings = common.load_ratings()
    for setting in common.SETTINGS:
        for seed in sorted({r["seed"] for r in results["runs"]}):
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
