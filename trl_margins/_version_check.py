"""Fail at import, clearly, on a TRL version whose DPO internals this package was not tested against."""

from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version

# Keep in sync with `dependencies` in pyproject.toml: the range the test suite proves
TRL_MIN = "1.16.0"
TRL_MAX_EXCLUSIVE = "1.17.0"


def check_trl_version() -> None:
    try:
        installed = version("trl")
    except PackageNotFoundError as e:
        raise ImportError(
            f"trl-margins needs TRL >={TRL_MIN},<{TRL_MAX_EXCLUSIVE}: `pip install 'trl>=1.16,<1.17'`."
        ) from e
    if not Version(TRL_MIN) <= Version(installed) < Version(TRL_MAX_EXCLUSIVE):
        raise ImportError(
            f"trl-margins supports TRL >={TRL_MIN},<{TRL_MAX_EXCLUSIVE}, but TRL {installed} is installed. TRL's "
            "DPOTrainer internals (fused LM head, reference log-prob computation, preference collator) that these "
            f"trainers build on change between 1.x releases. Install a supported TRL: `pip install 'trl>={TRL_MIN},"
            f"<{TRL_MAX_EXCLUSIVE}'`."
        )
