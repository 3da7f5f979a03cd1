"""MMPOTrainer: the loss against an independent computation, drop-in equivalence with TRL, reference handling."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

from tests.helpers import base_args, eval_loss, make_preference_dataset, perturb
from trl_margins import MMPOConfig, MMPORewardConfig, MMPORewardTrainer, MMPOTrainer
from trl_margins._compat import token_outputs
from trl_margins.data.margins import MARGIN_COLUMN
from trl_margins.evaluation.calibration import expected_calibration_error


def _completion_logps(model, batch) -> torch.Tensor:
    """Sum of completion-token log-probs from plain logits (no fused head), in float64."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (logp * batch["completion_mask"][:, 1:]).sum(dim=1)


def _losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_loss_matches_an_independent_computation(tiny_model_dir, tmp_path):
    gamma, beta = 0.7, 0.5
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=gamma, beta=beta)),
        train_dataset=make_preference_dataset(8),
    )
    # Perturb the policy so that it differs from its reference
    perturb(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    assert MARGIN_COLUMN in batch
    loss = eval_loss(trainer, batch)

    policy = _completion_logps(trainer.model, batch)
    reference = _completion_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), batch)
    logratio_chosen, logratio_rejected = (policy - reference).chunk(2)
    z = beta * (logratio_chosen - logratio_rejected)
    p = 1 / (1 + torch.exp(-gamma * batch[MARGIN_COLUMN].double()))
    expected = -(p * torch.nn.functional.logsigmoid(z) + (1 - p) * torch.nn.functional.logsigmoid(-z)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert not torch.allclose(p, torch.ones_like(p)), "the test needs soft targets"


def test_hard_labels_reproduce_trl_dpo_trainer(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(16, scores=False)
    common = base_args(tmp_path, max_steps=4)
    dpo = DPOTrainer(tiny_model_dir, args=DPOConfig(**common, loss_type=["sigmoid"]), train_dataset=ds)
    dpo.train()
    mmpo = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**common), train_dataset=ds)
    mmpo.train()
    np.testing.assert_allclose(_losses(mmpo), _losses(dpo), rtol=1e-5)
    for key in ("rewards/margins", "rewards/accuracies", "logps/chosen"):
        ours = [h[key] for h in mmpo.state.log_history if key in h]
        theirs = [h[key] for h in dpo.state.log_history if key in h]
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_plain_dpo_config_is_accepted(tiny_model_dir, tmp_path):
    trainer = MMPOTrainer(
        tiny_model_dir, args=DPOConfig(**base_args(tmp_path, max_steps=1)), train_dataset=make_preference_dataset(4)
    )
    assert isinstance(trainer.args, MMPOConfig) and trainer.args.mmpo_gamma is None
    trainer.train()


def test_soft_targets_change_training_and_log_target_prob(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(16)
    hard = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path)), train_dataset=ds)
    hard.train()
    soft = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=0.3)), train_dataset=ds)
    soft.train()
    # Step 1 starts at z = 0, where the loss is log 2 whatever the target; then they diverge
    assert _losses(soft)[0] == pytest.approx(math.log(2), rel=1e-5)
    assert not np.allclose(_losses(soft)[1:], _losses(hard)[1:])
    target = [h["mmpo/target_prob"] for h in soft.state.log_history if "mmpo/target_prob" in h]
    assert all(0.5 < t < 1 for t in target)


def test_conversational_dataset(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(8, conversational=True)
    trainer = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0)), train_dataset=ds)
    trainer.train()
    assert all(math.isfinite(x) for x in _losses(trainer))


def test_lora_uses_the_disabled_adapter_as_reference(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(16)
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0, max_steps=4, learning_rate=1e-2)),
        train_dataset=ds,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    assert trainer.ref_model is None
    trainer.train()
    history = [h for h in trainer.state.log_history if "rewards/margins" in h]
    # LoRA's B starts at zero: policy == reference at step 1, so every reward is exactly 0
    assert history[0]["rewards/chosen"] == 0 and history[0]["rewards/rejected"] == 0
    assert any(h["rewards/margins"] != 0 for h in history[1:])
    # The reference is the base model: the adapter-disabled forward equals the untouched checkpoint
    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, _ = trainer.compute_ref_log_probs(trainer.model, batch)
    base = _completion_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), batch).chunk(2)[0]
    np.testing.assert_allclose(ref_chosen.double().numpy(), base.numpy(), rtol=1e-4)


