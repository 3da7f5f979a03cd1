"""Offline fixtures (the tiny models, built once per session) and the CI skip rule (`ci_skips`)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

from .ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402, F401
from .helpers import build_tiny_bert, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-qwen2")))


@pytest.fixture(scope="session")
def tiny_moe_dir(tmp_path_factory) -> str:
    """A 2-layer Qwen2-MoE (4 experts): TRL adds its router load-balancing loss (`aux_loss`)."""
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-qwen2-moe")), arch="qwen2_moe")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    return build_tiny_bert(str(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def tiny_rm_dir(tiny_model_dir, tmp_path_factory) -> str:
    """A sequence-classification reward model with the tiny tokenizer and a random score head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(tmp_path_factory.mktemp("tiny-rm"))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path
