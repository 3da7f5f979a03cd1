"""A reward model's margins against the human margins on the bundled VADER pairs, scored by `trl-margins annotate`.

For each pair, the human margin is the difference of the two sentences' mean ratings (20+ raters each, always > 0:
``chosen`` is the sentence rated more positive) and the reward model's margin is ``r(chosen) - r(rejected)``. Reported
on the test pairs (which no reward model trained by `trl-margins reward` on the train split has seen): sign agreement
(the share of pairs whose RM margin is > 0, i.e. pairwise accuracy), Pearson and Spearman correlation of the two
margins, and n; and a scatter plot. The train pairs are scored too and written, with the human scores beside the
reward model's, to ``rm_annotated_train.jsonl``, so that a policy benchmark can train MMPO on reward-model margins.

    PYTHONPATH=. python benchmarks/quality/rm_agreement.py --reward_model vader-rm --rm_train_pairs 512
    PYTHONPATH=. python benchmarks/quality/rm_agreement.py --reward_model RM --max_samples 8 --out /tmp/q  # smoke run

Writes ``<out>/rm_agreement.json`` (the numbers and the command), ``<out>/rm_annotated_train.jsonl`` and
``<figures>/rm_vs_human_margins.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import torch

PNG = "rm_vs_human_margins.png"
RM_COLUMNS = ("rm_score_chosen", "rm_score_rejected")  # annotate's output names: the pairs already hold human scores


def annotate_split(reward_model: str, split: str, work_dir: Path, max_samples: int | None, batch_size: int) -> list:
    """The bundled VADER pairs of ``split`` with the reward model's scores, through the `trl-margins annotate` path."""
    from trl_margins.cli import main

    argv = ["annotate", "--reward_model", reward_model, "--dataset", "trl_margins:vader", "--split", split,
            "--output_dir", str(work_dir / split), "--batch_size", str(batch_size),
            "--score_chosen_column", RM_COLUMNS[0], "--score_rejected_column", RM_COLUMNS[1]]  # fmt: skip
    if max_samples is not None:
        argv += ["--max_samples", str(max_samples)]
    if main(argv) != 0:
        raise SystemExit(f"[rm_agreement] trl-margins annotate failed on the {split} pairs")
    lines = (work_dir / split / "annotated.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties given their average rank (as Spearman's rho needs)."""
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=x.dtype)
    for value in torch.unique(x):
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.square().sum() * y.square().sum()).sqrt()
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def agreement(rm_margins: torch.Tensor, human_margins: torch.Tensor) -> dict[str, float]:
    """Sign agreement, Pearson and Spearman correlation of two margin vectors, and n."""
    rm_margins, human_margins = rm_margins.double(), human_margins.double()
    same_sign = torch.sign(rm_margins) == torch.sign(human_margins)
    return {
        "n": len(rm_margins),
        "sign_agreement": float(same_sign.double().mean()),
        "pearson": pearson(rm_margins, human_margins),
        "spearman": pearson(_ranks(rm_margins), _ranks(human_margins)),
        "rm_margin_mean": float(rm_margins.mean()),
        "rm_margin_std": float(rm_margins.std(unbiased=False)),
    }


