"""Evaluation: metrics on hand-made cases, RewardBench sections, plots, and reward extraction against TRL's trainers,
an independent computation and PEFT."""

import math
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from tests.helpers import base_args, make_preference_dataset
from trl_margins import MMPOConfig, MMPOTrainer
from trl_margins.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    preference_metrics,
    reliability_bins,
    subset_metrics,
)
from trl_margins.evaluation.plots import plot_margin_histogram, plot_reliability_diagram
from trl_margins.evaluation.rewardbench import (
    best_of_n_result,
    rewardbench2_scores,
    rewardbench_section_scores,
    ties_score,
)
from trl_margins.evaluation.rewards import (
    completion_log_probs,
    dpo_implicit_rewards,
    policy_rewards,
    reward_model_scores,
    simpo_rewards,
    tokenize_for_policy,
    tokenize_for_reward_model,
)
from trl_margins.losses import soft_target_loss


def _logits(probs) -> torch.Tensor:
    return torch.logit(torch.as_tensor(probs, dtype=torch.float64))


def _metrics(probs, targets=None, **kwargs) -> dict:
    """Metrics of pairs whose predicted probabilities are `probs` (rejected reward 0)."""
    gaps = _logits(probs)
    return preference_metrics(gaps, torch.zeros_like(gaps), targets, **kwargs)


# ---- metrics on hand-made cases ------------------------------------------------------------------------------------
def test_perfectly_calibrated_soft_targets():
    targets = torch.tensor([0.55, 0.6, 0.7, 0.8, 0.9, 0.95], dtype=torch.float64)
    m = _metrics(targets, targets)
    assert m["ece"] == pytest.approx(0, abs=1e-12)
    assert m["brier"] == pytest.approx(0, abs=1e-12)
    entropy = -(targets * targets.log() + (1 - targets) * (1 - targets).log()).mean()
    assert m["nll"] == pytest.approx(entropy.item(), rel=1e-6)  # the cross-entropy's minimum
    assert m["accuracy"] == 1 and not m["hard_labels"]
    assert m["mean_margin"] == pytest.approx(_logits(targets).mean().item())


def test_calibrated_against_hard_labels_only_in_both_orders():
    # Three pairs predicted at 0.75 (right) and one at 0.25 (wrong): 75% right at confidence 0.75, calibrated
    m = _metrics([0.75, 0.75, 0.75, 0.25])
    assert m["hard_labels"] and m["accuracy"] == 0.75
    assert m["ece"] == pytest.approx(0, abs=1e-12)
    assert m["brier"] == pytest.approx((3 * 0.25**2 + 0.75**2) / 4)
    # Against all-ones targets in one order only, ECE is 1 - mean(p), whatever the calibration
    one_order = _metrics([0.75, 0.75, 0.75, 0.25], symmetric=False)
    assert one_order["ece"] == pytest.approx(1 - (3 * 0.75 + 0.25) / 4)
    assert one_order["brier"] == m["brier"] and one_order["nll"] == m["nll"]


def test_overconfident():
    m = _metrics([0.99] * 4, torch.full((4,), 0.7))
    assert m["ece"] == pytest.approx(0.29)
    assert m["brier"] == pytest.approx(0.29**2)
    assert m["nll"] == pytest.approx(-(0.7 * math.log(0.99) + 0.3 * math.log(0.01)), rel=1e-5)
    # Hard labels: 90% confident, right half of the time
    m = _metrics([0.9, 0.9, 0.1, 0.1])
    assert m["accuracy"] == 0.5
    assert m["ece"] == pytest.approx(0.4)


def test_ties_count_as_half():
    m = preference_metrics(torch.zeros(4), torch.zeros(4))
    assert m["accuracy"] == 0.5 and m["mean_pred_prob"] == 0.5
    assert m["nll"] == pytest.approx(math.log(2))
    assert m["brier"] == pytest.approx(0.25)
    assert m["ece"] == pytest.approx(0, abs=1e-12)  # p = 0.5 on a coin flip is calibrated
    m = preference_metrics(torch.tensor([1.0, 0.0, -1.0, 0.0]), torch.zeros(4))
    assert m["accuracy"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)


