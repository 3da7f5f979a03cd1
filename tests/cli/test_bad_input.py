"""Every mistake a user makes ends in one line, through the real command line: the `trl-margins` console script in a
child process, with a non-zero exit status, exactly one `trl-margins <command>: error: ...` line, no traceback, and
the words that say what is wrong and what to do. Rows count from 0 in every message, and the messages say so.

The cases run two at a time (a session fixture), since each child process imports torch and TRL."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.helpers import make_preference_dataset, subprocess_env

CONSOLE_SCRIPT = shutil.which("trl-margins")
ERROR_LINE = re.compile(r"^trl-margins [\w-]+: error: ")


@dataclass
class Case:
    argv: list[str]
    status: int  # the expected exit status: 2 usage (the command line or recipe), 1 data
    words: list[str]  # each must be in the error line
    absent: list[str] = field(default_factory=list)  # none may be in it
    cwd: Path | None = None


def _write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def unwritable(tmp_path_factory):
    """A folder this process cannot write in: read-only for a non-root user; for root, for whom permission bits do
    not count, an immutable one (`chattr +i`), else a read-only tmpfs mount."""
    folder = tmp_path_factory.mktemp("read-only") / "out"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(folder)], capture_output=True)
    assert mounted.returncode == 0, f"no way to make an unwritable folder as root here: {mounted.stderr}"
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="module")
def cases(tiny_model_dir, tiny_rm_dir, tmp_path_factory, unwritable) -> dict[str, Case]:
    d = tmp_path_factory.mktemp("bad-input")
    pairs = str(d / "pairs.jsonl")
    make_preference_dataset(8).to_json(pairs, lines=True)
    good = make_preference_dataset(4).to_list()
    (d / "empty.jsonl").write_text("")
    (d / "not-json.jsonl").write_text('{"prompt": "a", "chosen": \n')
    mixed = _write_rows(d / "mixed.jsonl", [{**good[0], "rejected": [{"role": "assistant", "content": "no"}]}])
    long_prompts = _write_rows(d / "long.jsonl", [{**r, "prompt": "the " * 80} for r in good])
    empty_chosen = _write_rows(d / "empty-chosen.jsonl", [good[0], {**good[1], "chosen": "  "}])
    unscored = _write_rows(d / "unscored.jsonl", [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in good])

    def as_turns(r: dict, side: str) -> list[dict]:
        return [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r[side]}]

    ultrafeedback_rows = [
        {**r, "chosen": as_turns(r, "chosen"), "rejected": as_turns(r, "rejected")} for r in good
    ]  # UltraFeedback's layout: a text prompt, whole conversations as chosen and rejected
    ultrafeedback = _write_rows(d / "ultrafeedback.jsonl", ultrafeedback_rows)
    (d / "a-file").write_text("in the way")
    below_file = str(d / "a-file" / "out")
    recipe = d / "typo.yaml"
    recipe.write_text(
        yaml.safe_dump({"model_name_or_path": tiny_model_dir, "dataset_name": pairs, "mmpo_gamma": "two"})
    )
    (d / "outputs").mkdir()
    locked = d / "locked"
    locked.mkdir()
    (locked / "run.lock").write_text(json.dumps({"run": "x", "pid": os.getpid(), "host": socket.gethostname(),
                                                  "since": "2026-12-03 10:00:00"}))  # fmt: skip
    train = ["mmpo", "--model_name_or_path", tiny_model_dir, "--output_dir", str(d / "out"), "--max_steps", "1",
             "--report_to", "none", "--per_device_train_batch_size", "2"]  # fmt: skip
    train_data = ["mmpo", "--model_name_or_path", tiny_model_dir, "--output_dir", str(d / "out"), "--dataset_name"]
    evaluate = ["evaluate", "--model", tiny_rm_dir, "--no_plots"]
    return {
        "empty data file": Case([*train_data, str(d / "empty.jsonl")], 1, ["empty.jsonl", "is empty"]),
        "a file that is not JSON": Case(
            [*train_data, str(d / "not-json.jsonl")], 1, ["not-json.jsonl", "could not be read"]
        ),
        "text chosen, message rejected": Case(
            [*train_data, mixed], 1, ["row 0 (counting from 0)", "mixes text and messages", "`rejected` is messages"]
        ),
        "every prompt longer than max_length": Case(
            [*train, "--dataset_name", long_prompts, "--max_length", "16"],
            1,
            ["Every one of the 4 rows", "max_length", "--max_length"],
        ),
        "an empty chosen": Case([*train_data, empty_chosen], 1, ["row 1 (counting from 0)", "`chosen` is empty"]),
        "a model path that does not exist": Case(
            ["mmpo", "--model_name_or_path", str(d / "nope"), "--dataset_name", pairs], 2, ["nope", "no such folder"]
        ),
        "a relative model path that does not exist": Case(
            ["mmpo", "--model_name_or_path", "outputs/m", "--dataset_name", pairs],
            2,
            ["outputs/m", "no such folder", "outputs/ is a folder here"],
            cwd=d,
        ),
        "an output_dir below a file": Case(
            [*train_data, pairs, "--output_dir", below_file], 2, ["--output_dir", "a-file is a file, not a folder"]
        ),
        "an output_dir that cannot be written": Case(
            [*train_data, pairs, "--output_dir", str(unwritable / "run")], 2, ["--output_dir", "cannot write there"]
        ),
        "a split that does not exist": Case(
            [*train_data, pairs, "--dataset_train_split", "training"],
            2,
            ["no split 'training'", "--dataset_train_split"],
        ),
        "a wrong type in a recipe": Case(["mmpo", str(recipe)], 2, ["typo.yaml", "mmpo_gamma", "'two'"]),
        "score columns missing with mmpo_gamma": Case(
            [*train_data, unscored, "--mmpo_gamma", "1"], 1, ["no column 'score_chosen'", "--score_chosen_column"]
        ),
        "a misspelled option": Case(
            [*train_data, pairs, "--mmpo_gama", "1"], 2, ["unknown key `mmpo_gama`", "mmpo_gamma"]
        ),
        "evaluate on UltraFeedback-layout rows": Case(
            [*evaluate, "--dataset", ultrafeedback, "--output_dir", str(d / "ev")],
            1,
            ["mixes text and messages", "--dataset_adapter", "ultrafeedback_binarized"],
        ),
        "evaluate into a file's folder": Case(
            [*evaluate, "--dataset", pairs, "--output_dir", below_file], 2, ["--output_dir", "is a file, not a folder"]
        ),
        "evaluate a model that does not exist": Case(
            ["evaluate", "--model", str(d / "nope"), "--dataset", pairs], 2, ["--model", "no such folder"]
        ),
        "annotate into a folder another run holds": Case(
            ["annotate", "--reward_model", tiny_rm_dir, "--dataset", pairs, "--output_dir", str(locked)],
            2,
            [f"being written by process {os.getpid()}", "give another --output_dir"],
        ),
        "annotate into a folder that cannot be written": Case(
            [
                "annotate",
                "--reward_model",
                tiny_rm_dir,
                "--dataset",
                pairs,
                "--output_dir",
                str(unwritable / "scores"),
            ],
            2,
            ["--output_dir", "cannot write there"],
        ),
        "select on rows without scores": Case(
            ["select", "--dataset", unscored, "--output", str(d / "kept.jsonl"), "--min_margin", "0"],
            1,
            ["no column 'score_chosen'", "--score_chosen_column", "--margin_column"],
            absent=["mmpo_gamma"],
        ),
        "select into a file's folder": Case(
            ["select", "--dataset", pairs, "--output", f"{below_file}.jsonl", "--min_margin", "0"],
            2,
            ["--output", "is a file, not a folder"],
        ),
        "select with an unknown adapter": Case(
            [
                "select",
                "--dataset",
                pairs,
                "--output",
                str(d / "k.jsonl"),
                "--min_margin",
                "0",
                "--dataset_adapter",
                "shpp",
            ],
            2,
            ["unknown dataset adapter 'shpp'", "shp"],
        ),
        "generate into a folder that cannot be written": Case(
            ["generate", "--policy", tiny_model_dir, "--dataset", pairs, "--output", str(unwritable / "gen.jsonl")],
            2,
            ["--output", "cannot write there"],
        ),
        "generate from a policy that does not exist": Case(
            ["generate", "--policy", str(d / "nope"), "--dataset", pairs, "--output", str(d / "gen.jsonl")],
            2,
            ["--policy", "no such folder"],
        ),
        "fit-gamma into a file's folder": Case(
            [
                "fit-gamma",
                "--dataset",
                "trl_margins:vader",
                "--prob_column",
                "human_pref_prob",
                "--output",
                f"{below_file}.json",
            ],
            2,
            ["--output", "is a file, not a folder"],
        ),
        "the bundled pairs' split that does not exist": Case(
            ["fit-gamma", "--dataset", "trl_margins:vader", "--prob_column", "human_pref_prob", "--split", "valid"],
            2,
            ["no split 'valid'", "--split"],
        ),
    }


@pytest.fixture(scope="module")
def results(cases) -> dict[str, subprocess.CompletedProcess]:
    assert CONSOLE_SCRIPT is not None, "the `trl-margins` console script is not installed"
    env = subprocess_env(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)

    def run(case: Case) -> subprocess.CompletedProcess:
        command = [CONSOLE_SCRIPT, *case.argv]
        return subprocess.run(command, env=env, cwd=case.cwd, capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(cases, pool.map(run, cases.values())))


CASE_NAMES = [
    "empty data file",
    "a file that is not JSON",
    "text chosen, message rejected",
    "every prompt longer than max_length",
    "an empty chosen",
    "a model path that does not exist",
    "a relative model path that does not exist",
    "an output_dir below a file",
    "an output_dir that cannot be written",
    "a split that does not exist",
    "a wrong type in a recipe",
    "score columns missing with mmpo_gamma",
    "a misspelled option",
    "evaluate on UltraFeedback-layout rows",
    "evaluate into a file's folder",
    "evaluate a model that does not exist",
    "annotate into a folder another run holds",
    "annotate into a folder that cannot be written",
    "select on rows without scores",
    "select into a file's folder",
    "select with an unknown adapter",
    "generate into a folder that cannot be written",
    "generate from a policy that does not exist",
    "fit-gamma into a file's folder",
    "the bundled pairs' split that does not exist",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_mistake_ends_in_one_line(name, cases, results):
    case, result = cases[name], results[name]
    errors = [line for line in result.stderr.splitlines() if ERROR_LINE.match(line)]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.returncode == case.status, (result.returncode, errors[0])
    missing = [w for w in case.words if w not in errors[0]]
    assert not missing, f"{missing} not in: {errors[0]}"
    assert not [w for w in case.absent if w in errors[0]], errors[0]


def test_every_case_is_run(cases):
    assert sorted(cases) == sorted(CASE_NAMES)