def test_precomputed_reference_log_probs_give_the_same_losses(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(16)
    live = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=0.5)), train_dataset=ds)
    live.train()
    pre = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path / "pre", mmpo_gamma=0.5, precompute_ref_log_probs=True)),
        train_dataset=ds,
    )
    assert pre.ref_model is None
    assert {"ref_chosen_logps", MARGIN_COLUMN} <= set(pre.train_dataset.column_names)
    pre.train()
    np.testing.assert_allclose(_losses(pre), _losses(live), rtol=1e-4)


def test_evaluation_reports_calibration_against_the_targets(tiny_model_dir, tmp_path):
    gamma, beta = 0.5, 2.0
    eval_ds = make_preference_dataset(10, seed=3)
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=gamma, beta=beta, per_device_eval_batch_size=3)),
        train_dataset=make_preference_dataset(8),
        eval_dataset=eval_ds,
    )
    perturb(trainer.model)
    metrics = trainer.evaluate()

    # Independent: one batch of all ten pairs, plain logits, float64
    collator_batch = trainer.data_collator([trainer.eval_dataset[i] for i in range(len(trainer.eval_dataset))])
    policy = _completion_logps(trainer.model, collator_batch)
    reference = _completion_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), collator_batch)
    chosen, rejected = (beta * (policy - reference)).chunk(2)
    pred = torch.sigmoid(chosen - rejected)
    target = torch.sigmoid(gamma * collator_batch[MARGIN_COLUMN].double())
    # Symmetric ECE: every pair counted in both orders, (p, t) and (1 - p, 1 - t)
    both_pred = np.concatenate([pred.numpy(), 1 - pred.numpy()])
    both_target = np.concatenate([target.numpy(), 1 - target.numpy()])
    bins = np.minimum((both_pred * 15).astype(int), 14)
    ece = sum(abs(both_pred[bins == b].sum() - both_target[bins == b].sum()) for b in range(15)) / len(both_pred)
    assert metrics["eval_mmpo/ece"] == pytest.approx(ece, rel=1e-3)
    assert metrics["eval_mmpo/ece"] == pytest.approx(
        expected_calibration_error(pred, target, symmetric=True), rel=1e-3
    )
    assert metrics["eval_mmpo/brier"] == pytest.approx(((pred - target) ** 2).mean().item(), rel=1e-3)

    # Per-batch metrics are means of batch means (batches of 3, 3, 3, 1), as TRL's DPOTrainer logs them
    def batch_mean(x):
        return np.mean([x[i : i + 3].mean().item() for i in range(0, 10, 3)])

    assert metrics["eval_mmpo/target_prob"] == pytest.approx(batch_mean(target), rel=1e-5)
    assert metrics["eval_rewards/margins"] == pytest.approx(batch_mean(chosen - rejected), rel=1e-3)


@pytest.mark.parametrize("weighted", [False, True], ids=["mmpo", "mmpo+pair_weights"])
def test_gradient_accumulation_matches_the_full_batch(tiny_model_dir, tmp_path, weighted):
    ds = make_preference_dataset(16)
    if weighted:  # mean(w_i * loss_i): micro-batches of unequal total weight still average to the full batch
        ds = ds.add_column("w", [float(i % 4) for i in range(16)])
    params = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        trainer = MMPOTrainer(
            tiny_model_dir,
            args=MMPOConfig(
                **base_args(
                    tmp_path / f"ga{accumulation}",
                    mmpo_gamma=0.5,
                    weight_column="w" if weighted else None,
                    per_device_train_batch_size=batch_size,
                    gradient_accumulation_steps=accumulation,
                    max_steps=2,
                )
            ),
            train_dataset=ds,
        )
        trainer.train()
        params.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))
    torch.testing.assert_close(params[0], params[1], rtol=1e-4, atol=1e-6)


