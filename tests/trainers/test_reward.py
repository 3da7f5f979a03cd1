"""MMPORewardTrainer: drop-in equivalence with TRL's RewardTrainer, the loss against an independent per-pair
computation, bad inputs, LoRA, encoder backbones and the evaluation metrics on a hand-made reward model."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from trl import DPOConfig, RewardConfig, RewardTrainer

from tests.helpers import base_args, make_preference_dataset
from trl_margins import MMPORewardConfig, MMPORewardTrainer
from trl_margins.data.margins import MARGIN_COLUMN
from trl_margins.trainers._base import target_probs

TRL_METRICS = ("num_tokens", "min_reward", "mean_reward", "max_reward", "accuracy", "margin")


def rm_args(output_dir, **overrides) -> dict:
    args = base_args(output_dir, **overrides)
    args.pop("beta")  # a DPO knob
    return args


def _logged(trainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _pair_loss(z: float, p: float) -> float:
    """MMPO's per-pair cross-entropy, Section 3.2, in float64: -p log sigmoid(z) - (1 - p) log sigmoid(-z)."""
    return -(p * math.log(_sigmoid(z)) + (1 - p) * math.log(_sigmoid(-z)))


def _reward(model, ids: list[int]) -> float:
    """The reward of one sequence, run alone (no padding, no batching)."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits.item()


# ---- drop-in --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_class", [RewardConfig, MMPORewardConfig], ids=["RewardConfig", "MMPORewardConfig"])
def test_without_gamma_it_is_trls_reward_trainer(tiny_model_dir, tmp_path, config_class):
    # Scores are ignored without `mmpo_gamma`; TRL's own `margin` column is used by both
    ds = make_preference_dataset(16)
    ds = ds.add_column("margin", [0.25 * (i % 3) for i in range(len(ds))])
    common = rm_args(tmp_path, max_steps=4, center_rewards_coefficient=0.01)
    trl = RewardTrainer(tiny_model_dir, args=RewardConfig(**common), train_dataset=ds, eval_dataset=ds)
    trl.train()
    trl_eval = trl.evaluate()
    ours = MMPORewardTrainer(tiny_model_dir, args=config_class(**common), train_dataset=ds, eval_dataset=ds)
    assert isinstance(ours.args, MMPORewardConfig) and ours.args.mmpo_gamma is None
    ours.train()
    our_eval = ours.evaluate()

    assert _logged(ours, "loss") == _logged(trl, "loss")
    for key in TRL_METRICS:
        assert _logged(ours, key) == _logged(trl, key), key
        assert our_eval[f"eval_{key}"] == trl_eval[f"eval_{key}"], key
    assert our_eval["eval_loss"] == trl_eval["eval_loss"]
    # Calibration against hard targets comes on top; no target probability without gamma
    assert "eval_mmpo/ece" in our_eval and "eval_mmpo/brier" in our_eval
    assert not _logged(ours, "mmpo/target_prob")


def test_config_validation():
    with pytest.raises(ValueError, match="mmpo_gamma"):
        MMPORewardConfig(output_dir="out", mmpo_gamma=-0.5, use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="negative_margins"):
        MMPORewardConfig(output_dir="out", negative_margins="ignore", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="calibration_bins"):
        MMPORewardConfig(output_dir="out", calibration_bins=0, use_cpu=True, bf16=False)


def test_a_dpo_config_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(TypeError, match="RewardConfig"):
        MMPORewardTrainer(
            tiny_model_dir, args=DPOConfig(**base_args(tmp_path)), train_dataset=make_preference_dataset(4)
        )


# ---- the loss -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "backbone, batch_size, center, trl_margin, weighted",
    [
        ("qwen2", 1, None, False, False),
        ("qwen2", 8, None, False, False),
        ("qwen2", 8, 0.01, True, False),
        ("qwen2", 8, 0.01, True, True),
        ("bert", 8, None, False, False),
    ],
    ids=["decoder-bs1", "decoder-bs8", "decoder-bs8-center-trl_margin", "decoder-bs8-pair_weights", "encoder-bs8"],
)
def test_loss_matches_an_independent_per_pair_computation(
    request, tmp_path, backbone, batch_size, center, trl_margin, weighted
):
    gamma = 0.7
    model_dir = request.getfixturevalue("tiny_model_dir" if backbone == "qwen2" else "tiny_bert_dir")
    raw = make_preference_dataset(8, seed=1)
    if trl_margin:
        raw = raw.add_column("margin", [0.3 * i for i in range(len(raw))])
    weights = [0.5 * (i % 3) + 0.25 * i if weighted else 1.0 for i in range(len(raw))]
    if weighted:
        raw = raw.add_column("w", weights)
    trainer = MMPORewardTrainer(
        model_dir,
        args=MMPORewardConfig(
            **rm_args(
                tmp_path,
                mmpo_gamma=gamma,
                center_rewards_coefficient=center,
                weight_column="w" if weighted else None,
            )
        ),
        train_dataset=raw,
    )
    model = trainer.model.eval()
    with torch.no_grad():  # reward gaps of order 1, so that the loss is far from its value at zero
        head = model.score if backbone == "qwen2" else model.classifier
        head.weight.mul_(20)
    rows = [trainer.train_dataset[i] for i in range(batch_size)]
    batch = trainer.data_collator(rows)
    assert batch[MARGIN_COLUMN].shape == (batch_size,)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch)).item()

    losses, squares = [], []
    for i, row in enumerate(rows):
        r_w, r_l = _reward(model, row["chosen_ids"]), _reward(model, row["rejected_ids"])
        p = _sigmoid(gamma * (raw[i]["score_chosen"] - raw[i]["score_rejected"]))
        shift = raw[i]["margin"] if trl_margin else 0.0
        losses.append(weights[i] * _pair_loss(r_w - r_l - shift, p))  # mean(w_i * loss_i): the centering unweighted
        squares.append((r_w + r_l) ** 2)
    expected = sum(losses) / batch_size + (center * sum(squares) / batch_size if center else 0.0)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert len({round(x, 6) for x in losses}) == batch_size, "the pairs should differ"


def test_soft_loss_with_hard_targets_reproduces_trls_compute_loss(tiny_model_dir, tmp_path):
    # gamma * margin = 100 makes every target exactly 1.0 in float32: the re-implemented part (the loss line, TRL's
    # `margin` shift and the centering term) must then give TRL's own number on the same batch
    ds = make_preference_dataset(8, scores=False)
    ds = ds.add_column("mmpo_m", [100.0] * len(ds)).add_column("margin", [0.5 * i for i in range(len(ds))])
    args = MMPORewardConfig(
        **rm_args(tmp_path, mmpo_gamma=1.0, margin_column="mmpo_m", center_rewards_coefficient=0.1)
    )
    trainer = MMPORewardTrainer(tiny_model_dir, args=args, train_dataset=ds)
    batch = next(iter(trainer.get_train_dataloader()))
    assert MARGIN_COLUMN in batch and "margin" in batch, "both margin columns survive TRL's column removal"
    targets = target_probs(batch[MARGIN_COLUMN], trainer.args.mmpo_gamma, batch["margin"], trainer.collator_name)
    assert torch.equal(targets, torch.ones(4))
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch))
        theirs = RewardTrainer.compute_loss(
            trainer, trainer.model, {k: v for k, v in batch.items() if k != "mmpo_margin"}
        )
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-6, atol=0)


def test_soft_targets_change_training_and_log_target_prob(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(16)
    common = rm_args(tmp_path, max_steps=3)
    hard = MMPORewardTrainer(tiny_model_dir, args=MMPORewardConfig(**common), train_dataset=ds)
    hard.train()
    soft = MMPORewardTrainer(tiny_model_dir, args=MMPORewardConfig(**common, mmpo_gamma=0.3), train_dataset=ds)
    soft.train()
    assert _logged(soft, "loss") != _logged(hard, "loss")
    assert all(0.5 <= p < 1 for p in _logged(soft, "mmpo/target_prob"))
    assert all(math.isfinite(x) for x in _logged(soft, "loss"))


def test_streamed_dataset(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(16).to_iterable_dataset()
    trainer = MMPORewardTrainer(
        tiny_model_dir, args=MMPORewardConfig(**rm_args(tmp_path, mmpo_gamma=0.5)), train_dataset=ds
    )
    trainer.train()
    assert len(_logged(trainer, "mmpo/target_prob")) == 3


# ---- bad inputs -----------------------------------------------------------------------------------------------------
def _build(model_dir, tmp_path, ds, **config):
    return MMPORewardTrainer(model_dir, args=MMPORewardConfig(**rm_args(tmp_path, **config)), train_dataset=ds)


def test_missing_score_column_names_it_and_lists_the_columns(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(4, scores=False)
    with pytest.raises(ValueError, match=r"no column 'score_chosen'.*\['chosen', 'prompt', 'rejected'\]"):
        _build(tiny_model_dir, tmp_path, ds, mmpo_gamma=1.0)
    with pytest.raises(ValueError, match=r"no column 'm'"):
        _build(tiny_model_dir, tmp_path, ds, mmpo_gamma=1.0, margin_column="m")


@pytest.mark.parametrize(
    "column, row, value, message",
    [
        ("score_chosen", 2, float("nan"), r"Column 'score_chosen' holds a non-finite value \(nan\) at row 2"),
        ("score_rejected", 1, float("inf"), r"Column 'score_rejected' holds a non-finite value \(inf\) at row 1"),
    ],
    ids=["nan", "inf"],
)
def test_non_finite_scores_name_column_and_row(tiny_model_dir, tmp_path, column, row, value, message):
    ds = make_preference_dataset(4)
    ds = ds.map(lambda ex, i: {column: value if i == row else ex[column]}, with_indices=True)
    with pytest.raises(ValueError, match=message):
        _build(tiny_model_dir, tmp_path, ds, mmpo_gamma=1.0)


def test_non_numeric_scores_name_column_and_row(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(4)
    as_text = ds.remove_columns("score_chosen").add_column("score_chosen", [f"{x:g}" for x in ds["score_chosen"]])
    with pytest.raises(ValueError, match=r"Column 'score_chosen' must hold numbers, but row 0.* holds '\d+' \(str\)"):
        _build(tiny_model_dir, tmp_path, as_text, mmpo_gamma=1.0)
    missing = ds.map(lambda ex, i: {"score_rejected": None if i == 2 else ex["score_rejected"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"Column 'score_rejected' must hold numbers, but row 2.* holds None"):
        _build(tiny_model_dir, tmp_path, missing, mmpo_gamma=1.0)


def _with_negative_row(n: int = 6, row: int = 3) -> Dataset:
    ds = make_preference_dataset(n)
    return ds.map(lambda ex, i: {"score_chosen": 1.0, "score_rejected": 5.0} if i == row else ex, with_indices=True)


def test_negative_margin_error(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"1 of 6 pairs .* negative margin.*row 3.* \(margin -4\)"):
        _build(tiny_model_dir, tmp_path, _with_negative_row(), mmpo_gamma=1.0)


def test_negative_margin_swap_and_drop(tiny_model_dir, tmp_path):
    raw = _with_negative_row()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def ids(text: str) -> list[int]:
        return tokenizer(text + tokenizer.eos_token)["input_ids"]

    swapped = _build(tiny_model_dir, tmp_path, raw, mmpo_gamma=1.0, negative_margins="swap").train_dataset
    assert len(swapped) == 6 and swapped[3][MARGIN_COLUMN] == 4.0
    assert swapped[3]["chosen_ids"] == ids(raw[3]["prompt"] + raw[3]["rejected"])
    assert swapped[3]["rejected_ids"] == ids(raw[3]["prompt"] + raw[3]["chosen"])
    assert swapped[2]["chosen_ids"] == ids(raw[2]["prompt"] + raw[2]["chosen"])

    dropped = _build(tiny_model_dir, tmp_path, raw, mmpo_gamma=1.0, negative_margins="drop").train_dataset
    assert len(dropped) == 5 and min(dropped[MARGIN_COLUMN]) >= 0
    assert dropped[3]["chosen_ids"] == ids(raw[4]["prompt"] + raw[4]["chosen"])


def test_a_collator_without_margins_is_reported(tiny_model_dir, tmp_path):
    trainer = _build(tiny_model_dir, tmp_path, make_preference_dataset(4), mmpo_gamma=1.0)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    del batch[MARGIN_COLUMN]
    with pytest.raises(ValueError, match="carries no margins"):
        trainer.compute_loss(trainer.model, batch)


# ---- PEFT and encoders ----------------------------------------------------------------------------------------------
def test_lora_trains_the_adapter_and_the_score_head(tiny_model_dir, tmp_path):
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    head_before = base.score.weight.detach().clone()
    q_before = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["score"], task_type="SEQ_CLS"
    )
    trainer = MMPORewardTrainer(
        base,
        args=MMPORewardConfig(**rm_args(tmp_path, mmpo_gamma=0.5)),
        train_dataset=make_preference_dataset(16),
        eval_dataset=make_preference_dataset(8, seed=1),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=peft_config,
    )
    assert isinstance(trainer.model, PeftModel)
    trainer.train()
    metrics = trainer.evaluate()

    params = dict(trainer.model.named_parameters())
    trained_head = next(v for k, v in params.items() if "score.modules_to_save" in k and v.requires_grad)
    assert not torch.allclose(trained_head, head_before), "the score head is trained"
    lora_b = [v for k, v in params.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "the adapter is trained"
    q_proj = next(v for k, v in params.items() if k.endswith("layers.0.self_attn.q_proj.base_layer.weight"))
    assert torch.equal(q_proj, q_before), "the base model is frozen"
    assert all(math.isfinite(x) for x in _logged(trainer, "loss"))
    assert 0 <= metrics["eval_mmpo/ece"] <= 1 and "eval_mmpo/target_prob" in metrics


def test_encoder_tokenizer_without_eos_trains(tiny_bert_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    assert tokenizer.eos_token is None  # TRL alone would fail appending it
    raw = make_preference_dataset(16)
    trainer = MMPORewardTrainer(
        tiny_bert_dir,
        args=MMPORewardConfig(**rm_args(tmp_path, mmpo_gamma=0.5, max_steps=2)),
        train_dataset=raw,
        eval_dataset=make_preference_dataset(8, seed=1),
    )
    row = trainer.train_dataset[0]
    assert row["chosen_ids"] == tokenizer(raw[0]["prompt"] + raw[0]["chosen"])["input_ids"]
    assert row["chosen_ids"][0] == tokenizer.cls_token_id and row["chosen_ids"].count(tokenizer.sep_token_id) == 1
    trainer.train()
    metrics = trainer.evaluate()
    assert all(math.isfinite(x) for x in _logged(trainer, "loss"))
    assert {"eval_accuracy", "eval_mmpo/ece", "eval_mmpo/brier", "eval_mmpo/target_prob"} <= set(metrics)


# ---- evaluation metrics on a hand-made reward model -----------------------------------------------------------------
class LengthRewardModel(PreTrainedModel):
    """Reward = number of tokens: every reward gap is known by hand."""

    config_class = PretrainedConfig

    def __init__(self, config):
        super().__init__(config)
        self.scale = nn.Parameter(torch.ones(()))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return SequenceClassifierOutput(logits=self.scale * attention_mask.sum(-1, keepdim=True).float())


def test_evaluation_metrics_on_a_hand_made_case(tiny_model_dir, tmp_path):
    # (chosen length, rejected length, MMPO margin): reward gaps z = 2, 0, -1, 3, 1; targets p = sigmoid(m)
    pairs = [(3, 1, 2.0), (2, 2, 0.0), (1, 2, 1.0), (4, 1, 1.0), (2, 1, 3.0)]
    ds = Dataset.from_dict(
        {
            "chosen_ids": [[7] * c for c, _, _ in pairs],
            "rejected_ids": [[7] * r for _, r, _ in pairs],
            "m": [m for _, _, m in pairs],
        }
    )
    args = MMPORewardConfig(
        **rm_args(tmp_path, per_device_eval_batch_size=2, mmpo_gamma=1.0, margin_column="m", calibration_bins=2)
    )
    trainer = MMPORewardTrainer(
        LengthRewardModel(PretrainedConfig(num_labels=1)),
        args=args,
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    metrics = trainer.evaluate()
    s = _sigmoid
    # Two bins, [0, 0.5) and [0.5, 1]. Bin 0 holds z = -1 (target s(1)); bin 1 holds z = 2, 0, 3, 1 against targets
    # s(2), s(0), s(1), s(3): the same sums, so it contributes nothing
    # The trainer's ECE is symmetric (each pair also counted as (1 - p, 1 - t)): the mirrored pairs add the same
    # |difference| again over twice the count, so the value is the same
    assert metrics["eval_mmpo/ece"] == pytest.approx((s(1) - s(-1)) / 5, rel=1e-6)
    assert metrics["eval_mmpo/brier"] == pytest.approx(((s(1) - s(-1)) ** 2 + 2 * (s(3) - s(1)) ** 2) / 5, rel=1e-6)
    # Per-step metrics are means of per-batch means, like TRL's (batches of 2, 2 and 1 pairs)
    assert metrics["eval_mmpo/target_prob"] == pytest.approx(((s(2) + s(0)) / 2 + s(1) + s(3)) / 3, rel=1e-6)
    assert metrics["eval_accuracy"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert metrics["eval_margin"] == pytest.approx(1.0)
    expected_loss = np.mean([_pair_loss(c - r, s(m)) for c, r, m in pairs])
    assert metrics["eval_loss"] == pytest.approx(expected_loss, rel=1e-5)
    # Reduced once per evaluation: a second one (and `predict`) gives the same numbers, nothing carried over
    assert trainer.evaluate()["eval_mmpo/ece"] == metrics["eval_mmpo/ece"]
    assert trainer.predict(trainer.eval_dataset).metrics["test_mmpo/ece"] == metrics["eval_mmpo/ece"]
