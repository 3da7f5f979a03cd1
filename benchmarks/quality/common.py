"""Shared pieces of the quality benchmarks: the label settings, result files, summaries and machine facts.

Label settings (one per noise model; the TEST pairs always keep the shipped orientation, i.e. the mean ratings):

* ``clean``  (a) the shipped pairs: ``chosen`` has the higher mean rating over 20+ raters.
* ``rater``  (b) realistic noise: each TRAINING pair's binary label comes from ONE rating drawn at random for each of
  its two sentences (a random rater per sentence, as if each sentence had been rated once); a tie is a coin flip.
  Label-only methods train on that label. Score-based methods (MMPO) get the MEAN ratings as their granular feedback:
  margin ``|mean difference|`` and a target probability that follows the mean orientation, whatever the drawn label
  says. Because the MMPO loss is symmetric (``soft_target_loss(-z, 1 - p) == soft_target_loss(z, p)``), that is
  exactly training on the shipped pair with ``p = sigmoid(gamma * margin)``: MMPO's data in (b) equals its data in (a).
  This is MMPO's premise (scores averaged over many raters carry the information one rater's binary vote lacks), and
  it is an advantage by construction; the ``mmpo_1rater`` variant removes it: its scores are the same single drawn
  ratings that decided the binary label (margin = their difference, ``0`` for a coin-flipped tie, i.e. ``p = 1/2``).
* ``flip``   (c) gamma-PO's robustness setting: 20% of the training pairs, drawn at random, have chosen and rejected
  exchanged. The corruption hits the whole annotation: score-based methods see the flipped orientation with the
  unchanged ``|margin|``, i.e. a confident soft target towards the WRONG response for a flipped pair with a large
  margin (``p = sigmoid(gamma * |m|)``), not the truth.

Rows of a training set keep only what the method may see: label-only methods get ``prompt``/``chosen``/``rejected``;
score-based ones also ``score_chosen``/``score_rejected`` (``margin = score_chosen - score_rejected >= 0``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETTINGS = ("clean", "rater", "flip")
SETTING_TITLES = {
    "clean": "(a) labels from the mean ratings",
    "rater": "(b) one random rater per sentence",
    "flip": "(c) 20% flipped labels",
}
FLIP_RATE = 0.2
HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
REPO_ROOT = HERE.parent.parent

Row = dict[str, Any]


@dataclass
class LabelledPairs:
    """One label setting of one training subset: what each kind of method trains on, plus label statistics."""

    binary: list[Row]  # label-only methods (DPO, cDPO, SimPO, gamma-PO, Bradley-Terry)
    scored: list[Row]  # score-based methods (MMPO), with score_chosen/score_rejected
    scored_1rater: list[Row]  # (b) only: MMPO given the single drawn ratings as scores; else the same as `scored`
    stats: dict[str, float]


def load_ratings() -> dict[str, list[int]]:
    """Raw integer ratings of every VADER sentence, by id."""
    from trl_margins.data.assets import load_vader_sentences

    sentences = load_vader_sentences()
    return dict(zip(sentences["id"], sentences["ratings"]))


def select_pairs(split: str, n: int | None, seed: int = 0) -> list[Row]:
    """A fixed random subset of the shipped pairs (all of them with ``n=None``); the same for every method and seed,
    so that the seeds measure training randomness and label noise, not which pairs were drawn."""
    from trl_margins.data.assets import load_vader_preferences

    rows = load_vader_preferences(split).to_list()
    if n is not None and n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    return rows


def _pair(row: Row, swap: bool, score_chosen: float | None = None, score_rejected: float | None = None) -> Row:
    chosen, rejected = (row["rejected"], row["chosen"]) if swap else (row["chosen"], row["rejected"])
    out = {"prompt": row["prompt"], "chosen": chosen, "rejected": rejected}
    if score_chosen is not None:
        out["score_chosen"], out["score_rejected"] = float(score_chosen), float(score_rejected)
    return out


def make_label_setting(rows: Sequence[Row], setting: str, seed: int, ratings: dict[str, list[int]]) -> LabelledPairs:
    """The training pairs of one label setting (see the module docstring). ``seed`` draws the raters or the flips."""
    rng = random.Random(f"{setting}-{seed}")  # a string seed is stable across Python versions and processes
    mean_scored = [_pair(r, False, r["score_chosen"], r["score_rejected"]) for r in rows]
    if setting == "clean":
        binary = [_pair(r, False) for r in rows]
        return LabelledPairs(binary, mean_scored, mean_scored, {"wrong_label_rate": 0.0})
    if setting == "rater":
        binary, one_rater = [], []
        ties = 0
        for r in rows:
            rating_c, rating_r = rng.choice(ratings[r["chosen_id"]]), rng.choice(ratings[r["rejected_id"]])
            ties += rating_c == rating_r
            swap = rating_c < rating_r or (rating_c == rating_r and rng.random() < 0.5)
            binary.append(_pair(r, swap))
            # The single rater's scores, oriented like the binary label they decided, so the margin is >= 0
            high, low = max(rating_c, rating_r), min(rating_c, rating_r)
            one_rater.append(_pair(r, swap, high, low))
        wrong = sum(b["chosen"] != r["chosen"] for b, r in zip(binary, rows))
        stats = {"wrong_label_rate": wrong / len(rows), "tie_rate": ties / len(rows)}
        return LabelledPairs(binary, mean_scored, one_rater, stats)
    if setting == "flip":
        flipped = set(rng.sample(range(len(rows)), round(FLIP_RATE * len(rows))))
        binary = [_pair(r, i in flipped) for i, r in enumerate(rows)]
        # The scores travel with the corrupted annotation: margin |m| towards the flipped "chosen"
        scored = [_pair(r, i in flipped, r["score_chosen"], r["score_rejected"]) for i, r in enumerate(rows)]
        return LabelledPairs(binary, scored, scored, {"wrong_label_rate": len(flipped) / len(rows)})
    raise ValueError(f"Unknown label setting {setting!r}; choose from {SETTINGS}.")


def rows_fingerprint(rows: Sequence[Row]) -> str:
    """Hash of a training set: two runs with the same method, seed and fingerprint are the same computation."""
    return hashlib.sha256(json.dumps(list(rows), sort_keys=True).encode()).hexdigest()[:16]


# ---- result files --------------------------------------------------------------------------------------------------
def load_results(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: Any) -> None:
    """Write atomically, so an interrupted benchmark never leaves a truncated results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Not JSON serialisable: {type(value).__name__}")


