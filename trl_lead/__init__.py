"""trl-lead: LEAD data selection (Lin et al., arXiv 2505.07437) as a drop-in for TRL's SFTTrainer."""

from .config import LEADConfig
from .selection import LEADState, RoundSelector, SelectionSettings
from .trainer import LEADSFTTrainer

__all__ = ["LEADConfig", "LEADSFTTrainer", "LEADState", "RoundSelector", "SelectionSettings"]
__version__ = "0.1.0"
