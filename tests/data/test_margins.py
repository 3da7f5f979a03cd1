"""Bad scores stop with a clear message before training; swaps and drops are counted."""

import logging

import pytest
from datasets import Dataset

from tests.helpers import base_args, make_preference_dataset
from trl_margins import MMPOConfig, MMPOTrainer
from trl_margins.data.margins import MARGIN_COLUMN, WEIGHT_COLUMN, add_margin_column, add_weight_column


def _pairs(chosen_scores, rejected_scores):
    n = len(chosen_scores)
    return Dataset.from_dict(
        {
            "prompt": [f"p{i}" for i in range(n)],
            "chosen": [f"c{i}" for i in range(n)],
            "rejected": [f"r{i}" for i in range(n)],
            "score_chosen": chosen_scores,
            "score_rejected": rejected_scores,
        }
    )


def test_margin_is_the_score_difference():
    ds = add_margin_column(_pairs([5.0, 8.5, 3.0], [1.0, 8.0, 3.0]))
    assert ds[MARGIN_COLUMN] == [4.0, 0.5, 0.0]


def test_margin_column_is_used_as_is():
    ds = _pairs([5.0], [1.0]).add_column("gap", [2.5])
    assert add_margin_column(ds, margin_column="gap")[MARGIN_COLUMN] == [2.5]


def test_missing_column_names_it_and_lists_the_columns():
    ds = _pairs([5.0], [1.0]).remove_columns("score_rejected")
    with pytest.raises(
        ValueError, match=r"no column 'score_rejected'.*\['chosen', 'prompt', 'rejected', 'score_chosen'\]"
    ):
        add_margin_column(ds)


@pytest.mark.parametrize(
    ("chosen", "bad"),
    [([5.0, float("nan"), 1.0], "non-finite value \\(nan\\) at row 1"), ([5.0, 2.0, float("inf")], "inf\\) at row 2")],
)
def test_nan_and_inf_name_the_column_and_row(chosen, bad):
    with pytest.raises(ValueError, match=f"'score_chosen'.*{bad}"):
        add_margin_column(_pairs(chosen, [0.0, 0.0, 0.0]))


def test_non_numeric_names_the_column_and_row():
    ds = Dataset.from_dict(
        {
            "prompt": ["a", "b"],
            "chosen": ["x", "y"],
            "rejected": ["u", "v"],
            "score_chosen": [1.0, 2.0],
            "score_rejected": ["0", "high"],
        }
    )
    with pytest.raises(ValueError, match=r"'score_rejected' must hold numbers, but row 0.* holds '0'"):
        add_margin_column(ds)


def test_none_is_reported_as_a_bad_row():
    with pytest.raises(ValueError, match="row 1.* holds None"):
        add_margin_column(_pairs([3.0, None], [1.0, 1.0]))


def test_negative_margin_is_an_error_by_default():
    with pytest.raises(ValueError, match=r"2 of 3 pairs .* negative margin.*first is row 0.* \(margin -2\).*'swap'"):
        add_margin_column(_pairs([1.0, 5.0, 2.0], [3.0, 4.0, 2.5]))


def test_negative_margin_swap_exchanges_the_pair_and_logs_the_count(caplog):
    with caplog.at_level(logging.WARNING, logger="trl_margins.data.margins"):
        ds = add_margin_column(_pairs([1.0, 5.0], [3.0, 4.0]), negative_margins="swap")
    assert "Swapped chosen and rejected in 1 of 2 pairs" in caplog.text
    assert ds[0]["chosen"] == "r0" and ds[0]["rejected"] == "c0"
    assert (ds[0]["score_chosen"], ds[0]["score_rejected"], ds[0][MARGIN_COLUMN]) == (3.0, 1.0, 2.0)
    assert ds[1]["chosen"] == "c1" and ds[1][MARGIN_COLUMN] == 1.0


def test_negative_margin_drop_removes_the_pair_and_logs_the_count(caplog):
    with caplog.at_level(logging.WARNING, logger="trl_margins.data.margins"):
        ds = add_margin_column(_pairs([1.0, 5.0, 6.0], [3.0, 4.0, 7.0]), negative_margins="drop")
    assert "Dropped 2 of 3 pairs" in caplog.text
    assert ds["prompt"] == ["p1"]


