"""beta-DPO (`beta_dpo_alpha`): the batch beta, the beta-guided filter and the running statistics against independent
computations; the trainer's loss; knob off; evaluation, resume, 2 processes, and the bundled VADER pairs."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import trl_margins.trainers.dpo_trainer as dpo_module
from tests.helpers import (
    REPO_ROOT,
    base_args,
    eval_loss,
    make_preference_dataset,
    perturb,
    run_on_two_processes,
    train_and_resume,
)
from trl_margins import GammaPOConfig, MMPOConfig, MMPOTrainer
from trl_margins.losses import beta_dpo_keep_count, beta_guided_keep_mask, dynamic_beta
from trl_margins.state import GAP_STATE_FILE, GapStatistics

from .test_mmpo_trainer import _perturbed_step


def _history(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


def _trainer(model_dir, out, dataset=None, **overrides):
    args = MMPOConfig(**base_args(out, **{"beta_dpo_alpha": 2.0, **overrides}))
    return MMPOTrainer(model_dir, args=args, train_dataset=dataset or make_preference_dataset(16))


# ---- the formulas --------------------------------------------------------------------------------------------------
def test_dynamic_beta_is_the_linear_rule_floored():
    # beta0 * (1 + alpha * (kept mean - M0)), by hand: 0.1 * (1 + 6 * (0.3 - 0.1)) = 0.22
    assert dynamic_beta(torch.tensor(0.3), torch.tensor(0.1), 0.1, 6.0).item() == pytest.approx(0.22, rel=1e-6)
    assert dynamic_beta(0.1, 0.2, 0.1, 6.0).item() == pytest.approx(0.1 * (1 - 6 * 0.1), rel=1e-5)  # 0.04
    assert dynamic_beta(-1.0, 0.5, 0.1, 6.0).item() == pytest.approx(1e-3)  # 0.1 * (1 - 9) < 0: the floor
    assert dynamic_beta(5.0, -5.0, 0.1, 0.0).item() == pytest.approx(0.1)  # alpha 0: fixed beta
    for bad in ({"beta0": 0.0, "alpha": 1.0}, {"beta0": 0.1, "alpha": -1.0}, {"beta0": 0.1, "alpha": math.nan}):
        with pytest.raises(ValueError):
            dynamic_beta(0.0, 0.0, **bad)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 16, 64])
def test_the_filter_keeps_round_of_the_ratio(n):
    expected = max(1, math.floor(0.8 * n + 0.5))  # rounded half up, at least one pair
    assert beta_dpo_keep_count(n, 0.8) == expected
    generator = torch.Generator().manual_seed(n)
    for _ in range(5):
        mask = beta_guided_keep_mask(torch.randn(n) * 3, 0.2, 1.5, 0.8, generator)
        assert mask.dtype == torch.bool and int(mask.sum()) == expected
    assert beta_dpo_keep_count(n, 1.0) == n
    with pytest.raises(ValueError, match="keep_ratio"):
        beta_dpo_keep_count(n, 0.0)


def test_the_filter_draws_by_gaussian_weights_without_replacement():
    gaps, mean, std = torch.tensor([0.0, 1.0, 2.0, -3.0]), 0.5, 1.0
    weights = np.exp(-0.5 * ((gaps.numpy() - mean) / std) ** 2)
    generator, draws = torch.Generator().manual_seed(0), 40000
    # k = 1 (keep ratio 1/4): one pair, drawn with probability w_i / sum(w)
    counts = sum(beta_guided_keep_mask(gaps, mean, std, 0.25, generator).int() for _ in range(draws)).numpy()
    np.testing.assert_allclose(counts / draws, weights / weights.sum(), atol=0.01)
    # k = 2: successive sampling without replacement, P(i kept) = p_i + sum_j p_j p_i / (1 - p_j)
    p = weights / weights.sum()
    inclusion = p + np.array([sum(p[j] * p[i] / (1 - p[j]) for j in range(4) if j != i) for i in range(4)])
    counts = sum(beta_guided_keep_mask(gaps, mean, std, 0.5, generator).int() for _ in range(draws)).numpy()
    np.testing.assert_allclose(counts / draws, inclusion, atol=0.01)


def test_the_filter_leaves_out_far_and_non_finite_gaps():
    gaps = torch.tensor([0.1, -0.2, 0.0, 50.0, float("nan"), 0.3, float("inf")])
    mask = beta_guided_keep_mask(gaps, 0.0, 1.0, 0.8, torch.Generator().manual_seed(1))
    assert int(mask.sum()) == 4  # round(0.8 * 5 finite gaps)
    assert mask.tolist() == [True, True, True, False, False, True, False]  # 50 sigmas out weighs exp(-1250)
    # zero spread (every gap equal, as at the first DPO step) stays finite
    assert int(beta_guided_keep_mask(torch.zeros(5), 0.0, 0.0, 0.8).sum()) == 4


def test_running_statistics_are_moving_averages_of_mean_and_std():
    stats = GapStatistics(momentum=0.9)
    first, second = torch.tensor([1.0, 2.0, 6.0]), torch.tensor([-1.0, 3.0, float("nan")])
    stats.update(first)
    stats.update(second)
    std1, std2 = np.std([1, 2, 6], ddof=1), np.std([-1, 3], ddof=1)  # unbiased, NaN left out
    mean = 0.9 * (0.9 * 0 + 0.1 * 3.0) + 0.1 * 1.0
    std = 0.9 * (0.9 * 0 + 0.1 * std1) + 0.1 * std2
    assert (stats.mean.item(), stats.std.item(), stats.updates) == (pytest.approx(mean), pytest.approx(std), 2)
    stats.update(torch.tensor([float("nan")]))  # nothing finite: unchanged
    stats.update(torch.tensor([4.0]))  # one gap: std 0
    assert stats.std.item() == pytest.approx(0.9 * std) and stats.updates == 3
    with pytest.raises(ValueError, match="momentum"):
        GapStatistics(momentum=1.0)


def test_running_statistics_restore_values_and_draws():
    stats = GapStatistics(seed=3)
    stats.update(torch.randn(8))
    stats.generator("cpu").manual_seed(11)
    state = stats.state_dict()
    expected = [torch.rand(4, generator=stats.generator("cpu")) for _ in range(3)]
    restored = GapStatistics(seed=0)
    restored.load_state_dict(state)
    assert torch.equal(restored.mean, state["mean"]) and torch.equal(restored.std, state["std"])
    for want in expected:
        assert torch.equal(torch.rand(4, generator=restored.generator("cpu")), want)
    peek = torch.rand(4, generator=restored.generator("cpu", advance=False))
    assert torch.equal(peek, torch.rand(4, generator=restored.generator("cpu", advance=False)))
    with pytest.raises(ValueError, match="beta_dpo_momentum"):
        GapStatistics(momentum=0.5).load_state_dict(state)


# ---- the trainer ---------------------------------------------------------------------------------------------------
def test_loss_matches_an_independent_computation(tiny_model_dir, tmp_path, monkeypatch):
    beta, alpha = 0.5, 3.0
    trainer = _trainer(tiny_model_dir, tmp_path, beta=beta, beta_dpo_alpha=alpha, beta_dpo_keep_ratio=0.5)
    trainer.gap_statistics.mean, trainer.gap_statistics.std = torch.tensor(0.05), torch.tensor(0.2)
    masks = []
    original = dpo_module.beta_guided_keep_mask
    monkeypatch.setattr(dpo_module, "beta_guided_keep_mask", lambda *a: masks.append(original(*a)) or masks[-1])
    batch, loss, logratio_chosen, logratio_rejected = _perturbed_step(trainer, tiny_model_dir)
    (keep,) = masks
    assert int(keep.sum()) == 2  # half of the 4 pairs
    # The paper's M_i: beta0 times the policy/reference log-ratio difference (float64, from the models directly)
    gaps = beta * (logratio_chosen - logratio_rejected)
    batch_beta = beta * (1 + alpha * (gaps[keep].mean() - 0.05))  # evaluation reads M_0 without updating it
    per_pair = -F.logsigmoid(batch_beta / beta * gaps)
    assert loss.item() == pytest.approx(per_pair[keep].mean().item(), rel=1e-4)  # the mean over the kept pairs
    assert batch_beta.item() != pytest.approx(beta, rel=1e-3)
    assert trainer.gap_statistics.updates == 0  # evaluation never updates the statistics


def test_knob_off_is_the_existing_loss(tiny_model_dir, tmp_path):
    assert MMPOConfig(**base_args(tmp_path)).margin_knobs() == []  # the default: TRL's DPO loss path, untouched
    ds = make_preference_dataset(8)
    plain = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=0.7)), train_dataset=ds)
    # alpha 0 and every pair kept: beta-DPO changes nothing, through its own code path
    neutral = _trainer(tiny_model_dir, tmp_path, dataset=ds, mmpo_gamma=0.7, beta_dpo_alpha=0.0, beta_dpo_keep_ratio=1)
    perturb(plain.model)
    neutral.model.load_state_dict(plain.model.state_dict())
    batch = next(iter(plain.get_train_dataloader()))
    assert torch.equal(eval_loss(neutral, batch), eval_loss(plain, batch))  # bit for bit: a factor of 1, weights 1


def test_training_updates_then_uses_the_statistics_and_logs_them(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, beta=1.0, max_steps=3)
    seen, update = [], trainer.gap_statistics.update
    trainer.gap_statistics.update = lambda gaps: seen.append(gaps.clone()) or update(gaps)
    trainer.train()
    assert len(seen) == 3 and trainer.gap_statistics.updates == 3
    mean = 0.0
    for gaps in seen:
        mean = 0.9 * mean + 0.1 * gaps.mean().item()
    assert trainer.gap_statistics.mean.item() == pytest.approx(mean, rel=1e-5)
    assert _history(trainer, "beta_dpo/kept") == [3.0] * 3  # round(0.8 * 4)
    assert _history(trainer, "beta_dpo/gap_mean")[-1] == pytest.approx(mean, rel=1e-5)
    assert all(b > 0 for b in _history(trainer, "beta_dpo/beta"))


def test_evaluation_does_not_change_training(tiny_model_dir, tmp_path):
    ds, eval_ds = make_preference_dataset(16), make_preference_dataset(8, seed=5)
    plain = _trainer(tiny_model_dir, tmp_path / "plain", dataset=ds, max_steps=3)
    plain.train()
    args = MMPOConfig(
        **base_args(tmp_path / "eval", beta_dpo_alpha=2.0, max_steps=3, eval_strategy="steps", eval_steps=1)
    )
    evaluated = MMPOTrainer(tiny_model_dir, args=args, train_dataset=ds, eval_dataset=eval_ds)
    evaluated.train()
    assert len(_history(evaluated, "eval_loss")) == 3
    assert _history(evaluated, "loss") == _history(plain, "loss")  # bit for bit
    assert torch.equal(evaluated.gap_statistics.mean, plain.gap_statistics.mean)


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(24)
    common = dict(max_steps=6, save_strategy="steps", save_steps=3, beta=1.0)
    full, resumed = train_and_resume(
        lambda out: _trainer(tiny_model_dir, out, dataset=ds, **common), tmp_path, GAP_STATE_FILE
    )
    for key in ("loss", "beta_dpo/beta", "beta_dpo/gap_std"):
        assert _history(resumed, key)[3:] == _history(full, key)[3:], key
    a, b = full.gap_statistics.state_dict(), resumed.gap_statistics.state_dict()
    assert a["updates"] == b["updates"] == 6
    assert torch.equal(a["mean"], b["mean"]) and torch.equal(a["std"], b["std"])
    assert torch.equal(a["generator"], b["generator"])


def test_simpo_rewards_and_pair_weights_compose(tiny_model_dir, tmp_path):
    ds = make_preference_dataset(16).add_column("w", [0.5 * (i % 4) + 0.5 for i in range(16)])
    trainer = _trainer(tiny_model_dir, tmp_path, dataset=ds, reward_type="simpo", beta=2.0, weight_column="w")
    trainer.train()
    assert all(math.isfinite(v) for v in _history(trainer, "loss")) and len(_history(trainer, "beta_dpo/beta")) == 3


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"beta_dpo_alpha": -1.0}, "beta_dpo_alpha"),
        ({"beta_dpo_alpha": math.inf}, "beta_dpo_alpha"),
        ({"beta_dpo_alpha": 1.0, "beta_dpo_keep_ratio": 0.0}, "beta_dpo_keep_ratio"),
        ({"beta_dpo_alpha": 1.0, "beta_dpo_keep_ratio": 1.5}, "beta_dpo_keep_ratio"),
        ({"beta_dpo_alpha": 1.0, "beta_dpo_momentum": 1.0}, "beta_dpo_momentum"),
        ({"beta_dpo_keep_ratio": 0.5}, "without `beta_dpo_alpha` does nothing"),
        ({"beta_dpo_alpha": 1.0, "loss_type": ["ipo"]}, "loss_type"),
    ],
)
def test_bad_settings_name_the_field(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        MMPOConfig(**base_args(tmp_path, **overrides))


def test_gamma_po_margins_are_refused(tmp_path):
    with pytest.raises(ValueError, match="beta_dpo_alpha.*not supported by GammaPOConfig"):
        GammaPOConfig(**base_args(tmp_path, beta_dpo_alpha=1.0))


def test_two_processes_hold_identical_statistics_and_masks(tiny_model_dir, tmp_path):
    run_on_two_processes(os.path.join(REPO_ROOT, "tests", "dist_beta_dpo.py"), tiny_model_dir, str(tmp_path))
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0["world"] == 2 and rank0["updates"] == 3
    for key in ("mean", "std", "weights", "gaps"):
        assert torch.equal(rank0[key], rank1[key]), key
    # Each step's global batch of 4 (2 per rank) keeps round(0.8 * 4) = 3 pairs, weighted 4 / 3
    assert ((rank0["weights"] > 0).sum(dim=1) == 3).all()
    assert torch.allclose(rank0["weights"][rank0["weights"] > 0], torch.tensor(4 / 3))
    # The statistics are the moving averages of the global batches' gaps, as every rank saw them
    mean = 0.0
    for gaps in rank0["gaps"]:
        mean = 0.9 * mean + 0.1 * gaps.mean().item()
    assert rank0["mean"].item() == pytest.approx(mean, rel=1e-5)


def test_trains_on_the_bundled_vader_pairs_from_the_command_line(tiny_model_dir, tmp_path):
    import json

    from trl_margins.cli import train
    from trl_margins.cli.arguments import parse_args
    from trl_margins.data.assets import BUNDLED_DATASET

    argv = ["--model_name_or_path", tiny_model_dir, "--dataset_name", BUNDLED_DATASET, "--output_dir", str(tmp_path)]
    argv += ["--max_steps", "2", "--per_device_train_batch_size", "4", "--max_train_samples", "8", "--max_length"]
    argv += ["48", "--beta", "0.1", "--beta_dpo_alpha", "6.0", "--logging_steps", "1", "--report_to", "none"]
    report = train.run("mmpo", *parse_args("mmpo", argv))
    assert math.isfinite(report["train"]["train_loss"])
    logs = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    assert [h["beta_dpo/kept"] for h in logs if "beta_dpo/kept" in h] == [3.0, 3.0]
