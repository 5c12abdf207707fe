"""Every figure of a trained run (what ``torchdnc plot RUN_DIR`` writes)."""

from __future__ import annotations

from pathlib import Path

from torchdnc.dnc import DNC
from torchdnc.tasks.babi import BabiTask, parse_task_selection
from torchdnc.tasks.graphs import london_available
from torchdnc.tasks.shrdlu import ShrdluTask
from torchdnc.tasks.traversal import TraversalTask
from torchdnc.training.runs import load_trained, read_metrics
from torchdnc.viz.babi import plot_story
from torchdnc.viz.graphs import plot_underground_traversal
from torchdnc.viz.memory import plot_memory, plot_training
from torchdnc.viz.shrdlu import plot_episode


def plot_run(run_dir: Path | str, seed: int = 0, out: Path | str | None = None) -> list[Path]:
    """All figures of a run into ``run_dir/plots`` (or ``out``): the training
    curves and, for a DNC, one example's memory (bAbI: a story; traversal: an
    Underground query in the manner of Figure 3)."""
    run_dir = Path(run_dir)
    config, task, model, payload = load_trained(run_dir)
    out = Path(out) if out else run_dir / "plots"
    written = []
    records = read_metrics(run_dir)
    if records:  # a shipped model has no training records
        written.append(plot_training(records, task.primary_metric, out / "training.png",
                                     f"{config.task} ({config.model}, preset {config.preset})"))
    if not isinstance(model, DNC):
        return written
    if isinstance(task, TraversalTask) and london_available(task.london_dir):
        written.append(plot_underground_traversal(
            model, task, out / "underground.png", steps=task.test_steps, seed=seed,
            title=f"traversal, step {payload['step']}"))
    if isinstance(task, ShrdluTask):
        written.append(plot_episode(model, task, out / "episode.png", seed,
                                    **task.levels()[payload["progress"]["level"]]))
    elif isinstance(task, BabiTask):
        first = parse_task_selection(task.tasks)[0]
        written.append(plot_story(model, task, out / "story.png", babi_task=first, number=seed,
                                  title=f"bAbI task {first}, step {payload['step']}"))
    else:
        written.append(plot_memory(model, task, task.levels()[-1], out / "memory.png", seed,
                                   f"{config.task}, step {payload['step']}: one example"))
    return written