def same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same sizes, model and hyperparameters; the method table may differ (each run records its own method config),
    and so may the number of seeds (each run records its seed: shards that add seeds 3 and 4 to a 3-seed run merge)."""

    def comparable(config: dict[str, Any]) -> dict[str, Any]:
        sizes = {k: v for k, v in config.get("sizes", {}).items() if k != "seeds"}
        return {**{k: v for k, v in config.items() if k != "methods"}, "sizes": sizes}

    return comparable(a) == comparable(b)


def benchmark_parser(
    description: str, result_file: str, methods: Sequence[str], model: str
) -> argparse.ArgumentParser:
    """The command-line options both quality benchmarks share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=f"tiny random {model} and tiny sizes (for the tests)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"folder of {result_file}")
    parser.add_argument("--figures", type=Path, default=None, help="folder of the PNGs (default: <out>/../figures)")
    parser.add_argument("--methods", nargs="+", default=list(methods), choices=list(methods))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, default=None, help="run seeds 0 .. N-1")
    parser.add_argument(
        "--seed-list", type=int, nargs="+", default=None, help="run exactly these seeds (pre-registered ones)"
    )
    parser.add_argument("--train-pairs", type=int, default=None)
    parser.add_argument("--eval-pairs", type=int, default=None, help="held-out pairs (at most the split has)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a CPU shared with other jobs")
    parser.add_argument(
        "--fp32", action="store_true", help="train and evaluate in float32, not bf16 autocast: a separate family"
    )
    parser.add_argument(
        "--allow-software-bf16",
        action="store_true",
        help="run bf16 on a CPU without native bf16 anyway: reproduces a stored bf16 run's metrics, not its time",
    )
    parser.add_argument("--resume", action="store_true", help=f"keep the finished runs of an existing {result_file}")
    parser.add_argument("--figures-only", action="store_true", help=f"redraw the figures from {result_file}")
    return parser


def parse_benchmark_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, result_file: str
) -> tuple[argparse.Namespace, list[str], Path, Path]:
    """Parsed options, the argument list (recorded as the result's command), the result file and the figures folder;
    also sets torch's threads."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    configure_torch(args.threads)
    return args, argv, args.out / result_file, args.figures or args.out.parent / "figures"


def redraw_figures(args, out_path: Path, figures: Path, draw_figures) -> dict[str, Any] | None:
    """With `--figures-only`: the saved results, their figures drawn again by `draw_figures`; None for a real run."""
    if not args.figures_only:
        return None
    results = load_results(out_path)
    draw_figures(results, figures)
    return results


def command_line(benchmark: str, argv: Sequence[str]) -> str:
    """The command that reproduces a result file, as recorded in it."""
    return "PYTHONPATH=. python " + shlex.join([f"benchmarks/quality/{benchmark}.py", *argv])


def start_results(
    benchmark: str, argv: Sequence[str], args, config: dict[str, Any], out_path: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    """A benchmark's result dict: fresh, or with `--resume` the finished runs of `out_path` if its configuration is
    the same. `extra` holds the benchmark's own resumable keys and their empty values."""
    previous = load_results(out_path) if args.resume else None
    keep = previous is not None and same_config(previous["config"], config)
    if args.resume and not keep:
        print(f"[{benchmark}] --resume: no {out_path.name} with the same configuration; starting afresh", flush=True)
    results = {
        "benchmark": benchmark,
        "quick": args.quick,
        "command": command_line(benchmark, argv),
        "machine": machine_info(),
        "config": config,
    }
    for key, empty in {"label_stats": {}, "runs": [], **extra, "compute_s": 0.0}.items():
        results[key] = previous.get(key, empty) if keep else empty
    return results


