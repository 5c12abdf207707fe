"""Tasks: one module per task family, all behind `torchdnc.tasks.base.Task`."""

from __future__ import annotations

from typing import Any

from torchdnc.tasks.babi import BabiTask
from torchdnc.tasks.base import Batch, BitTask, Task, average_metrics
from torchdnc.tasks.copy import CopyTask, RepeatCopyTask
from torchdnc.tasks.family import InferenceTask
from torchdnc.tasks.paths import ShortestPathTask, TraversalTask
from torchdnc.tasks.recall import AssociativeRecallTask, PrioritySortTask

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (CopyTask, RepeatCopyTask, AssociativeRecallTask, PrioritySortTask,
                              BabiTask, TraversalTask, ShortestPathTask, InferenceTask)
}


def make_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """The task called ``name`` with ``options`` (its dataclass fields)."""
    import dataclasses

    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; valid tasks: {sorted(TASKS)}")
    cls = TASKS[name]
    options = dict(options or {})
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"task {name!r}: unknown option(s) {unknown}; valid options: {sorted(fields)}")
    return cls(**options)


__all__ = ["TASKS", "Batch", "BitTask", "Task", "average_metrics", "make_task", "CopyTask",
           "RepeatCopyTask", "AssociativeRecallTask", "PrioritySortTask", "BabiTask", "TraversalTask",
           "ShortestPathTask", "InferenceTask"]
