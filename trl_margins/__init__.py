"""trl-margins: margin-aware preference optimization for Hugging Face TRL (MMPO, gamma-PO and the margin family).

The trainers replace TRL's by changing one import; `trl_margins.losses` holds the formulas.
"""

from importlib.metadata import version

# First: it checks the installed TRL release before anything imports TRL
from . import _compat  # noqa: F401, I001
from .pairs.fit_gamma import fit_gamma  # noqa: E402
from .trainers import (  # noqa: E402
    GammaPOConfig,
    GammaPOTrainer,
    MMPOConfig,
    MMPOKTOConfig,
    MMPOKTOTrainer,
    MMPORewardConfig,
    MMPORewardTrainer,
    MMPOTrainer,
)

__version__ = version("trl-margins")

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
