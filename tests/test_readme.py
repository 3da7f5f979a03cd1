"""The README's code blocks run as written on a CPU (tests/docs_blocks.py: hub ids become tiny local models, each
trainer is built and trained one step), except the `## Set up` section's two commands, which are what CI runs first,
read from the README by .ci/readme_commands.py (checked here)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_blocks import PageRunner

README = Path(__file__).resolve().parent.parent / "README.md"
SET_UP = re.compile(r"^## Set up\n.*?(?=^## )", flags=re.M | re.S)


def test_readme_code_blocks_build_and_train_on_a_cpu(
    tiny_model_dir, tiny_rm_dir, tiny_bert_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    models = {"causal": tiny_model_dir, "reward": tiny_rm_dir, "encoder": tiny_bert_dir}
    text = README.read_text(encoding="utf-8")
    assert SET_UP.search(text)
    counts = PageRunner(README, models, monkeypatch, text=SET_UP.sub("", text)).run()
    assert counts == {"ran": 3, "skipped": 0}  # the quickstart, the reward model and gamma-PO, each trained a step


@pytest.mark.parametrize("block", [0, 1])
def test_readme_set_up_commands_are_what_ci_runs(block):
    root = README.parent
    commands = subprocess.run(
        [sys.executable, str(root / ".ci" / "readme_commands.py"), str(README)], capture_output=True, text=True
    ).stdout.splitlines()
    assert len(commands) == 2
    assert commands[block].startswith("pip install torch==2.13.0 && pip install -e")
    assert commands[block].endswith(("python examples/run_mmpo.py", "python -m pytest -q")[block])
    assert "gguf" not in commands[block]  # the package's extras install it, not the command line
