"""The quality benchmarks (benchmarks/quality): label settings on the real VADER data, and each benchmark's `--quick`
mode end to end on a tiny model. These check the outputs' structure and sanity, not which method wins."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import subprocess_env

REPO = Path(__file__).resolve().parent.parent
QUALITY = REPO / "benchmarks" / "quality"
sys.path.insert(0, str(QUALITY))

import common  # noqa: E402
import significance  # noqa: E402

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


# ---- significance: the t distribution and Holm against values computed by hand ------------------------------------
@pytest.mark.parametrize(
    "t, df, expected",
    [
        (1.0, 1, 0.5),  # Cauchy: 1 - (2 / pi) * atan(1)
        (3.0, 1, 1 - 2 / math.pi * math.atan(3.0)),
        (2.0, 2, 1 - 2 / math.sqrt(6)),  # df 2: p = 1 - t / sqrt(t^2 + 2)
        (50.0, 2, 1 - 50 / math.sqrt(2502)),
        (4.302652729911275, 2, 0.05),  # the tabulated two-sided 5% critical values
        (2.570581835636314, 5, 0.05),
        (2.228138851986274, 10, 0.05),
        (0.0, 3, 1.0),
        (-2.0, 2, 1 - 2 / math.sqrt(6)),
    ],
)
def test_t_two_sided_p(t, df, expected):
    assert significance.t_two_sided_p(t, df) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_paired_t_test_by_hand():
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3, df 2: p = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(6/7)
    test = significance.paired_t_test([1.0, 2.0, 3.0])
    assert (test["mean"], test["sd"], test["df"]) == (2.0, 1.0, 2)
    assert test["t"] == pytest.approx(2 * math.sqrt(3))
    assert test["p"] == pytest.approx(1 - math.sqrt(6 / 7))
    # The summary's mean/std/n give the same test
    assert significance.from_summary(common.mean_std([1.0, 2.0, 3.0]))["p"] == pytest.approx(test["p"])
    assert significance.paired_t_test([0.5]) is None  # one seed: no test
    assert significance.paired_t_test([0.0, 0.0, 0.0])["p"] == 1.0  # two runs that agree exactly
    assert significance.paired_t_test([0.1, 0.1])["p"] == 0.0


def test_holm_by_hand():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.02, 0.03, 0.06, 0.06
    assert significance.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert significance.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert significance.holm([]) == []


def test_report_marks_what_survives_holm():
    import report

    # Two methods against dpo on 3 seeds: one clearly apart (d = 0.10, 0.11, 0.12), one noise (d = 0.1, -0.1, 0)
    runs = [{"method": "dpo", "setting": "clean", "seed": s, "metrics": {"accuracy": 0.5}} for s in range(3)]
    runs += [
        {"method": m, "setting": "clean", "seed": s, "metrics": {"accuracy": 0.5 + d}}
        for m, ds in (("mmpo", (0.10, 0.11, 0.12)), ("cdpo", (0.1, -0.1, 0.0)))
        for s, d in enumerate(ds)
    ]
    summary = common.summarize(runs, ["accuracy"], baseline="dpo")["clean"]
    tests = report.comparison_tests(summary, "dpo", "accuracy")
    p_mmpo = 1 - 0.11 / math.sqrt(0.11**2 + 2 * 0.01**2 / 3)  # t = 0.11 / (0.01 / sqrt 3), df 2
    assert tests["mmpo"]["p"] == pytest.approx(p_mmpo, rel=1e-6)
    assert tests["mmpo"]["holm_p"] == pytest.approx(2 * p_mmpo, rel=1e-6)  # the smaller of 2 p-values: times 2
    assert tests["cdpo"]["p"] == pytest.approx(1.0) and tests["cdpo"]["holm_p"] == pytest.approx(1.0)
    assert report._delta_cell(summary["mmpo"]["delta_accuracy"], tests["mmpo"]).endswith("\\*")
    assert not report._delta_cell(summary["cdpo"]["delta_accuracy"], tests["cdpo"]).endswith("*")


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
        assert common.unpack_floats(run["predictions"]).numel() == results["heldout"]["pairs"]
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


NEW_METHODS = ["weighted_dpo", "odpo", "kto", "mmpo_kto", "mmpo_rm"]


def _rm_annotations(path: Path) -> Path:
    """Stand-in reward-model scores of every training pair (the mean ratings plus noise), in the annotate layout."""
    import random

    rng = random.Random(0)
    rows = common.select_pairs("train", None)
    path.write_text("".join(json.dumps({
        "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
        "score_chosen": r["score_chosen"] + rng.gauss(0, 1), "score_rejected": r["score_rejected"],
    }) + "\n" for r in rows))  # fmt: skip
    return path


def test_row_transforms_weights_and_rm_scores(tmp_path):
    import policy

    rows = common.make_label_setting(common.select_pairs("train", 50), "flip", 0, common.load_ratings()).scored
    weighted = policy.confidence_weights(rows, tmp_path)
    assert sum(r["pair_weight"] for r in weighted) / len(rows) == pytest.approx(1.0)
    m = [abs(r["score_chosen"] - r["score_rejected"]) for r in rows]
    raw = [abs(2 / (1 + math.exp(-policy.MMPO_GAMMA * x)) - 1) for x in m]  # |2p - 1|, p = sigmoid(gamma * m)
    assert [r["pair_weight"] for r in weighted] == pytest.approx([w / (sum(raw) / len(raw)) for w in raw])
    # RM scores follow each row's orientation: a flipped pair gets the annotated scores exchanged
    table = policy.load_rm_annotations(_rm_annotations(tmp_path / "rm.jsonl"))
    for row, scored in zip(rows, policy.rm_scores(rows, tmp_path / "rm.jsonl")):
        key = (row["prompt"], row["chosen"], row["rejected"])
        expected = table.get(key) or table[(row["prompt"], row["rejected"], row["chosen"])][::-1]
        assert (scored["score_chosen"], scored["score_rejected"]) == expected
    with pytest.raises(SystemExit, match="mmpo_rm needs the reward-model scores"):
        policy.rm_scores(rows, tmp_path / "missing.jsonl")


def test_policy_benchmark_quick_new_methods(tmp_path):
    pytest.importorskip("vaderSentiment", reason="the policy benchmark scores generations with VADER")
    pytest.importorskip("peft")
    pytest.importorskip("matplotlib")
    extra = ["--settings", "clean", "--seeds", "1", "--no-reference-rows"]
    rm = str(_rm_annotations(tmp_path / "rm.jsonl"))
    results = _run_quick("policy.py", tmp_path, "--methods", "dpo", *NEW_METHODS, "--rm-annotations", rm, *extra)
    assert {r["method"] for r in results["runs"]} == {"dpo", *NEW_METHODS}
    for run in results["runs"]:
        assert 0.0 <= run["metrics"]["accuracy"] <= 1.0 and math.isfinite(run["metrics"]["mean_margin"])
        assert math.isfinite(run["train_loss"])
    assert set(results["summary"]["clean"]["kto"]) >= {"accuracy", "delta_accuracy"}
    # Without the reward-model file, mmpo_rm stops at once with a message that names it
    env = subprocess_env()
    missing = tmp_path / "none.jsonl"
    command = [sys.executable, str(QUALITY / "policy.py"), "--quick", "--out", str(tmp_path / "x"), "--methods"]
    failed = subprocess.run(
        [*command, "mmpo_rm", "--rm-annotations", str(missing), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert failed.returncode == 1 and f"needs the reward-model scores of the training pairs in {missing}" in (
        failed.stderr
    )


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


def test_stored_policy_runs_survive_the_stale_check_and_shards_with_more_seeds_merge():
    """A renamed trainer option (`reference_free` -> `reward_type`) must not make the committed runs look stale: a
    `--merge` would silently drop them. Shards that add seeds merge with the stored 3-seed file."""
    import policy

    for path in (QUALITY / "results" / "policy.json", QUALITY / "results" / "scale384" / "policy.json"):
        results = common.load_results(path)
        runs = len(results["runs"])
        results["dropped_runs"] = []
        policy.drop_stale_runs(results)
        assert len(results["runs"]) == runs and results["dropped_runs"] == [], path
    stored = common.load_results(QUALITY / "results" / "scale384" / "policy.json")
    more = {**stored, "config": {**stored["config"], "sizes": {**stored["config"]["sizes"], "seeds": 5}}, "runs": []}
    merged = common.merge_results([stored, more])
    assert merged["config"]["sizes"]["seeds"] == 5 and len(merged["runs"]) == len(stored["runs"])
    other = {**more, "config": {**more["config"], "sizes": {**more["config"]["sizes"], "steps": 12}}}
    with pytest.raises(ValueError, match="different configurations"):
        common.merge_results([stored, other])


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


def test_results_md_tables_are_what_report_py_makes_of_the_stored_json():
    import report

    markdown = (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    blocks = list(report.BLOCK.finditer(markdown))
    kinds = [m["kind"] for m in blocks]
    assert sorted(set(kinds)) == ["policy", "preregistered", "reward_model", "rm_agreement", "rounds"]
    assert len(kinds) == 7
    assert all(m["body"].strip() for m in blocks)  # each block has been generated
    assert report.stale_blocks(markdown) == []
    # A changed number in a table is stale
    changed = markdown.replace("| 0.635 ± 0.009 |", "| 0.636 ± 0.009 |", 1)
    assert changed != markdown and report.stale_blocks(changed) == ["benchmarks/quality/results/policy.json"]


def test_report_says_what_a_result_file_does_not_record(tmp_path):
    import report

    results = {"command": "PYTHONPATH=. python benchmarks/quality/reward_model.py --quick", "config": {}}
    text = report.provenance(results, tmp_path / "reward_model.json", git=False)
    assert "`PYTHONPATH=. python benchmarks/quality/reward_model.py --quick`" in text
    assert "- **Started**: the JSON records no date or commit" in text
    assert "- **Hardware and software**: not recorded in the JSON" in text
    assert "- **Load**: not recorded in the JSON" in text
    machine = {"cpu": "AMD EPYC", "cpu_count": 2, "torch_threads": 1, "torch": "2.13.0+cpu", "git_commit": "abc1234",
               "date": "2026-11-27 01:19:29 UTC"}  # fmt: skip
    resumed = {**results, "command": results["command"] + " --resume", "machine": machine, "compute_s": 7200.0}
    text = report.provenance(resumed, tmp_path / "reward_model.json", git=False)
    assert "2026-11-27 01:19:29 UTC at commit abc1234" in text and "the last invocation, a `--resume`" in text
    assert "7,200 s (2.0 h)" in text and "AMD EPYC, 2 CPUs, 1 torch thread per process; torch 2.13.0+cpu" in text


# ---- per-pair evidence and the pre-registered comparisons -----------------------------------------------------------
def test_packed_predictions_round_trip_exactly():
    import torch

    values = torch.randn(257, dtype=torch.float64)
    assert torch.equal(common.unpack_floats(common.pack_floats(values)), values)


def test_paired_bootstrap_of_a_constant_shift_and_of_no_difference():
    import preregistered
    import torch

    targets = torch.rand(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    base = [torch.randn(40, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in range(4)]

    def mean_margin(margins, _targets):
        return float(margins.mean())

    shifted = significance.paired_bootstrap([b + 1 for b in base], base, targets, mean_margin, replicates=200)
    assert shifted["delta"] == pytest.approx(1.0) and shifted["ci_low"] == pytest.approx(1.0)
    assert shifted["ci_high"] == pytest.approx(1.0) and shifted["p"] == pytest.approx(1 / 200)
    same = significance.paired_bootstrap(base, base, targets, preregistered.ece, replicates=200)
    assert same["delta"] == 0 and same["ci_low"] == same["ci_high"] == 0 and same["p"] == 1.0
    # the metrics from margins are the package's own
    from trl_margins.evaluation.calibration import preference_metrics

    stored = preference_metrics(base[0], torch.zeros(40), target_probs=targets, n_bins=10)
    for name in ("ece", "accuracy", "brier"):
        assert preregistered.METRICS[name](base[0], targets) == pytest.approx(stored[name], rel=1e-12)


def test_preregistered_yaml_declares_new_seeds_and_every_field():
    import yaml

    registry = yaml.safe_load((QUALITY / "preregistered.yaml").read_text())
    stored_seeds = set()
    for path in (QUALITY / "results").rglob("*.json"):
        if "prereg" not in path.parts and path.name in ("policy.json", "reward_model.json"):
            stored_seeds |= {r["seed"] for r in json.loads(path.read_text())["runs"]}
    assert stored_seeds and not set(registry["seeds"]) & stored_seeds
    assert len(registry["seeds"]) == 5 and registry["precision"] == "fp32"
    for h in registry["hypotheses"]:
        assert {"id", "family", "claim", "benchmark", "results", "method", "baseline", "metric", "predicted",
                "commands"} <= set(h), h["id"]  # fmt: skip
        assert h["predicted"] in ("lower", "higher") and h["metric"] in ("ece", "accuracy", "brier")
        runs = [c.split() for c in h["commands"] if "--merge" not in c]
        assert runs and all("--resume" in words for words in runs)  # a stopped run continues, never restarts
        seeds = []
        for words in runs:  # the seeds a command runs: the integers after --seed-list / --seeds
            flag = "--seed-list" if "--seed-list" in words else "--seeds"
            for word in words[words.index(flag) + 1 :]:
                if not word.isdigit():
                    break
                seeds.append(int(word))
        assert sorted(seeds) == registry["seeds"], h["id"]


def test_rounds_benchmark_quick_stores_predictions_the_prereg_analysis_reads(tmp_path):
    import preregistered
    import yaml

    out = tmp_path / "results"
    command = [sys.executable, str(QUALITY / "rounds.py"), "--quick", "--seeds", "1", "2", "--out", str(out),
               "--work_dir", str(tmp_path / "work"), "--threads", "1"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "rounds.json").read_text())
    assert {(r["method"], r["seed"]) for r in results["runs"]} == {(m, s) for m in ("mmpo", "dpo") for s in (1, 2)}
    assert results["heldout"]["pairs"] == 8
    for run in results["runs"]:
        (entry,) = run["rounds"]
        assert set(entry["seconds"]) == {"generate", "annotate", "select", "train", "evaluate"}
        assert common.unpack_floats(entry["predictions"]).numel() == 8
    registry = yaml.safe_load((QUALITY / "preregistered.yaml").read_text())
    (rounds,) = [h for h in registry["hypotheses"] if h["benchmark"] == "rounds"]
    registry = {**registry, "seeds": [1, 2], "hypotheses": [{**rounds, "round": 0, "results": "results/rounds.json"}]}
    (row,) = preregistered.analyse(registry, root=tmp_path, replicates=50)  # checks predictions against the metrics
    assert row["status"] == "complete" and row["outcome"] in ("held", "did not hold")
    assert row["t_test"] is not None and row["bootstrap"]["replicates"] == 50 and row["holm_p"] == row["t_test"]["p"]
    assert "`rounds_ece` (rounds)" in preregistered.table([row])
    (figure,) = preregistered.draw_reliability([row], tmp_path / "figures")
    assert figure.read_bytes()[:8] == PNG_MAGIC
    missing = {**registry, "seeds": [1, 2, 3]}
    assert preregistered.analyse(missing, root=tmp_path)[0]["status"] == "incomplete"


def test_a_bf16_benchmark_stops_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(common, "cpu_flags", lambda: {"capability": "AVX2", "avx512_bf16": False, "amx": False})
    with pytest.raises(SystemExit, match="no native bf16.*pass --fp32"):
        common.require_fast_bf16(True, "pass --fp32")
    common.require_fast_bf16(False, "pass --fp32")  # fp32 runs anywhere
    common.require_fast_bf16(True, "pass --fp32", allow=True)  # --allow-software-bf16
    monkeypatch.setattr(common, "cpu_flags", lambda: {"capability": "AVX512", "avx512_bf16": True, "amx": False})
    common.require_fast_bf16(True, "pass --fp32")


def test_the_reward_model_benchmark_is_bf16_unless_fp32_and_stops_before_loading(monkeypatch, tmp_path):
    # TRL's RewardConfig turns an unset bf16 on: the stored runs trained in bf16 autocast on the CPU
    import reward_model

    monkeypatch.setattr(common, "cpu_flags", lambda: {"capability": "AVX2", "avx512_bf16": False, "amx": False})
    monkeypatch.setattr(common, "configure_torch", lambda threads: None)  # torch's threads and logs stay the suite's
    argv = ["--out", str(tmp_path), "--settings", "clean", "--methods", "bt", "--seed-list", "10"]
    with pytest.raises(SystemExit, match="no native bf16.*--fp32"):
        reward_model.run(argv)
    assert not any(tmp_path.iterdir())  # stopped before any model, data or result file
    args = common.benchmark_parser("", "reward_model.json", reward_model.METHODS, "BERT").parse_args([*argv, "--fp32"])
    assert reward_model.Sizes().bf16 and not common.resolve_sizes(args, reward_model.Sizes()).bf16
