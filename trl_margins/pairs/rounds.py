"""On-policy rounds with margins (`trl-margins rounds`): K times generate -> annotate -> select -> train -> evaluate,
each round starting from the last round's policy, and the reward model's margins in the loss (MMPO's soft targets on
its score differences by default; any trainer and knob of the package).

This is the practice of iterative DPO (RLHFlow/Online-RLHF@3a00ed83:dpo_iteration/run_dpo.py, best against worst of
N samples scored by a reward model, the reference kept at the first policy; OpenRLHF's
`examples/scripts/train_iterative_dpo.sh`), which computes the margin and throws it away; here it is the signal.

Round `r` (folder `output_dir/round-r/`):

1. `generate`: N completions per prompt from the round's policy, on the round's prompts (a disjoint slice of the
   prompt list per round, or the same prompts each round) -> `completions.jsonl`;
2. `annotate`: every completion scored by the reward model -> `scored/annotated.jsonl`;
3. `select`: best against worst per prompt (the `reward_annotated` adapter), then the `select` rule -> `pairs.jsonl`;
4. `train`: from the round's policy, the reference the first policy (RLHFlow's practice; `ref: previous` takes the
   last round's) -> `model/`, and the next round's policy in `policy/`;
5. `evaluate`: the new policy's implicit rewards on a held-out set of pairs -> `heldout.json` (the metrics) and
   `heldout_rewards.json` (each pair's chosen and rejected reward).

A finished stage is never redone: its output and then a done marker (`<stage>.done`) are written atomically, and an
interrupted stage restarts from its own checkpoint (the shards of `generate` and `annotate`, the trainer's
`checkpoint-N`), so `kill -9` at any point and the same command again give the result of an uninterrupted run.
`rounds.json` is rewritten after every stage, and `rounds.png` plots the held-out metrics across rounds.

Training and the held-out policy's loading are the caller's (`train`): the command line trains through its recipe
path, the same as `trl-margins mmpo`. Imports `data`, `evaluation`, `pairs` and `errors`: no command line.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data.adapters import apply_dataset_adapter
from ..data.loading import load_preference_dataset
from ..errors import UsageError
from ..evaluation.calibration import preference_metrics
from .annotate import AnnotateConfig, annotate, load_reward_model, resolve_dtype
from .generate import GenerateConfig, generate_to_file, transformers_sampler, unique_prompts, vllm_sampler
from .select import select_by_margin
from .shards import write_atomically

logger = logging.getLogger(__name__)

STAGES = ("generate", "annotate", "select", "train", "evaluate")
REFERENCES = ("first", "previous")
SUMMARY_FILE = "rounds.json"


@dataclass
class RoundsConfig:
    """What `run_rounds` does: the models, the prompts, the held-out pairs, and each stage's settings."""

    output_dir: str = field(metadata={"help": "Where each round's folder, `rounds.json` and `rounds.png` go."})
    policy: str = field(metadata={"help": "The first policy: a folder, a hub id or a bundled model name."})
    reward_model: str | dict[str, Any] = field(
        metadata={
            "help": "A sequence classifier with one output (folder or hub id), or a `trl-margins reward` recipe "
            "(a mapping), trained once into `output_dir/reward-model` before the first round."
        }
    )
    prompts: str = field(metadata={"help": "A dataset with a `prompt` column (file, folder or hub id)."})
    rounds: int = field(default=2, metadata={"help": "How many rounds to run."})
    prompts_split: str | None = field(default="train", metadata={"help": "The split of `prompts` to read."})
    prompts_per_round: int | None = field(
        default=None, metadata={"help": "Prompts per round, a new slice each round; unset: every prompt, each round."}
    )
    same_prompts: bool = field(
        default=False, metadata={"help": "Every round on the first `prompts_per_round` prompts, not a new slice."}
    )
    ref: str = field(
        default="first",
        metadata={"help": "The reference model of each round's training: the `first` policy, or the `previous` one."},
    )
    heldout: str | None = field(
        default=None,
        metadata={"help": "Pairs (`prompt`, `chosen`, `rejected`) scored by the policy after each round."},
    )
    heldout_split: str | None = field(default="test", metadata={"help": "The split of `heldout` to read."})
    heldout_adapter: str | None = field(
        default=None, metadata={"help": "A dataset adapter the held-out rows go through first, as in training."}
    )
    heldout_max_samples: int | None = field(default=None, metadata={"help": "Score the first N held-out pairs only."})
    heldout_prob_column: str | None = field(
        default=None,
        metadata={"help": "The held-out column of each pair's empirical preference probability, for the calibration."},
    )
    generate: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "The generate stage's settings: `trl-margins generate`'s options."}
    )
    annotate: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "The annotate stage's settings: `trl-margins annotate`'s options besides `output_dir`."},
    )
    select: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "`min_margin` or `min_quantile`; empty keeps every scored pair."}
    )
    train: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "A training recipe: its `mode` (mmpo, gamma-po or kto; default mmpo on the reward model's "
            "margins) and that command's keys."
        },
    )

    def __post_init__(self):
        if self.rounds < 1:
            raise UsageError(f"`rounds` must be >= 1, got {self.rounds}.")
        if self.ref not in REFERENCES:
            raise UsageError(f"`ref` must be one of {REFERENCES}, got {self.ref!r}.")
        if self.prompts_per_round is not None and self.prompts_per_round < 1:
            raise UsageError(f"`prompts_per_round` must be >= 1, got {self.prompts_per_round}.")
        unknown = set(self.select) - {"min_margin", "min_quantile"}
        if unknown:
            raise UsageError(f"`select` takes min_margin or min_quantile, not {sorted(unknown)}.")
        GenerateConfig(**self.generate)  # the stage settings fail here, before any model is loaded
        AnnotateConfig(output_dir=str(self.output_dir), **self.annotate)


