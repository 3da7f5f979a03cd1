"""Dataset adapters on handmade rows with the real column layout (names and value types) of each public dataset."""

import logging
import math

import pytest
from datasets import Dataset, DatasetDict

from trl_margins.data.adapters import (
    DATASET_ADAPTERS,
    adapt_argilla,
    adapt_reward_annotated,
    adapt_shp,
    adapt_ultrafeedback_binarized,
    apply_dataset_adapter,
)
from trl_margins.data.margins import MARGIN_COLUMN, add_margin_column

LOGGER = "trl_margins.data.adapters"


def _user(text):
    return {"content": text, "role": "user"}


def _assistant(text):
    return {"content": text, "role": "assistant"}


# --- HuggingFaceH4/ultrafeedback_binarized, allenai/ultrafeedback_binarized_cleaned ----------------------------------


def _ultrafeedback() -> Dataset:
    # allenai's copy: H4's columns plus `source`.
    rows = [
        ("Name a prime.", "p0", "7 is prime.", "9 is prime.", 8.5, 3.0, "evol_instruct"),
        ("Say hi.", "p1", "Hi!", "Hello there.", 7.0, 7.0, "ultrachat"),
        ("2+2?", "p2", "4", "4", 6.0, 5.0, "flan_v2_niv2"),  # UltraFeedback has pairs of identical answers
        ("Capital of France?", "p3", "Paris.", "Lyon.", 10.0, 1.5, "sharegpt"),
    ]
    return Dataset.from_dict(
        {
            "prompt": [r[0] for r in rows],
            "prompt_id": [r[1] for r in rows],
            "chosen": [[_user(r[0]), _assistant(r[2])] for r in rows],
            "rejected": [[_user(r[0]), _assistant(r[3])] for r in rows],
            "messages": [[_user(r[0]), _assistant(r[2])] for r in rows],
            "score_chosen": [r[4] for r in rows],
            "score_rejected": [r[5] for r in rows],
            "source": [r[6] for r in rows],
        }
    )


def test_ultrafeedback_splits_off_the_user_turn_and_keeps_scores():
    out = adapt_ultrafeedback_binarized(_ultrafeedback())
    assert out.column_names == ["prompt", "chosen", "rejected", "score_chosen", "score_rejected"]
    assert out[0] == {
        "prompt": [_user("Name a prime.")],
        "chosen": [_assistant("7 is prime.")],
        "rejected": [_assistant("9 is prime.")],
        "score_chosen": 8.5,
        "score_rejected": 3.0,
    }
    assert out[2]["chosen"] == out[2]["rejected"] == [_assistant("4")]
    assert add_margin_column(out)[MARGIN_COLUMN] == [5.5, 0.0, 1.0, 8.5]


def test_ultrafeedback_passes_through_kept_columns():
    out = adapt_ultrafeedback_binarized(_ultrafeedback(), keep_columns=["prompt_id", "source"])
    assert out.column_names[-2:] == ["prompt_id", "source"]
    assert out["prompt_id"] == ["p0", "p1", "p2", "p3"]


def test_ultrafeedback_multi_turn_prompt_is_every_shared_message():
    history = [_user("Hi"), _assistant("Hello!"), _user("Tell a joke.")]
    ds = Dataset.from_dict(
        {
            "chosen": [[*history, _assistant("A pun.")]],
            "rejected": [[*history, _assistant("No.")]],
            "score_chosen": [9.0],
            "score_rejected": [2.0],
        }
    )
    out = adapt_ultrafeedback_binarized(ds)
    assert out[0]["prompt"] == history
    assert out[0]["chosen"] == [_assistant("A pun.")]


def test_ultrafeedback_rejects_pairs_that_differ_before_the_answer():
    ds = Dataset.from_dict(
        {
            "chosen": [[_user("a"), _assistant("x")]],
            "rejected": [[_user("b"), _assistant("y")]],
            "score_chosen": [2.0],
            "score_rejected": [1.0],
        }
    )
    with pytest.raises(ValueError, match="row 0.*: the 'ultrafeedback_binarized' dataset adapter.*share no leading"):
        adapt_ultrafeedback_binarized(ds)


def test_ultrafeedback_rejects_string_pairs():
    ds = Dataset.from_dict({"chosen": ["x"], "rejected": ["y"], "score_chosen": [2.0], "score_rejected": [1.0]})
    with pytest.raises(ValueError, match="message lists, but they hold strings"):
        adapt_ultrafeedback_binarized(ds)


