"""rmt-scale: recurrent memory for Hugging Face decoder LLMs, fine-tuned at scale.

The public API; everything else is reached through its subpackage (see docs/architecture.md).
"""

from rmt_scale.config import RMTConfig
from rmt_scale.errors import ConfigError, RMTScaleError, UnsupportedModelError
from rmt_scale.model.recurrent import RecurrentMemoryModel, RecurrentMemoryOutput

__all__ = [
    "ConfigError",
    "RMTConfig",
    "RMTScaleError",
    "RecurrentMemoryModel",
    "RecurrentMemoryOutput",
    "UnsupportedModelError",
    "__version__",
]
__version__ = "0.2.0"