def test_streaming_dataset_is_checked_as_it_is_read():
    ds = _pairs([5.0, 1.0], [1.0, 2.0]).to_iterable_dataset()
    rows = add_margin_column(ds, negative_margins="swap")
    assert [r[MARGIN_COLUMN] for r in rows] == [4.0, 1.0]
    with pytest.raises(ValueError, match="row 1.* .* negative margin"):
        list(add_margin_column(_pairs([5.0, 1.0], [1.0, 2.0]).to_iterable_dataset()))


def test_trainer_rejects_bad_scores_before_training(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(8)
    ds = ds.map(lambda ex, i: {"score_chosen": float("nan") if i == 5 else ex["score_chosen"]}, with_indices=True)
    with pytest.raises(ValueError, match="'score_chosen' holds a non-finite value \\(nan\\) at row 5.*"):
        MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0)), train_dataset=ds)


def test_trainer_without_gamma_needs_no_scores(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(8, scores=False)
    trainer = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, max_steps=1)), train_dataset=ds)
    assert MARGIN_COLUMN not in trainer.train_dataset.column_names
    trainer.train()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"mmpo_gamma": -1.0}, "mmpo_gamma"),
        ({"negative_margins": "flip"}, "negative_margins"),
        ({"mmpo_gamma": 1.0, "loss_type": ["hinge"]}, "loss_type"),
        ({"reward_type": "simpo", "precompute_ref_log_probs": True}, "reward_type"),
        ({"reward_type": "uniform"}, "reward_type"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
    ],
)
def test_config_rejects_invalid_hyperparameters(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        MMPOConfig(**base_args(tmp_path, **overrides))


@pytest.mark.parametrize("config_class", ["MMPOConfig", "MMPORewardConfig", "GammaPOConfig"])
def test_a_bad_margin_field_is_reported_before_trls_checks(tmp_path, config_class):
    # Without use_cpu or bf16=False, TRL's default bf16 fails on a CPU; the user's own mistake must come first
    import trl_margins

    with pytest.raises(ValueError, match="mmpo_gamma"):
        getattr(trl_margins, config_class)(output_dir=str(tmp_path), mmpo_gamma=-1.0)


def _weighted(weights):
    return _pairs([2.0] * len(weights), [1.0] * len(weights)).add_column("w", weights)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1.0, -0.5, 1.0], "negative pair weight \\(-0.5\\) at row 1"),
        ([1.0, 1.0, float("nan")], "'w' holds a non-finite value \\(nan\\) at row 2"),
        ([float("inf"), 1.0, 1.0], "'w' holds a non-finite value \\(inf\\) at row 0"),
        ([0.0, 0.0, 0.0], "Every pair weight in column 'w' .* is 0"),
        (["1", "2", "x"], "'w' must hold numbers, but row 0"),
    ],
)
def test_bad_pair_weights_name_the_column_and_row(weights, match):
    ds = Dataset.from_dict({"prompt": ["p"] * 3, "chosen": ["c"] * 3, "rejected": ["r"] * 3, "w": weights})
    with pytest.raises(ValueError, match=match):
        add_weight_column(ds, "w")


def test_pair_weights_are_copied_and_a_missing_column_is_named():
    assert add_weight_column(_weighted([1.0, 0.0, 2.5]), "w")[WEIGHT_COLUMN] == [1.0, 0.0, 2.5]
    with pytest.raises(ValueError, match="no column 'weight'.*Columns present"):
        add_weight_column(_weighted([1.0]), "weight")
    streamed = add_weight_column(_weighted([1.0, -1.0]).to_iterable_dataset(), "w")
    with pytest.raises(ValueError, match="negative pair weight .* at row 1.*"):
        list(streamed)


def test_dropped_pairs_take_their_weights_with_them(tiny_model_dir, tmp_path):
    ds = _pairs([5.0, 1.0, 3.0], [1.0, 2.0, 0.0]).add_column("w", [0.5, 9.0, 2.0])
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0, weight_column="w", negative_margins="drop")),
        train_dataset=ds,
    )
    assert trainer.train_dataset[WEIGHT_COLUMN] == [0.5, 2.0]
    assert trainer.train_dataset[MARGIN_COLUMN] == [4.0, 3.0]


def test_trainer_rejects_bad_weights_before_training(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(8).add_column("w", [1.0] * 6 + [-2.0, 1.0])
    with pytest.raises(ValueError, match="'w' holds a negative pair weight \\(-2\\) at row 6.*"):
        MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, weight_column="w")), train_dataset=ds)
