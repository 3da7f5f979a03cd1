"""`trl_margins.selection` and `trl-margins select`: the MMPO paper's threshold, quantiles, alignment potential."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from trl_margins.cli import main
from trl_margins.errors import DataError, UsageError
from trl_margins.pairs.select import alignment_potential, select_by_alignment_potential, select_by_margin


def _pairs(margins: list[float]) -> Dataset:
    return Dataset.from_list(
        [{"prompt": f"p{i}", "chosen": "c", "rejected": "r", "score_chosen": 1.0 + m, "score_rejected": 1.0}
         for i, m in enumerate(margins)]
    )  # fmt: skip


def test_threshold_keeps_margins_strictly_above_and_counts_drops(caplog):
    kept, report = select_by_margin(_pairs([0.0, 2.0, 1.0, 0.5, 3.0]), min_margin=1.0)
    assert kept["prompt"] == ["p1", "p4"]  # 1.0 is not "exceeding" 1 (Table 3), input order kept
    assert (report.kept, report.dropped) == (2, 3)
    assert "dropped 3" in caplog.text


def test_quantile_keeps_the_top_share_with_ties_at_the_cut():
    kept, report = select_by_margin(_pairs([1.0, 2.0, 2.0, 3.0, 4.0]), min_quantile=0.5)
    assert report.cut == 2.0 and kept["prompt"] == ["p1", "p2", "p3", "p4"]


def test_one_rule_and_valid_scores_are_required():
    with pytest.raises(UsageError, match="one rule"):
        select_by_margin(_pairs([1.0]), min_margin=0.0, min_quantile=0.5)
    bad = _pairs([1.0, 2.0]).map(lambda ex, i: {"score_chosen": float("nan") if i else 1.0}, with_indices=True)
    with pytest.raises(DataError, match="score_chosen.*row 1.*"):
        select_by_margin(bad, min_margin=0.0)


def test_alignment_potential_is_the_authors_zscore_difference():
    explicit = torch.tensor([1.0, 2.0, 3.0, 4.0])
    implicit = torch.tensor([-0.5, 0.1, 2.0, 0.2])
    z = lambda x: (x - x.mean()) / x.std(unbiased=False)  # noqa: E731
    expected = z(explicit.double()) - 0.5 * z(implicit.double().abs())
    torch.testing.assert_close(alignment_potential(explicit, implicit, logp_weight=0.5), expected)
    kept, report = select_by_alignment_potential(_pairs(explicit.tolist()), implicit, keep_fraction=0.5)
    # pair 3 (large explicit margin the policy hasn't learned) and pair 1 beat pair 2 (the policy already separates it)
    assert kept["prompt"] == ["p1", "p3"] and report.dropped == 2


def test_cli_select_writes_the_kept_pairs(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    _pairs([0.0, 2.0, 5.0]).to_json(data, lines=True)
    out = tmp_path / "kept.jsonl"
    assert main(["select", "--dataset", str(data), "--output", str(out), "--min_margin", "1"]) == 0
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == ["p1", "p2"]
    assert "kept 2 of 3 pairs, dropped 1" in capsys.readouterr().out
    assert main(["select", "--dataset", str(data), "--output", str(out)]) == 2
    assert "one rule" in capsys.readouterr().err


def test_cli_select_pairs_annotated_completions_first(tmp_path, capsys):
    data = tmp_path / "annotated.jsonl"
    rows = [
        {"prompt": "a", "all_generated_responses": ["x", "y", "z"], "all_rm_scores": [0.0, 2.0, -1.0]},  # margin 3
        {"prompt": "b", "all_generated_responses": ["x", "y"], "all_rm_scores": [1.0, 1.0]},  # a tie: skipped
        {"prompt": "c", "all_generated_responses": ["x", "y"], "all_rm_scores": [0.0, 0.5]},  # margin 0.5
    ]
    Dataset.from_list(rows).to_json(data, lines=True)
    out = tmp_path / "kept.jsonl"
    argv = ["select", "--dataset", str(data), "--dataset_adapter", "reward_annotated", "--output", str(out)]
    assert main([*argv, "--min_margin", "1"]) == 0
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(k["prompt"][0]["content"], k["chosen"][0]["content"], k["rejected"][0]["content"]) for k in kept] == [
        ("a", "y", "z")
    ]  # best vs worst, as chat turns (the completions were sampled with the chat template)
    assert "kept 1 of 2 pairs, dropped 1" in capsys.readouterr().out