@dataclass
class Round:
    """The files of one round."""

    folder: Path

    def done(self, stage: str) -> Path:
        return self.folder / f"{stage}.done"

    @property
    def completions(self) -> Path:
        return self.folder / "completions.jsonl"

    @property
    def scored(self) -> Path:
        return self.folder / "scored"

    @property
    def pairs(self) -> Path:
        return self.folder / "pairs.jsonl"

    @property
    def model(self) -> Path:
        return self.folder / "model"

    @property
    def heldout(self) -> Path:
        return self.folder / "heldout.json"

    @property
    def heldout_rewards(self) -> Path:
        return self.folder / "heldout_rewards.json"


TrainStage = Callable[[int, str, str, Path, "Round"], str]
"""`(round, policy, reference, pairs file, the round's files) -> the trained policy's folder`."""
RewardStage = Callable[[dict[str, Any], Path], str]
"""`(a reward-model recipe, its output folder) -> the trained reward model's folder`."""


def round_prompts(prompts: list[Any], config: RoundsConfig, r: int) -> list[Any]:
    """Round `r`'s prompts: the `r`-th disjoint slice of `prompts_per_round`, or the first slice every round."""
    n = config.prompts_per_round or len(prompts)
    start = 0 if config.same_prompts or config.prompts_per_round is None else r * n
    part = prompts[start : start + n]
    if not part:
        raise UsageError(
            f"Round {r} has no prompts: {len(prompts)} prompts give {len(prompts) // n} disjoint slices of "
            f"`prompts_per_round`={n}. Use fewer rounds, a smaller `prompts_per_round`, or `same_prompts: true`."
        )
    return part


