"""MMPOKTOTrainer: plain KTO without `mmpo_gamma`, MMPO's per-sample weights (MMPO paper, App. B) against an
independent computation, bad scores, and two steps on the bundled VADER samples."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from trl import KTOConfig, KTOTrainer

from tests.helpers import base_args, eval_loss, make_preference_dataset, perturb
from trl_margins import MMPOKTOConfig, MMPOKTOTrainer
from trl_margins.data.formatting import unpair_preferences
from trl_margins.data.margins import WEIGHT_COLUMN
from trl_margins.losses import kto_sample_weights


def _unpaired(pairs) -> Dataset:
    """Each pair as two KTO samples: the chosen one desirable, the rejected one undesirable, with their scores."""
    return unpair_preferences(pairs)


def _kto_args(tmp_path, **overrides):
    return base_args(tmp_path, max_steps=2, **overrides)


def _losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_kto_sample_weights_are_bradley_terry_against_the_median():
    scores = torch.tensor([1.0, 4.0, 6.0, 9.0])
    desirable = torch.tensor([True, True, False, False])
    expected = 1 / (1 + np.exp(-0.5 * np.array([1 - 5, 4 - 5, 5 - 6, 5 - 9])))
    np.testing.assert_allclose(kto_sample_weights(scores, desirable, 5.0, 0.5).numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        kto_sample_weights(scores, desirable, 5.0, -1.0)


def test_without_gamma_it_is_trls_kto_trainer(tiny_model_dir, tmp_path):
    ds = _unpaired(make_preference_dataset(8))
    stock = KTOTrainer(tiny_model_dir, args=KTOConfig(**_kto_args(tmp_path / "stock")), train_dataset=ds)
    stock.train()
    ours = MMPOKTOTrainer(tiny_model_dir, args=KTOConfig(**_kto_args(tmp_path / "ours")), train_dataset=ds)
    assert isinstance(ours.args, MMPOKTOConfig) and ours.args.mmpo_gamma is None
    ours.train()
    assert _losses(ours) == _losses(stock) and len(_losses(ours)) == 2
    for key in ("kl", "rewards/chosen", "logps/chosen", "rewards/margins"):
        theirs, mine = ([h.get(key) for h in t.state.log_history if "loss" in h] for t in (stock, ours))
        assert mine == theirs, key


def test_weights_refine_kto_weights_from_the_training_median(tiny_model_dir, tmp_path):
    gamma = 0.8
    ds = _unpaired(make_preference_dataset(8, seed=4))
    args = MMPOKTOConfig(**_kto_args(tmp_path, mmpo_gamma=gamma, desirable_weight=1.5, undesirable_weight=0.7))
    trainer = MMPOKTOTrainer(tiny_model_dir, args=args, train_dataset=ds)
    median = float(np.median(ds["score"]))
    assert trainer.score_median == median
    perturb(trainer.model)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])  # the first 4 samples, in order
    assert WEIGHT_COLUMN in batch
    loss = eval_loss(trainer, batch)
    # Independent: the weights from the raw scores, then TRL's own loss with them in place of its constants
    labels = batch["label"].bool()
    scores = np.array(trainer.train_dataset["score"][: len(labels)])
    assert labels.tolist() == [True, False, True, False]
    sign = np.where(labels.numpy(), 1.0, -1.0)
    factor = torch.tensor(1 / (1 + np.exp(-gamma * sign * (scores - median))), dtype=torch.float32)
    stock = {k: v for k, v in batch.items() if k != WEIGHT_COLUMN}
    trainer.desirable_weight, trainer.undesirable_weight = 1.5 * factor[labels], 0.7 * factor[~labels]
    with torch.no_grad():
        expected = KTOTrainer._compute_loss(trainer, trainer.model, stock, False)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert not torch.allclose(factor, torch.full_like(factor, 0.5)), "the test needs scores away from the median"
    # Our step puts KTO's constants back after using per-sample weights
    trainer.compute_loss(trainer.model, dict(batch))
    assert (trainer.desirable_weight, trainer.undesirable_weight) == (1.5, 0.7)


def test_bad_scores_name_the_column_and_row(tiny_model_dir, tmp_path):
    ds = _unpaired(make_preference_dataset(4))
    args = MMPOKTOConfig(**_kto_args(tmp_path, mmpo_gamma=1.0))
    with pytest.raises(ValueError, match="no column 'rating'.*Columns present"):
        MMPOKTOTrainer(
            tiny_model_dir, args=MMPOKTOConfig(**_kto_args(tmp_path, mmpo_gamma=1.0, score_column="rating")),
            train_dataset=ds,
        )  # fmt: skip
    bad = ds.map(lambda r, i: {"score": float("nan") if i == 5 else r["score"]}, with_indices=True)
    with pytest.raises(ValueError, match="'score' holds a non-finite value \\(nan\\) at row 5.*"):
        MMPOKTOTrainer(tiny_model_dir, args=args, train_dataset=bad)
    with pytest.raises(ValueError, match="mmpo_gamma"):
        MMPOKTOConfig(**_kto_args(tmp_path, mmpo_gamma=-1.0))


def test_trains_on_the_bundled_vader_samples(tiny_model_dir, tmp_path):
    from trl_margins.data.assets import load_bundled_pairs

    ds = _unpaired(load_bundled_pairs("train").select(range(8)))
    trainer = MMPOKTOTrainer(
        tiny_model_dir, args=MMPOKTOConfig(**_kto_args(tmp_path, mmpo_gamma=1.0)), train_dataset=ds
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) and 0 < h["mmpo/kto_weight"] < 1 for h in logs)


def test_unpair_preferences_gives_one_desirable_and_one_undesirable_row_per_pair():
    pairs = make_preference_dataset(3, seed=2)
    rows = unpair_preferences(pairs).to_list()
    assert len(rows) == 6
    for i, pair in enumerate(pairs):
        chosen, rejected = rows[2 * i], rows[2 * i + 1]
        assert chosen == {"prompt": pair["prompt"], "completion": pair["chosen"], "label": True,
                          "score": pair["score_chosen"]}  # fmt: skip
        assert rejected == {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False,
                            "score": pair["score_rejected"]}  # fmt: skip
    unpaired = unpair_preferences(pairs, score_column="s")
    assert unpair_preferences(unpaired) is unpaired and "s" in unpaired.column_names
    assert "score" not in unpair_preferences(make_preference_dataset(2, scores=False)).column_names
    with pytest.raises(ValueError, match="unpaired rows"):
        unpair_preferences(Dataset.from_list([{"prompt": "a", "text": "b"}]))


def test_kto_command_trains_on_the_bundled_vader_pairs(tiny_model_dir, tmp_path):
    import json

    from trl_margins.cli import train
    from trl_margins.cli.arguments import parse_args
    from trl_margins.data.assets import BUNDLED_DATASET
    from trl_margins.errors import UsageError

    argv = ["--model_name_or_path", tiny_model_dir, "--dataset_name", BUNDLED_DATASET, "--output_dir", str(tmp_path)]
    argv += ["--max_steps", "2", "--per_device_train_batch_size", "4", "--max_train_samples", "6", "--max_length"]
    argv += ["48", "--mmpo_gamma", "1.0", "--logging_steps", "1", "--report_to", "none"]
    parsed = parse_args("kto", argv)
    assert isinstance(parsed[1], MMPOKTOConfig)
    report = train.run("kto", *parsed)
    assert report["train"]["train_samples"] == 12  # 6 pairs, a desirable and an undesirable sample each
    logs = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    weights = [h["mmpo/kto_weight"] for h in logs if "mmpo/kto_weight" in h]
    assert len(weights) == 2 and all(0 < w < 1 for w in weights)
    with pytest.raises(UsageError, match="binary feedback"):
        train.run("kto", *parse_args("kto", [*argv, "--preference_eval", "true"]))
