"""Checkpoints you can trust: no pickle, atomic writes, no gap, clear errors.

A checkpoint is one safetensors file (`torchdnc.tensorfile`): the model's and
the optimizer's tensors and the random-number generators' states as tensors,
everything else (step, config, curriculum progress, the optimizer's settings)
as JSON in the file's metadata. Reading one runs no code, whatever the file
holds. Checkpoints of torchdnc 0.1 (``checkpoint.pt``, written with
`torch.save`) are still read, with ``torch.load(weights_only=True)``, which
refuses a file that would run code.

There is no moment without a ``checkpoint.safetensors``: the file is written to
a temporary name and flushed; the previous version is first given a second
name (a hard link, or a copy), ``checkpoint.prev.safetensors``, then the new
file replaces ``checkpoint.safetensors`` in one atomic rename. Temporary files
that a killed save left behind are removed when a run starts or resumes.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from torchdnc import tensorfile

CHECKPOINT = "checkpoint.safetensors"
PREVIOUS = "checkpoint.prev.safetensors"
BEST = "best.safetensors"  # the weights with the best validation result (``keep_best``)
LEGACY = {CHECKPOINT: "checkpoint.pt", PREVIOUS: "checkpoint.prev.pt", BEST: "best.pt"}
FORMAT = 2
REQUIRED = ("format", "model", "optimizer", "step", "config")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted or of the wrong kind."""


def save(run_dir: Path, payload: dict[str, Any], name: str = CHECKPOINT) -> Path:
    """Write ``payload`` atomically as ``run_dir/name`` (the training checkpoint,
    whose previous version is kept, by default; or `BEST`).

    ``payload``: ``model`` (a state dict), ``optimizer`` (its state dict),
    ``data_rng`` and ``torch_rng`` (byte tensors), and JSON-able values.
    """
    run_dir = Path(run_dir)
    path = run_dir / name
    temporary = run_dir / f".{name}.{os.getpid()}.tmp"
    tensors, metadata = _flatten({"format": FORMAT, **payload})
    tensorfile.save(temporary, tensors, {"torchdnc": json.dumps(metadata)})
    if path.exists() and name == CHECKPOINT:
        # Keep the old one as PREVIOUS without ever removing the checkpoint: a
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


def find(run_dir: Path | str, name: str = CHECKPOINT) -> Path:
    """``run_dir/name``, or the torchdnc 0.1 file of that kind where only it exists."""
    path = Path(run_dir) / name
    legacy = Path(run_dir) / LEGACY.get(name, name)
    return legacy if not path.exists() and legacy.exists() else path


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint, refusing anything that is not a torchdnc checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = find(path)
    if not path.exists():
        previous = find(path.parent, PREVIOUS)
        hint = f"; the previous checkpoint {previous} exists" if previous.exists() else ""
        raise CheckpointError(f"checkpoint {path} does not exist{hint}")
    if path.suffix == ".pt":
        payload = _load_legacy(path, map_location)
    else:
        try:
            tensors, metadata = tensorfile.load(path)
            info = json.loads(metadata["torchdnc"])
        except (tensorfile.TensorFileError, KeyError, ValueError, OSError) as error:
            raise CheckpointError(_damaged(path, error)) from None
        payload = _unflatten(tensors, info, map_location)
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED):
        raise CheckpointError(f"checkpoint {path} is not a torchdnc checkpoint (keys missing)")
    if payload["format"] not in (1, FORMAT):
        raise CheckpointError(f"checkpoint {path} has format {payload['format']}, expected {FORMAT}")
    return payload


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


# -- the file format ---------------------------------------------------------------------


def _flatten(payload: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors by name, and the JSON-able rest with {"tensor": name} where tensors were."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value, name: str):
        if isinstance(value, torch.Tensor):
            tensors[name] = value
            return {"tensor": name}
        if isinstance(value, dict):
            return {"dict": [[key, walk(item, f"{name}/{key}")] for key, item in value.items()]}
        if isinstance(value, (list, tuple)):
            return {"tuple" if isinstance(value, tuple) else "list":
                    [walk(item, f"{name}/{i}") for i, item in enumerate(value)]}
        if value is None or isinstance(value, (bool, int, float, str)):
            return {"value": value}
        raise TypeError(f"checkpoint: cannot store {name} ({type(value).__name__})")

    return tensors, walk(payload, "")


def _unflatten(tensors: dict[str, torch.Tensor], info, map_location) -> Any:
    def walk(node):
        (kind, value), = node.items()
        if kind == "tensor":
            return tensors[value].to(map_location)
        if kind == "dict":
            return {key: walk(item) for key, item in value}
        if kind == "list":
            return [walk(item) for item in value]
        if kind == "tuple":
            return tuple(walk(item) for item in value)
        return value

    return walk(info)


def _load_legacy(path: Path, map_location) -> Any:
    """A torchdnc 0.1 checkpoint (torch.save), read without running any code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refused a global: it would run code
        first = str(error).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path} refused: it holds Python objects that would run code when loaded "
            f"({_refused_global(str(error)) or (first[0] if first else 'unpickling refused')}); "
            "torchdnc checkpoints hold only tensors and plain values, so this file was not written "
            "by torchdnc. Do not load it with weights_only=False unless you trust its source"
        ) from None
    except Exception as error:  # truncated zip, bad pickle, ...
        raise CheckpointError(_damaged(path, error)) from None


def _damaged(path: Path, error: Exception) -> str:
    previous = find(path.parent, PREVIOUS)
    hint = (f"; the previous checkpoint {previous} is kept: move it to {path.name} to resume "
            "from it") if previous.exists() and previous != path else ""
    text = str(error).splitlines()[0] if str(error) else ""
    return (f"checkpoint {path} is truncated or corrupted and cannot be read "
            f"({type(error).__name__}: {text}){hint}")


def _refused_global(message: str) -> str:
    """The name torch's weights_only unpickler refused, from its message."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return f"it names {found.group(1)}" if found else ""


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