def test_one_binning_behind_ece_and_reliability_table():
    torch.manual_seed(0)
    pred, target = torch.rand(200), torch.rand(200)
    for symmetric in (False, True):
        table = reliability_bins(pred, target, n_bins=10, symmetric=symmetric)
        assert len(table["bin_edges"]) == 11 and table["bin_edges"][0] == 0 and table["bin_edges"][-1] == 1
        assert sum(table["count"]) == (400 if symmetric else 200)
        from_table = sum(
            c * abs(p - t)
            for c, p, t in zip(table["count"], table["mean_pred"], table["mean_target"], strict=True)
            if c
        ) / sum(table["count"])
        assert expected_calibration_error(pred, target, 10, symmetric=symmetric) == pytest.approx(from_table)
    # The one-order ECE by hand; the default is the symmetric one, i.e. the same over both orders of each pair
    bins = torch.clamp((pred.double() * 15).long(), max=14)
    by_hand = sum(abs(pred[bins == b].double().sum() - target[bins == b].double().sum()) for b in range(15)) / 200
    assert expected_calibration_error(pred, target, symmetric=False) == pytest.approx(by_hand.item())
    both = torch.cat([pred, 1 - pred]), torch.cat([target, 1 - target])
    one_order_of_both = expected_calibration_error(*both, symmetric=False)
    assert expected_calibration_error(pred, target) == pytest.approx(one_order_of_both)
    # preference_metrics uses the same functions
    gaps = torch.logit(pred.double())
    m = preference_metrics(gaps, torch.zeros_like(gaps), target, n_bins=10)
    assert m["ece"] == pytest.approx(expected_calibration_error(pred, target, 10, symmetric=True))
    assert m["brier"] == pytest.approx(brier_score(pred, target))
    assert m["nll"] == pytest.approx(soft_target_loss(gaps, target).mean().item(), rel=1e-6)
    # Empty bins are None, so that the table is valid JSON
    sparse = reliability_bins(torch.tensor([0.95]), torch.tensor([1.0]), n_bins=5, symmetric=False)
    assert sparse["count"] == [0, 0, 0, 0, 1] and sparse["mean_pred"][:4] == [None] * 4


