"""Pretrained models that come with torchdnc: trained by the repository's own
presets (benchmarks/experiments.py, "pretrained-*"), small enough to ship.

    model = torchdnc.pretrained("copy")          # a DNC, in eval mode
    torchdnc.zoo.available()                      # ['associative_recall', 'copy', 'repeat_copy']

Each is a `save_pretrained` folder here (``config.json`` with the model's
config and the training config that made it, ``model.safetensors``), so
``torchdnc eval --pretrained copy`` and ``torchdnc plot --pretrained copy``
work right after installation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from torchdnc.recurrent import PRETRAINED_CONFIG, load_pretrained

FOLDER = Path(__file__).parent


def available() -> list[str]:
    """The names of the shipped models."""
    return sorted(p.name for p in FOLDER.iterdir() if (p / PRETRAINED_CONFIG).is_file())


def path(name: str) -> Path:
    """The folder of the shipped model ``name``."""
    if name not in available():
        raise ValueError(f"pretrained: no model {name!r}; available: {', '.join(available())}")
    return FOLDER / name


def pretrained(name: str, device: torch.device | str = "cpu"):
    """The shipped model ``name`` (see `available`), in eval mode."""
    return load_pretrained(path(name), device)
