"""Fail at import, clearly, on a TRL release whose DPO internals this package was not tested against.

Runs before anything imports TRL. The differences between the supported releases are handled in `trl_compat.py`.
"""

from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version

# Keep in sync with `dependencies` in pyproject.toml: the releases the CI matrix proves (.ci/trl_matrix.sh)
TRL_MIN = "1.9.0"
TRL_MAX_EXCLUSIVE = "1.17.0"
EXCLUDED = {
    "1.15": "whose DPO trainer needs triton for its fused LM head, with no CPU fallback (TRL's own DPOTrainer "
    "fails there too; the CPU path arrived in 1.16), so this package's CI, which runs on CPUs, cannot prove it",
}
SUPPORTED = f">={TRL_MIN},<{TRL_MAX_EXCLUSIVE}, except " + ", ".join(f"{minor}.*" for minor in EXCLUDED)
INSTALL = f"pip install 'trl>={TRL_MIN},<{TRL_MAX_EXCLUSIVE},{','.join(f'!={m}.*' for m in EXCLUDED)}'"


def trl_version_problem(installed: str) -> str | None:
    """Why TRL `installed` is not supported, or None if it is."""
    release = Version(installed)
    minor = f"{release.major}.{release.minor}"
    if minor in EXCLUDED:
        return f"TRL {installed} is installed, {EXCLUDED[minor]}"
    if not Version(TRL_MIN) <= release < Version(TRL_MAX_EXCLUSIVE):
        return (
            f"TRL {installed} is installed. TRL's DPOTrainer internals (fused LM head, reference log-prob "
            "computation, preference collator) that these trainers build on change between 1.x releases"
        )
    return None


def check_trl_version() -> None:
    try:
        installed = version("trl")
    except PackageNotFoundError as e:
        raise ImportError(f"trl-margins needs TRL {SUPPORTED}: `{INSTALL}`.") from e
    problem = trl_version_problem(installed)
    if problem is not None:
        raise ImportError(
            f"trl-margins supports TRL {SUPPORTED}, but {problem}. Install a supported TRL: `{INSTALL}`."
        )
