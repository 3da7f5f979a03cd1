"""Run the code blocks of a Markdown page as written, offline on a CPU (tests/test_docs.py, tests/test_readme.py).

Each page runs in order, in one namespace and one working directory, so a block may use what an earlier block of the
same page wrote. Hub ids become the tiny local models (`tests/helpers.py`); `datasets.load_dataset` of a hub dataset
the pages name returns a small local `DatasetDict` in that dataset's layout; nothing else changes, except that every
run is cut short:

- ```python: executed; a block that calls `trainer.train()` builds its trainer (which runs every config and data
  check), then trains one step.
- ```bash / ```shell: each command (`\\` continues a line, `#` starts a comment) runs in-process: `trl-margins ...`
  through `trl_margins.cli.main`, `python examples/<script>.py ...` as a script, `python -c ...` as code. Training
  commands get one step on a few pairs appended (`--max_steps 1 ...`), `generate` 4 new tokens, `rounds` one round
  of the tiny models on 2 prompts.
- ```yaml: a recipe; every key must be one that a training command takes (old keys mapped as the commands map them).
- ```text: not code (formulas, usage, output).

A block that cannot run offline is marked on the line before it, `<!-- docs-test: skip (why) -->`, and its page
says why in prose; any other command, or any other language, fails the test.
"""

from __future__ import annotations

import random
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(
    r"^(?:<!-- docs-test: skip \((?P<skip>[^)]+)\) -->\n)?```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$",
    flags=re.M | re.S,
)
RUNNABLE = ("python", "bash", "shell", "yaml")
NOT_CODE = ("text",)
TRAINING_COMMANDS = ("mmpo", "gamma-po", "reward", "kto")
SHORT_RUN = [
    "--max_steps", "1", "--max_train_samples", "16", "--max_eval_samples", "8", "--per_device_train_batch_size", "2",
    "--per_device_eval_batch_size", "2", "--max_length", "32", "--save_strategy", "no", "--report_to", "none",
    "--disable_tqdm", "true", "--logging_steps", "1",
]  # fmt: skip
CAUSAL_LMS = (
    "my-org/gemma-2b-sft", "my-org/gemma-2b-mmpo", "meta-llama/Meta-Llama-3-8B-Instruct", "Qwen/Qwen2-0.5B-Instruct",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct", "trl_margins:smollm2",
)  # fmt: skip
REWARD_MODELS = ("Skywork/Skywork-Reward-V2-Llama-3.1-8B",)
ENCODERS = ("trl_margins:minilm",)


@dataclass
class Block:
    lang: str
    code: str
    skip: str | None
    line: int