def test_invalid_inputs():
    with pytest.raises(ValueError, match="differ in size"):
        preference_metrics(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        preference_metrics(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        preference_metrics(torch.zeros(2), torch.zeros(2), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="NaN"):
        preference_metrics(torch.tensor([float("nan")]), torch.zeros(1))
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(torch.rand(3), torch.rand(3), n_bins=0)


def test_subset_metrics_and_rewardbench_sections():
    chosen, rejected = torch.tensor([1.0, 1.0, -1.0, 2.0]), torch.zeros(4)
    subsets = ["hep-go", "math-prm", "math-prm", "shp"]
    per_subset = subset_metrics(chosen, rejected, subsets)
    assert per_subset == {
        "hep-go": {"num_pairs": 1, "accuracy": 1.0, "mean_margin": 1.0},
        "math-prm": {"num_pairs": 2, "accuracy": 0.5, "mean_margin": 0.0},
        "shp": {"num_pairs": 1, "accuracy": 1.0, "mean_margin": 2.0},
    }
    accuracy = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "math-prm": 0.5, "hep-go": 1.0, "donotanswer": 0.8}
    sections = rewardbench_section_scores(accuracy)
    # Weighted by RewardBench's example counts, over the subsets present: math-prm weighs 984, each hep-* 164
    assert sections["Chat"] == pytest.approx((100 * 1.0 + 28 * 0.5) / 128)
    assert sections["Reasoning"] == pytest.approx((984 * 0.5 + 164 * 1.0) / (984 + 164))
    assert sections["Safety"] == pytest.approx(0.8)
    assert "Chat Hard" not in sections
    assert sections["Score"] == pytest.approx((sections["Chat"] + sections["Reasoning"] + 0.8) / 3)
    assert rewardbench_section_scores({"shp": 0.7}) is None


# ---- plots ---------------------------------------------------------------------------------------------------------
def _is_png(path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_are_written(tmp_path):
    torch.manual_seed(0)
    chosen, rejected = torch.randn(50) + 1, torch.randn(50)
    m = preference_metrics(chosen, rejected, torch.rand(50))
    assert _is_png(plot_reliability_diagram(m, tmp_path / "reliability.png", title="tiny"))
    assert _is_png(plot_margin_histogram(chosen, rejected, tmp_path / "sub" / "margins.png"))
    assert _is_png(plot_margin_histogram(torch.zeros(3), torch.zeros(3), tmp_path / "ties.png"))


def test_plots_say_how_to_get_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"trl-margins\[plot\]"):
        plot_margin_histogram(torch.ones(2), torch.zeros(2), tmp_path / "m.png")


# ---- reward extraction ---------------------------------------------------------------------------------------------
def _perturbed_policy(model_dir: str, scale: float = 0.05, seed: int = 1):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def policy_dir(tiny_model_dir, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tiny-policy"))
    _perturbed_policy(tiny_model_dir).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def _plain_completion_log_probs(model, batch) -> torch.Tensor:
    """Sum of completion-token log-probs from plain float64 logits (no fused head)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (logp * batch["completion_mask"][:, 1:]).sum(dim=1)


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
@pytest.mark.parametrize("reward_type", ["dpo", "simpo"])
def test_policy_rewards_equal_the_trainers_logged_rewards(
    tiny_model_dir, policy_dir, tmp_path, conversational, reward_type
):
    dataset = make_preference_dataset(8, conversational=conversational)
    simpo = reward_type == "simpo"
    beta = 2.0 if simpo else 0.5
    ref_model = None if simpo else AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = MMPOTrainer(
        policy_dir,
        ref_model=None if simpo else AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=MMPOConfig(**base_args(tmp_path, beta=beta, reward_type=reward_type, per_device_eval_batch_size=4)),
        train_dataset=dataset,
        eval_dataset=dataset,
    )
    logged = trainer.evaluate()
    chosen, rejected = policy_rewards(
        AutoModelForCausalLM.from_pretrained(policy_dir),
        AutoTokenizer.from_pretrained(policy_dir),
        dataset,
        beta,
        ref_model=ref_model,
        reward_type=reward_type,
        batch_size=3,
    )
    # The trainer logs the mean over equal batches of per-batch means: the mean over all pairs
    assert logged["eval_rewards/chosen"] == pytest.approx(chosen.mean().item(), rel=1e-5, abs=1e-7)
    assert logged["eval_rewards/rejected"] == pytest.approx(rejected.mean().item(), rel=1e-5, abs=1e-7)
    assert logged["eval_rewards/accuracies"] == pytest.approx((chosen > rejected).float().mean().item())


def test_policy_tokenization_is_the_dpo_trainers(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for dataset in (make_preference_dataset(4), make_preference_dataset(4, conversational=True)):
        trainer = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path)), train_dataset=dataset)
        for row, prepared in zip(dataset, trainer.train_dataset, strict=True):
            ours = tokenize_for_policy(row, tokenizer)
            assert ours == {k: prepared[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}


def test_reward_model_tokenization_is_the_reward_trainers(tiny_rm_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    for dataset in (make_preference_dataset(4), make_preference_dataset(4, conversational=True)):
        args = RewardConfig(str(tmp_path), report_to=[], use_cpu=True, bf16=False, max_length=None)
        trainer = RewardTrainer(tiny_rm_dir, args=args, train_dataset=dataset, processing_class=tokenizer)
        for row, prepared in zip(dataset, trainer.train_dataset, strict=True):
            ours = tokenize_for_reward_model(row, tokenizer)
            assert ours == {k: prepared[k] for k in ("chosen_ids", "rejected_ids")}


def test_a_policy_batches_each_completion_by_its_own_length(tiny_model_dir):
    # Pairs of one long and one short completion: batched as pairs, every forward would pad the short one
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    long, short = "the good movie was very fun and the plot was great", "bad"
    rows = [
        {"prompt": "a day ", "chosen": long, "rejected": short},
        {"prompt": "a day ", "chosen": short, "rejected": long},
    ]
    padding = []
    hook = model.register_forward_pre_hook(
        lambda _m, _args, kwargs: padding.append(int((kwargs["attention_mask"] == 0).sum())), with_kwargs=True
    )
    logps = completion_log_probs(model, tokenizer, rows * 2, batch_size=1)
    hook.remove()
    assert padding == [0, 0, 0, 0]
    # The same values as each completion scored beside itself only
    for i, row in enumerate(rows * 2):
        for side in ("chosen", "rejected"):
            alone = completion_log_probs(model, tokenizer, [{**row, "rejected": row[side], "chosen": row[side]}])
            torch.testing.assert_close(logps[f"{side}_logps"][i], alone["chosen_logps"][0], rtol=1e-6, atol=1e-6)
            assert logps[f"{side}_lengths"][i] == alone["chosen_lengths"][0]


def test_batching_does_not_change_rewards(tiny_model_dir, policy_dir, tiny_rm_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = make_preference_dataset(7, conversational=True)
    policy, ref = (
        AutoModelForCausalLM.from_pretrained(policy_dir),
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
    )
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir)
    extractors = {
        "dpo": lambda bs: dpo_implicit_rewards(policy, tokenizer, dataset, 0.5, ref_model=ref, batch_size=bs),
        "simpo": lambda bs: simpo_rewards(policy, tokenizer, dataset, 2.0, batch_size=bs),
        "rm": lambda bs: reward_model_scores(rm, tokenizer, dataset, batch_size=bs),
    }
    for name, extract in extractors.items():
        one_by_one = extract(1)
        assert one_by_one[0].shape == (7,) and not torch.equal(one_by_one[0], one_by_one[1]), name
        for batch_size in (3, 16):
            for ours, reference in zip(extract(batch_size), one_by_one, strict=True):
                torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_reward_model_scores_match_an_independent_computation(tiny_rm_dir, conversational):
    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir)
    dataset = make_preference_dataset(5, conversational=conversational)
    chosen, rejected = reward_model_scores(model, tokenizer, dataset, batch_size=4)
    for i, row in enumerate(dataset):
        for key, scores in (("chosen", chosen), ("rejected", rejected)):
            if conversational:
                ids = tokenizer.apply_chat_template(row["prompt"] + row[key], tokenize=True, return_dict=True)
                ids = ids["input_ids"]
            else:
                ids = tokenizer(row["prompt"] + row[key] + tokenizer.eos_token)["input_ids"]
            with torch.no_grad():
                expected = model(input_ids=torch.tensor([ids])).logits[0, 0]
            assert scores[i].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_peft_reference_is_the_disabled_adapter(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = make_preference_dataset(6)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    # A fresh LoRA adapter has B = 0: the policy is its reference and every reward is exactly 0
    chosen, rejected = dpo_implicit_rewards(model, tokenizer, dataset, beta=0.5, batch_size=4)
    assert torch.equal(chosen, torch.zeros(6)) and torch.equal(rejected, torch.zeros(6))

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    model.train()
    chosen, rejected = dpo_implicit_rewards(model, tokenizer, dataset, beta=0.5, batch_size=4)
    assert model.training, "the caller's train/eval mode is restored"
    assert (chosen != 0).all() and (rejected != 0).all()
    # Independently: the adapted model and the untouched checkpoint, scored from plain logits (dropout off)
    model.eval()
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(
        [tokenize_for_policy(row, tokenizer) for row in dataset]
    )
    policy = _plain_completion_log_probs(model, batch)
    reference = _plain_completion_log_probs(AutoModelForCausalLM.from_pretrained(tiny_model_dir), batch)
    expected_chosen, expected_rejected = (0.5 * (policy - reference)).chunk(2)
    torch.testing.assert_close(chosen.double(), expected_chosen, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rejected.double(), expected_rejected, rtol=1e-4, atol=1e-5)


def test_policy_rewards_need_a_reference(tiny_model_dir):
    tokenizer, model = (
        AutoTokenizer.from_pretrained(tiny_model_dir),
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
    )
    dataset = make_preference_dataset(2)
    with pytest.raises(ValueError, match="ref_model"):
        dpo_implicit_rewards(model, tokenizer, dataset, beta=0.1)
    with pytest.raises(ValueError, match="reference"):
        policy_rewards(model, tokenizer, dataset, 0.1, ref_model=model, reward_type="simpo")
    # With a reference equal to the policy, every DPO reward is 0
    chosen, rejected = dpo_implicit_rewards(model, tokenizer, dataset, beta=0.1, ref_model=model)
    assert torch.equal(chosen, torch.zeros(2)) and torch.equal(rejected, torch.zeros(2))


def test_encoder_reward_model_without_eos(tiny_bert_dir):
    # BERT-style tokenizers have no EOS (they close with [SEP]): nothing is appended, as in MMPORewardTrainer
    bert_dir = tiny_bert_dir
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir)
    dataset = make_preference_dataset(5)
    chosen, _ = reward_model_scores(model, tokenizer, dataset, batch_size=2)
    for i, row in enumerate(dataset):
        with torch.no_grad():
            expected = model(**tokenizer(row["prompt"] + row["chosen"], return_tensors="pt")).logits[0, 0]
        assert chosen[i].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


# ---- RewardBench 2 (reward-bench's rewardbench/utils.py: reroll_and_score_dataset, process_single_model) ----------
def test_best_of_n_shares_a_tie_at_the_top():
    assert best_of_n_result([2.0, 1.0, 0.0, -1.0]) == 1.0
    assert best_of_n_result([2.0, 2.0, 0.0, 1.0]) == 0.5  # two completions share the top score: half the credit
    assert best_of_n_result([1.0, 2.0, 0.0, 0.0]) == 0.0


def test_ties_score_by_hand():
    # Prompt 1: ref gap 3 - 1 = 2 (accurate); tied correct (3, 2.5, 2), incorrect (1, 0): gap 1, spread 1, so
    # 1 > 1 is false (not preferred), min(2, 1) > 1 false, tanh(1 / 1 - 1) = 0.
    # Prompt 2: ref gap 0 - 1 = -1 (not accurate); tied (2, 2) vs 1: gap 1, spread 0: preferred (1 > 0), hard
    # min(-1, 1) > 0 false, tanh(-1 / 0 - 1) = -1.
    ids = ["ref:1", "tied:1", "ref:2", "tied:2"]
    result = ties_score(ids, [1, 3, 1, 2], [[3, 1], [3, 2.5, 2, 1, 0], [0, 1], [2, 2, 1]])
    assert result["ref_accuracy"] == 0.5 and result["tied_accuracy"] == 1.0
    assert result["correctness_preferred"] == 0.5 and result["correctness_preferred_hard"] == 0.0
    assert result["margin_score"] == -0.5
    assert result["score"] == pytest.approx(0.3 * 1.0 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.0 + 0.01 * -0.5)  # 0.545


def test_rewardbench2_scores_mean_of_subsets_and_ece():
    subsets = ["Math", "Math", "Focus", "Ties", "Ties"]
    ids = ["0", "1", "2", "ref:1", "tied:1"]
    scores = [[2, 1, 0, -1], [0, 1, 0, 0], [5, 5, 0, 0], [3, 1], [3, 2.5, 1]]
    result = rewardbench2_scores(subsets, ids, [1, 1, 1, 1, 2], scores, n_bins=10)
    assert list(result["subsets"]) == ["Math", "Focus", "Ties"]  # the official order
    assert result["subsets"]["Math"]["score"] == 0.5 and result["subsets"]["Focus"]["score"] == 0.5
    # Ties: both accurate; tied gap 1.5 > spread 0.5, min(2, 1.5) > 0.5; tanh(1.5 / 0.5 - 1) = tanh(2)
    assert result["subsets"]["Ties"]["score"] == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01 * math.tanh(2))
    assert result["score"] == pytest.approx((0.5 + 0.5 + 1 + 0.01 * math.tanh(2)) / 3)
    assert result["random_baseline"] == 0.25 and result["missing_subsets"] == ["Factuality", "Precise IF", "Safety"]
    # ECE of the Focus row: 3 pairs with gaps 0, 5, 5 against hard labels, both orders, 10 bins
    gaps = torch.tensor([0.0, 5.0, 5.0], dtype=torch.float64)
    assert result["subsets"]["Focus"]["num_pairs"] == 3
    assert result["subsets"]["Focus"]["ece"] == pytest.approx(
        expected_calibration_error(torch.sigmoid(gaps), torch.ones(3), 10)
    )
    # By hand: in both orders, 6 predictions. The tie gives 0.5 twice (targets 1 and 0: one bin, mean 0.5, no gap);
    # the two gaps of 5 give p = sigmoid(5) against 1 and 1 - p against 0: four predictions off by 1 - p
    p = 1 / (1 + math.exp(-5))
    assert result["subsets"]["Focus"]["ece"] == pytest.approx(4 * (1 - p) / 6)
