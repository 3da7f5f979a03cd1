"""Drop-in parity with `trl.DPOTrainer`.

Knobs off: `MMPOTrainer` must train exactly like stock TRL, for every TRL option (same losses and metrics, the same
metric keys and no others). Knobs on: with targets that are exactly 1.0 in float32, our loss path must give stock's
loss and every stock metric; with soft targets it must match an independent float64 computation.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from tests.helpers import base_args, eval_loss, make_preference_dataset, perturb
from trl_margins import GammaPOConfig, GammaPOTrainer, MMPOConfig, MMPOTrainer
from trl_margins.data.margins import MARGIN_COLUMN
from trl_margins.trainers.dpo_trainer import refuse_margins_on_vision_data

from .test_mmpo_trainer import _completion_logps, _completion_wpo_weights

# Logged once at the end of `train()`, or wall-clock dependent
_RUN_SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"}


def _step_logs(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "loss" in h]


def _implicit_prompt_dataset(n: int = 8) -> Dataset:
    """Conversational pairs with the prompt inside both completions (TRL extracts it)."""
    rows = make_preference_dataset(n, conversational=True, scores=False).to_list()
    return Dataset.from_list(
        [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in rows]
    )


def _train(trainer_class, model, tmp_path, args_class=None, dataset=None, peft_config=None, **overrides):
    args_class = args_class or (DPOConfig if trainer_class is DPOTrainer else MMPOConfig)
    trainer = trainer_class(
        model,
        args=args_class(**base_args(tmp_path, **{"max_steps": 2, **overrides})),
        train_dataset=dataset if dataset is not None else make_preference_dataset(8, scores=False),
        peft_config=peft_config,
    )
    trainer.train()
    return trainer


def _assert_same_logs(ours: list[dict], stock: list[dict], extra_keys: frozenset = frozenset()) -> None:
    """Same steps, same metric keys (ours may add exactly `extra_keys`), every shared value equal."""
    assert len(ours) == len(stock) > 0
    for our_step, stock_step in zip(ours, stock, strict=True):
        assert set(our_step) == set(stock_step) | extra_keys, set(our_step) ^ set(stock_step)
        for key, value in stock_step.items():
            if key not in _RUN_SUMMARY_KEYS:
                np.testing.assert_allclose(our_step[key], value, rtol=1e-5, atol=1e-7, err_msg=key)


# ---- knobs off: TRL's own path --------------------------------------------------------------------------------------

LOSS_TYPES = [
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]  # fmt: skip
# `label_smoothing` is TRL's own parameter of these losses (exo_pair requires it), not our cDPO knob
_TRL_LABEL_SMOOTHING = {"exo_pair": 1e-3, "robust": 0.1, "aot": 0.1, "aot_unpaired": 0.1}

SCENARIOS = {
    **{
        f"loss={loss}": dict(loss_type=[loss], label_smoothing=_TRL_LABEL_SMOOTHING.get(loss, 0.0))
        for loss in LOSS_TYPES
    },
    "multi_loss_weighted": dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]),
    "wpo": dict(use_weighting=True),
    "ld_alpha": dict(ld_alpha=0.5),
    "forward_kl": dict(f_divergence_type="forward_kl"),
    "js_divergence": dict(f_divergence_type="js_divergence"),
    "alpha_divergence": dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.5),
    "precompute_ref": dict(precompute_ref_log_probs=True),
    "sync_ref_model": dict(sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=0.5),
    "gradient_checkpointing": dict(gradient_checkpointing=True),
    "conversational": dict(dataset="conversational"),
    "implicit_prompt": dict(dataset="implicit_prompt"),
    "lora": dict(peft=True),
    "moe": dict(moe=True),
}


def _scenario_kwargs(name: str, tiny_model_dir: str, tiny_moe_dir: str) -> tuple[str, dict]:
    overrides = dict(SCENARIOS[name])
    dataset = overrides.pop("dataset", None)
    if dataset == "conversational":
        overrides["dataset"] = make_preference_dataset(8, conversational=True, scores=False)
    elif dataset == "implicit_prompt":
        overrides["dataset"] = _implicit_prompt_dataset()
    if overrides.pop("peft", False):
        overrides["peft_config"] = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    model = tiny_moe_dir if overrides.pop("moe", False) else tiny_model_dir
    return model, overrides


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_knobs_off_trains_exactly_like_trl(scenario, tiny_model_dir, tiny_moe_dir, tmp_path):
    model, kwargs = _scenario_kwargs(scenario, tiny_model_dir, tiny_moe_dir)
    stock = _train(DPOTrainer, model, tmp_path / "stock", **kwargs)
    if scenario == "lora":  # a fresh adapter: the config object is consumed by the first trainer
        kwargs["peft_config"] = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    ours = _train(MMPOTrainer, model, tmp_path / "ours", **kwargs)
    assert not ours.knobs_on
    _assert_same_logs(_step_logs(ours), _step_logs(stock))
    if scenario == "moe":
        assert all("aux_loss" in h for h in _step_logs(ours))


def test_knobs_off_evaluation_has_trl_keys_only(tiny_model_dir, tmp_path):
    """No `eval_mmpo/*` without a knob: there are no targets to calibrate against."""
    eval_ds = make_preference_dataset(6, seed=5, scores=False)
    metrics = []
    for cls, config in ((DPOTrainer, DPOConfig), (MMPOTrainer, MMPOConfig)):
        trainer = cls(
            tiny_model_dir,
            args=config(**base_args(tmp_path / cls.__name__, max_steps=1)),
            train_dataset=make_preference_dataset(8, scores=False),
            eval_dataset=eval_ds,
        )
        metrics.append(trainer.evaluate())
    stock, ours = metrics
    assert set(ours) == set(stock)
    for key in stock:
        if "runtime" not in key and "per_second" not in key:
            np.testing.assert_allclose(ours[key], stock[key], rtol=1e-5, err_msg=key)


# ---- knobs on: our path, checked against TRL where they must agree --------------------------------------------------


def _certain_dataset(n: int = 8) -> Dataset:
    """Score margins of 10: with `mmpo_gamma=10` every target is sigmoid(100), exactly 1.0 in float32."""
    rows = make_preference_dataset(n, scores=False).to_list()
    return Dataset.from_list([{**r, "score_chosen": 10.0, "score_rejected": 0.0} for r in rows])


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(loss_type=["sigmoid", "sft"], loss_weights=[0.7, 0.4]),
        # Not with "sft": stock TRL 1.16 fails there (an in-place multiply of the expanded sft loss); see the
        # independent computation below for RPO with WPO
        dict(loss_weights=[0.7], use_weighting=True),
        dict(moe=True),
        dict(peft=True),
    ],
    ids=["sigmoid", "rpo_weighted", "wpo_weighted", "moe", "lora"],
)
def test_knob_on_with_certain_targets_matches_trl(options, tiny_model_dir, tiny_moe_dir, tmp_path):
    options = dict(options)
    model = tiny_moe_dir if options.pop("moe", False) else tiny_model_dir

    def peft():
        return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) if options.get("peft") else None

    train_options = {k: v for k, v in options.items() if k != "peft"}
    ds = _certain_dataset()
    stock = _train(DPOTrainer, model, tmp_path / "stock", dataset=ds, peft_config=peft(), **train_options)
    ours = _train(
        MMPOTrainer, model, tmp_path / "ours", dataset=ds, peft_config=peft(), mmpo_gamma=10.0, **train_options
    )
    assert ours.knobs_on
    _assert_same_logs(_step_logs(ours), _step_logs(stock), extra_keys=frozenset({"mmpo/target_prob"}))
    assert all(h["mmpo/target_prob"] == 1.0 for h in _step_logs(ours))
    if model == tiny_moe_dir:
        assert all("aux_loss" in h for h in _step_logs(ours))


@pytest.mark.parametrize("use_weighting", [False, True], ids=["weights", "weights+wpo"])
def test_unit_pair_weights_alone_train_like_trl(use_weighting, tiny_model_dir, tmp_path):
    """A weight column alone is a knob (our loss path); with every weight 1 it gives stock's losses and metrics, and
    logs no target probability (there are no targets)."""
    ds = make_preference_dataset(8, scores=False)
    stock = _train(DPOTrainer, tiny_model_dir, tmp_path / "stock", dataset=ds, use_weighting=use_weighting)
    ours = _train(
        MMPOTrainer,
        tiny_model_dir,
        tmp_path / "ours",
        dataset=ds.add_column("w", [1.0] * len(ds)),
        weight_column="w",
        use_weighting=use_weighting,
    )
    assert ours.knobs_on and ours.args.margin_knobs() == ["weight_column='w'"]
    _assert_same_logs(_step_logs(ours), _step_logs(stock))


def test_knob_on_evaluation_has_trl_keys_plus_calibration(tiny_model_dir, tmp_path):
    ds = _certain_dataset()
    metrics = []
    for cls, config, extra in ((DPOTrainer, DPOConfig, {}), (MMPOTrainer, MMPOConfig, {"mmpo_gamma": 10.0})):
        trainer = cls(
            tiny_model_dir,
            args=config(**base_args(tmp_path / cls.__name__, **extra)),
            train_dataset=ds,
            eval_dataset=ds,
        )
        torch.manual_seed(1)  # the same perturbation in both, so that the rewards are not all zero
        perturb(trainer.model)
        metrics.append(trainer.evaluate())
    stock, ours = metrics
    assert set(ours) == set(stock) | {"eval_mmpo/target_prob", "eval_mmpo/ece", "eval_mmpo/brier"}
    for key in stock:
        if "runtime" not in key and "per_second" not in key:
            np.testing.assert_allclose(ours[key], stock[key], rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("use_weighting", [False, True], ids=["rpo", "rpo_wpo"])
def test_rpo_with_loss_weights_matches_an_independent_computation(use_weighting, tiny_model_dir, tmp_path):
    gamma, beta, weights = 0.7, 0.5, (0.6, 0.3)
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(
            **base_args(
                tmp_path,
                mmpo_gamma=gamma,
                beta=beta,
                loss_type=["sigmoid", "sft"],
                loss_weights=list(weights),
                use_weighting=use_weighting,
            )
        ),
        train_dataset=make_preference_dataset(8),
    )
    perturb(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = eval_loss(trainer, batch)

    # Independent, float64, from plain logits
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    token_logps = log_probs.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].double()
    policy = (token_logps * mask).sum(dim=1)
    reference = _completion_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), batch)
    logratio_chosen, logratio_rejected = (policy - reference).chunk(2)
    z = beta * (logratio_chosen - logratio_rejected)
    p = torch.sigmoid(gamma * batch[MARGIN_COLUMN].double())
    soft = -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))
    chosen_mask = mask.chunk(2)[0]
    sft = -(token_logps.chunk(2)[0] * chosen_mask).sum() / chosen_mask.sum()
    pair_weight = torch.ones_like(z)
    if use_weighting:  # WPO: exp(mean over the completion of log p(y_t) - log sum_v p(v)^2), chosen * rejected
        pair_weight = _completion_wpo_weights(trainer.model, batch)
        assert not torch.allclose(pair_weight, torch.ones_like(pair_weight))
    expected = weights[0] * (pair_weight * soft).mean() + weights[1] * (pair_weight * sft).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert not torch.allclose(p, torch.ones_like(p)), "the test needs soft targets"


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_gamma_po_logs_the_stock_metrics_and_its_own(moe, tiny_model_dir, tiny_moe_dir, tmp_path):
    model = tiny_moe_dir if moe else tiny_model_dir
    stock = _train(DPOTrainer, model, tmp_path / "stock", max_steps=1)
    ours = _train(
        GammaPOTrainer, model, tmp_path / "ours", args_class=GammaPOConfig, max_steps=1, reward_type="simpo", beta=2.0
    )
    gamma_keys = {"gamma/mean", "gamma/std", "gamma/min", "gamma/max", "gamma/queue_size", "gamma/nonfinite_gaps"}
    assert set(_step_logs(ours)[0]) == set(_step_logs(stock)[0]) | gamma_keys
    assert ("aux_loss" in _step_logs(ours)[0]) == moe


# ---- configuration: what the knobs refuse ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(mmpo_gamma=1.0, loss_type=["ipo"]), "'sigmoid'"),
        (dict(mmpo_gamma=1.0, loss_type=["sigmoid", "hinge"]), "'hinge'"),
        (dict(reward_type="simpo", loss_type=["sigmoid", "bco_pair"]), "'bco_pair'"),
        (dict(label_smoothing=0.1, loss_type=["sigmoid", "robust"]), "'robust'"),
        (dict(mmpo_gamma=1.0, ld_alpha=0.5), "ld_alpha"),
        (dict(mmpo_gamma=1.0, f_divergence_type="js_divergence"), "f_divergence_type"),
    ],
)
def test_knobs_refuse_what_has_no_soft_target_form(options, named, tmp_path):
    with pytest.raises(ValueError, match=named) as error:
        MMPOConfig(**base_args(tmp_path, **options))
    assert "trl.DPOTrainer" in str(error.value)


def test_gamma_po_always_has_a_knob(tmp_path):
    with pytest.raises(ValueError, match="'hinge'"):
        GammaPOConfig(**base_args(tmp_path, loss_type=["hinge"]))


def test_plain_dpo_config_with_a_knob_combination_is_refused_on_upgrade(tiny_model_dir, tmp_path):
    # A plain DPOConfig passes TRL's checks; GammaPOTrainer's upgrade runs ours
    with pytest.raises(ValueError, match="ld_alpha"):
        GammaPOTrainer(
            tiny_model_dir,
            args=DPOConfig(**base_args(tmp_path, ld_alpha=0.5)),
            train_dataset=make_preference_dataset(4),
        )


@pytest.mark.parametrize(
    "options", [dict(loss_type=["robust"], label_smoothing=0.2), dict(loss_type=["exo_pair"], label_smoothing=1e-3)]
)
def test_trl_label_smoothing_is_not_our_knob(options, tmp_path):
    assert MMPOConfig(**base_args(tmp_path, **options)).margin_knobs() == []


def test_label_smoothing_with_the_sigmoid_loss_warns_once_on_upgrade(tiny_model_dir, tmp_path):
    from trl_margins.trainers import dpo_config

    dpo_config._warn_cdpo_once.cache_clear()
    with pytest.warns(UserWarning, match="ignores `label_smoothing` for the sigmoid loss.*cDPO"):
        trainer = MMPOTrainer(
            tiny_model_dir,
            args=DPOConfig(**base_args(tmp_path, label_smoothing=0.1)),
            train_dataset=make_preference_dataset(4, scores=False),
        )
    assert trainer.args.margin_knobs()
    again = DPOConfig(**base_args(tmp_path, label_smoothing=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        dpo_config.warn_if_cdpo(again)


def test_mmpo_margins_on_vision_data_are_refused(tiny_model_dir, tmp_path):
    images = Dataset.from_list([{**row, "images": []} for row in make_preference_dataset(4).to_list()])
    with pytest.raises(ValueError, match="`mmpo_gamma` is not supported with vision datasets"):
        MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0)), train_dataset=images)
    # Without mmpo_gamma there is nothing of ours to refuse (TRL's own checks apply)
    refuse_margins_on_vision_data(MMPOConfig(**base_args(tmp_path)), images)


# ---- no process-global state ---------------------------------------------------------------------------------------


def test_simpo_reference_skip_is_invisible_to_a_concurrent_stock_trainer(tiny_model_dir, tmp_path):
    """Our SimPO trainer holds its reference-skip while a stock DPOTrainer is built, start to end, in another
    thread: the stock one must still load its reference model, and train."""
    ours_inside = threading.Event()
    stock_built = threading.Event()
    stock: dict = {}

    class PausedSimPO(MMPOTrainer):
        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()  # from here on, our reference load would be skipped
            ours_inside.set()
            assert stock_built.wait(timeout=120), "the stock trainer was not built"

    def build_stock():
        assert ours_inside.wait(timeout=120)
        try:
            stock["trainer"] = DPOTrainer(
                tiny_model_dir,
                args=DPOConfig(**base_args(tmp_path / "stock", max_steps=1)),
                train_dataset=make_preference_dataset(4, scores=False),
            )
        except BaseException as error:  # re-raised in the test's thread
            stock["error"] = error
        finally:
            stock_built.set()

    thread = threading.Thread(target=build_stock)
    thread.start()
    ours = PausedSimPO(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path / "ours", reward_type="simpo", beta=2.0)),
        train_dataset=make_preference_dataset(4),
    )
    thread.join()
    if "error" in stock:
        raise stock["error"]
    assert ours.ref_model is None
    assert stock["trainer"].ref_model is not None
    stock["trainer"].train()
    assert _step_logs(stock["trainer"])
