"""What the study's parts share: training runs through the one training loop
(several at once, one thread each), evaluating a trained model on fresh data,
mean and spread over seeds, and writing results as JSON and CSV."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchdnc.tasks import Task, average_metrics
from torchdnc.training import RunError, checkpoint, load_trained, read_metrics, resolve_config, train


@dataclass
class Run:
    """One training run of the study: a name, its task and preset, overrides."""

    name: str
    task: str
    preset: str = "default"
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self):
        return resolve_config(self.task, self.preset, {**self.overrides, "threads": 1,
                                                       "progress": False})


def _train_one(args: tuple[Run, str]) -> str:
    run, folder = args
    path = Path(folder) / run.name
    done = [r for r in read_metrics(path) if r["kind"] == "end" and not r.get("interrupted")]
    if done:  # already trained runs are kept (a study can be resumed)
        return str(path)
    config = run.config()
    result = None
    if (path / checkpoint.CHECKPOINT).exists():  # an interrupted run goes on where it stopped
        try:
            result = train(config, path, resume=True)
        except RunError:  # written by other settings: start again
            pass
    if result is None:
        result = train(config, path, force=True)
    if result.get("interrupted"):  # a signal stops the study, not just this run
        raise RunError(f"study stopped by {result['interrupted']} in {path} "
                         "(its checkpoint is kept; run the part again to go on)")
    return str(path)


def train_all(runs: list[Run], folder: Path, jobs: int = 2) -> dict[str, Path]:
    """Train ``runs`` into ``folder/NAME`` (``jobs`` at a time, one thread each)."""
    folder.mkdir(parents=True, exist_ok=True)
    work = [(run, str(folder)) for run in runs]
    if jobs <= 1 or len(work) == 1:
        paths = [_train_one(item) for item in work]
    else:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            paths = pool.map(_train_one, work, chunksize=1)
    return {run.name: Path(p) for run, p in zip(runs, paths)}


def load(path: Path):
    """(config, task, model) of a trained run, the model in eval mode."""
    config, task, model, _ = load_trained(path, which="last")
    return config, task, model


def score(model: nn.Module, task: Task, params: dict[str, Any], batches: int, batch_size: int,
          seed: int = 0) -> dict[str, float]:
    """The task's metrics on fresh data (per-sequence means), plus ``perfect``:
    the share of sequences with every scored output right (bit tasks)."""
    generator = torch.Generator().manual_seed(10_007 + seed)
    totals: dict[str, float] = {}
    perfect = 0.0
    training = model.training
    model.eval()
    with torch.no_grad():
        for batch in task.evaluation_batches(model, batch_size, generator, batches, **params):
            outputs = model(batch.inputs, mask=batch.mask)[0]
            for key, value in task.metrics(outputs, batch).items():
                totals[key] = totals.get(key, 0.0) + value
            wrong = ((outputs > 0).to(batch.targets.dtype) != batch.targets)
            wrong = (wrong * batch.loss_mask.unsqueeze(-1)).sum(dim=(1, 2))
            perfect += float((wrong == 0).sum())
    model.train(training)
    metrics = task.finalize_metrics(average_metrics(totals))
    metrics["perfect"] = perfect / max(totals.get("sequences", 1), 1)
    return metrics


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, standard deviation) over seeds (0 spread for a single value)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def write_rows(folder: Path, name: str, rows: list[dict[str, Any]],
               meta: dict[str, Any] | None = None) -> list[Path]:
    """``rows`` as ``name.csv`` and, with ``meta``, ``name.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.csv", folder / f"{name}.json"]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(paths[0], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    paths[1].write_text(json.dumps({**(meta or {}), "rows": rows}, indent=2) + "\n")
    return paths


def summary_table(rows: list[dict[str, Any]], by: tuple[str, ...], values: tuple[str, ...],
                  title: str) -> str:
    """Markdown: one line per distinct ``by`` value (in order of first appearance),
    each of ``values`` as mean ± s.d. over the rows that share it (seeds), and
    how many rows that is."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in by), []).append(row)
    lines = [f"### {title}", "", "| " + " | ".join([*by, *values, "runs"]) + " |",
             "|" + "---|" * (len(by) + len(values) + 1)]
    for key, chosen in groups.items():
        cells = ["" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in key]
        for value in values:
            mean, sd = spread([r[value] for r in chosen if r.get(value) is not None])
            cells.append(f"{mean:.3f} ± {sd:.3f}")
        lines.append("| " + " | ".join([*cells, str(len(chosen))]) + " |")
    return "\n".join(lines) + "\n"


def write_summary(folder: Path, command: str, tables: list[str]) -> Path:
    """``summary.md``: the command that made the numbers, then ``tables``."""
    path = folder / "summary.md"
    path.write_text(f"Made by `{command}` (mean ± s.d. over seeds).\n\n" + "\n".join(tables))
    return path


def iterations_of(path: Path) -> int:
    ends = [r for r in read_metrics(path) if r["kind"] == "end"]
    return ends[-1]["step"] if ends else 0
