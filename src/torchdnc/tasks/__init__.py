"""Tasks: one module per task, all behind `torchdnc.tasks.base.Task`."""

from __future__ import annotations

from typing import Any

import dataclasses

from torchdnc.tasks.associative_recall import AssociativeRecallTask
from torchdnc.tasks.babi import BabiTask
from torchdnc.tasks.base import Batch, BitTask, Task, average_metrics, evaluate
from torchdnc.tasks.copy import CopyTask
from torchdnc.tasks.inference import InferenceTask
from torchdnc.tasks.priority_sort import PrioritySortTask
from torchdnc.tasks.repeat_copy import RepeatCopyTask
from torchdnc.tasks.shortest_path import ShortestPathTask
from torchdnc.tasks.shrdlu import ShrdluTask
from torchdnc.tasks.traversal import TraversalTask

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (CopyTask, RepeatCopyTask, AssociativeRecallTask, PrioritySortTask,
                              BabiTask, TraversalTask, ShortestPathTask, InferenceTask, ShrdluTask)
}


def make_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """The task called ``name`` with ``options`` (its dataclass fields)."""
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; valid tasks: {sorted(TASKS)}")
    cls = TASKS[name]
    options = dict(options or {})
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"task {name!r}: unknown option(s) {unknown}; valid options: {sorted(fields)}")
    return cls(**options)


__all__ = ["TASKS", "Batch", "BitTask", "Task", "average_metrics", "evaluate", "make_task", "CopyTask",
           "RepeatCopyTask", "AssociativeRecallTask", "PrioritySortTask", "BabiTask", "TraversalTask",
           "ShortestPathTask", "InferenceTask", "ShrdluTask"]
