"""gamma-PO: the queue, the margins in the trainer, resume, evaluation, and 2-process training."""

import math
import os

import numpy as np
import pytest
import torch

from tests.helpers import REPO_ROOT, base_args, make_preference_dataset, run_on_two_processes, train_and_resume
from trl_margins import GammaPOConfig, GammaPOTrainer, MMPOConfig, MMPOTrainer
from trl_margins.state import QUEUE_STATE_FILE, MarginQueue


def _history(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


# ---- queue ---------------------------------------------------------------------------------------------------------
def test_queue_starts_empty_keeps_the_newest_and_never_overflows():
    queue = MarginQueue(5)
    assert len(queue) == 0 and queue.sample(4).numel() == 0
    queue.push(torch.tensor([1.0, 2.0, 3.0]))
    assert queue.values().tolist() == [1.0, 2.0, 3.0]
    queue.push(torch.tensor([4.0, 5.0, 6.0, 7.0]))
    assert len(queue) == 5 and queue.values().tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    queue.push(torch.arange(10.0, 22.0))  # more than the capacity at once
    assert queue.values().tolist() == [17.0, 18.0, 19.0, 20.0, 21.0]
    assert sorted(queue.sample(100).tolist()) == [17.0, 18.0, 19.0, 20.0, 21.0]


def test_queue_state_restores_entries_and_sampling():
    queue = MarginQueue(8, seed=3)
    queue.push(torch.randn(11))
    queue.sample(4)
    state = queue.state_dict()
    expected = [queue.sample(4) for _ in range(3)]
    restored = MarginQueue(8)
    restored.load_state_dict(state)
    assert torch.equal(restored.values(), queue.values())
    for want in expected:
        assert torch.equal(restored.sample(4), want)
    with pytest.raises(ValueError, match="margin_queue_size"):
        MarginQueue(4).load_state_dict(state)


def test_queue_pushes_detached_gaps():
    queue = MarginQueue(4)
    gaps = torch.randn(3, requires_grad=True)
    queue.push(gaps * 2)
    assert not queue.values().requires_grad


# ---- trainer -------------------------------------------------------------------------------------------------------
def _trainer(model_dir, out, dataset=None, **overrides):
    args = GammaPOConfig(**base_args(out, **overrides))
    return GammaPOTrainer(model_dir, args=args, train_dataset=dataset or make_preference_dataset(16))


def test_margins_rise_with_the_reward_gap_and_average_gamma0(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, beta=2.0, gamma_beta_ratio=0.5, tau=1.0, reward_type="simpo")
    gaps = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 4.0])
    margins = trainer.target_margins(gaps, "train")
    assert (margins.diff() > 0).all()
    assert margins.mean().item() == pytest.approx(1.0, rel=1e-5)  # gamma0 = 0.5 * 2, the whole sample is the batch
    assert len(trainer.margin_queue) == 6


def test_published_gamma_dpo_applies_only_the_deviation(tiny_model_dir, tmp_path):
    dpo = _trainer(tiny_model_dir, tmp_path, beta=2.0, gamma_beta_ratio=0.5, tau=1.0)
    simpo = _trainer(tiny_model_dir, tmp_path, beta=2.0, gamma_beta_ratio=0.5, tau=1.0, reward_type="simpo")
    gaps = torch.tensor([-1.0, 0.0, 2.0])
    torch.testing.assert_close(dpo.target_margins(gaps, "train"), simpo.target_margins(gaps, "train") - 1.0)
    full = _trainer(tiny_model_dir, tmp_path, beta=2.0, gamma_beta_ratio=0.5, tau=1.0, margin_mode="full")
    torch.testing.assert_close(full.target_margins(gaps, "train"), simpo.target_margins(gaps, "train"))


def test_large_tau_is_dpo_and_simpo_with_a_fixed_margin(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(16)
    gamma_dpo = _trainer(tiny_model_dir, tmp_path / "g", dataset=ds, tau=1e9)
    gamma_dpo.train()
    dpo = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path / "d")), train_dataset=ds)
    dpo.train()
    np.testing.assert_allclose(_history(gamma_dpo, "loss"), _history(dpo, "loss"), rtol=1e-5)
    assert _history(gamma_dpo, "gamma/std") == pytest.approx([0.0] * 3, abs=1e-5)

    # SimPO with margin gamma0 (TRL's CPO loss_type="simpo", cpo_alpha=0): -logsig(beta * avg-logp gap - gamma0)
    beta, ratio = 2.0, 0.5
    simpo = _trainer(
        tiny_model_dir, tmp_path / "s", dataset=ds, tau=1e9, reward_type="simpo", beta=beta, gamma_beta_ratio=ratio
    )
    batch = next(iter(simpo.get_train_dataloader()))
    simpo.model.eval()
    with torch.no_grad():
        loss = simpo.compute_loss(simpo.model, dict(batch)).item()
        logits = simpo.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:]
    avg = (logp * mask).sum(1) / mask.sum(1)
    chosen, rejected = avg.chunk(2)
    expected = -torch.nn.functional.logsigmoid(beta * (chosen - rejected) - ratio * beta).mean().item()
    assert loss == pytest.approx(expected, rel=1e-4)


