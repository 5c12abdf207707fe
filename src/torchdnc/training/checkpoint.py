"""Checkpoints you can trust: atomic writes, safe loading, clear errors.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts,
written with `torch.save` to a temporary file that is then renamed over the
old one, and read back with ``torch.load(weights_only=True)``, which never
unpickles arbitrary objects (a file that would run code is refused as such).

There is no moment without a ``checkpoint.pt``: the previous version is first
linked (or copied) to ``checkpoint.prev.pt``, then the new file replaces
``checkpoint.pt`` in one atomic rename. Temporary files that a killed save
left behind are removed when a run starts or resumes (under its lock).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
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
        # Keep the old one as PREVIOUS without ever removing checkpoint.pt: a
        # second name for the same file (or a copy), renamed into place.
        previous = run_dir / f".{PREVIOUS}.{os.getpid()}.tmp"
        try:
            os.link(path, previous)
        except OSError:  # no hard links on this file system
            shutil.copy2(path, previous)
        os.replace(previous, run_dir / PREVIOUS)
    os.replace(temporary, path)
    _sync_directory(run_dir)
    return path


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of saves that were killed half-way (call it
    only while holding the run's lock: no save is in progress then)."""
    removed = []
    for stale in Path(run_dir).glob(".*.tmp"):
        try:
            stale.unlink()
            removed.append(stale)
        except OSError:
            pass
    return removed


def _sync_directory(folder: Path) -> None:
    """Make the renames durable (where the platform allows opening a folder)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


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
    except pickle.UnpicklingError as error:  # weights_only refused a global: it would run code
        first = str(error).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path} refused: it holds Python objects that would run code when loaded "
            f"({_refused_global(str(error)) or (first[0] if first else 'unpickling refused')}); "
            "torchdnc checkpoints hold only tensors and plain values, so this file was not written "
            "by torchdnc. Do not load it with weights_only=False unless you trust its source"
        ) from None
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


def _refused_global(message: str) -> str:
    """The name torch's weights_only unpickler refused, from its message."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return f"it names {found.group(1)}" if found else ""