def test_simpo_rewards_load_no_reference_model(tiny_model_dir, tmp_path, monkeypatch):
    import trl.trainer.dpo_trainer as trl_dpo

    # Importing trl_margins wraps nothing: TRL's loader is TRL's own outside a trainer's construction
    assert trl_dpo.create_model_from_path.__module__.startswith("trl.")
    loaded = []
    original = trl_dpo.create_model_from_path
    spy = lambda *a, **k: loaded.append(original(*a, **k)) or loaded[-1]  # noqa: E731
    monkeypatch.setattr(trl_dpo, "create_model_from_path", spy)
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0, reward_type="simpo", beta=2.0)),
        train_dataset=make_preference_dataset(8),
    )
    # The policy is loaded through TRL's loader; the reference is not loaded at all; the loader is put back
    assert trainer.ref_model is None and len(loaded) == 1 and loaded[0] is not None
    assert trl_dpo.create_model_from_path is spy
    trainer.train()
    # SimPO rewards: beta / |y| * log pi(y), so chosen rewards are negative from step 1
    first = next(h for h in trainer.state.log_history if "rewards/chosen" in h)
    assert first["rewards/chosen"] < 0 and first["rewards/rejected"] < 0


def test_separate_reference_model_is_used(tiny_model_dir, tmp_path):
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = MMPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        ref_model=ref,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0, max_steps=2)),
        train_dataset=make_preference_dataset(8),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    assert trainer.ref_model is ref
    trainer.train()


@pytest.mark.parametrize("lora", [False, True])
def test_policy_outputs_carry_every_metric_field(tiny_model_dir, tmp_path, lora):
    """With a knob on, the policy's per-token outputs (TRL's full fused head from TRL 1.15, the logits before) carry
    the entropy, mean logit and top-1 fields the stock metrics need, and log-probs equal those of the plain logits."""
    import trl.trainer.dpo_trainer as trl_dpo

    original = getattr(trl_dpo, "add_fused_lm_head", None)  # TRL 1.15+
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0)),
        train_dataset=make_preference_dataset(4),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]) if lora else None,
    )
    assert getattr(trl_dpo, "add_fused_lm_head", None) is original, "TRL's module is not patched"
    batch = next(iter(trainer.get_train_dataloader()))
    model_kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        out = token_outputs(trainer.model, model_kwargs, batch["input_ids"], batch["completion_mask"], metrics=True)
    assert all(x is not None for x in (out.log_probs, out.entropy, out.mean_logits, out.is_top1))
    mask = batch["completion_mask"][:, 1:]
    logps = (out.log_probs[:, -mask.size(1) :] * mask).sum(dim=1).double()
    np.testing.assert_allclose(logps.numpy(), _completion_logps(trainer.model, batch).numpy(), rtol=1e-4)


@pytest.mark.parametrize("dpo", [True, False], ids=["dpo", "reward"])
def test_length_grouped_batches(tiny_model_dir, tmp_path, dpo):
    def args(output_dir, **overrides) -> dict:
        out = base_args(output_dir, train_sampling_strategy="group_by_length", max_steps=4, **overrides)
        return out if dpo else {k: v for k, v in out.items() if k != "beta"}  # `beta` is a DPO knob

    stock, stock_config = (DPOTrainer, DPOConfig) if dpo else (RewardTrainer, RewardConfig)
    ours, our_config = (MMPOTrainer, MMPOConfig) if dpo else (MMPORewardTrainer, MMPORewardConfig)
    # Stock TRL refuses `group_by_length` on preference pairs (transformers infers lengths from `input_ids` only)
    with pytest.raises(ValueError, match="infer lengths"):
        stock(
            tiny_model_dir,
            args=stock_config(**args(tmp_path / "stock")),
            train_dataset=make_preference_dataset(16, scores=False),
        ).train()

    trainer = ours(
        tiny_model_dir,
        args=our_config(**args(tmp_path / "ours", mmpo_gamma=1.0)),
        train_dataset=make_preference_dataset(16),
    )
    data = trainer.train_dataset
    prompt = data["prompt_ids"] if "prompt_ids" in data.column_names else [[]] * len(data)
    expected = [len(p) + max(len(c), len(r)) for p, c, r in zip(prompt, data["chosen_ids"], data["rejected_ids"])]
    assert data["length"] == expected
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == expected
    trainer.train()
    assert np.isfinite([h["loss"] for h in trainer.state.log_history if "loss" in h]).all()