def test_gamma_metrics_and_queue_grow_during_training_only(tiny_model_dir, tmp_path):
    trainer = _trainer(
        tiny_model_dir, tmp_path, max_steps=3, margin_sample_size=6, tau=1.0, reward_type="simpo", beta=2.0
    )
    eval_ds = make_preference_dataset(8, seed=5)
    trainer.eval_dataset = trainer._prepare_dataset(eval_ds, trainer.processing_class, trainer.args, "eval")
    trainer.train()
    assert _history(trainer, "gamma/queue_size") == [4.0, 8.0, 12.0]
    assert len(trainer.margin_queue) == 12
    for key in ("gamma/mean", "gamma/std", "gamma/min", "gamma/max"):
        assert all(math.isfinite(v) for v in _history(trainer, key))
    before = trainer.margin_queue.state_dict()
    metrics = trainer.evaluate()
    after = trainer.margin_queue.state_dict()
    assert torch.equal(before["buffer"], after["buffer"]) and before["size"] == after["size"]
    assert "eval_gamma/mean" in metrics and "eval_mmpo/ece" in metrics


def test_queue_size_is_logged_after_each_push(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, max_steps=3, margin_queue_size=10)
    trainer.train()
    # logged after pushing the step's 4 gaps; capped at the capacity
    assert _history(trainer, "gamma/queue_size") == [4.0, 8.0, 10.0]


def test_resume_matches_an_uninterrupted_run(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(24)
    common = dict(max_steps=6, save_strategy="steps", save_steps=3, margin_sample_size=10, tau=1.0, beta=1.0)
    full, resumed = train_and_resume(
        lambda out: _trainer(tiny_model_dir, out, dataset=ds, **common), tmp_path, QUEUE_STATE_FILE
    )
    # The resumed log history starts with the checkpoint's first 3 steps
    assert len(_history(resumed, "loss")) == 6
    np.testing.assert_allclose(_history(resumed, "loss")[3:], _history(full, "loss")[3:], rtol=1e-5)
    np.testing.assert_allclose(_history(resumed, "gamma/std")[3:], _history(full, "gamma/std")[3:], rtol=1e-5)
    assert torch.equal(resumed.margin_queue.values(), full.margin_queue.values())


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "pair_weights"])
def test_mmpo_soft_targets_with_dynamic_margins_and_simpo_rewards(tiny_model_dir, tmp_path, weighted):
    dataset = make_preference_dataset(16)
    if weighted:  # the pair weights multiply each pair's loss; the margins are solved over the unweighted gaps
        dataset = dataset.add_column("w", [0.5 * (i % 4) for i in range(16)])
    trainer = _trainer(
        tiny_model_dir,
        tmp_path,
        dataset=dataset,
        mmpo_gamma=0.5,
        reward_type="simpo",
        beta=2.0,
        gamma_beta_ratio=0.3,
        tau=2.0,
        weight_column="w" if weighted else None,
    )
    assert trainer.ref_model is None
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch)).item()
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:]
    chosen, rejected = ((logp * mask).sum(1) / mask.sum(1)).chunk(2)
    z = 2.0 * (chosen - rejected)
    from trl_margins.losses import dynamic_target_margins

    gammas = dynamic_target_margins(z.float(), 0.6, 2.0).double()
    p = torch.sigmoid(0.5 * batch["mmpo_margin"].double())
    logit = z - gammas
    per_pair = -(p * torch.nn.functional.logsigmoid(logit) + (1 - p) * torch.nn.functional.logsigmoid(-logit))
    weights = batch["mmpo_pair_weight"].double() if weighted else torch.ones_like(per_pair)
    assert loss == pytest.approx((weights * per_pair).mean().item(), rel=1e-4)
    trainer.train()


