"""torchdnc: the Differentiable Neural Computer (Graves et al. 2016) in PyTorch."""

from torchdnc.dnc import DNC, DNCConfig, DNCState, DNCTrace
from torchdnc.memory import Interface, MemoryAccess, MemoryState, memory_step, parse_interface

__version__ = "0.1.0"

__all__ = [
    "DNC",
    "DNCConfig",
    "DNCState",
    "DNCTrace",
    "Interface",
    "MemoryAccess",
    "MemoryState",
    "memory_step",
    "parse_interface",
    "__version__",
]