def margins(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    rm = torch.tensor([r[RM_COLUMNS[0]] - r[RM_COLUMNS[1]] for r in rows], dtype=torch.float64)
    human = torch.tensor([r["score_chosen"] - r["score_rejected"] for r in rows], dtype=torch.float64)
    return rm, human


def annotated_train_rows(rows: list[dict], rm_train_pairs: int) -> list[dict]:
    """The train pairs with the RM's scores as ``score_chosen``/``score_rejected`` (what MMPO reads) and the human
    ones as ``human_score_*``. ``prompt`` is the shipped one (`load_vader_preferences`), not the newline-terminated
    one the commands train on, so that rows match `common.select_pairs` by (prompt, chosen, rejected)."""
    from trl_margins.data.assets import load_vader_preferences

    shipped = load_vader_preferences("train")
    out = []
    for i, row in enumerate(rows):
        assert (shipped[i]["chosen"], shipped[i]["rejected"]) == (row["chosen"], row["rejected"])  # input order
        out.append(
            {
                "prompt": shipped[i]["prompt"],
                "chosen": row["chosen"],
                "rejected": row["rejected"],
                "score_chosen": row[RM_COLUMNS[0]],
                "score_rejected": row[RM_COLUMNS[1]],
                "human_score_chosen": row["score_chosen"],
                "human_score_rejected": row["score_rejected"],
                "human_pref_prob": row["human_pref_prob"],
                "chosen_id": row["chosen_id"],
                "rejected_id": row["rejected_id"],
                "in_rm_training": i < rm_train_pairs,  # `--max_train_samples N` trains on the first N pairs
            }
        )
    return out


def draw(rm: torch.Tensor, human: torch.Tensor, stats: dict[str, Any], title: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 4.4))
    ax = fig.add_subplot()
    ax.scatter(human.numpy(), rm.numpy(), s=9, alpha=0.5, color="tab:blue", edgecolors="none")
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("human margin (difference of mean ratings, -4..4 scale)")
    ax.set_ylabel("reward-model margin r(chosen) - r(rejected)")
    ax.set_title(
        f"{title}\nn={stats['n']}, sign agreement {stats['sign_agreement']:.3f}, "
        f"Pearson {stats['pearson']:.3f}, Spearman {stats['spearman']:.3f}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def run(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward_model", required=True, help="A single-output reward model (path or hub id).")
    parser.add_argument("--rm_train_pairs", type=int, default=0, help="It was trained on the first N train pairs.")
    parser.add_argument("--max_samples", type=int, default=None, help="Score only the first N pairs of each split.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--figures", type=Path, default=None, help="Default: <out>/../figures.")
    parser.add_argument("--work_dir", type=Path, default=None, help="annotate's shards (default: a temp folder).")
    args = parser.parse_args(argv)
    figures = args.figures or args.out.parent / "figures"

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        test_rows = annotate_split(args.reward_model, "test", work, args.max_samples, args.batch_size)
        t_test = time.time() - started
        train_rows = annotate_split(args.reward_model, "train", work, args.max_samples, args.batch_size)
    timing = {"annotate_test_s": round(t_test, 1), "annotate_train_s": round(time.time() - started - t_test, 1)}

    rm, human = margins(test_rows)
    results: dict[str, Any] = {
        "benchmark": "rm_agreement",
        "command": "PYTHONPATH=. python " + shlex.join(["benchmarks/quality/rm_agreement.py", *argv]),
        "reward_model": args.reward_model,
        "test": agreement(rm, human),
        "timing": timing,
        "machine": common.machine_info(),
    }
    train_rm, train_human = margins(train_rows)
    seen = torch.arange(len(train_rows)) < args.rm_train_pairs
    results["train_seen_by_rm"] = agreement(train_rm[seen], train_human[seen]) if seen.any() else None
    results["train_unseen_by_rm"] = agreement(train_rm[~seen], train_human[~seen]) if (~seen).any() else None

    args.out.mkdir(parents=True, exist_ok=True)
    annotated = annotated_train_rows(train_rows, args.rm_train_pairs)
    with open(args.out / "rm_annotated_train.jsonl", "w") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in annotated)
    title = f"VADER test pairs: {Path(args.reward_model).name} against the raters"
    figure = draw(rm, human, results["test"], title, figures / PNG).resolve()
    inside = figure.is_relative_to(common.REPO_ROOT)
    results["figure"] = str(figure.relative_to(common.REPO_ROOT) if inside else figure)
    common.write_json(args.out / "rm_agreement.json", results)
    t = results["test"]
    print(
        f"[rm_agreement] test n={t['n']}: sign agreement {t['sign_agreement']:.3f}, Pearson {t['pearson']:.3f}, "
        f"Spearman {t['spearman']:.3f} ({timing})"
    )
    return results


if __name__ == "__main__":
    run()
