"""trl-margins: margin-aware preference optimization for Hugging Face TRL (MMPO and gamma-PO)."""

from ._version_check import check_trl_version

check_trl_version()

from .config import MMPOConfig  # noqa: E402
from .dpo import MMPOTrainer  # noqa: E402

__version__ = "0.1.0"

__all__ = ["MMPOConfig", "MMPOTrainer", "__version__"]
