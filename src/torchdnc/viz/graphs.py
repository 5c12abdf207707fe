"""Figure 3 of the paper for any trained traversal model: one London query.

`plot_underground_traversal` runs one random traversal of the London map
with the memory trace and draws, as in Graves et al. 2016, Fig. 3a-b:

- the write weightings over the whole sequence, memory locations ordered by
  when they were most strongly written and labelled with the triple input at
  that step (the paper decodes the memory with a classifier instead);
- each read head's weightings over the query and answer phases, same order;
- each read head's read modes (backward, content, forward) over those steps;
- the query, and the target and predicted answer triples with station names.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from torchdnc.data.graph import LabelledGraph
from torchdnc.tasks.graphs import decode_triples, london_graph
from torchdnc.tasks.traversal import TraversalTask, random_walk
from torchdnc.viz.style import pyplot, save_figure

MAX_HEADS_DRAWN = 4


@torch.no_grad()
def plot_underground_traversal(model: nn.Module, task: TraversalTask, path: Path | str,
                               graph: LabelledGraph | None = None, steps: int = 7, seed: int = 0,
                               title: str = "") -> Path:
    """Draw the memory use of ``model`` (a DNC) answering one traversal of ``graph``
    (default: the task's London test map); returns the image path."""
    plt = pyplot()
    graph = graph or london_graph(task.test_map, task.london_dir)
    generator = torch.Generator().manual_seed(seed)
    walk = random_walk(graph, steps, generator)
    batch = task.batch_for(graph, [walk], generator)
    outputs, _, trace = model(batch.inputs, mask=batch.mask, return_trace=True)
    described = int(batch.info["graph_sizes"][0])
    total = int(batch.info["lengths"][0])
    answer = batch.loss_mask[0, :total].bool()
    inputs = batch.info["input_labels"][0]

    write = trace.write_weights[0, :total].sum(1)  # [T, N]: all write heads together
    order = write.argmax(0).argsort()  # locations by the step of their strongest write
    strongest = write.max(0)
    labels = [graph.triple_text(inputs[int(write[:, n].argmax())].tolist())
              if strongest.values[n] >= 0.1 else "" for n in order.tolist()]
    reads = trace.read_weights[0, described:total][:, :MAX_HEADS_DRAWN]  # [T', R, N]
    modes = trace.read_modes[0, described:total][:, :MAX_HEADS_DRAWN]  # [T', R, 1 + 2K]
    heads = reads.shape[1]
    writes = (modes.shape[-1] - 1) // 2
    mode_rows = torch.stack([modes[..., :writes].sum(-1), modes[..., writes],
                             modes[..., writes + 1 :].sum(-1)], -1)  # [T', R, 3]

    figure, axes = plt.subplots(2 + heads + 1, 1, figsize=(11, 5 + 3.2 * (heads + 1)),
                                gridspec_kw={"height_ratios": [3, *[2] * heads, 1.2, 1.6]},
                                constrained_layout=True)
    font = max(3, min(7, 400 // max(len(labels), 1)))
    panel = axes[0]
    panel.imshow(write[:, order].T.numpy(), aspect="auto", cmap="Greens", vmin=0, vmax=1,
                 interpolation="nearest")
    panel.set_title("a  write weightings (locations ordered by write time)", loc="left", fontsize=9)
    panel.set_yticks(range(len(labels)), labels, fontsize=font)
    for boundary in (described - 0.5, float(answer.nonzero()[0]) - 0.5):
        panel.axvline(boundary, color="k", lw=0.6, ls="--")
    panel.set_xlabel("time step (dashed: query starts, answer starts)", fontsize=8)

    time = range(described, total)
    extent = (described - 0.5, total - 0.5, len(labels) - 0.5, -0.5)
    for r in range(heads):
        panel = axes[1 + r]
        image = reads[:, r][:, order].T
        top = max(float(image.max()), 1e-6)
        panel.imshow(image.numpy(), aspect="auto", cmap="Blues" if r % 2 else "RdPu", vmin=0,
                     vmax=top, interpolation="nearest", extent=extent)
        panel.set_title(f"b  read weightings, head {r + 1}, query and answer phases "
                        f"(colour scale 0-{top:.2g})", loc="left", fontsize=9)
        panel.set_yticks([])
        panel.set_ylabel("location", fontsize=8)
        panel.set_xticks(list(time)[:: max(1, len(time) // 20)])

    panel = axes[1 + heads]
    image = mode_rows.permute(1, 2, 0).reshape(heads * 3, -1)
    panel.imshow(image.numpy(), aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest",
                 extent=(described - 0.5, total - 0.5, heads * 3 - 0.5, -0.5))
    panel.set_yticks(range(heads * 3), [f"head {r + 1} {m}" for r in range(heads)
                                        for m in ("backward", "content", "forward")], fontsize=7)
    panel.set_title("read modes", loc="left", fontsize=9)
    panel.set_xticks(list(time)[:: max(1, len(time) // 20)])

    predicted = decode_triples(outputs[0, :total][answer])
    targets = batch.info["target_labels"][0, :total][answer]
    query = [graph.triple_text(t) for t in inputs[described : described + steps].tolist()]
    rows = ["query: " + " ".join(query[i : i + 4]) for i in range(0, len(query), 4)]
    for want, got in zip(targets.tolist(), predicted.tolist()):
        mark = "right" if want == got else "WRONG"
        rows.append(f"{mark}: target {graph.triple_text(want)}   output {graph.triple_text(got)}")
    axes[-1].axis("off")
    axes[-1].text(0, 1, "\n".join(rows), va="top", fontsize=7, family="monospace",
                  transform=axes[-1].transAxes)
    return save_figure(figure, path, title or f"Traversal on {graph.description}", dpi=130)