# --- stanfordnlp/SHP -------------------------------------------------------------------------------------------------


def _shp() -> Dataset:
    # (post_id, labels, score_A, score_B): post "t3a" has 6 pairs, "t3b" has 2. Row 5 is a label/score disagreement.
    pairs = [("t3a", 1, 12, 4), ("t3a", 0, 3, 30), ("t3a", 1, 50, 10), ("t3a", 0, 2, 6), ("t3a", 1, 9, 3)]
    pairs += [("t3a", 1, 5, 8), ("t3b", 0, 2, 4), ("t3b", 1, 43002, 2)]
    n = len(pairs)
    return Dataset.from_dict(
        {
            "post_id": [p[0] for p in pairs],
            "domain": ["askscience_train"] * 6 + ["legaladvice_train"] * 2,
            "upvote_ratio": [0.97] * 6 + [0.88] * 2,
            "history": ["Why is the sky blue? [title] ..."] * 6 + ["Can my landlord keep the deposit?"] * 2,
            "c_root_id_A": [f"hx{i}a" for i in range(n)],
            "c_root_id_B": [f"hx{i}b" for i in range(n)],
            "created_at_utc_A": [1_600_000_000 + 60 * i for i in range(n)],
            "created_at_utc_B": [1_600_000_030 + 60 * i for i in range(n)],
            "score_A": [p[2] for p in pairs],
            "score_B": [p[3] for p in pairs],
            "human_ref_A": [f"comment A{i}" for i in range(n)],
            "human_ref_B": [f"comment B{i}" for i in range(n)],
            "labels": [p[1] for p in pairs],
            "seconds_difference": [30.0] * n,
            "score_ratio": [max(p[2], p[3]) / min(p[2], p[3]) for p in pairs],
        }
    )


def test_shp_orients_pairs_by_labels_with_vote_difference_margins(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = adapt_shp(_shp(), max_pairs_per_post=None)
    assert out.column_names == ["prompt", "chosen", "rejected", "score_chosen", "score_rejected", "margin"]
    assert out[0] == {
        "prompt": "Why is the sky blue? [title] ...",
        "chosen": "comment A0",
        "rejected": "comment B0",
        "score_chosen": 12.0,
        "score_rejected": 4.0,
        "margin": 8.0,
    }
    assert (out[1]["chosen"], out[1]["rejected"]) == ("comment B1", "comment A1")  # labels=0: B is preferred
    assert out["margin"] == [8.0, 27.0, 40.0, 4.0, 6.0, -3.0, 2.0, 43000.0]
    # The one row whose label disagrees with its scores is kept as labelled, counted and logged.
    assert (
        "in 1 of 8 pairs the comment preferred by `labels` has the lower vote score (first: output row 5 "
        "(counting from 0))" in caplog.text
    )


def test_shp_log_ratio_margin_is_the_log_of_the_score_ratio():
    out = adapt_shp(_shp(), margin_transform="log_ratio", max_pairs_per_post=None)
    agree = [i for i in range(8) if i != 5]
    assert [out["margin"][i] for i in agree] == pytest.approx(
        [math.log(r) for r in _shp().select(agree)["score_ratio"]]
    )
    assert out["margin"][5] == pytest.approx(math.log(5 / 8))


def test_shp_log_ratio_needs_positive_scores():
    ds = _shp().map(lambda ex, i: {"score_B": 0 if i == 2 else ex["score_B"]}, with_indices=True)
    with pytest.raises(
        ValueError,
        match=r"positive vote scores, but row 2.* \(post_id 't3a'\) has score_A=50, score_B=0",
    ):
        adapt_shp(ds, margin_transform="log_ratio", max_pairs_per_post=None)


def test_shp_caps_pairs_per_post_reproducibly(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = adapt_shp(_shp(), keep_columns=["post_id", "c_root_id_A"])  # default cap: 5, the paper's
    assert "kept at most 5 pairs per post (seed 42): dropped 1 of 8 pairs, from 1 of 2 posts" in caplog.text
    assert out["post_id"].count("t3a") == 5 and out["post_id"].count("t3b") == 2
    assert adapt_shp(_shp(), keep_columns=["c_root_id_A"])["c_root_id_A"] == out["c_root_id_A"]  # same seed, same rows
    draws = {tuple(adapt_shp(_shp(), seed=s, keep_columns=["c_root_id_A"])["c_root_id_A"]) for s in range(6)}
    assert len(draws) > 1  # the seed does pick the rows
    capped = adapt_shp(_shp(), max_pairs_per_post=2, keep_columns=["post_id"])
    assert capped["post_id"] == ["t3a", "t3a", "t3b", "t3b"]


def test_shp_output_passes_margin_validation_once_disagreements_are_handled():
    out = adapt_shp(_shp(), max_pairs_per_post=None)
    with pytest.raises(ValueError, match="1 of 8 pairs .* negative margin"):
        add_margin_column(out)
    for column in ({}, {"margin_column": "margin"}):
        assert len(add_margin_column(out, negative_margins="drop", **column)) == 7
    assert add_margin_column(out, margin_column="margin", negative_margins="drop")[MARGIN_COLUMN][-1] == 43000.0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"margin_transform": "ratio"}, "margin_transform` must be one of"),
        ({"max_pairs_per_post": 0}, "max_pairs_per_post` must be >= 1"),
    ],
)
def test_shp_rejects_bad_options(kwargs, error):
    with pytest.raises(ValueError, match=error):
        adapt_shp(_shp(), **kwargs)


