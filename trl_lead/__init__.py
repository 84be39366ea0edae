"""trl-lead: LEAD data selection (Lin et al., arXiv 2505.07437) as a drop-in for TRL's SFTTrainer.

`LEADConfig` and `LEADSFTTrainer` are imported on first use, so the numpy modules (`trl_lead.policies`,
`trl_lead.settings`, `trl_lead.selection`) can be used by the Gymnasium environments without importing torch or TRL.
"""

from typing import TYPE_CHECKING

__all__ = ["LEADConfig", "LEADSFTTrainer", "LEADState", "RoundSelector", "SelectionSettings"]
__version__ = "0.1.0"

_LAZY = {
    "LEADConfig": "trl_lead.config",
    "LEADSFTTrainer": "trl_lead.trainer",
    "LEADState": "trl_lead.selection",
    "RoundSelector": "trl_lead.selection",
    "SelectionSettings": "trl_lead.settings",
}

if TYPE_CHECKING:
    from .config import LEADConfig
    from .selection import LEADState, RoundSelector
    from .settings import SelectionSettings
    from .trainer import LEADSFTTrainer


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_lead' has no attribute {name!r}")
