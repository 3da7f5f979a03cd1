"""Offline test helpers: a tiny tokenizer and causal LM (or BERT reward model) built locally and loaded by path, small
preference data, CPU-sized training arguments, and launchers for two-process runs. Imported by the tests and by the
scripts they launch (`tests/dist_*.py`, `tests/engine_run.py`)."""

from __future__ import annotations

import os
import random

from datasets import Dataset

WORDS = [
    "the",
    "a",
    "good",
    "bad",
    "great",
    "awful",
    "movie",
    "film",
    "book",
    "day",
    "food",
    "service",
    "plot",
    "acting",
    "story",
    "was",
    "is",
    "very",
    "quite",
    "not",
    "really",
    "loved",
    "hated",
    "enjoyed",
    "boring",
    "fun",
    "slow",
    "fast",
    "kind",
    "rude",
    "happy",
    "sad",
    "nice",
    "terrible",
    "excellent",
    "fine",
    "ok",
    "so",
    "and",
    "but",
    "it",
    "this",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def build_tiny_model(path: str, arch: str = "qwen2") -> str:
    """A word-level BPE tokenizer and a 2-layer causal LM with random weights, saved to `path`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [_sentence(rng, 12) for _ in range(400)]
    specials = ["<|pad|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>", chat_template=CHAT_TEMPLATE
    )
    if arch == "qwen2":
        from transformers import Qwen2Config

        config = Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
        )  # fmt: skip
    elif arch == "qwen2_moe":
        from transformers import Qwen2MoeConfig

        # 4 experts, 2 per token, in both layers; the architecture's own `router_aux_loss_coef` (0.001)
        config = Qwen2MoeConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
            shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
        )  # fmt: skip
    else:
        from transformers import LlamaConfig

        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        )  # fmt: skip
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    import torch

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_preference_dataset(n: int = 16, seed: int = 0, conversational: bool = False, scores: bool = True) -> Dataset:
    """Short random pairs with UltraFeedback-style scores (chosen >= rejected)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt, chosen, rejected = (
            _sentence(rng, 4),
            _sentence(rng, rng.randint(2, 6)),
            _sentence(rng, rng.randint(2, 6)),
        )
        row = (
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
            if conversational
            else {"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected}
        )
        if scores:
            score_rejected = rng.randint(1, 9)
            row["score_rejected"] = float(score_rejected)
            row["score_chosen"] = float(rng.randint(score_rejected, 10))
        rows.append(row)
    return Dataset.from_list(rows)


def perturb(model, scale: float = 0.05) -> None:
    """Move a policy away from its reference (noise on every weight), so that its implicit rewards are not all 0."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))


def eval_loss(trainer, batch: dict):
    """The trainer's loss on one collated batch, in eval mode (no dropout) and without gradients."""
    import torch

    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, dict(batch))


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a test's child process: this checkout first on PYTHONPATH, and whatever PYTHONPATH already
    held kept after it (CI's TRL matrix puts an older TRL there, which the child must import too)."""
    path = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def base_args(output_dir, **overrides) -> dict:
    """Small, deterministic, CPU-only training arguments."""
    args = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=42,
        beta=0.5,
        max_length=64,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    args.update(overrides)
    return args


def build_tiny_bert(path: str) -> str:
    """A BERT-style encoder reward model, saved to `path`: a word-level tokenizer that adds `[CLS] ... [SEP]` itself
    and has no EOS token (like real BERT tokenizers), and a 2-layer `BertForSequenceClassification` with one label."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip
    # A wider init than BERT's 0.02, so that the random rewards of different texts differ visibly
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, num_labels=1, pad_token_id=vocab["[PAD]"], initializer_range=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def train_and_resume(make_trainer, root, state_file: str, step: int = 3):
    """Train `make_trainer(out_dir)` uninterrupted, then a fresh one resumed from a copy of its step-`step` checkpoint
    (which must hold `state_file`). Returns `(full, resumed)`, both trained."""
    import shutil
    from pathlib import Path

    root = Path(root)
    full = make_trainer(root / "full")
    full.train()
    checkpoint = root / "full" / f"checkpoint-{step}"
    assert (checkpoint / state_file).is_file()
    shutil.copytree(checkpoint, root / "resumed" / checkpoint.name)
    resumed = make_trainer(root / "resumed")
    resumed.train(resume_from_checkpoint=str(root / "resumed" / checkpoint.name))
    return full, resumed


def free_port() -> str:
    """A free local port: a fixed one fails while another run of the same test (or its TIME_WAIT) holds it."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def run_on_two_processes(*args: str, timeout: float | None = 600):
    """`torchrun --nproc_per_node 2 *args` on CPU (gloo), on a free port: `args` is a script and its arguments, or
    `-m module ...`. Fails with the end of its stderr; returns the finished process."""
    import subprocess
    import sys

    env = subprocess_env(OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    result = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def load_benchmark(name: str):
    """The module of the script `benchmarks/<name>.py` (benchmarks are scripts, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
