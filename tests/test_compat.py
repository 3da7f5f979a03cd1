"""The supported TRL range and the differences within it (`trl_margins/_compat.py`), on whichever TRL is installed:
the CI matrix runs this file on each release it proves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import base_args, make_preference_dataset
from trl_margins import GammaPOConfig, MMPOConfig, MMPOTrainer, _compat
from trl_margins._compat import trl_version_problem


@pytest.mark.parametrize("release", ["1.9.0", "1.12.0", "1.14.2", "1.16.0"])
def test_releases_in_the_range_are_accepted(release):
    assert trl_version_problem(release) is None


@pytest.mark.parametrize(
    ("release", "reason"), [("1.8.0", "change between"), ("1.17.0", "change between"), ("1.15.0", "triton")]
)
def test_releases_outside_the_range_are_refused_with_the_range(release, reason):
    problem = trl_version_problem(release)
    assert problem is not None and reason in problem and release in problem
    from trl_margins._compat import INSTALL, SUPPORTED

    assert SUPPORTED == ">=1.9.0,<1.17.0, except 1.15.*"
    assert INSTALL == "pip install 'trl>=1.9.0,<1.17.0,!=1.15.*'"


def test_installed_trl_is_in_the_range():
    assert trl_version_problem(str(_compat.TRL_VERSION)) is None


@pytest.mark.parametrize("config_class", [MMPOConfig, GammaPOConfig])
def test_liger_is_refused_with_a_knob_on_where_trl_would_bypass_the_loss(config_class, tmp_path, monkeypatch):
    monkeypatch.setattr(_compat, "LIGER_BYPASSES_LOSS", True)  # as on TRL 1.9-1.13
    knob = {"mmpo_gamma": 1.0} if config_class is MMPOConfig else {}
    with pytest.raises(ValueError, match=r"`use_liger_kernel=True` .* needs TRL >= 1\.14"):
        config_class(**base_args(tmp_path, use_liger_kernel=True, **knob))
    # Knobs off, the loss is TRL's own (its Liger loss included): nothing to refuse
    MMPOConfig(**base_args(tmp_path, use_liger_kernel=True))


def test_liger_is_accepted_with_a_knob_on_where_trl_runs_the_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(_compat, "LIGER_BYPASSES_LOSS", False)  # as on TRL 1.14+
    assert MMPOConfig(**base_args(tmp_path, use_liger_kernel=True, mmpo_gamma=1.0)).use_liger_kernel


def test_logits_path_equals_the_fused_head(tiny_model_dir, tmp_path, monkeypatch):
    """The pre-1.15 path (from the logits) gives what the fused head gives, field by field. On TRL 1.15+ this compares
    the two paths; before 1.15 both are the logits path, which tests/test_parity.py compares with TRL's own loss."""
    trainer = MMPOTrainer(
        tiny_model_dir,
        args=MMPOConfig(**base_args(tmp_path, mmpo_gamma=1.0, use_weighting=True)),
        train_dataset=make_preference_dataset(4),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    ids, completion_mask = batch["input_ids"], batch["completion_mask"]
    model_kwargs = {"input_ids": ids, "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        fused = _compat.token_outputs(trainer.model, model_kwargs, ids, completion_mask, metrics=True)
        monkeypatch.setattr(_compat, "HAS_FUSED_LM_HEAD", False)
        from_logits = _compat.token_outputs(trainer.model, model_kwargs, ids, completion_mask, metrics=True)
    mask = completion_mask[:, 1:].bool()
    for field in ("log_probs", "entropy", "mean_logits", "log_sum_sq_probs", "is_top1"):
        ours, theirs = getattr(from_logits, field)[mask], getattr(fused, field)[:, -mask.size(1) :][mask]
        np.testing.assert_allclose(ours.double().numpy(), theirs.double().numpy(), rtol=1e-4, atol=1e-5, err_msg=field)


# ---- the precision rule without a GPU: one rule for the Python API and the command line -----------------------------
@pytest.mark.skipif(_compat.has_accelerator(), reason="the rule for machines without a GPU")
def test_without_a_gpu_half_precision_needs_use_cpu(tmp_path, caplog, monkeypatch):
    import logging

    args = {k: v for k, v in base_args(tmp_path).items() if k not in ("bf16", "use_cpu")}
    with caplog.at_level(logging.INFO, logger="trl_margins"):
        assert MMPOConfig(**args).bf16 is False  # unset: TRL's default bf16 is off here, quietly (info)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        config = MMPOConfig(**args, bf16=True)  # asked for, but a GPU-less run needs use_cpu for bf16
    assert config.bf16 is False and not config.bf16_full_eval
    assert any("No GPU: bf16 is off" in r.getMessage() and "use_cpu=True" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setattr(_compat, "cpu_has_native_bf16", lambda: False)
    _compat._warn_slow_cpu_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        config = MMPOConfig(**args, bf16=True, use_cpu=True)  # the CPU asked for explicitly: kept
        MMPOConfig(**args, bf16=True, use_cpu=True)
    assert config.bf16 is True
    slow = [r for r in caplog.records if "without native bf16" in r.getMessage()]
    assert len(slow) == 1  # once per process


def test_commands_warn_once_for_bf16_on_a_cpu_without_it(monkeypatch, caplog):
    import logging

    from trl_margins.pairs.annotate import resolve_dtype

    monkeypatch.setattr(_compat, "cpu_has_native_bf16", lambda: False)
    _compat._warn_slow_cpu_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        assert resolve_dtype("float32", "cpu") == torch.float32
        assert not caplog.records
        assert resolve_dtype("bfloat16", "cpu") == resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    slow = [r.getMessage() for r in caplog.records if "without native bf16" in r.getMessage()]
    assert len(slow) == 1 and "--dtype float32" in slow[0]
    caplog.clear()
    monkeypatch.setattr(_compat, "cpu_has_native_bf16", lambda: True)
    _compat._warn_slow_cpu_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        resolve_dtype("bfloat16", "cpu")
    assert not caplog.records


def test_cpu_bf16_flag_comes_from_torch():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert _compat.cpu_has_native_bf16() == expected


@pytest.mark.skipif(_compat.has_accelerator(), reason="the rule for machines without a GPU")
def test_without_a_gpu_flash_attention_becomes_sdpa(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        config = MMPOConfig(**base_args(tmp_path, model_init_kwargs={"attn_implementation": "flash_attention_2"}))
    assert config.model_init_kwargs["attn_implementation"] == "sdpa"
    assert any("needs CUDA; using 'sdpa'" in r.getMessage() for r in caplog.records)
    kwargs = {"attn_implementation": "eager"}
    _compat.settle_attention(kwargs)
    assert kwargs == {"attn_implementation": "eager"}


@pytest.mark.skipif(_compat.has_accelerator(), reason="the rule for machines without a GPU")
def test_several_launched_processes_on_cpus_train_as_one_group(monkeypatch):
    """Under a launcher's N processes and no GPU, a config is set to form the gloo group (`use_cpu`); the two-process
    run itself is tests/cli/test_multiprocess.py. (The config is settled alone: a real one would start the group.)"""
    from types import SimpleNamespace

    config = SimpleNamespace(
        use_cpu=False, bf16=False, fp16=False, model_init_kwargs=None, gradient_checkpointing=False,
        gradient_checkpointing_kwargs=None,
    )  # fmt: skip
    monkeypatch.setenv("WORLD_SIZE", "2")
    _compat.settle_devices(config)
    assert config.use_cpu is True
    monkeypatch.setenv("WORLD_SIZE", "1")
    config.use_cpu = False
    _compat.settle_devices(config)
    assert config.use_cpu is False
