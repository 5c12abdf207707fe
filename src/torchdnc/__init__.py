"""torchdnc: the Differentiable Neural Computer (Graves et al. 2016) in PyTorch."""

from torchdnc.dnc import DNC, DNCConfig, DNCState, DNCTrace
from torchdnc.memory import Interface, MemoryAccess, MemoryState, memory_step, parse_interface
from torchdnc.zoo import pretrained
from torchdnc.recurrent import load_pretrained
from torchdnc.version import __version__

__all__ = [
    "DNC",
    "DNCConfig",
    "DNCState",
    "DNCTrace",
    "Interface",
    "MemoryAccess",
    "MemoryState",
    "load_pretrained",
    "memory_step",
    "parse_interface",
    "pretrained",
    "__version__",
]
