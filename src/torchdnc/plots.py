"""Memory figures in the manner of the paper's Figure 1 / Extended Data Figure 1,
and training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from torchdnc.dnc import DNC


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path | str, title: str = "", dpi: int = 110) -> Path:
    """Title, write and close a matplotlib figure; returns the path."""
    plt = _pyplot()
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def plot_memory(model: DNC, task, params: dict[str, Any], path: Path | str, seed: int = 0,
                title: str = "") -> Path:
    """Run one example with the memory trace and draw what the memory did.

    Panels: inputs; targets and outputs on the scored steps; write weightings
    and each read head's weightings as slots x time; usage; free, allocation
    and write gates; read modes of read head 0.
    """
    plt = _pyplot()
    generator = torch.Generator().manual_seed(seed)
    batch = task.sample(1, generator, **params)
    with torch.no_grad():
        outputs, _, trace = model(batch.inputs, mask=batch.mask, return_trace=True)
    scored = batch.loss_mask[0].bool()
    inputs = batch.inputs[0].T
    targets = batch.targets[0].T
    predictions = (task.output_probabilities(outputs)[0] * scored.unsqueeze(-1)).T
    reads = trace.read_weights[0]  # [T, R, N]
    num_reads = min(reads.shape[1], 4)
    rows = [("inputs", inputs, "input"), ("targets", targets, "bit"),
            ("outputs (scored steps)", predictions, "bit"),
            ("write weighting (sum over write heads)", trace.write_weights[0].sum(1).T, "slot")]
    rows += [(f"read weighting, head {r}", reads[:, r].T, "slot") for r in range(num_reads)]
    rows += [("usage", trace.usage[0].T, "slot")]
    figure, axes = plt.subplots(len(rows) + 2, 1, figsize=(10, 1.6 * (len(rows) + 2)),
                                sharex=True, constrained_layout=True)
    steps = inputs.shape[1]
    for axis, (label, image, ylabel) in zip(axes, rows):
        axis.imshow(image.numpy(), aspect="auto", cmap="gray_r", interpolation="nearest",
                    vmin=0, vmax=max(1.0, float(image.max())) if label == "inputs" else 1.0,
                    extent=(-0.5, steps - 0.5, image.shape[0] - 0.5, -0.5))
        axis.set_title(label, fontsize=9, loc="left")
        axis.set_ylabel(ylabel, fontsize=8)
    gates = axes[len(rows)]
    time = range(steps)
    gates.plot(time, trace.write_gates[0, :, 0].numpy(), label="write gate", color="tab:red")
    gates.plot(time, trace.allocation_gates[0, :, 0].numpy(), label="allocation gate",
               color="tab:green")
    for r in range(num_reads):
        gates.plot(time, trace.free_gates[0, :, r].numpy(), label=f"free gate {r}",
                   color="tab:blue", alpha=1.0 - 0.2 * r, linestyle="--")
    gates.set_ylim(-0.05, 1.05)
    gates.set_title("gates (write head 0)", fontsize=9, loc="left")
    gates.legend(fontsize=7, ncol=3, loc="upper right")
    modes = trace.read_modes[0, :, 0].numpy()  # [T, 1 + 2K]
    k = (modes.shape[1] - 1) // 2
    mode_axis = axes[len(rows) + 1]
    mode_axis.stackplot(time, modes[:, :k].sum(1), modes[:, k], modes[:, k + 1 :].sum(1),
                        labels=["backward", "content", "forward"],
                        colors=["tab:purple", "tab:orange", "tab:cyan"])
    mode_axis.set_ylim(0, 1)
    mode_axis.set_title("read modes, head 0", fontsize=9, loc="left")
    mode_axis.legend(fontsize=7, ncol=3, loc="upper right")
    mode_axis.set_xlabel("time step")
    return save_figure(figure, path, title)


def plot_training(records: list[dict[str, Any]], metric: str, path: Path | str,
                  title: str = "") -> Path:
    """Training loss, evaluation metric and curriculum level against step."""
    plt = _pyplot()
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    figure, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True, constrained_layout=True)
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8)
    axes[0].set_ylabel("training loss")
    axes[0].set_yscale("log")
    axes[1].plot([r["step"] for r in evals], [max(r[metric], 1e-3) for r in evals], marker=".")
    axes[1].set_ylabel(f"eval {metric}")
    axes[1].set_yscale("log")
    axes[2].step([r["step"] for r in train], [r["level"] + 1 for r in train], where="post")
    axes[2].set_ylabel("curriculum level")
    axes[2].set_xlabel("iteration")
    return save_figure(figure, path, title)


def plot_run(run_dir: Path | str, seed: int = 0, out: Path | str | None = None) -> list[Path]:
    """All figures of a run into ``run_dir/plots`` (or ``out``)."""
    from torchdnc.train import load_trained, read_metrics

    run_dir = Path(run_dir)
    config, task, model, payload = load_trained(run_dir)
    out = Path(out) if out else run_dir / "plots"
    written = [plot_training(read_metrics(run_dir), task.primary_metric, out / "training.png",
                             f"{config.task} ({config.model}, preset {config.preset})")]
    from torchdnc.tasks.babi import BabiTask

    from torchdnc.tasks.paths import TraversalTask

    if isinstance(model, DNC) and isinstance(task, TraversalTask):
        from torchdnc.tasks.paths import london_available
        from torchdnc.graph_plots import plot_underground_traversal

        if london_available(task.london_dir):
            written.append(plot_underground_traversal(
                model, task, out / "underground.png", steps=task.test_steps, seed=seed,
                title=f"traversal, step {payload['step']}"))
    if isinstance(model, DNC) and isinstance(task, BabiTask):
        from torchdnc.tasks.babi import parse_task_selection
        from torchdnc.tasks.babi_report import plot_story

        first = parse_task_selection(task.tasks)[0]
        written.append(plot_story(model, task, out / "story.png", babi_task=first, number=seed,
                                  title=f"bAbI task {first}, step {payload['step']}"))
    elif isinstance(model, DNC):
        params = task.levels()[-1]
        written.append(plot_memory(model, task, params, out / "memory.png", seed,
                                   f"{config.task}, step {payload['step']}: one example"))
    return written
