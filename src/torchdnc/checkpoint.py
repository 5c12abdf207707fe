"""Checkpoints you can trust: atomic writes, safe loading, clear errors.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts,
written with `torch.save` to a temporary file that is then renamed over the
old one (the old one is kept as ``checkpoint.prev.pt``), and read back with
``torch.load(weights_only=True)``, which never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
BEST = "best.pt"  # the weights with the best validation result (``keep_best``)
FORMAT = 1
REQUIRED = ("format", "model", "optimizer", "step", "config")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted or of the wrong kind."""


def save(run_dir: Path, payload: dict[str, Any], name: str = CHECKPOINT) -> Path:
    """Write ``payload`` atomically as ``run_dir/name`` (the training checkpoint,
    whose previous version is kept, by default; or `BEST`)."""
    run_dir = Path(run_dir)
    path = run_dir / name
    temporary = run_dir / f".{name}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        torch.save({"format": FORMAT, **payload}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if path.exists() and name == CHECKPOINT:
        os.replace(path, run_dir / PREVIOUS)
    os.replace(temporary, path)
    return path


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint, refusing anything that is not a torchdnc checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        previous = path.with_name(PREVIOUS)
        hint = f"; the previous checkpoint {previous} exists" if previous.exists() else ""
        raise CheckpointError(f"checkpoint {path} does not exist{hint}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, bad pickle, disallowed global, ...
        previous = path.with_name(PREVIOUS)
        hint = (f"; the previous checkpoint {previous} is kept: move it to {path.name} to resume "
                "from it") if previous.exists() and previous != path else ""
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted and cannot be read "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}){hint}"
        ) from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED):
        raise CheckpointError(f"checkpoint {path} is not a torchdnc checkpoint (keys missing)")
    if payload["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {payload['format']}, expected {FORMAT}")
    return payload
