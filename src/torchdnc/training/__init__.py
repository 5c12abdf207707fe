"""Training: the configuration and its presets, the one loop, DDP, checkpoints
and run directories.

    from torchdnc.training import resolve_config, train, load_trained

    config = resolve_config("copy", preset="quick", overrides={"lr": "1e-3"})
    train(config, "runs/copy-quick")
    config, task, model, checkpoint = load_trained("runs/copy-quick")
"""

from torchdnc.training.checkpoint import CheckpointError
from torchdnc.training.config import TrainConfig, resolve_config
from torchdnc.training.loop import train
from torchdnc.training.runs import (RunError, RunLock, TrainingDiverged, load_trained,
                                    read_metrics, resolve_device)

__all__ = ["CheckpointError", "RunError", "RunLock", "TrainConfig", "TrainingDiverged",
           "load_trained", "read_metrics", "resolve_config", "resolve_device", "train"]