def _completion_wpo_weights(model, batch) -> torch.Tensor:
    """WPO's pair weight (WPO paper, Eq. 2, as TRL computes it) from plain logits in float64: per sequence
    `exp(mean over the completion of log p(y_t) - log sum_v p(v)^2)`, multiplied over the pair."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    token = logprobs.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    aligned = token - torch.logsumexp(2 * logprobs, dim=-1)
    mask = batch["completion_mask"][:, 1:]
    chosen, rejected = torch.exp((aligned * mask).sum(1) / mask.sum(1)).chunk(2)
    return chosen * rejected


def _perturbed_step(trainer, model_dir):
    """Perturb the policy away from its reference, then the loss of the first batch and, independently in float64,
    the batch's policy/reference log-ratios of the chosen and rejected completions."""
    perturb(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = eval_loss(trainer, batch)
    policy = _completion_logps(trainer.model, batch)
    reference = _completion_logps(AutoModelForCausalLM.from_pretrained(model_dir), batch)
    return batch, loss, *(policy - reference).chunk(2)


@pytest.mark.parametrize("wpo", [False, True], ids=["weights", "weights+wpo"])
def test_pair_weights_scale_each_pair_loss(tiny_model_dir, tmp_path, wpo):
    from trl_margins.data.margins import WEIGHT_COLUMN

    gamma, beta = 0.7, 0.5
    ds = make_preference_dataset(8).add_column("w", [0.0, 2.0, 0.5, 1.0, 3.0, 1.5, 0.25, 1.0])
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=gamma, beta=beta, weight_column="w", use_weighting=wpo)),
        train_dataset=ds,
    )
    batch, loss, logratio_chosen, logratio_rejected = _perturbed_step(trainer, tiny_model_dir)
    weights = batch[WEIGHT_COLUMN].double()
    assert weights.shape == (4,) and not torch.allclose(weights, torch.ones(4, dtype=torch.float64))
    z = beta * (logratio_chosen - logratio_rejected)
    p = torch.sigmoid(gamma * batch[MARGIN_COLUMN].double())
    per_pair = -(p * torch.nn.functional.logsigmoid(z) + (1 - p) * torch.nn.functional.logsigmoid(-z))
    if wpo:
        weights = weights * _completion_wpo_weights(trainer.model, batch)
    # mean over the B pairs of w_i * loss_i, not sum(w * loss) / sum(w)
    assert loss.item() == pytest.approx((weights * per_pair).mean().item(), rel=1e-4)


@pytest.mark.parametrize(
    ("mmpo_gamma", "scaling"), [(None, "log"), (0.7, "log"), (None, "identity")], ids=["odpo", "odpo+mmpo", "linear"]
)
def test_odpo_offsets_match_an_independent_computation(tiny_model_dir, tmp_path, mmpo_gamma, scaling):
    alpha, beta = 0.3, 0.5
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(
            **base_args(tmp_path, beta=beta, odpo_alpha=alpha, odpo_scaling=scaling, mmpo_gamma=mmpo_gamma)
        ),
        train_dataset=make_preference_dataset(8, seed=2).filter(lambda r: r["score_chosen"] > r["score_rejected"]),
    )
    batch, loss, logratio_chosen, logratio_rejected = _perturbed_step(trainer, tiny_model_dir)
    m = batch[MARGIN_COLUMN].double()
    # ODPO (arXiv 2402.10571): -log sigmoid(beta * h - alpha * log(score_w - score_l)), the offset not times beta
    delta = alpha * (torch.log(m) if scaling == "log" else m)
    z = beta * (logratio_chosen - logratio_rejected) - delta
    p = torch.ones_like(m) if mmpo_gamma is None else torch.sigmoid(mmpo_gamma * m)
    expected = -(p * torch.nn.functional.logsigmoid(z) + (1 - p) * torch.nn.functional.logsigmoid(-z)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert not torch.allclose(delta, torch.zeros_like(delta))


def test_odpo_refuses_ties_with_the_log_offset_and_dynamic_margins(tiny_model_dir, tmp_path):
    from trl_margins import GammaPOConfig

    ds = make_preference_dataset(8).map(
        lambda r, i: {"score_chosen": r["score_rejected"] if i == 3 else r["score_rejected"] + 1.0}, with_indices=True
    )
    with pytest.raises(ValueError, match="margin of 0 .* the first is row 3.*. ODPO's log offset"):
        MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, odpo_alpha=1.0)), train_dataset=ds)
    # The identity scaling takes a tie (offset 0)
    MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, odpo_alpha=1.0, odpo_scaling="identity")),
        train_dataset=ds,
    )
    with pytest.raises(ValueError, match="odpo_alpha.*same target margin"):
        GammaPOConfig(**base_args(tmp_path, odpo_alpha=1.0))
    with pytest.raises(ValueError, match="odpo_alpha"):
        MMPOConfig(**base_args(tmp_path, odpo_alpha=-1.0))
    with pytest.raises(ValueError, match="odpo_scaling"):
        MMPOConfig(**base_args(tmp_path, odpo_alpha=1.0, odpo_scaling="sqrt"))
    with pytest.raises(ValueError, match="loss_type"):
        MMPOConfig(**base_args(tmp_path, odpo_alpha=1.0, loss_type=["ipo"]))


