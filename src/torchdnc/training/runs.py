"""Run directories: creating and locking them, their config and metrics files,
the device a run uses, building its model and optimizer, and `load_trained`,
which rebuilds a trained model from its stored config (eval and plot use it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchdnc.baselines import LSTMBaseline, lstm_hidden_for_parameters
from torchdnc.dnc import DNC
from torchdnc.recurrent import PRETRAINED_WEIGHTS, load_pretrained, read_pretrained
from torchdnc.sparse import SparseDNC, SparseDNCConfig
from torchdnc.tasks import Task
from torchdnc.training import checkpoint
from torchdnc.training.config import TrainConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"


class RunError(RuntimeError):
    """A run directory cannot be used as asked (exists, missing, mismatched)."""


class TrainingDiverged(RunError):
    """The loss or the gradients became NaN or infinite; the run stopped."""


def build_model(config: TrainConfig, task: Task) -> nn.Module:
    dnc_config = config.dnc_config(task)
    if config.model == "dnc":
        return DNC(dnc_config)
    if config.model == "sparse":
        return SparseDNC(SparseDNCConfig.from_dense(dnc_config, **config.sparse))
    hidden = config.lstm_hidden_size or lstm_hidden_for_parameters(
        task.input_size, task.output_size, sum(p.numel() for p in DNC(dnc_config).parameters()))
    return LSTMBaseline(task.input_size, task.output_size, hidden, clip=dnc_config.clip)


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr,
                                betas=(config.momentum, 0.999), eps=max(config.optimizer_eps, 1e-8))
    return torch.optim.RMSprop(model.parameters(), lr=config.lr, alpha=config.rmsprop_alpha,
                               eps=config.optimizer_eps, momentum=config.momentum)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device: {name!r} requested but CUDA is not available here")
    return torch.device(name)


def eval_generator(seed: int, step: int) -> torch.Generator:
    """Fresh held-out data for an evaluation, independent of the training stream."""
    return torch.Generator().manual_seed(1_000_003 * (seed + 1) + step)


def prepare_run_dir(run_dir: Path, force: bool) -> None:
    """Create ``run_dir``; an existing run is replaced only with ``force``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} is a file, not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise RunError(f"run directory {run_dir} already exists; pass --force to overwrite it "
                           f"or --resume {run_dir} to continue it")
        if not (run_dir / CONFIG_FILE).exists():
            raise RunError(f"run directory {run_dir} is not empty and holds no {CONFIG_FILE}: "
                           "refusing to delete it even with --force")
        with RunLock(run_dir):  # not while another process trains in it
            pass
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create run directory {run_dir}: {error.strerror or error}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunError(f"run directory {run_dir} is not writable")


class RunLock:
    """An exclusive lock on a run directory for as long as a process trains in it,
    so that two ``--resume`` of one run cannot both write to it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.handle = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        try:
            self.handle = open(self.path, "a+")
        except OSError as error:
            raise RunError(f"cannot write in run directory {self.path.parent}: "
                           f"{error.strerror or error}") from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            self.handle = None
            raise RunError(f"run directory {self.path.parent} is in use by {holder}; wait for it "
                           "to finish (or stop it) before training in it") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"torchdnc process {os.getpid()}\n")
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.close()  # releases the lock
            self.handle = None


def load_run_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if not path.exists():
        raise RunError(f"{path} does not exist: {run_dir} is not a torchdnc run directory")
    return TrainConfig.from_dict(json.loads(path.read_text()))


def read_metrics(run_dir: Path | str) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_trained(run_dir: Path | str, device: str = "cpu", which: str = "best"):
    """(config, task, model, checkpoint) of a run, the model rebuilt from its stored config.

    ``which``: "best" loads ``best.safetensors`` (the best validation result, written with
    ``keep_best``) where the run has one and the last checkpoint otherwise;
    "last" always loads the last checkpoint. ``run_dir`` may also be a model
    that `export_pretrained` wrote (a `save_pretrained` folder with its
    training config), such as the shipped ones in `torchdnc.zoo`.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if (run_dir / PRETRAINED_WEIGHTS).is_file():
        description, _ = read_pretrained(run_dir)
        if "training" not in description:
            raise RunError(f"{run_dir}: a saved model without the training config that made it "
                           "(export_pretrained writes one): no task to evaluate it on")
        config = TrainConfig.from_dict(description["training"])
        model = load_pretrained(run_dir, resolve_device(device))
        trained = description.get("trained", {})
        payload = {"step": trained.get("step", 0), "loaded_from": PRETRAINED_WEIGHTS,
                   "progress": {"level": trained.get("level", len(config.make_task().levels()) - 1)}}
        return config, config.make_task(), model, payload
    if which not in ("best", "last"):
        raise ValueError(f"which: expected 'best' or 'last', got {which!r}")
    best = checkpoint.find(run_dir, checkpoint.BEST)
    path = best if which == "best" and best.exists() else checkpoint.find(run_dir)
    payload = checkpoint.load(path)
    payload["loaded_from"] = path.name
    config = TrainConfig.from_dict(payload["config"])
    task = config.make_task()
    model = build_model(config, task)
    model.load_state_dict(payload["model"])
    model.to(resolve_device(device)).eval()
    return config, task, model, payload


def export_pretrained(run_dir: Path | str, out: Path | str, which: str = "best") -> Path:
    """Write a run's model as a `save_pretrained` folder with the training
    config that made it (what `torchdnc.zoo` ships and ``--pretrained`` reads)."""
    config, _, model, payload = load_trained(run_dir, which=which)
    return model.save_pretrained(out, training=config.to_dict(), trained={
        "step": payload["step"], "level": payload["progress"]["level"],
        "checkpoint": payload["loaded_from"]})
