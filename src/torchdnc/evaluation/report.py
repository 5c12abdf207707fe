"""``torchdnc eval``: the task metric on fresh data, at and beyond training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchdnc.evaluation.babi import evaluate_per_task
from torchdnc.evaluation.graphs import evaluate_graph_run
from torchdnc.evaluation.graphs import to_markdown as graph_markdown
from torchdnc.tasks import BabiTask, evaluate
from torchdnc.tasks.graphs import GraphTask, london_available
from torchdnc.training import checkpoint
from torchdnc.training.runs import eval_generator, load_trained, resolve_device

EVAL_SEED_OFFSET = 7_919  # keeps `eval` data apart from the curriculum's eval batches


def evaluate_run(run_dir: Path | str, batches: int = 10, batch_size: int = 32,
                 memory_size: int | None = None, seed: int = 0,
                 device: str = "cpu", which: str = "best") -> dict[str, Any]:
    """Evaluate a run at its training difficulty and at each harder setting.

    A DNC is evaluated with its training memory size N and with
    ``memory_size`` slots (default 4 N): the weights do not depend on N.
    ``which`` checkpoint: "best" (``best.safetensors`` where the run kept one) or "last".
    """
    config, task, model, payload = load_trained(run_dir, device, which)
    torch_device = resolve_device(device)
    if isinstance(task, BabiTask):
        report = evaluate_per_task(model, task, "test", batch_size, model_name=config.model)
        return {"run": str(run_dir), "task": config.task, "model": config.model,
                "step": payload["step"], "checkpoint": payload["loaded_from"], "per_task": report}
    levels = task.levels()
    settings = {f"training ({_describe(levels[-1])})": levels[-1]}
    settings.update({f"{name} ({_describe(p)})": p for name, p in task.generalisation().items()})
    models: list[tuple[int | None, Any]] = [(None, model)]
    if hasattr(model, "with_memory_size"):  # DNC and SparseDNC: weights independent of N
        trained_n = model.config.memory_size
        larger = 4 * trained_n if memory_size is None else memory_size
        if isinstance(larger, bool) or not isinstance(larger, int) or larger < 1:
            raise ValueError(f"memory_size: expected an integer >= 1 (None: 4 N), got {memory_size!r}")
        models = [(trained_n, model)]
        if larger != trained_n:
            models.append((larger, model.with_memory_size(larger)))
    rows = []
    for index, (name, params) in enumerate(settings.items()):
        for n, candidate in models:
            generator = eval_generator(seed + EVAL_SEED_OFFSET, index)
            metrics = evaluate(candidate, task, params, batches, batch_size, generator, torch_device)
            rows.append({"setting": name, "memory_size": n, **metrics})
    report = {"run": str(run_dir), "task": config.task, "model": config.model,
            "step": payload["step"], "checkpoint": payload["loaded_from"],
            "level": payload["progress"]["level"] + 1,
            "levels": len(levels), "primary_metric": task.primary_metric,
            "report_metrics": list(task.report_metrics),
            "sequences_per_row": batches * batch_size, "rows": rows}
    if isinstance(task, GraphTask):  # the paper's test per query length (free-running paths)
        report["graph_test"] = evaluate_graph_run(run_dir, device=device, seed=seed, which=which)
        if config.task in ("traversal", "shortest_path") and london_available(task.london_dir):
            # the paper-sized zone-1 map and the whole network, whichever is not the default
            other = "full" if task.test_map == "zone1" else "zone1"
            report["graph_test_other_map"] = evaluate_graph_run(run_dir, device=device, seed=seed,
                                                                london_map=other, which=which)
    return report


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def to_markdown(report: dict[str, Any]) -> str:
    if "per_task" in report:
        per_task = report["per_task"]
        text = per_task.to_markdown() if hasattr(per_task, "to_markdown") else ""
        return render_per_task(report) + text
    metric = report["primary_metric"]
    extra = [k for k in report.get("report_metrics", ()) if k in report["rows"][0]]
    header = ["setting", "N", metric, *extra, "loss"]
    lines = [f"Evaluation of `{report['run']}` ({report['task']}, {report['model']}, "
             f"{_checkpoint_words(report)}, curriculum level {report['level']}/{report['levels']}); "
             f"{report['sequences_per_row']} fresh sequences per row.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["rows"]:
        n = "-" if row["memory_size"] is None else str(row["memory_size"])
        cells = [row["setting"], n, f"{row[metric]:.3f}",
                 *[f"{row[k]:.2%}" for k in extra], f"{row['loss']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if "graph_test" in report:
        text += "\n" + graph_markdown(report["graph_test"])
        if "graph_test_other_map" in report:
            text += "\n" + graph_markdown(report["graph_test_other_map"])
    return text


def write_report(run_dir: Path | str, report: dict[str, Any]) -> list[Path]:
    """eval.json and eval.md (plus eval.csv for per-task reports) in the run."""
    run_dir = Path(run_dir)
    json_path, md_path = run_dir / "eval.json", run_dir / "eval.md"
    written = [json_path, md_path]
    md_path.write_text(to_markdown(report))
    if "per_task" in report:
        per_task = report["per_task"]
        (run_dir / "eval.csv").write_text(per_task.to_csv())
        written.append(run_dir / "eval.csv")
        report = {**report, "per_task": per_task.to_dict()}
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    return written


def _checkpoint_words(report: dict[str, Any]) -> str:
    best = report.get("checkpoint") in (checkpoint.BEST, checkpoint.LEGACY[checkpoint.BEST])
    return f"step {report['step']}" + (", the best validation result" if best else "")


def render_per_task(report: dict[str, Any]) -> str:
    return (f"Evaluation of `{report['run']}` ({report['task']}, {report['model']}, "
            f"{_checkpoint_words(report)}).\n\n")
