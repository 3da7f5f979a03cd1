"""The CI rule of `tests/ci_skips.py`: with `CI=true` a skip fails the run, unless the test needs a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import ci_skips

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = """
import pytest

def test_plain():
    pass

def test_needs_a_package():
    pytest.importorskip("trl_margins_no_such_package")

@pytest.fixture
def asset():
    pytest.skip("asset missing")

def test_needs_an_asset(asset):
    pass

def test_needs_a_gpu():
    pytest.skip("needs a GPU")
"""


def _run(tmp_path: Path, ci: str | None, module: str = SAMPLE) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(
        "from tests import ci_skips\n"
        "ci_skips.GPU_ONLY_TESTS = frozenset({'test_needs_a_gpu'})\n"
        "from tests.ci_skips import pytest_make_collect_report, pytest_runtest_makereport\n"
    )
    (tmp_path / "test_sample.py").write_text(module)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip


def test_skips_pass_outside_ci(tmp_path):
    result = _run(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 3 skipped" in result.stdout


@pytest.mark.parametrize("value", ["true", "1"])
def test_skips_fail_in_ci_except_gpu_tests(tmp_path, value):
    result = _run(tmp_path, ci=value)
    assert result.returncode == 1, result.stdout
    # A skip in a fixture fails the test's setup, which pytest reports as an error
    assert "1 failed, 1 passed, 1 skipped, 1 error" in result.stdout
    assert "FAILED test_sample.py::test_needs_a_package - Skipped in CI" in result.stdout
    assert "ERROR test_sample.py::test_needs_an_asset - Skipped in CI" in result.stdout
    assert "trl_margins_no_such_package" in result.stdout


def test_module_level_skip_fails_in_ci(tmp_path):
    module = "import pytest\n\npytest.importorskip('trl_margins_no_such_package')\n\n\ndef test_x():\n    pass\n"
    assert "1 skipped" in _run(tmp_path, ci=None, module=module).stdout
    result = _run(tmp_path, ci="true", module=module)
    assert result.returncode != 0 and "Module skipped in CI" in result.stdout, result.stdout


def test_gpu_allow_list_names_real_tests():
    # A name in the allow-list that matches no test would silently let a renamed test skip
    source = "\n".join(p.read_text() for p in Path(__file__).parent.rglob("test_*.py"))
    assert all(f"def {name}(" in source for name in ci_skips.GPU_ONLY_TESTS)