class ResultsWriter:
    """Writes the result file after each run: adds the time since the last write to `compute_s` (so resumed and
    sharded runs sum their processes' times) and refreshes the summaries with `summarize(results)` first."""

    def __init__(self, results: dict[str, Any], out_path: Path, summarize: Callable[[dict[str, Any]], None]):
        self.results, self.out_path, self.summarize = results, out_path, summarize
        self.mark = time.time()

    def __call__(self) -> None:
        now = time.time()
        self.results["compute_s"] = round(self.results["compute_s"] + now - self.mark, 1)
        self.mark = now
        self.summarize(self.results)
        write_json(self.out_path, self.results)


def merge_results(shards: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result file from shards of the same benchmark and configuration run in parallel processes; the summary
    is recomputed by the next `--resume` invocation, which also reuses identical runs across settings."""
    first = shards[0]
    if any(not same_config(s["config"], first["config"]) for s in shards):
        raise ValueError("The shards were run with different configurations.")
    seeds = max(s["config"].get("sizes", {}).get("seeds", 0) for s in shards)
    merged = {
        **first,
        "config": {**first["config"], "sizes": {**first["config"].get("sizes", {}), "seeds": seeds}},
        "runs": [],
        "label_stats": {},
        "gamma_traces": {},
        "compute_s": 0.0,
        "shards": [s["command"] for s in shards],
    }
    for shard in shards:
        for run in shard["runs"]:
            if not find_run(merged["runs"], method=run["method"], setting=run["setting"], seed=run["seed"]):
                merged["runs"].append(run)
        for setting, stats in shard["label_stats"].items():
            merged["label_stats"].setdefault(setting, {}).update(stats)
        if shard.get("reference") and not merged.get("reference"):
            merged["reference"] = shard["reference"]
        for setting, traces in shard.get("gamma_traces", {}).items():  # a shard per setting: keep all of them
            merged["gamma_traces"].setdefault(setting, {}).update(traces)
        merged["compute_s"] += shard["compute_s"]
    return merged


def find_run(runs: Iterable[Row], **match: Any) -> Row | None:
    for run in runs:
        if all(run.get(k) == v for k, v in match.items()):
            return run
    return None


# ---- summaries -----------------------------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value) of finite values."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def summarize(runs: Sequence[Row], metrics: Sequence[str], baseline: str | None = None) -> dict[str, Any]:
    """``{setting: {method: {metric: mean/std/n}}}`` over seeds; with ``baseline``, also the paired difference to the
    baseline method on the same seed (``delta_<metric>``): methods share seeds, hence initialisation, data order and
    label noise, so the paired difference is the sharper comparison."""
    summary: dict[str, Any] = {}
    for setting in dict.fromkeys(r["setting"] for r in runs):
        in_setting = [r for r in runs if r["setting"] == setting]
        summary[setting] = {}
        for method in dict.fromkeys(r["method"] for r in in_setting):
            mine = [r for r in in_setting if r["method"] == method]
            entry = {m: mean_std([r["metrics"][m] for r in mine]) for m in metrics}
            if baseline is not None and method != baseline:
                base = {r["seed"]: r for r in in_setting if r["method"] == baseline}
                for m in metrics:
                    diffs = [r["metrics"][m] - base[r["seed"]]["metrics"][m] for r in mine if r["seed"] in base]
                    entry[f"delta_{m}"] = mean_std(diffs)
            summary[setting][method] = entry
    return summary


def fmt(stat: dict[str, float], digits: int = 3, signed: bool = False) -> str:
    if not stat or stat.get("n", 0) == 0:
        return "-"
    sign = "+" if signed else ""
    return f"{stat['mean']:{sign}.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---- environment ---------------------------------------------------------------------------------------------------
def configure_torch(threads: int | None) -> None:
    """Offline, quiet and with a fixed number of CPU threads (the machine is shared: fewer threads than cores can be
    faster than oversubscribing)."""
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TQDM_DISABLE": "1",
        "WANDB_DISABLED": "true",
        "TRANSFORMERS_VERBOSITY": "error",
    }.items():
        os.environ.setdefault(key, value)
    import torch

    if threads:
        torch.set_num_threads(threads)
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def cpu_flags() -> dict[str, Any]:
    """The CPU features that decide whether bf16 is fast here (`trl_margins._compat.cpu_flags`)."""
    from trl_margins._compat import cpu_flags as flags

    return flags()


def require_fast_bf16(bf16: bool, how_to_fp32: str, allow: bool = False) -> None:
    """Stop a bf16 run on a CPU that computes bf16 in software, before it starts: it would not reproduce the time of
    a run on a host with native bf16, and its numbers belong to another precision than an fp32 run's. `allow`
    (`--allow-software-bf16`) runs it anyway, to check a stored bf16 run's metrics."""
    flags = cpu_flags()
    if bf16 and not allow and not (flags["avx512_bf16"] or flags["amx"]):
        raise SystemExit(
            f"This CPU has no native bf16 (torch's capability: {flags['capability']}, no AVX512-BF16 or AMX), so bf16 "
            f"matrix products run in software (55x slower than fp32, measured). Either {how_to_fp32}, a separate "
            "family of results, or run on a host with native bf16 (--allow-software-bf16 runs it here anyway, for a "
            "stored run's metrics, not its time)."
        )


def seeds_to_run(args, sizes) -> list[int]:
    """`--seed-list` as given, else seeds 0 .. sizes.seeds - 1."""
    return list(args.seed_list) if args.seed_list else list(range(sizes.seeds))


def heldout_record(test_rows: Sequence[Row], targets) -> dict[str, Any]:
    """The held-out pairs every run's `predictions` are in the order of: their fingerprint and target probabilities
    (what the paired bootstrap resamples)."""
    return {"pairs": len(test_rows), "data": rows_fingerprint(test_rows), "human_pref_prob": pack_floats(targets)}


def pack_floats(values) -> str:
    """Per-pair values stored in a result file: float64, zlib-compressed, base64 (about 6 bytes a value)."""
    import base64
    import zlib

    import torch

    data = torch.as_tensor(values).detach().double().flatten().cpu().numpy().astype("<f8").tobytes()
    return base64.b64encode(zlib.compress(data, 9)).decode("ascii")


def unpack_floats(text: str):
    """The float64 tensor that `pack_floats` stored."""
    import base64
    import zlib

    import numpy as np
    import torch

    return torch.from_numpy(np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f8").copy())


def machine_info() -> dict[str, Any]:
    import accelerate
    import torch
    import transformers
    import trl

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "accelerate": accelerate.__version__,
        "peft": _version("peft"),
        "cpu_flags": cpu_flags(),
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def pending_runs(
    results: dict[str, Any],
    settings: Sequence[str],
    seeds: Iterable[int],
    methods: Sequence[str],
    registry: dict[str, Any],
    train_rows: Sequence[Row],
    ratings: dict[str, list[int]],
    save,
    tag: str,
):
    """The (setting, seed, method name, method, training rows) still to run, in order, shared by both benchmarks.

    Records each setting's label statistics, skips runs already in `results` (resume), and reuses a run whose training
    data is identical to one already done (e.g. MMPO in (b), whose mean-rating data equals (a)'s).
    """
    for setting in settings:
        for seed in seeds:
            labelled = make_label_setting(train_rows, setting, seed, ratings)
            results["label_stats"].setdefault(setting, {})[str(seed)] = labelled.stats
            for name in methods:
                method = registry[name]
                if setting not in method.settings or find_run(
                    results["runs"], method=name, setting=setting, seed=seed
                ):
                    continue
                rows = getattr(labelled, method.data)
                same = find_run(results["runs"], method=name, seed=seed, data=rows_fingerprint(rows))
                if same is not None:
                    results["runs"].append({**same, "setting": setting, "reused_from": same["setting"]})
                    print(f"[{tag}] {setting} seed {seed} {name}: same data as {same['setting']}, reused", flush=True)
                    save()
                    continue
                yield setting, seed, name, method, rows


def resolve_sizes(args, sizes):
    """A copy of a benchmark's run sizes with the command line's `--seeds`, `--train-pairs`, `--eval-pairs`,
    `--steps` and `--fp32` applied."""
    sizes = copy.copy(sizes)
    for name in ("seeds", "train_pairs", "eval_pairs", "steps"):
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    if args.fp32:
        sizes.bf16 = False
    return sizes
