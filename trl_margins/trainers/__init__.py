"""The margin trainers: a config and a trainer module per method, in the shape of TRL's own tree.

- `dpo_config` / `dpo_trainer`: `MMPOConfig` / `MMPOTrainer`, a `trl.DPOTrainer` with the knobs of the one loss;
- `gamma_po_config` / `gamma_po_trainer`: `GammaPOConfig` / `GammaPOTrainer`, with gamma-PO's dynamic target margins;
- `reward_config` / `reward_trainer`: `MMPORewardConfig` / `MMPORewardTrainer`, a `trl.RewardTrainer` with MMPO;
- `kto_config` / `kto_trainer`: `MMPOKTOConfig` / `MMPOKTOTrainer`, a `trl.KTOTrainer` with MMPO's weights;
- `_base_config` / `_base`: what the configs and the trainers share.

The math is `trl_margins.losses`, the run state `trl_margins.state`, and TRL's private hooks `trl_margins._compat`.
Imports `data`, `evaluation`, `losses`, `state` and `_compat`: nothing of the command line or the data commands.
"""

from .dpo_config import MMPOConfig
from .dpo_trainer import MMPOTrainer
from .gamma_po_config import GammaPOConfig
from .gamma_po_trainer import GammaPOTrainer
from .kto_config import MMPOKTOConfig
from .kto_trainer import MMPOKTOTrainer
from .reward_config import MMPORewardConfig
from .reward_trainer import MMPORewardTrainer

__all__ = [
    "GammaPOConfig",
    "GammaPOTrainer",
    "MMPOConfig",
    "MMPOKTOConfig",
    "MMPOKTOTrainer",
    "MMPORewardConfig",
    "MMPORewardTrainer",
    "MMPOTrainer",
]
