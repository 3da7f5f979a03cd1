"""The quality benchmarks (benchmarks/quality): label settings on the real VADER data, and each benchmark's `--quick`
mode end to end on a tiny model. These check the outputs' structure and sanity, not which method wins."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import subprocess_env

REPO = Path(__file__).resolve().parent.parent
QUALITY = REPO / "benchmarks" / "quality"
sys.path.insert(0, str(QUALITY))

import common  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pairs_and_ratings():
    return common.select_pairs("train", 200, seed=0), common.load_ratings()


def _margin(row: dict) -> float:
    return row["score_chosen"] - row["score_rejected"]


def test_clean_setting_is_the_shipped_data(pairs_and_ratings):
    rows, ratings = pairs_and_ratings
    labelled = common.make_label_setting(rows, "clean", 0, ratings)
    assert [(b["chosen"], b["rejected"]) for b in labelled.binary] == [(r["chosen"], r["rejected"]) for r in rows]
    assert all("score_chosen" not in b for b in labelled.binary)  # label-only methods never see scores
    assert [_margin(s) for s in labelled.scored] == pytest.approx([r["margin"] for r in rows], abs=1e-6)
    assert labelled.stats["wrong_label_rate"] == 0.0


def test_rater_setting_draws_one_rating_per_sentence(pairs_and_ratings):
    rows, ratings = pairs_and_ratings
    labelled = common.make_label_setting(rows, "rater", 0, ratings)
    clean = common.make_label_setting(rows, "clean", 0, ratings)
    # MMPO keeps the mean ratings: its data is the clean data, whatever the drawn labels say
    assert common.rows_fingerprint(labelled.scored) == common.rows_fingerprint(clean.scored)
    wrong = 0
    for row, binary, one in zip(rows, labelled.binary, labelled.scored_1rater):
        assert {binary["chosen"], binary["rejected"]} == {row["chosen"], row["rejected"]}
        wrong += binary["chosen"] != row["chosen"]
        # The single-rater scores are integer ratings of those sentences, oriented like the binary label
        assert (one["chosen"], one["rejected"]) == (binary["chosen"], binary["rejected"])
        assert _margin(one) >= 0 and float(one["score_chosen"]).is_integer()
        chosen_id = row["chosen_id"] if binary["chosen"] == row["chosen"] else row["rejected_id"]
        assert int(one["score_chosen"]) in ratings[chosen_id]
    assert labelled.stats["wrong_label_rate"] == wrong / len(rows)
    # One rater disagrees with the mean often, but far from always
    assert 0.05 < labelled.stats["wrong_label_rate"] < 0.45
    # Reproducible per seed, different across seeds
    again = common.make_label_setting(rows, "rater", 0, ratings)
    assert common.rows_fingerprint(again.binary) == common.rows_fingerprint(labelled.binary)
    other = common.make_label_setting(rows, "rater", 1, ratings)
    assert common.rows_fingerprint(other.binary) != common.rows_fingerprint(labelled.binary)


def test_flip_setting_flips_a_fifth_with_their_margins(pairs_and_ratings):
    rows, ratings = pairs_and_ratings
    labelled = common.make_label_setting(rows, "flip", 0, ratings)
    flipped = [b["chosen"] != r["chosen"] for b, r in zip(labelled.binary, rows)]
    assert sum(flipped) == round(common.FLIP_RATE * len(rows))
    for row, binary, scored, is_flipped in zip(rows, labelled.binary, labelled.scored, flipped):
        assert (scored["chosen"], scored["rejected"]) == (binary["chosen"], binary["rejected"])
        # The corrupted annotation keeps |margin|: a confident soft target towards the wrong response
        assert _margin(scored) == pytest.approx(row["margin"], abs=1e-6)
        assert (binary["chosen"] == row["rejected"]) == is_flipped


def test_summary_has_paired_deltas():
    runs = [
        {"method": m, "setting": "clean", "seed": s, "metrics": {"accuracy": a}}
        for m, s, a in [("dpo", 0, 0.5), ("dpo", 1, 0.6), ("mmpo", 0, 0.6), ("mmpo", 1, 0.8)]
    ]
    summary = common.summarize(runs, ["accuracy"], baseline="dpo")
    assert summary["clean"]["dpo"]["accuracy"]["mean"] == pytest.approx(0.55)
    assert summary["clean"]["mmpo"]["delta_accuracy"]["mean"] == pytest.approx(0.15)
    assert summary["clean"]["mmpo"]["delta_accuracy"]["n"] == 2
    assert "delta_accuracy" not in summary["clean"]["dpo"]


def _run_quick(script: str, out: Path, *extra: str) -> dict:
    env = subprocess_env()
    result = subprocess.run(
        [sys.executable, str(QUALITY / script), "--quick", "--out", str(out / "results"), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "results" / f"{Path(script).stem}.json").read_text())


def _check_runs(results: dict, methods: dict[str, tuple[str, ...]], seeds: int) -> None:
    runs = results["runs"]
    expected = {(m, s, seed) for m, settings in methods.items() for s in settings for seed in range(seeds)}
    assert {(r["method"], r["setting"], r["seed"]) for r in runs} == expected
    for run in runs:
        metrics = run["metrics"]
        assert 0.0 <= metrics["accuracy"] <= 1.0
        assert 0.0 <= metrics["ece"] <= 1.0 and 0.0 <= metrics["brier"] <= 1.0
        assert math.isfinite(metrics["nll"]) and math.isfinite(metrics["mean_margin"])
        assert sum(run["reliability"]["count"]) == 2 * results["config"]["sizes"]["eval_pairs"]  # both orders
    # MMPO keeps the mean ratings in (b): the run of (a), reused rather than recomputed
    for run in runs:
        if run["setting"] == "rater" and run["method"].startswith("mmpo") and run["method"] != "mmpo_1rater":
            assert run["reused_from"] == "clean"
            twin = common.find_run(runs, method=run["method"], setting="clean", seed=run["seed"])
            assert twin["metrics"] == run["metrics"]
    for setting, by_method in results["summary"].items():
        for method, stats in by_method.items():
            assert stats["accuracy"]["n"] == seeds, (setting, method)
    flip = results["label_stats"]["flip"]["0"]["wrong_label_rate"]
    assert (
        flip
        == round(common.FLIP_RATE * results["config"]["sizes"]["train_pairs"])
        / results["config"]["sizes"]["train_pairs"]
    )


def _check_pngs(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        assert path.is_file(), f"missing figure {name}"
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_merge_keeps_every_shards_runs_and_gamma_traces():
    config = {"sizes": {"seeds": 1}}

    def shard(setting: str, method: str) -> dict:
        run = {"method": method, "setting": setting, "seed": 0, "metrics": {}}
        return {
            "benchmark": "policy",
            "command": f"shard {setting}",
            "config": config,
            "runs": [run],
            "label_stats": {setting: {"0": {"wrong_label_rate": 0.2}}},
            "reference": [],
            "gamma_traces": {setting: {method: {"steps": [[0, [0.1], [1.2]]]}}},
            "compute_s": 10.0,
        }

    merged = common.merge_results([shard("clean", "gamma_dpo"), shard("flip", "gamma_dpo"), shard("flip", "simpo")])
    assert [(r["setting"], r["method"]) for r in merged["runs"]] == [
        ("clean", "gamma_dpo"),
        ("flip", "gamma_dpo"),
        ("flip", "simpo"),
    ]
    assert {s: sorted(t) for s, t in merged["gamma_traces"].items()} == {
        "clean": ["gamma_dpo"],
        "flip": ["gamma_dpo", "simpo"],
    }
    assert merged["compute_s"] == 30.0 and len(merged["shards"]) == 3


def test_policy_benchmark_quick(tmp_path):
    pytest.importorskip("vaderSentiment", reason="the policy benchmark scores generations with VADER")
    pytest.importorskip("peft")
    pytest.importorskip("matplotlib")
    methods = ["dpo", "mmpo", "gamma_simpo", "mmpo_1rater"]
    results = _run_quick("policy.py", tmp_path, "--methods", *methods)
    assert results["quick"] and results["benchmark"] == "policy"
    seeds = results["config"]["sizes"]["seeds"]
    _check_runs(results, {m: ("rater",) if m == "mmpo_1rater" else ("clean", "rater", "flip") for m in methods}, seeds)
    for run in results["runs"]:
        metrics = run["metrics"]
        assert -1.0 <= metrics["vader_compound"] <= 1.0 and 0.0 <= metrics["vader_positive_rate"] <= 1.0
        assert math.isfinite(metrics["kl"])
    # The untrained model is its own reference: KL exactly 0
    assert [r["metrics"]["kl"] for r in results["reference"]] == [0.0] * seeds
    # Margins over training for DPO and MMPO, (gap, gamma_i) pairs for gamma-SimPO with mean gamma0 per step
    tracked = [r for r in results["runs"] if r["method"] in ("dpo", "mmpo")]
    assert all(len(r["margin_trace"]) >= 1 for r in tracked)
    trace = results["gamma_traces"]["clean"]["gamma_simpo"]
    for _, gaps, gammas in trace["steps"]:
        assert len(gaps) == len(gammas) > 0
        assert all(g > 0 for g in gammas)
    _check_pngs(
        tmp_path / "figures",
        ["quick_policy_reliability.png", "quick_policy_gamma_vs_gap.png", "quick_policy_margins_over_training.png"],
    )

    # Shards (one per seed, without the reused runs) merge back into the same runs and summary
    shards = []
    for seed in range(seeds):
        shard = {**results, "runs": [r for r in results["runs"] if r["seed"] == seed and not r.get("reused_from")]}
        shards.append(tmp_path / f"shard{seed}.json")
        shards[-1].write_text(json.dumps(shard))
    env = subprocess_env()
    merge = [
        sys.executable,
        str(QUALITY / "policy.py"),
        "--out",
        str(tmp_path / "merged"),
        "--merge",
        *map(str, shards),
    ]
    subprocess.run(merge, cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    merged = json.loads((tmp_path / "merged" / "policy.json").read_text())
    key = lambda r: (r["method"], r["setting"], r["seed"])  # noqa: E731
    assert sorted(map(key, merged["runs"])) == sorted(map(key, results["runs"]))
    assert merged["summary"] == results["summary"] and merged["dropped_runs"] == []


def test_reward_model_benchmark_quick(tmp_path):
    pytest.importorskip("matplotlib")
    methods = ["bt", "mmpo_g1", "mmpo_1rater"]
    results = _run_quick("reward_model.py", tmp_path, "--methods", *methods, "--eval-pairs", "16", "--seeds", "2")
    assert results["quick"] and results["benchmark"] == "reward_model"
    assert results["config"]["sizes"]["eval_pairs"] == 16  # the size flags apply (QUICK_SIZES has 24)
    _check_runs(
        results,
        {m: ("rater",) if m == "mmpo_1rater" else ("clean", "rater", "flip") for m in methods},
        results["config"]["sizes"]["seeds"],
    )
    _check_pngs(tmp_path / "figures", ["quick_rm_reliability.png"])


def test_figures_skip_what_a_shard_lacks(tmp_path):
    pytest.importorskip("matplotlib")
    import policy

    run = {"method": "cdpo", "setting": "flip", "seed": 0, "margin_trace": None, "reliability": {}}
    shard = {"benchmark": "policy", "quick": True, "runs": [run], "gamma_traces": {}}
    assert policy.draw_figures(shard, tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_rm_agreement_statistics_by_hand():
    import torch
    from rm_agreement import agreement

    rm, human = torch.tensor([1.0, -1.0, 2.0, 2.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    stats = agreement(rm, human)
    assert stats["n"] == 4 and stats["sign_agreement"] == 0.75  # the second pair is ranked the wrong way
    # Pearson: deviations rm (0, -2, 1, 1), human (-1.5, -0.5, 0.5, 1.5): 3 / sqrt(6 * 5)
    assert stats["pearson"] == pytest.approx(3 / math.sqrt(30))
    # Spearman: Pearson of the ranks, rm (2, 1, 3.5, 3.5) (a tie shares its ranks) and human (1, 2, 3, 4);
    # deviations (-0.5, -1.5, 1, 1) and (-1.5, -0.5, 0.5, 1.5): 3.5 / sqrt(4.5 * 5)
    assert stats["spearman"] == pytest.approx(3.5 / math.sqrt(4.5 * 5))


def test_rm_agreement_scores_both_splits_through_annotate(tiny_rm_dir, tmp_path):
    pytest.importorskip("matplotlib")
    import rm_agreement

    argv = ["--reward_model", tiny_rm_dir, "--max_samples", "6", "--rm_train_pairs", "2", "--out", str(tmp_path)]
    results = rm_agreement.run([*argv, "--figures", str(tmp_path / "figures")])
    assert results["test"]["n"] == 6 and results["train_seen_by_rm"]["n"] == 2
    assert results["train_unseen_by_rm"]["n"] == 4
    assert json.loads((tmp_path / "rm_agreement.json").read_text())["test"] == results["test"]
    _check_pngs(tmp_path / "figures", [rm_agreement.PNG])
    rows = [json.loads(line) for line in (tmp_path / "rm_annotated_train.jsonl").read_text().splitlines()]
    shipped = common.select_pairs("train", None)[:6]
    # the shipped prompt (no trailing newline), the RM's scores under the names MMPO reads, the raters' beside them
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        (s["prompt"], s["chosen"], s["rejected"]) for s in shipped
    ]
    assert [r["human_score_chosen"] for r in rows] == [s["score_chosen"] for s in shipped]
    assert all(isinstance(r["score_chosen"], float) for r in rows)
    assert [r["in_rm_training"] for r in rows] == [True, True, False, False, False, False]
