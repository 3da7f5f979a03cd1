"""The model card of a tiny run names the method and cites its paper (and the papers of the knobs that are on)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from trl import DPOConfig, DPOTrainer

from tests.helpers import base_args, make_preference_dataset
from trl_margins import (
    GammaPOConfig,
    GammaPOTrainer,
    MMPOConfig,
    MMPOKTOConfig,
    MMPOKTOTrainer,
    MMPORewardConfig,
    MMPORewardTrainer,
    MMPOTrainer,
)
from trl_margins.data.formatting import unpair_preferences


def _card(trainer) -> tuple[str, set[str]]:
    """The README.md TRL writes for the trainer's output folder, and its YAML tags."""
    trainer.create_model_card(model_name="tiny")
    text = (Path(trainer.args.output_dir) / "README.md").read_text()
    header = text.split("---")[1]
    tags = set(re.findall(r"^- (\S+)$", header.split("tags:")[1].split("licence:")[0], flags=re.M))
    return text, tags


def _title(text: str) -> str:
    return re.search(r"This model was trained with (.*?)\.\n", text).group(1)


@pytest.mark.parametrize(
    ("knobs", "name", "arxiv", "cited", "tags"),
    [
        (dict(mmpo_gamma=1.0), "MMPO", "2410.03145", ["kim2024margin"], {"mmpo"}),
        (dict(reward_type="simpo", beta=2.0, mmpo_gamma=1.0), "MMPO + SimPO", "2410.03145",
         ["kim2024margin", "meng2024simpo"], {"mmpo", "simpo"}),
        (dict(odpo_alpha=0.5, odpo_scaling="identity"), "ODPO", "2402.10571", ["amini2024direct"], {"odpo"}),
        (dict(mmpo_gamma=1.0, beta_dpo_alpha=0.5), "MMPO + beta-DPO", "2410.03145", ["kim2024margin", "wu2024beta"],
         {"mmpo", "beta-dpo"}),
    ],
)  # fmt: skip
def test_mmpo_trainer_cites_the_knobs_that_are_on(tiny_model_dir, tmp_path, knobs, name, arxiv, cited, tags):
    trainer = MMPOTrainer(
        tiny_model_dir, args=MMPOConfig(**base_args(tmp_path, **knobs)), train_dataset=make_preference_dataset(4)
    )
    text, card_tags = _card(trainer)
    assert _title(text).startswith(f"{name}, a method introduced in [")
    assert f"](https://huggingface.co/papers/{arxiv})" in _title(text)
    assert f"Cite {name} as:" in text
    for key in cited:
        assert f"@inproceedings{{{key}," in text
    assert "rafailov2023direct" not in text  # not DPO's paper
    assert {"trl", "dpo", "trl-margins", *tags} <= card_tags


def test_knobs_off_the_card_is_dpos(tiny_model_dir, tmp_path):
    ours = MMPOTrainer(tiny_model_dir, args=MMPOConfig(**base_args(tmp_path / "ours")),
                       train_dataset=make_preference_dataset(4, scores=False))  # fmt: skip
    stock = DPOTrainer(tiny_model_dir, args=DPOConfig(**base_args(tmp_path / "stock")),
                       train_dataset=make_preference_dataset(4, scores=False))  # fmt: skip
    ours_text, ours_tags = _card(ours)
    stock_text, stock_tags = _card(stock)
    assert _title(ours_text) == _title(stock_text) and "2305.18290" in _title(ours_text)
    assert ours_tags == stock_tags | {"trl-margins"}


def test_gamma_po_card(tiny_model_dir, tmp_path):
    args = GammaPOConfig(**base_args(tmp_path, reward_type="simpo", beta=2.0, margin_sample_size=16))
    trainer = GammaPOTrainer(tiny_model_dir, args=args, train_dataset=make_preference_dataset(4))
    text, tags = _card(trainer)
    assert _title(text).startswith("gamma-PO + SimPO, a method introduced in [Robust Preference Optimization via "
                                   "Dynamic Target Margins](https://huggingface.co/papers/2506.03690)")  # fmt: skip
    assert "@inproceedings{sun2025robust," in text and "@inproceedings{meng2024simpo," in text
    assert {"gamma-po", "simpo", "trl-margins"} <= tags


def test_reward_and_kto_cards(tiny_rm_dir, tiny_model_dir, tmp_path):
    rm_args = {k: v for k, v in base_args(tmp_path / "rm", mmpo_gamma=1.0).items() if k != "beta"}
    rm = MMPORewardTrainer(tiny_rm_dir, args=MMPORewardConfig(**rm_args), train_dataset=make_preference_dataset(4))
    text, tags = _card(rm)
    assert _title(text).startswith("MMPO, a method introduced in [Margin Matching Preference Optimization")
    assert "@inproceedings{kim2024margin," in text and {"reward-trainer", "mmpo", "trl-margins"} <= tags

    kto_data = unpair_preferences(make_preference_dataset(4))
    kto = MMPOKTOTrainer(tiny_model_dir, args=MMPOKTOConfig(**base_args(tmp_path / "kto", mmpo_gamma=1.0)),
                         train_dataset=kto_data)  # fmt: skip
    text, tags = _card(kto)
    assert _title(text).startswith("MMPO, a method introduced in [Margin Matching") and "kim2024margin" in text
    assert {"kto", "mmpo", "trl-margins"} <= tags
    plain = MMPOKTOTrainer(tiny_model_dir, args=MMPOKTOConfig(**base_args(tmp_path / "plain")), train_dataset=kto_data)
    assert _title(_card(plain)[0]).startswith("KTO, a method introduced in")
