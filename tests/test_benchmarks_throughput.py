"""The throughput benchmark (benchmarks/throughput.py) runs end to end in quick mode, in its two worker processes, and
reports what it promises: every case and layout timed, the profiled passes, and scores that are the same bits where
the kernels allow. How fast anything is stays the benchmark's business: nothing here asserts a timing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_benchmark

throughput = load_benchmark("throughput")


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("throughput")
    report = throughput.main(["--quick", "--output", str(out / "t.json"), "--markdown", str(out / "t.md")])
    return report, out


def test_every_case_and_layout_is_timed_and_profiled(quick):
    report, out = quick
    assert json.loads((out / "t.json").read_text()) == json.loads(json.dumps(report))
    assert set(report["cases"]) == set(throughput.CASES_BY_NAME)
    for name, case in report["cases"].items():
        multi = throughput.CASES_BY_NAME[name].command in throughput.MULTI_PROCESS_COMMANDS
        assert set(case["layouts"]) == ({"1p1t", "1p2t", "2p1t"} if multi else {"1p1t", "1p2t"}), name
        assert multi or case["not_measured"] == {"2p1t": throughput.NOT_MULTI_PROCESS}
        for layout, v in case["layouts"].items():
            assert all(len(t) == 2 and min(t) > 0 for t in v["times_s"].values()), (name, layout)
            assert v["rows_per_s"]["package"] > 0 and v["rows_per_s"]["plain"] > 0
            s = v["speedup"]
            assert s["ci95"][0] <= s["median"] <= s["ci95"][1] and s["goal"] in {"met", "not met", "inconclusive"}
            ident = v["identity"]
            assert ident["scores"] == 2 * case["rows"] and isinstance(ident["bit_identical"], bool)
            assert ident["bit_identical"] == (ident["scores_differing"] == 0)
        for layout in ("1p1t", "2p1t") if multi else ("1p1t",):
            for side in throughput.SIDES:
                ranks = case["profile"][layout][side]
                assert len(ranks) == int(layout[0]), (name, layout, side)
                for p in ranks:
                    assert p["tokens"] >= p["real_tokens"] > 0 and p["forwards"] > 0 and p["top_ops"]
                    assert p["peak_allocated_mib"] > 0 and 0 <= p["pad_share"] < 1
    machine = report["machine"]
    assert {"capability", "avx512_bf16", "amx"} <= set(machine["cpu_flags"])
    assert machine["torch"] and machine["transformers"] and machine["trl"] and machine["accelerate"]
    assert "git_commit" in machine and len(report["load"]["loadavg_after"]) == 3
    scope = report["padding_by_scope"]
    assert scope["rows"] == 500 and len(scope["paths"]) == 2 * 4 + 2
    assert all(p["plain"] >= p["real"] and p["package"] >= p["real"] for p in scope["paths"])
    table = (out / "t.md").read_text()
    assert all(f"| {name} | 1p1t |" in table for name in report["cases"])


def test_scores_are_the_same_bits_where_the_kernels_allow(quick):
    report, _ = quick
    for name, case in report["cases"].items():
        probe = case["probe"]
        # The package's scores are exactly the model's on its own batches: the plain loop in its order gives them
        assert all(p["package_order"]["bit_identical"] for p in probe.values()), name
        # With eager attention (no kernel that depends on the padded length), batching changes no bit of a score;
        # for a policy, of a token's log-prob (the fp32 sum over the padded length may still differ in the last bit)
        if case["kind"] == "rm":
            assert probe["eager"]["input_order"]["bit_identical"], name
        else:
            assert probe["eager"]["per_token_log_probs_bit_identical"], name
            assert probe["eager"]["float64_sums_of_real_tokens"]["bit_identical"], name
            varying = probe["eager"]["float32_sum_depends_on_padding"]
            assert varying["completions"] == 2 * min(case["rows"], 4) and 0 <= varying["varying"] <= 8


def test_the_plain_loop_collates_pairs_as_trl_does(tiny_model_dir):
    # In input order the plain loop's batches are TRL's own, so it is the loop a user of TRL's collator would write
    import torch
    from transformers import AutoTokenizer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from tests.helpers import make_preference_dataset
    from trl_margins.data.formatting import tokenize_for_policy

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = make_preference_dataset(5)
    sequences = throughput.policy_sequences(rows, tokenizer)
    trl_collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)
    batches = throughput.chunks(throughput.pairs_in_input_order(len(rows), 2), 4)
    for batch, pairs in zip(batches, (range(0, 2), range(2, 4), range(4, 5)), strict=True):
        ours = throughput.collate([sequences[i] for i in batch], tokenizer.pad_token_id)
        theirs = trl_collator([tokenize_for_policy(dict(rows[i]), tokenizer) for i in pairs])
        for key, value in ours.items():
            assert torch.equal(value, theirs[key]), key
