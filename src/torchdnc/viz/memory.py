"""Memory figures in the manner of the paper's Figure 1 / Extended Data Figure 1,
and training curves; each returns a matplotlib Figure (``plot_*`` write it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from torchdnc.viz.style import pyplot, save_figure


def model_figure(model: nn.Module, x: Tensor, mask: Tensor | None = None, state=None,
                 targets: Tensor | None = None, title: str = "", example: int = 0):
    """Run ``model`` (a `DNC`) on ``x`` with its memory trace and draw what the
    memory did for batch element ``example`` (see `memory_figure`).

        figure = torchdnc.viz.model_figure(dnc, x)      # a matplotlib Figure

    ``targets`` (the same layout as the output) adds a targets panel.
    """
    with torch.no_grad():
        outputs, _, trace = model(x, state=state, mask=mask, return_trace=True)
    if not model.config.batch_first:
        x, outputs = x.transpose(0, 1), outputs.transpose(0, 1)
        targets = None if targets is None else targets.transpose(0, 1)
    steps = None if mask is None else (mask if model.config.batch_first else mask.T)[example].bool()
    return memory_figure(trace, inputs=x[example], outputs=outputs[example],
                         targets=None if targets is None else targets[example], steps=steps,
                         title=title, example=example)


def memory_figure(trace, inputs: Tensor | None = None, outputs: Tensor | None = None,
                  targets: Tensor | None = None, steps: Tensor | None = None, title: str = "",
                  example: int = 0, max_heads: int = 4):
    """The memory of one example in the manner of the paper's Figure 1.

    Panels (time along x): inputs, targets and outputs (each ``[T, features]``,
    optional); the write weighting (summed over write heads) and each read
    head's weighting as slots x time; usage; free, allocation and write gates;
    read modes of read head 0. ``trace`` is a `DNCTrace` (``[B, T, ...]``);
    ``example`` picks the batch element; ``steps`` (``[T]`` bool) blanks the
    outputs of unscored steps. Returns the matplotlib Figure.
    """
    plt = pyplot()
    trace = type(trace)(*(t.detach().float() for t in trace))  # a trace made with gradients
    rows = []
    for label, image, ylabel in (("inputs", inputs, "input"), ("targets", targets, "bit"),
                                 ("outputs" + (" (scored steps)" if steps is not None else ""),
                                  outputs, "bit")):
        if image is not None:
            image = image.detach().float().cpu()
            if steps is not None and label != "inputs":
                image = image * steps.cpu().unsqueeze(-1)
            rows.append((label, image.T, ylabel))
    reads = trace.read_weights[example].cpu()  # [T, R, N]
    num_reads = min(reads.shape[1], max_heads)
    rows.append(("write weighting (sum over write heads)", trace.write_weights[example].sum(1).cpu().T,
                 "slot"))
    rows += [(f"read weighting, head {r}", reads[:, r].T, "slot") for r in range(num_reads)]
    rows += [("usage", trace.usage[example].cpu().T, "slot")]
    figure, axes = plt.subplots(len(rows) + 2, 1, figsize=(10, 1.6 * (len(rows) + 2)),
                                sharex=True, constrained_layout=True)
    time_steps = reads.shape[0]
    for axis, (label, image, ylabel) in zip(axes, rows):
        axis.imshow(image.numpy(), aspect="auto", cmap="gray_r", interpolation="nearest",
                    vmin=0, vmax=max(1.0, float(image.max())) if label == "inputs" else 1.0,
                    extent=(-0.5, time_steps - 0.5, image.shape[0] - 0.5, -0.5))
        axis.set_title(label, fontsize=9, loc="left")
        axis.set_ylabel(ylabel, fontsize=8)
    gates = axes[len(rows)]
    time = range(time_steps)
    gates.plot(time, trace.write_gates[example, :, 0].cpu().numpy(), label="write gate",
               color="tab:red")
    gates.plot(time, trace.allocation_gates[example, :, 0].cpu().numpy(), label="allocation gate",
               color="tab:green")
    for r in range(num_reads):
        gates.plot(time, trace.free_gates[example, :, r].cpu().numpy(), label=f"free gate {r}",
                   color="tab:blue", alpha=1.0 - 0.2 * r, linestyle="--")
    gates.set_ylim(-0.05, 1.05)
    gates.set_title("gates (write head 0)", fontsize=9, loc="left")
    gates.legend(fontsize=7, ncol=3, loc="upper right")
    modes = trace.read_modes[example, :, 0].cpu().numpy()  # [T, 1 + 2K]
    k = (modes.shape[1] - 1) // 2
    mode_axis = axes[len(rows) + 1]
    mode_axis.stackplot(time, modes[:, :k].sum(1), modes[:, k], modes[:, k + 1 :].sum(1),
                        labels=["backward", "content", "forward"],
                        colors=["tab:purple", "tab:orange", "tab:cyan"])
    mode_axis.set_ylim(0, 1)
    mode_axis.set_title("read modes, head 0", fontsize=9, loc="left")
    mode_axis.legend(fontsize=7, ncol=3, loc="upper right")
    mode_axis.set_xlabel("time step")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def plot_memory(model: nn.Module, task, params: dict[str, Any], path: Path | str, seed: int = 0,
                title: str = "") -> Path:
    """Draw one example of ``task`` at ``params`` (`memory_figure`) into ``path``."""
    batch = task.sample(1, torch.Generator().manual_seed(seed), **params)
    with torch.no_grad():
        outputs, _, trace = model(batch.inputs, mask=batch.mask, return_trace=True)
    figure = memory_figure(trace, inputs=batch.inputs[0], targets=batch.targets[0],
                           outputs=task.output_probabilities(outputs)[0],
                           steps=batch.loss_mask[0].bool())
    return save_figure(figure, path, title)


def training_figure(records: list[dict[str, Any]], metric: str):
    """Training loss, evaluation metric and curriculum level against step, from a
    run's ``metrics.jsonl`` records (`torchdnc.training.read_metrics`)."""
    plt = pyplot()
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    figure, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True, constrained_layout=True)
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8)
    axes[0].set_ylabel("training loss")
    if train and min(r["loss"] for r in train) > 0:
        axes[0].set_yscale("log")
    axes[1].plot([r["step"] for r in evals], [max(r[metric], 1e-3) for r in evals], marker=".")
    axes[1].set_ylabel(f"eval {metric}")
    axes[1].set_yscale("log")
    axes[2].step([r["step"] for r in train], [r["level"] + 1 for r in train], where="post")
    axes[2].set_ylabel("curriculum level")
    axes[2].set_xlabel("iteration")
    return figure


def plot_training(records: list[dict[str, Any]], metric: str, path: Path | str,
                  title: str = "") -> Path:
    """`training_figure` written to ``path``."""
    return save_figure(training_figure(records, metric), path, title)


def comparison_figure(groups: dict[str, list[list[dict[str, Any]]]], metric: str):
    """An evaluation metric against step for several runs, one colour per group
    (e.g. the seeds of one model), from each run's ``metrics.jsonl`` records."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 4), constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, (group, runs) in zip(colours * len(groups), groups.items()):
        for index, records in enumerate(runs):
            evals = [r for r in records if r["kind"] == "eval" and metric in r]
            axis.plot([r["step"] for r in evals], [r[metric] for r in evals], color=colour,
                      lw=1.2, alpha=0.85, label=group if index == 0 else None)
    axis.set_xlabel("iteration")
    axis.set_ylabel(f"eval {metric}")
    axis.legend()
    return figure

