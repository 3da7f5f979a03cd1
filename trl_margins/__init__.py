"""trl-margins: margin-aware preference optimization for Hugging Face TRL (MMPO and gamma-PO)."""

from ._version_check import check_trl_version

check_trl_version()

from .config import GammaPOConfig, MMPOConfig, MMPOKTOConfig, MMPORewardConfig  # noqa: E402
from .dpo import MMPOTrainer  # noqa: E402
from .fitting import fit_gamma  # noqa: E402
from .gamma_po import GammaPOTrainer  # noqa: E402
from .kto import MMPOKTOTrainer  # noqa: E402
from .reward import MMPORewardTrainer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "GammaPOConfig",
    "GammaPOTrainer",
    "MMPOConfig",
    "MMPOKTOConfig",
    "MMPOKTOTrainer",
    "MMPOTrainer",
    "MMPORewardConfig",
    "MMPORewardTrainer",
    "__version__",
    "fit_gamma",
]