@pytest.mark.parametrize(("overrides", "match"), [({"tau": 0.0}, "tau"), ({"margin_mode": "x"}, "margin_mode")])
def test_config_validation(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        GammaPOConfig(**base_args(tmp_path, **overrides))


def test_small_tau_warns_about_oscillation(tmp_path, caplog):
    GammaPOConfig(**base_args(tmp_path, tau=0.5))
    assert "can oscillate" in caplog.text


def test_two_processes_hold_identical_queues_and_margins(tiny_model_dir, tmp_path):
    run_on_two_processes(os.path.join(REPO_ROOT, "tests", "dist_gamma_po.py"), tiny_model_dir, str(tmp_path))
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0["world"] == 2
    assert len(rank0["queue"]) == 3 * 2 * 2  # 3 steps x 2 ranks x 2 pairs
    assert torch.equal(rank0["queue"], rank1["queue"])
    assert torch.equal(rank0["margins"], rank1["margins"])


def test_queue_leaves_out_non_finite_gaps():
    queue = MarginQueue(8)
    assert queue.push(torch.tensor([1.0, float("nan"), 2.0, float("inf"), -float("inf")])) == 3
    assert sorted(queue.values().tolist()) == [1.0, 2.0]
    assert queue.push(torch.tensor([3.0])) == 0 and len(queue) == 3


def test_queue_sample_without_advance_leaves_later_draws_unchanged():
    queue, twin = MarginQueue(64, seed=3), MarginQueue(64, seed=3)
    for q in (queue, twin):
        q.push(torch.arange(40.0))
    peeked = [queue.sample(8, advance=False) for _ in range(3)]
    assert all(torch.equal(p, peeked[0]) for p in peeked)  # a pure function of the state
    assert torch.equal(queue.sample(8), twin.sample(8))  # and the next training draw is the same as without peeking
    assert torch.equal(queue.sample(8), twin.sample(8))


def test_non_finite_gaps_get_the_base_margin_and_stay_out_of_the_queue(tiny_model_dir, tmp_path, caplog):
    trainer = _trainer(tiny_model_dir, tmp_path, beta=2.0, tau=1.0, reward_type="simpo", margin_sample_size=16)
    clean = trainer.target_margins(torch.tensor([-1.0, 0.5, 2.0]), "eval")
    with caplog.at_level("WARNING", logger="trl_margins.trainers.gamma_po_trainer"):
        margins = trainer.target_margins(torch.tensor([-1.0, float("nan"), 0.5, float("inf"), 2.0]), "train")
    assert torch.isfinite(margins).all()
    assert margins[[1, 3]].tolist() == [trainer.args.gamma0] * 2  # gamma-SimPO applies gamma_i itself
    assert torch.allclose(margins[[0, 2, 4]], clean)  # the finite gaps are solved as if the others were absent
    assert sorted(trainer.margin_queue.values().tolist()) == [-1.0, 0.5, 2.0]
    assert trainer._pending_scalars["gamma/nonfinite_gaps"].item() == 2
    assert any("2 of 5 reward gaps are NaN or infinite" in r.getMessage() for r in caplog.records)


def test_evaluation_does_not_change_training(tiny_model_dir, tmp_path):
    ds, eval_ds = make_preference_dataset(16), make_preference_dataset(8, seed=5)
    common = dict(max_steps=4, margin_sample_size=12, tau=1.0, beta=1.0)
    plain = _trainer(tiny_model_dir, tmp_path / "plain", dataset=ds, **common)
    plain.train()
    evaluated = GammaPOTrainer(
        tiny_model_dir,
        args=GammaPOConfig(**base_args(tmp_path / "eval", eval_strategy="steps", eval_steps=1, **common)),
        train_dataset=ds,
        eval_dataset=eval_ds,
    )
    evaluated.train()
    assert len(_history(evaluated, "eval_loss")) == 4
    assert _history(evaluated, "loss") == _history(plain, "loss")  # bit for bit
    assert torch.equal(evaluated.margin_queue.values(), plain.margin_queue.values())


def test_gradient_accumulation_solves_and_pushes_each_micro_batch(tiny_model_dir, tmp_path):
    trainer = _trainer(
        tiny_model_dir, tmp_path, max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=3
    )
    pushes = []
    push = trainer.margin_queue.push
    trainer.margin_queue.push = lambda gaps: pushes.append(gaps.numel()) or push(gaps)
    trainer.train()
    assert pushes == [2] * 6  # one push of 2 gaps per micro-batch, 3 micro-batches per optimizer step
    assert len(trainer.margin_queue) == 12
    # A logged metric averages the step's micro-batches: queue sizes 8, 10 and 12 in the second step
    assert _history(trainer, "gamma/queue_size") == [4.0, 10.0]


def test_margin_sample_size_within_the_batch_warns(tiny_model_dir, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="trl_margins.trainers.gamma_po_trainer"):
        _trainer(tiny_model_dir, tmp_path, margin_sample_size=4)  # per-device batch 4, one process
    assert any("the queue is never sampled" in r.getMessage() for r in caplog.records)