class Rounds:
    """The loop: every process runs it; `state` (an `accelerate.PartialState`) tells its rank and waits for the
    others. Stages that split their work (`generate`, `annotate`, `train`) run on every rank; `select` and
    `evaluate` on rank 0."""

    def __init__(self, config: RoundsConfig, train: TrainStage, state, train_reward: RewardStage | None = None):
        self.config, self.train_stage, self.train_reward, self.state = config, train, train_reward, state
        self.output_dir = Path(config.output_dir)
        self.summary_path = self.output_dir / SUMMARY_FILE
        self.summary = self._load_summary()

    # ---- bookkeeping
    def _load_summary(self) -> dict[str, Any]:
        if self.summary_path.is_file():
            return json.loads(self.summary_path.read_text())
        return {"config": asdict(self.config), "rounds": []}

    def _record(self, r: int, stage: str, info: dict[str, Any]) -> None:
        """Write the stage's done marker, then the summary (rank 0)."""
        if self.state.process_index == 0:
            rounds = self.summary["rounds"]
            while len(rounds) <= r:
                rounds.append({"round": len(rounds), "stages": {}})
            rounds[r]["stages"][stage] = info
            write_atomically(Round(self._folder(r)).done(stage), json.dumps(info) + "\n")
            write_atomically(self.summary_path, json.dumps(self.summary, indent=2) + "\n")
        self.state.wait_for_everyone()

    def _folder(self, r: int) -> Path:
        return self.output_dir / f"round-{r}"

    def policy_of(self, r: int) -> str:
        """The policy round `r` starts from: the first one, or the one the last round trained."""
        if r == 0:
            return self.config.policy
        return json.loads(Round(self._folder(r - 1)).done("train").read_text())["policy"]

    def reference_of(self, r: int) -> str:
        return self.config.policy if self.config.ref == "first" else self.policy_of(r)

    # ---- the run
    @property
    def dtype(self):
        """What the sampling, scoring and held-out models load in: bfloat16 on a GPU, float32 on a CPU."""
        return resolve_dtype("auto", self.state.device)

    @property
    def reward_model(self) -> str:
        """The reward model's folder: the given one, or the one the `reward` stage trained from its recipe."""
        if isinstance(self.config.reward_model, str):
            return self.config.reward_model
        return json.loads((self.output_dir / "reward-model.done").read_text())["reward_model"]

    def _reward(self) -> None:
        """Before round 0, when `reward_model` is a recipe: train it once, into `output_dir/reward-model`."""
        if isinstance(self.config.reward_model, str) or (self.output_dir / "reward-model.done").is_file():
            return
        if self.train_reward is None:
            raise UsageError("`reward_model` is a recipe, but nothing was given to train it with.")
        started = time.monotonic()
        path = self.train_reward(dict(self.config.reward_model), self.output_dir / "reward-model")
        if self.state.process_index == 0:
            info = {"reward_model": path, "seconds": round(time.monotonic() - started, 1)}
            self.summary["reward_model"] = info
            write_atomically(self.output_dir / "reward-model.done", json.dumps(info) + "\n")
            write_atomically(self.summary_path, json.dumps(self.summary, indent=2) + "\n")
        self.state.wait_for_everyone()

    def run(self) -> dict[str, Any]:
        prompts = unique_prompts(load_preference_dataset(self.config.prompts, self.config.prompts_split))
        for r in range(self.config.rounds):  # every round has prompts, or the run stops before it starts
            round_prompts(prompts, self.config, r)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._reward()
        for r in range(self.config.rounds):
            paths = Round(self._folder(r))
            paths.folder.mkdir(parents=True, exist_ok=True)
            for stage in STAGES:
                if paths.done(stage).is_file():
                    continue
                started = time.monotonic()
                info = getattr(self, f"stage_{stage}")(r, paths, prompts)
                gc.collect()  # each stage's models go before the next stage loads its own
                self._record(r, stage, {**info, "seconds": round(time.monotonic() - started, 1)})
        if self.state.process_index == 0:
            plot_rounds(self.summary, self.output_dir / "rounds.png")
        return self.summary

    def stage_generate(self, r: int, paths: Round, prompts: list[Any]) -> dict[str, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = GenerateConfig(**self.config.generate)
        policy = self.policy_of(r)
        part = round_prompts(prompts, self.config, r)
        tokenizer = AutoTokenizer.from_pretrained(policy)
        if config.backend == "vllm":
            if self.state.num_processes > 1:
                raise UsageError(
                    "`generate.backend: vllm` samples in one process, with vLLM's own parallelism: run rounds without "
                    "a launcher, or sample with `--generate.backend transformers` in every process."
                )
            sampler = vllm_sampler(policy, config)
        else:
            model = AutoModelForCausalLM.from_pretrained(policy, dtype=self.dtype).to(self.state.device)
            sampler = transformers_sampler(model, tokenizer, config)
        generate_to_file(
            sampler, tokenizer, part, config, paths.completions, source={"policy": policy, "round": r},
            rank=self.state.process_index, world_size=self.state.num_processes, barrier=self.state.wait_for_everyone,
        )  # fmt: skip
        return {"prompts": len(part), "completions": len(part) * config.num_completions, "policy": policy}

    def stage_annotate(self, r: int, paths: Round, prompts: list[Any]) -> dict[str, Any]:
        from datasets import load_dataset

        model, tokenizer = load_reward_model(self.reward_model, dtype=self.dtype, device=self.state.device)
        rows = load_dataset("json", data_files=str(paths.completions), split="train")
        report = annotate(
            model, tokenizer, rows, AnnotateConfig(output_dir=str(paths.scored), **self.config.annotate),
            source={"reward_model": self.reward_model, "round": r}, rank=self.state.process_index,
            world_size=self.state.num_processes, barrier=self.state.wait_for_everyone,
        )  # fmt: skip
        return {"rows": report.rows, "reward_model": self.reward_model}

    def stage_select(self, r: int, paths: Round, prompts: list[Any]) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if self.state.process_index == 0:
            scored = load_preference_dataset(str(paths.scored / "annotated.jsonl"))
            pairs = apply_dataset_adapter("reward_annotated", scored)
            if self.config.select:
                pairs, report = select_by_margin(pairs, **self.config.select)
                info = {"kept": report.kept, "dropped": report.dropped, "cut": report.cut}
            else:
                info = {"kept": len(pairs), "dropped": 0}
            info["prompts_tied"] = len(scored) - (info["kept"] + info["dropped"])  # all completions scored alike
            if not len(pairs):
                raise UsageError(
                    f"Round {r} has no pairs to train on: every prompt's completions tied, or the `select` rule "
                    f"{self.config.select} kept none. Sample more completions, or loosen the rule."
                )
            pairs.to_json(str(paths.pairs) + ".tmp", lines=True, force_ascii=False)
            Path(str(paths.pairs) + ".tmp").replace(paths.pairs)
        return info

    def stage_train(self, r: int, paths: Round, prompts: list[Any]) -> dict[str, Any]:
        policy, reference = self.policy_of(r), self.reference_of(r)
        trained = self.train_stage(r, policy, reference, paths.pairs, paths)
        return {"policy": trained, "from": policy, "reference": reference}

    def trained_policy(self, r: int) -> str:
        return json.loads(Round(self._folder(r)).done("train").read_text())["policy"]

    def heldout_rewards(self, policy: str, reference: str, pairs) -> tuple[Any, Any]:
        """The trained policy's implicit rewards on the held-out pairs, as the training loss defines them (`beta`,
        `reward_type`, `max_length` of the train recipe), against the round's reference."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..evaluation.rewards import policy_rewards

        train = self.config.train
        simpo = train.get("reward_type", "dpo") == "simpo"
        model = AutoModelForCausalLM.from_pretrained(policy, dtype=self.dtype).to(self.state.device)
        ref = (
            None if simpo else AutoModelForCausalLM.from_pretrained(reference, dtype=self.dtype).to(self.state.device)
        )
        return policy_rewards(
            model, AutoTokenizer.from_pretrained(policy), pairs, float(train.get("beta", 0.1)), ref_model=ref,
            reward_type="simpo" if simpo else "dpo", batch_size=int(train.get("per_device_eval_batch_size", 8)),
            max_length=train.get("max_length", 1024),
        )  # fmt: skip

    def stage_evaluate(self, r: int, paths: Round, prompts: list[Any]) -> dict[str, Any]:
        config = self.config
        if config.heldout is None or self.state.process_index != 0:
            return {}
        pairs = apply_dataset_adapter(
            config.heldout_adapter, load_preference_dataset(config.heldout, config.heldout_split)
        )
        if config.heldout_max_samples is not None:
            pairs = pairs.select(range(min(config.heldout_max_samples, len(pairs))))
        chosen, rejected = self.heldout_rewards(self.trained_policy(r), self.reference_of(r), pairs)
        metrics = {"hard labels": _brief(preference_metrics(chosen, rejected))}
        if config.heldout_prob_column is not None:
            import torch

            probs = torch.tensor([float(p) for p in pairs[config.heldout_prob_column]], dtype=torch.float64)
            metrics[config.heldout_prob_column] = _brief(preference_metrics(chosen, rejected, probs))
        rewards = {"chosen": chosen.tolist(), "rejected": rejected.tolist()}  # per pair, for tests over pairs
        write_atomically(paths.heldout_rewards, json.dumps(rewards) + "\n")
        write_atomically(paths.heldout, json.dumps(metrics, indent=2) + "\n")
        return {"pairs": len(pairs), "metrics": metrics}


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("num_pairs", "accuracy", "mean_margin", "ece", "brier", "nll")}


def plot_rounds(summary: dict[str, Any], path: Path) -> Path | None:
    """The held-out accuracy and ECE after each round, as a PNG (needs matplotlib; None without it, or without
    held-out metrics)."""
    points = [(r["round"], r["stages"].get("evaluate", {}).get("metrics")) for r in summary["rounds"]]
    points = [(r, m) for r, m in points if m]
    if not points:
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("rounds: matplotlib is not installed, so %s is not drawn.", path)
        return None
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    accuracy, ece = fig.subplots(1, 2)
    for target in points[0][1]:
        rounds = [r for r, _ in points]
        accuracy.plot(rounds, [m[target]["accuracy"] for _, m in points], marker="o", label=target)
        ece.plot(rounds, [m[target]["ece"] for _, m in points], marker="o", label=target)
    accuracy.set(xlabel="round", ylabel="held-out accuracy", xticks=[r for r, _ in points])
    ece.set(xlabel="round", ylabel="held-out ECE", xticks=[r for r, _ in points])
    ece.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return path