def blocks(path: Path, text: str | None = None) -> list[Block]:
    """The fenced code blocks of a page (of `text`, the page's text or part of it, when given)."""
    text = path.read_text(encoding="utf-8") if text is None else text
    return [Block(m["lang"], m["code"], m["skip"], text.count("\n", 0, m.start()) + 1) for m in BLOCK.finditer(text)]


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block, each as its argument list."""
    joined = re.sub(r"\\\n", " ", code)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def _scored_pairs(n: int, seed: int) -> datasets.Dataset:
    """String pairs with strictly positive margins (ODPO's log offsets refuse ties)."""
    from tests.helpers import make_preference_dataset

    rng = random.Random(seed)
    pairs = make_preference_dataset(n, seed=seed, scores=False)
    rejected = [float(rng.randint(1, 7)) for _ in range(n)]
    chosen = [r + rng.randint(1, 3) for r in rejected]
    return pairs.add_column("score_chosen", chosen).add_column("score_rejected", rejected)


def _completions(n: int, seed: int) -> datasets.Dataset:
    rng = random.Random(seed)
    pairs = _scored_pairs(n, seed)
    rows = [
        {"prompt": r["prompt"], "all_generated_responses": [r["chosen"], r["rejected"], " ok"],
         "all_rm_scores": [rng.uniform(1, 3), rng.uniform(-3, -1), 0.0]}
        for r in pairs
    ]  # fmt: skip
    return datasets.Dataset.from_list(rows)


HUB_DATASETS = {
    "allenai/ultrafeedback_binarized_cleaned": lambda: {
        "train_prefs": _scored_pairs(8, 0),
        "test_prefs": _scored_pairs(4, 1),
    },
    "princeton-nlp/llama3-ultrafeedback-armorm": lambda: {"train": _completions(8, 2), "test": _completions(4, 3)},
}


class PageRunner:
    """Runs one page's blocks in order, in the current directory, with the tiny models of `models`."""

    def __init__(self, page: Path, models: dict[str, str], monkeypatch, text: str | None = None):
        self.page, self.text, self.namespace = page, text, {}
        self.models = {
            **dict.fromkeys(CAUSAL_LMS, models["causal"]),
            **dict.fromkeys(REWARD_MODELS, models["reward"]),
            **dict.fromkeys(ENCODERS, models["encoder"]),
        }
        real_load = datasets.load_dataset

        def load_dataset(path, *args, split=None, **kwargs):
            if path not in HUB_DATASETS:
                return real_load(path, *args, split=split, **kwargs)
            splits = datasets.DatasetDict(HUB_DATASETS[path]())
            return splits if split is None else splits[split]

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        self.monkeypatch = monkeypatch

    def run(self) -> dict[str, int]:
        """Every block of the page; returns how many blocks ran, and how many were marked as skipped."""
        counts = {"ran": 0, "skipped": 0}
        for block in blocks(self.page, self.text):
            where = f"{self.page.relative_to(REPO)}:{block.line}"
            if block.lang in NOT_CODE:
                continue
            assert block.lang in RUNNABLE, f"{where}: a ```{block.lang} block; use one of {RUNNABLE + NOT_CODE}"
            if block.skip is not None:
                counts["skipped"] += 1
                continue
            {"python": self.python, "bash": self.shell, "shell": self.shell, "yaml": self.recipe}[block.lang](
                block.code, where
            )
            counts["ran"] += 1
        return counts

    # ---- the languages ----------------------------------------------------------------------------------------------
    def python(self, code: str, where: str) -> None:
        for hub_id, path in self.models.items():
            code = code.replace(f'"{hub_id}"', repr(path))
        trains = "trainer.train()" in code
        exec(compile(code.replace("trainer.train()", ""), where, "exec"), self.namespace)
        if trains:
            trainer = self.namespace["trainer"]
            assert not trainer.args.bf16, where  # TRL's default bf16 needs a GPU; unset, the configs turn it off here
            trainer.args.max_steps = 1
            trainer.args.report_to = []
            trainer.train()
            assert trainer.state.global_step == 1, where

    def shell(self, code: str, where: str) -> None:
        for argv in commands(code):
            # the pages run from the checkout; the tests, in a scratch folder
            argv = [str(REPO / arg) if arg.startswith("recipes/") else self.models.get(arg, arg) for arg in argv]
            if argv[0] == "trl-margins":
                self.trl_margins(argv[1:], where)
            elif argv[:2] == ["python", "-c"]:
                exec(compile(argv[2], where, "exec"), dict(self.namespace))
            elif argv[0] == "python" and argv[1].startswith("examples/"):
                self.example(argv[1], argv[2:], where)
            else:
                raise AssertionError(f"{where}: `{shlex.join(argv)}` cannot run here; mark the block as skipped")

    def trl_margins(self, args: list[str], where: str) -> None:
        from trl_margins.cli import main

        if args[0] in TRAINING_COMMANDS:
            args = [*args, *SHORT_RUN]
        elif args[0] == "generate":
            args = [*args, "--max_new_tokens", "4"]
        elif args[0] == "rounds":
            args = [*args, *self.short_rounds()]
        assert main(args) == 0, f"{where}: `trl-margins {shlex.join(args)}` failed"

    def short_rounds(self) -> list[str]:
        """One round of the tiny models on 2 prompts and 4 held-out pairs, trained one step."""
        return [
            "--policy", self.models["trl_margins:smollm2"], "--reward_model", self.models[REWARD_MODELS[0]],
            "--rounds", "1", "--prompts_per_round", "2", "--heldout_max_samples", "4",
            "--generate.num_completions", "2", "--generate.max_new_tokens", "4", "--train.use_peft", "false",
            "--train.max_steps", "1", "--train.per_device_train_batch_size", "2",
        ]  # fmt: skip

    def example(self, script: str, args: list[str], where: str) -> None:
        path = REPO / script
        short = SHORT_RUN if path.name.startswith("run_") else []
        self.monkeypatch.setattr(sys, "argv", [str(path), *args, *short])
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as done:
            assert done.code in (0, None), f"{where}: {script} exited with {done.code}"

    def recipe(self, code: str, where: str) -> None:
        import yaml

        from trl_margins.cli.arguments import MODES, make_parser
        from trl_margins.cli.recipe_keys import normalize_recipe

        recipe = yaml.safe_load(code)
        assert isinstance(recipe, dict), f"{where}: a recipe is a YAML mapping"
        recipe.pop("env", None)
        known = {action.dest for mode in MODES for action in make_parser(mode)._actions}
        unknown = sorted(set(normalize_recipe(recipe, where)) - known)
        assert not unknown, f"{where}: keys no training command takes: {unknown}"
