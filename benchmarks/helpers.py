"""Helpers that more than one benchmark uses: random-weight models of a real model's shape (with a tokenizer trained
on the VADER sentences, so no hub is needed), and quiet library logs while a benchmark runs.

Used by `overhead.py` and `gpu_check.py`. Benchmark-specific code stays in its benchmark; the quality benchmarks'
shared code is `quality/common.py`.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

RANDOM_PRESETS: dict[str, dict[str, Any]] = {
    # Qwen2-0.5B's shape (config.json of Qwen/Qwen2-0.5B), so timings have its FLOPs and memory traffic
    "qwen2-0.5b": dict(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
    ),  # fmt: skip
    "qwen2-tiny": dict(
        vocab_size=4096,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    ),  # fmt: skip
}


def build_random_model(path: str | os.PathLike, preset: str = "qwen2-0.5b", tokenizer_vocab: int = 8192) -> str:
    """A Qwen2 model of `preset`'s shape with random weights, plus a byte-level BPE tokenizer trained on the VADER
    sentences (no hub needed), saved to `path`. Random weights time like trained ones; the tokenizer gives VADER text
    realistic token counts. The model's vocabulary keeps the preset's size, so the LM head costs what it would."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from trl_margins.data.assets import load_vader_sentences

    config_kwargs = RANDOM_PRESETS[preset]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    vocab = min(tokenizer_vocab, config_kwargs["vocab_size"])
    bpe = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(load_vader_sentences()["text"], bpe)
    chatml = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=chatml
    )
    config = Qwen2Config(
        **config_kwargs, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, dtype="bfloat16"
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(path)  # stored as initialised (float32); callers load it in the dtype they time
    tokenizer.save_pretrained(path)
    return str(path)


@contextlib.contextmanager
def quiet_libraries():
    """Silence transformers' and datasets' logs and progress bars, and put them back as they were afterwards."""
    import datasets
    from transformers.utils import logging as hf_logging

    verbosity, hf_bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    ds_bars = datasets.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if hf_bars:
            hf_logging.enable_progress_bar()
        if ds_bars:
            datasets.enable_progress_bars()
