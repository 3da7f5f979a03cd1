"""In CI (`CI=true`) a skipped test is a failure, except for the tests in `GPU_ONLY_TESTS`: a test skipped for a
missing package or asset passes locally and checks nothing. `conftest.py` installs these hooks."""

from __future__ import annotations

import os

import pytest

GPU_ONLY_TESTS: frozenset[str] = frozenset({"test_vllm_backend_samples_seeded_rows_in_the_same_layout"})
"""Names of the tests that may skip in CI because they need a GPU, which CI does not have: vLLM samples on a GPU
(tests/pairs/test_generate.py; benchmarks/gpu_check.sh runs it)."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail") and item.originalname not in GPU_ONLY_TESTS:
        report.outcome = "failed"
        report.longrepr = f"Skipped in CI (CI=true), where only GPU tests may skip: {_skip_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:  # a module-level skip, such as `importorskip` at import time
        report.outcome = "failed"
        report.longrepr = f"Module skipped in CI (CI=true): {_skip_reason(report)}"
