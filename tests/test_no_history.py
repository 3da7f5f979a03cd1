"""Nothing in the repository speaks of how it was made: the README, the documentation, the results report, the
changelog and the package's docstrings and comments name features, dates, commits and commands, never work sessions,
issue numbers or the brief a change answered. History lives in `git log` and CHANGELOG.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HISTORY = re.compile(
    r"\bsessions?[ -]?\d"  # "session 5", "session-7", "sessions 6-7"
    r"|\bin (?:this |that |an earlier |a later |the previous |the last |one )?session\b"
    r"|\b(?:this|that|an earlier|a later|the previous) session\b"
    r"|\bissues? \d+\b"  # "issue 17 knobs", "issues 7 and 18" (an upstream reference is written `repo#263`)
    r"|\b(?:this|the) issue(?:'s)?\b"
    r"|\bthe brief\b",
    flags=re.I,
)
SCANNED = {
    ".": ("README.md", "CHANGELOG.md", "CONTRIBUTING.md", "mkdocs.yml", "pyproject.toml"),
    "benchmarks": ("RESULTS.md", "**/*.py", "**/*.sh"),
    "docs": ("**/*.md", "**/*.py"),
    "trl_margins": ("**/*.py", "**/*.md"),
    "examples": ("**/*.py",),
    "recipes": ("**/*.md", "**/*.yaml"),
    "scripts": ("**/*.py",),
    ".ci": ("*",),
}


def scanned_files() -> list[Path]:
    files = {
        path for folder, patterns in SCANNED.items() for pattern in patterns for path in (REPO / folder).glob(pattern)
    }
    return sorted(path for path in files if path.is_file())


@pytest.mark.parametrize(
    "text",
    ["Session 5 added the methods", "the session-7 paragraphs", "the issue 17 knobs", "measured in session",
     "as measured this session", "the issue's goal", "as the brief asked", "GPU checks of issues 7 and 18"],
)  # fmt: skip
def test_the_pattern_finds_history_words(text):
    assert HISTORY.search(text)


@pytest.mark.parametrize("text", ["its issue #263 asks for one", "fixtures built once per pytest session", "RPO"])
def test_the_pattern_leaves_other_words(text):
    assert not HISTORY.search(text)


def test_no_history_words_in_the_docs_the_report_or_the_package():
    files = scanned_files()
    assert REPO / "README.md" in files and REPO / "benchmarks" / "RESULTS.md" in files
    assert REPO / "trl_margins" / "losses.py" in files and REPO / "docs" / "papers.md" in files
    hits = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
        if HISTORY.search(line)
    ]
    assert not hits, "history words (name the feature, the date, the commit or the command):\n" + "\n".join(hits)
