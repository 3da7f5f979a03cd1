"""The README's Python snippets run as written on a CPU: hub ids become a tiny local model and `load_dataset` a small
local `DatasetDict`, nothing else changes. Each trainer is built (construction runs every config and data check) and
trained for one step."""

import re
from pathlib import Path

import datasets
import pytest

from tests.helpers import make_preference_dataset

README = Path(__file__).resolve().parent.parent / "README.md"
HUB_MODELS = ("my-org/gemma-2b-sft", "meta-llama/Meta-Llama-3-8B-Instruct")


def python_snippets() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def test_readme_python_snippets_build_and_train_on_a_cpu(tiny_model_dir, tmp_path, monkeypatch):
    splits = {"train_prefs": make_preference_dataset(8), "test_prefs": make_preference_dataset(4, seed=1)}
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.DatasetDict(splits))
    monkeypatch.chdir(tmp_path)
    snippets = python_snippets()
    assert len(snippets) >= 3
    namespace: dict = {}
    for snippet in snippets:
        code = snippet
        for hub_id in HUB_MODELS:
            code = code.replace(repr(hub_id).replace("'", '"'), repr(tiny_model_dir))
        code = code.replace("trainer.train()", "")
        exec(compile(code, str(README), "exec"), namespace)
        trainer = namespace["trainer"]
        assert not trainer.args.bf16  # TRL's default bf16 needs a GPU; left unset, the configs turn it off here
        trainer.args.max_steps = 1
        trainer.args.report_to = []
        trainer.train()
        assert trainer.state.global_step == 1


@pytest.mark.parametrize("block", [0, 1])
def test_readme_set_up_commands_are_what_ci_runs(block):
    import subprocess
    import sys

    root = README.parent
    commands = subprocess.run(
        [sys.executable, str(root / ".ci" / "readme_commands.py"), str(README)], capture_output=True, text=True
    ).stdout.splitlines()
    assert len(commands) == 2
    assert commands[block].startswith("pip install torch==2.13.0 && pip install -e")
    assert commands[block].endswith(("python examples/run_mmpo.py", "python -m pytest -q")[block])
    assert "gguf" not in commands[block]  # the package's extras install it, not the command line