@pytest.mark.parametrize("reward_type", ["dpo", "simpo"])
def test_new_knobs_train_on_the_bundled_vader_pairs(tiny_model_dir, tmp_path, reward_type):
    """Two steps on VADER (offline): pair weights, MMPO soft targets and ODPO offsets together, on DPO and SimPO
    rewards; the weights from the human preference probability, the offsets from the score difference."""
    from trl_margins.data.assets import load_bundled_pairs

    pairs = load_bundled_pairs("train").select(range(16))
    pairs = pairs.add_column("w", [2 * abs(p - 0.5) for p in pairs["human_pref_prob"]])
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(
            **base_args(
                tmp_path,
                max_steps=2,
                reward_type=reward_type,
                beta=2.0 if reward_type == "simpo" else 0.5,
                mmpo_gamma=1.0,
                odpo_alpha=0.5,
                weight_column="w",
            )
        ),
        train_dataset=pairs,
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) and "odpo/offset" in h for h in logs)


def test_return_outputs_recomputes_the_logits_and_warns_as_trl_does(tiny_model_dir, tmp_path):
    """`compute_loss(..., return_outputs=True)` (deprecated by TRL 1.16 for 2.0): the margin loss and the logits of an
    extra forward pass, with TRL's FutureWarning."""
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0)),
        train_dataset=make_preference_dataset(4),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    loss = eval_loss(trainer, batch)
    with pytest.warns(FutureWarning, match="`return_outputs=True` recomputes the logits"), torch.no_grad():
        again, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    assert torch.equal(loss, again)
    assert outputs.logits.shape[:2] == batch["input_ids"].shape


def test_pairs_that_max_length_drops_are_counted(tiny_model_dir, tmp_path, caplog):
    """TRL drops pairs whose prompt alone fills `max_length`: the count, the reason and the fix are logged, and a
    dataset that loses every pair stops before training."""
    from trl_margins.errors import DataError

    data = make_preference_dataset(6).to_list()
    for row in data[:2]:
        row["prompt"] = "the " * 60
    with caplog.at_level("WARNING", logger="trl_margins.trainers._base"):
        trainer = MMPOTrainer(
            tiny_model_dir,
            args=MMPOConfig(**base_args(tmp_path, max_length=24)),
            train_dataset=Dataset.from_list(data),
        )
    assert len(trainer.train_dataset) == 4
    assert "Dropped 2 of 6 rows of the train dataset: the prompt alone fills `max_length` (24 tokens)" in caplog.text
    with pytest.raises(DataError, match="Every one of the 2 rows of the train dataset was dropped"):
        MMPOTrainer(
            tiny_model_dir,
            args=MMPOConfig(**base_args(tmp_path, max_length=24)),
            train_dataset=Dataset.from_list(data[:2]),
        )


def test_empty_or_mixed_rows_are_refused_with_the_row(tiny_model_dir, tmp_path):
    from trl_margins.errors import DataError

    args = MMPOConfig(**base_args(tmp_path))
    data = make_preference_dataset(3).to_list()
    data[1]["chosen"] = " "
    with pytest.raises(DataError, match=r"row 1 \(counting from 0\) of the train dataset: `chosen` is empty"):
        MMPOTrainer(tiny_model_dir, args=args, train_dataset=Dataset.from_list(data))
    # A column holds one type (Arrow's rule), so text and messages mix across the columns of a row
    mixed = [{**row, "rejected": [{"role": "assistant", "content": row["rejected"]}]} for row in data[:1]]
    with pytest.raises(
        DataError, match="row 0 .* mixes text and messages: .*`chosen` is text, `rejected` is messages"
    ):
        MMPOTrainer(tiny_model_dir, args=args, train_dataset=Dataset.from_list(mixed))