def test_shp_rejects_labels_other_than_0_and_1():
    ds = _shp().map(lambda ex, i: {"labels": 2 if i == 1 else ex["labels"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"row 1.* \(post_id 't3a'\) holds 2"):
        adapt_shp(ds, max_pairs_per_post=None)


def test_shp_missing_column_names_it_the_adapter_and_the_columns_present():
    ds = _shp().remove_columns(["labels", "upvote_ratio"])
    with pytest.raises(ValueError, match=r"'shp' dataset adapter needs the column\(s\) \['labels'\].*'c_root_id_A'"):
        adapt_shp(ds)


# --- princeton-nlp/llama3-ultrafeedback-armorm and variants ----------------------------------------------------------


def _reward_annotated() -> Dataset:
    rows = [
        ("Name a color.", ["Red.", "Blue!", "Green", "uh", "Teal."], [0.11, 0.13, 0.12, 0.02, 0.13]),
        ("Say hi.", ["Hi", "Hi", "Hi", "Hi", "Hi"], [0.09, 0.09, 0.09, 0.09, 0.09]),  # all tied: no pair
        ("Add 2+2.", ["4", "5", "four", "22", "4."], [0.15, -0.01, 0.14, 0.0, 0.149]),
    ]
    return Dataset.from_dict(
        {
            "prompt_id": ["h0", "h1", "h2"],
            "prompt": [r[0] for r in rows],
            "all_generated_responses": [r[1] for r in rows],
            "all_rm_scores": [r[2] for r in rows],
            # The source's own binarization: best and worst response, as messages with the user turn.
            "chosen": [[_user(r[0]), _assistant(r[1][max(range(5), key=r[2].__getitem__)])] for r in rows],
            "rejected": [[_user(r[0]), _assistant(r[1][min(range(5), key=r[2].__getitem__)])] for r in rows],
        }
    )


def test_reward_annotated_pairs_best_and_worst_and_skips_all_tied_prompts(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = adapt_reward_annotated(_reward_annotated(), keep_columns=["prompt_id"])
    assert "skipped 1 of 3 prompts whose responses all got the same score" in caplog.text
    assert out.column_names == ["prompt", "chosen", "rejected", "score_chosen", "score_rejected", "prompt_id"]
    assert out[0] == {
        "prompt": [_user("Name a color.")],
        "chosen": [_assistant("Blue!")],  # tied for best with "Teal.": the first listed wins
        "rejected": [_assistant("uh")],
        "score_chosen": 0.13,
        "score_rejected": 0.02,
        "prompt_id": "h0",
    }
    assert out["prompt_id"] == ["h0", "h2"]
    assert add_margin_column(out)[MARGIN_COLUMN] == pytest.approx([0.11, 0.16])


def test_reward_annotated_plain_format():
    out = adapt_reward_annotated(_reward_annotated(), conversational=False)
    assert out[1] == {
        "prompt": "Add 2+2.",
        "chosen": "4",
        "rejected": "5",
        "score_chosen": 0.15,
        "score_rejected": -0.01,
    }


def test_reward_annotated_says_when_no_pair_is_left():
    with pytest.raises(ValueError, match="'reward_annotated' dataset adapter has no pairs to convert"):
        adapt_reward_annotated(_reward_annotated().select([1]))


def test_reward_annotated_needs_one_score_per_response():
    ds = _reward_annotated().map(lambda ex: {"all_generated_responses": ex["all_generated_responses"][:4]})
    with pytest.raises(ValueError, match="row 0.*: 4 responses in `all_generated_responses` but 5 scores"):
        adapt_reward_annotated(ds)


def test_reward_annotated_missing_column():
    with pytest.raises(
        ValueError, match=r"'reward_annotated' dataset adapter needs the column\(s\) \['all_rm_scores'\]"
    ):
        adapt_reward_annotated(_reward_annotated().remove_columns("all_rm_scores"))


# --- argilla/ultrafeedback-binarized-preferences-cleaned, argilla/distilabel-intel-orca-dpo-pairs --------------------


def _argilla_ultrafeedback() -> Dataset:
    rows = [("Name a prime.", "7", 5.0, "9", 2.25), ("Say hi.", "Hi!", 4.5, "Hey", 4.5), ("2+2?", "4", 5.0, "5", 1.0)]
    return Dataset.from_dict(
        {
            "source": ["evol_instruct", "ultrachat", "flan_v2_niv2"],
            "prompt": [r[0] for r in rows],
            "chosen": [[_user(r[0]), _assistant(r[1])] for r in rows],
            "chosen-rating": [r[2] for r in rows],
            "chosen-model": ["gpt-4", "wizardlm-70b", "gpt-3.5-turbo"],
            "rejected": [[_user(r[0]), _assistant(r[3])] for r in rows],
            "rejected-rating": [r[4] for r in rows],
            "rejected-model": ["falcon-40b-instruct", "pythia-12b", "alpaca-7b"],
        }
    )


def _orca_pairs() -> Dataset:
    # (system, input, generations, rating, chosen, rejected, status): the judge rates `generations` in their order.
    rows = [
        ("", "What is 3*3?", ["9", "6"], [9.0, 4.0], "9", "6", "unchanged"),
        ("You are a helpful assistant.", "Spell cat.", ["kat", "c-a-t"], [3.0, 8.0], "c-a-t", "kat", "swapped"),
        ("", "Pick a fruit.", ["Apple.", "Pear."], [7.0, 7.0], "Apple.", "Pear.", "tie"),
        ("", "Who wrote Hamlet?", ["Shakespeare.", "Marlowe."], None, "Shakespeare.", "Marlowe.", "tie"),
    ]
    return Dataset.from_dict(
        {
            "system": [r[0] for r in rows],
            "input": [r[1] for r in rows],
            "chosen": [r[4] for r in rows],
            "rejected": [r[5] for r in rows],
            "generations": [r[2] for r in rows],
            "order": [["chosen", "rejected"], ["rejected", "chosen"], ["chosen", "rejected"], ["chosen", "rejected"]],
            "labelling_model": ["gpt-4-1106-preview"] * 4,
            "labelling_prompt": [[{"content": "Rate the responses.", "role": "user"}]] * 4,
            "raw_labelling_response": ["9 4\nBecause...", "3 8\nBecause...", "7 7\nBoth fine.", "n/a"],
            "rating": [r[3] for r in rows],
            "rationale": ["...", "...", "...", ""],
            "status": [r[6] for r in rows],
            "original_chosen": ["9", "kat", "Apple.", "Shakespeare."],
            "original_rejected": ["6", "c-a-t", "Pear.", "Marlowe."],
            "chosen_score": [9.0, 8.0, 7.0, None],
            "in_gsm8k_train": [False, False, False, False],
        }
    )


def test_argilla_renames_ratings_and_keeps_ties_by_default(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = adapt_argilla(_argilla_ultrafeedback(), keep_columns=["source"])
    assert "kept 1 of 3 pairs rated as ties (ties='keep'); their margin is 0" in caplog.text
    assert out.column_names == ["prompt", "chosen", "rejected", "score_chosen", "score_rejected", "source"]
    assert out[0] == {
        "prompt": [_user("Name a prime.")],
        "chosen": [_assistant("7")],
        "rejected": [_assistant("9")],
        "score_chosen": 5.0,
        "score_rejected": 2.25,
        "source": "evol_instruct",
    }
    assert add_margin_column(out)[MARGIN_COLUMN] == [2.75, 0.0, 4.0]


def test_argilla_drops_ties_on_request(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = adapt_argilla(_argilla_ultrafeedback(), ties="drop")
    assert "dropped 1 of 3 pairs rated as ties (ties='drop')" in caplog.text
    assert out["score_chosen"] == [5.0, 5.0] and out["score_rejected"] == [2.25, 1.0]


def test_argilla_finds_underscore_ratings_and_named_ones():
    underscored = _argilla_ultrafeedback().rename_columns(
        {"chosen-rating": "chosen_rating", "rejected-rating": "rejected_rating"}
    )
    assert adapt_argilla(underscored)["score_rejected"] == [2.25, 4.5, 1.0]
    named = _argilla_ultrafeedback().rename_columns({"chosen-rating": "c_score", "rejected-rating": "r_score"})
    out = adapt_argilla(named, chosen_rating_column="c_score", rejected_rating_column="r_score")
    assert out["score_chosen"] == [5.0, 4.5, 5.0]


def test_argilla_orca_pairs_read_each_side_rating_from_its_generation(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = adapt_argilla(_orca_pairs())
    assert "dropped 1 of 4 pairs without ratings (null `rating`)" in caplog.text
    assert "1 of 3 pairs have a non-empty `system` prompt" in caplog.text
    assert "kept 1 of 3 pairs rated as ties" in caplog.text
    assert out.to_list() == [
        {"prompt": "What is 3*3?", "chosen": "9", "rejected": "6", "score_chosen": 9.0, "score_rejected": 4.0},
        {"prompt": "Spell cat.", "chosen": "c-a-t", "rejected": "kat", "score_chosen": 8.0, "score_rejected": 3.0},
        {
            "prompt": "Pick a fruit.",
            "chosen": "Apple.",
            "rejected": "Pear.",
            "score_chosen": 7.0,
            "score_rejected": 7.0,
        },
    ]
    assert add_margin_column(out)[MARGIN_COLUMN] == [5.0, 5.0, 0.0]


def test_argilla_orca_pairs_as_conversations_keep_the_system_prompt():
    out = adapt_argilla(_orca_pairs(), conversational=True, ties="drop")
    assert out["prompt"] == [
        [_user("What is 3*3?")],
        [{"content": "You are a helpful assistant.", "role": "system"}, _user("Spell cat.")],
    ]
    assert out["chosen"] == [[_assistant("9")], [_assistant("c-a-t")]]


def test_argilla_errors_name_what_is_missing():
    with pytest.raises(ValueError, match=r"'argilla' dataset adapter found no rating columns.*Columns present: \["):
        adapt_argilla(_argilla_ultrafeedback().remove_columns("rejected-rating"))
    with pytest.raises(ValueError, match=r"'argilla' dataset adapter needs the column\(s\) \['rejected'\]"):
        adapt_argilla(_argilla_ultrafeedback().remove_columns("rejected"))
    with pytest.raises(ValueError, match="`ties` must be one of"):
        adapt_argilla(_argilla_ultrafeedback(), ties="swap")
    with pytest.raises(ValueError, match="`keep_columns` of the 'argilla' dataset adapter can't hold \\['prompt'\\]"):
        adapt_argilla(_argilla_ultrafeedback(), keep_columns=["prompt"])


# --- registry --------------------------------------------------------------------------------------------------------


def test_registry_selects_adapters_by_name():
    assert sorted(DATASET_ADAPTERS) == ["argilla", "reward_annotated", "shp", "ultrafeedback_binarized"]
    ds = _shp()
    assert apply_dataset_adapter(None, ds) is ds
    by_name = apply_dataset_adapter("shp", ds, max_pairs_per_post=None, margin_transform="log_ratio")
    assert by_name.to_list() == adapt_shp(ds, max_pairs_per_post=None, margin_transform="log_ratio").to_list()
    splits = apply_dataset_adapter("argilla", DatasetDict(train=_argilla_ultrafeedback(), test=_orca_pairs()))
    assert {split: len(part) for split, part in splits.items()} == {"train": 3, "test": 3}


def test_registry_errors():
    with pytest.raises(
        ValueError, match=r"Unknown dataset adapter 'hh'. Known adapters: \['argilla', 'reward_annotated'"
    ):
        apply_dataset_adapter("hh", _shp())
    with pytest.raises(ValueError, match=r"options \['seed'\] were given, but no dataset adapter"):
        apply_dataset_adapter(None, _shp(), seed=1)
    with pytest.raises(TypeError, match="'shp' dataset adapter needs a `datasets.Dataset`.*IterableDataset"):
        apply_dataset_adapter("shp", _shp().to_iterable_dataset())
