"""`trl_margins.annotate` and `trl-margins annotate`: scores equal a plain forward pass, shards resume and split
across ranks in input order, bad inputs stop with the row and column."""

from __future__ import annotations

import json
import math
import os
import random
import socket
import subprocess
import sys
import threading

import pytest
import torch
from datasets import Dataset, load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.helpers import WORDS, make_preference_dataset, run_on_two_processes
from trl_margins.cli import main
from trl_margins.data.adapters import apply_dataset_adapter
from trl_margins.errors import DataError, UsageError
from trl_margins.pairs.annotate import AnnotateConfig, annotate, load_reward_model, score_rows
from trl_margins.pairs.shards import shard_path, shard_ranges, shards_of_rank


def _completions(n: int = 7, k: int = 3, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    sentence = lambda m: " ".join(rng.choice(WORDS) for _ in range(m))  # noqa: E731
    return Dataset.from_list(
        [{"prompt": sentence(4), "all_generated_responses": [sentence(rng.randint(2, 9)) for _ in range(k)]}
         for _ in range(n)]
    )  # fmt: skip


@pytest.fixture(scope="module")
def rm(tiny_rm_dir):
    return load_reward_model(tiny_rm_dir)


def _direct_score(model, tokenizer, text: str) -> float:
    """One unbatched forward pass of prompt + response + EOS: what `trl.RewardTrainer` scores for a string pair."""
    ids = tokenizer(text + tokenizer.eos_token, return_tensors="pt")
    with torch.no_grad():
        return float(model(**ids).logits[0, 0])


def test_scores_match_a_direct_forward_pass(rm, tmp_path):
    model, tokenizer = rm
    pairs = make_preference_dataset(6, seed=3, scores=False)
    rows = score_rows(model, tokenizer, pairs, AnnotateConfig(str(tmp_path), batch_size=4))
    for row in rows:
        for side in ("chosen", "rejected"):
            direct = _direct_score(model, tokenizer, row["prompt"] + row[side])
            assert row[f"score_{side}"] == pytest.approx(direct, abs=1e-5)
    completions = _completions(4)
    rows = score_rows(model, tokenizer, completions, AnnotateConfig(str(tmp_path), batch_size=3))
    for row in rows:
        expected = [_direct_score(model, tokenizer, row["prompt"] + r) for r in row["all_generated_responses"]]
        assert row["all_rm_scores"] == pytest.approx(expected, abs=1e-5)
    # scores differ between responses: the test would notice responses and scores out of line
    assert len({round(s, 4) for row in rows for s in row["all_rm_scores"]}) > 4


def test_conversational_rows_use_the_chat_template(rm, tmp_path):
    model, tokenizer = rm
    row = {"prompt": "the movie", "all_generated_responses": ["was fun", "was slow"]}
    scored = score_rows(model, tokenizer, Dataset.from_list([row]), AnnotateConfig(str(tmp_path), conversational=True))
    for response, score in zip(row["all_generated_responses"], scored[0]["all_rm_scores"]):
        messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": response}]
        ids = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            assert score == pytest.approx(float(model(**ids).logits[0, 0]), abs=1e-5)


def test_sharding_covers_every_row_once():
    ranges = shard_ranges(10, 3)
    assert [list(r) for r in ranges] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    split = [shards_of_rank(len(ranges), rank, 3) for rank in range(3)]
    assert split == [[0, 3], [1], [2]]
    assert sorted(k for ks in split for k in ks) == list(range(len(ranges)))


def test_two_ranks_merge_in_input_order_and_a_run_resumes(rm, tmp_path):
    model, tokenizer = rm
    data = _completions(7)
    single = annotate(model, tokenizer, data, AnnotateConfig(str(tmp_path / "one"), shard_size=2))
    assert single.scored_shards == [0, 1, 2, 3] and single.skipped_shards == []
    # a fake world of 2: rank 1 first (it must not merge), then rank 0 scores its shards and merges
    config = AnnotateConfig(str(tmp_path / "two"), shard_size=2)
    rank1 = annotate(model, tokenizer, data, config, rank=1, world_size=2)
    assert rank1.scored_shards == [1, 3] and rank1.output is None
    rank0 = annotate(model, tokenizer, data, config, rank=0, world_size=2)
    assert rank0.scored_shards == [0, 2]
    merged = load_dataset("json", data_files=str(rank0.output), split="train")
    assert merged["prompt"] == data["prompt"]
    assert (
        merged["all_rm_scores"] == load_dataset("json", data_files=str(single.output), split="train")["all_rm_scores"]
    )
    # resume: one shard lost, only that one is scored again
    shard_path(config.output_dir, 2).unlink()
    resumed = annotate(model, tokenizer, data, config)
    assert resumed.scored_shards == [2] and resumed.skipped_shards == [0, 1, 3]
    assert load_dataset("json", data_files=str(resumed.output), split="train")["prompt"] == data["prompt"]
    # other settings can't reuse those shards
    with pytest.raises(UsageError, match="another run.*max_length"):
        annotate(model, tokenizer, data, AnnotateConfig(config.output_dir, shard_size=2, max_length=8))


def test_a_resume_scores_again_the_shards_whose_rows_changed(rm, tmp_path, caplog):
    model, tokenizer = rm
    config = AnnotateConfig(str(tmp_path / "out"), shard_size=2)
    data = _completions(7, seed=1)
    first = annotate(model, tokenizer, data, config)
    # the same path and row count, other rows in shard 1 (rows 2-3): only that shard is scored again
    rows = data.to_list()
    rows[3]["prompt"] = rows[3]["prompt"] + " again"
    with caplog.at_level("WARNING", logger="trl_margins.pairs.annotate"):
        again = annotate(model, tokenizer, Dataset.from_list(rows), config)
    assert again.rescored_shards == [1] and again.scored_shards == [1] and again.skipped_shards == [0, 2, 3]
    assert "scored again: [1]" in caplog.text
    merged = load_dataset("json", data_files=str(again.output), split="train")
    assert merged["prompt"][3].endswith(" again")
    assert (
        merged["all_rm_scores"][:2]
        == load_dataset("json", data_files=str(first.output), split="train")["all_rm_scores"][:2]
    )


def test_one_run_per_output_folder(rm, tmp_path, caplog):
    from trl_margins.pairs import shards

    model, tokenizer = rm
    out = tmp_path / "out"
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"run": "another", "pid": live.pid, "host": socket.gethostname(), "since": "now"}
        (out / shards.LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(UsageError, match=f"being written by process {live.pid} on .*give another --output_dir"):
            annotate(model, tokenizer, _completions(3), AnnotateConfig(str(out)))
    finally:
        live.kill()
        live.wait()
    # the same lock, its process gone: taken over, with a warning, and released at the end
    with caplog.at_level("WARNING", logger="trl_margins.pairs.shards"):
        report = annotate(model, tokenizer, _completions(3), AnnotateConfig(str(out)))
    assert report.output is not None and "which is gone" in caplog.text
    assert not (out / shards.LOCK_FILE).exists()


def test_a_lock_being_written_is_not_taken_for_a_dead_runs(tmp_path, caplog):
    # Another process of the same run has created the lock and not yet written its holder into it
    from trl_margins.pairs import shards

    path = tmp_path / shards.LOCK_FILE
    path.write_text("")
    holder = {"run": shards._run_token(), "pid": os.getpid(), "host": socket.gethostname(), "since": "now"}
    writer = threading.Timer(0.2, lambda: path.write_text(json.dumps(holder)))
    writer.start()
    with caplog.at_level("WARNING", logger="trl_margins.pairs.shards"):
        assert shards.acquire_lock(tmp_path) == path
    writer.join()
    assert "which is gone" not in caplog.text and json.loads(path.read_text()) == holder


def test_temporary_files_are_unique_per_process(tmp_path):
    from trl_margins.pairs.shards import tmp_path as temporary

    name = temporary(tmp_path / "shard-00000.jsonl").name
    assert str(os.getpid()) in name and socket.gethostname() in name and name.endswith(".tmp")


def test_torchrun_with_two_processes_writes_the_one_process_output(tiny_rm_dir, tmp_path):
    data = tmp_path / "completions.jsonl"
    _completions(7, seed=5).to_json(data, lines=True)
    argv = ["annotate", "--reward_model", tiny_rm_dir, "--dataset", str(data), "--shard_size", "2"]
    assert main([*argv, "--output_dir", str(tmp_path / "one")]) == 0
    result = run_on_two_processes("-m", "trl_margins.cli", *argv, "--output_dir", str(tmp_path / "two"), timeout=300)
    # rank 0 scored shards 0 and 2 of 4 and merged; rank 1 scored 1 and 3
    assert "7 rows (completions)" in result.stdout and "2 shards scored here" in result.stdout
    read = lambda d: [json.loads(x) for x in (tmp_path / d / "annotated.jsonl").read_text().splitlines()]  # noqa: E731
    one, two = read("one"), read("two")
    assert [r["prompt"] for r in two] == [r["prompt"] for r in one] == _completions(7, seed=5)["prompt"]
    for a, b in zip(one, two):
        assert b["all_rm_scores"] == pytest.approx(a["all_rm_scores"], abs=1e-6)


def test_annotated_completions_feed_the_reward_annotated_adapter(rm, tmp_path):
    model, tokenizer = rm
    report = annotate(model, tokenizer, _completions(5), AnnotateConfig(str(tmp_path)))
    scored = load_dataset("json", data_files=str(report.output), split="train")
    pairs = apply_dataset_adapter("reward_annotated", scored)
    for pair, row in zip(pairs, scored):
        assert pair["score_chosen"] == max(row["all_rm_scores"]) > pair["score_rejected"] == min(row["all_rm_scores"])


@pytest.mark.parametrize(
    "rows, error, match",
    [
        (
            [{"prompt": "a", "all_generated_responses": ["good"]}],
            DataError,
            "row 0.*at least 2.*got 1",
        ),
        (
            [{"prompt": "a", "all_generated_responses": ["good", "  "]}],
            DataError,
            r"row 0.*all_generated_responses\[1\]` is empty",
        ),  # fmt: skip
        (
            [{"prompt": "a", "chosen": "good", "rejected": ""}],
            DataError,
            "row 0.*`rejected` is empty",
        ),
        ([{"prompt": "a", "text": "good"}], DataError, "Nothing to score"),
        (
            [{"prompt": "a", "chosen": "b", "rejected": "c", "score_chosen": 1.0}],
            UsageError,
            "already has.*score_chosen",
        ),
    ],
)
def test_bad_rows_stop_with_row_and_column(rm, tmp_path, rows, error, match):
    model, tokenizer = rm
    with pytest.raises(error, match=match):
        annotate(model, tokenizer, Dataset.from_list(rows), AnnotateConfig(str(tmp_path)))


def test_nan_scores_stop_with_the_row(rm, tmp_path):
    model, tokenizer = rm
    broken = AutoModelForSequenceClassification.from_pretrained(model.name_or_path)
    with torch.no_grad():
        broken.score.weight.fill_(math.nan)
    with pytest.raises(DataError, match="row 0.*: the reward model scored `chosen` as nan.*--dtype float32"):
        score_rows(broken, tokenizer, make_preference_dataset(2, scores=False), AnnotateConfig(str(tmp_path)))


def test_no_chat_template_for_conversations_is_a_usage_error(rm, tmp_path):
    model, tokenizer = rm
    plain = AutoTokenizer.from_pretrained(model.name_or_path)
    plain.chat_template = None
    with pytest.raises(UsageError, match="no chat template"):
        chats = make_preference_dataset(2, conversational=True, scores=False)
        annotate(model, plain, chats, AnnotateConfig(str(tmp_path)))


def test_models_that_are_not_reward_models_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(UsageError, match="2 outputs.*sequence classifier with one"):
        load_reward_model(tiny_model_dir)  # a causal LM: config.num_labels is 2
    with_one_label = tmp_path / "lm-one-label"
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lm.config.num_labels = 1
    lm.save_pretrained(with_one_label)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(with_one_label)
    with pytest.raises(UsageError, match="no trained score head.*score.weight"):
        load_reward_model(str(with_one_label))


def test_cli_annotate_writes_the_merged_file_and_reports_errors_in_one_line(
    tiny_rm_dir, tiny_model_dir, tmp_path, capsys
):
    data = tmp_path / "pairs.jsonl"
    make_preference_dataset(5, seed=2, scores=False).to_json(data, lines=True)
    out = tmp_path / "out"
    argv = ["annotate", "--reward_model", tiny_rm_dir, "--dataset", str(data), "--output_dir", str(out)]
    assert main([*argv, "--shard_size", "2", "--batch_size", "3"]) == 0
    rows = [json.loads(line) for line in (out / "annotated.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(isinstance(r["score_chosen"], float) for r in rows)
    assert "5 rows (pairs)" in capsys.readouterr().out
    not_a_reward_model = ["annotate", "--reward_model", tiny_model_dir, "--dataset", str(data)]
    assert main([*not_a_reward_model, "--output_dir", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("trl-margins annotate: error: ")
