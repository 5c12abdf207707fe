"""A figure of what one bAbI story did to the memory: words along time, the
write and read weightings over slots, and the rows read at every answer.

    plot_story(model, task, "story.png", babi_task=1)   # needs a DNC (return_trace=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from torchdnc.data.babi import ANSWER_TOKEN
from torchdnc.evaluation.babi import device_of
from torchdnc.tasks.babi import BabiTask
from torchdnc.viz.style import pyplot, save_figure


def answer_reads(outputs: Tensor, trace, words: list[str], targets: list[str | None],
                 vocabulary_words: tuple[str, ...]) -> list[dict[str, Any]]:
    """For each answer step of one story: the answer, and which rows each read head read.

    Args:
        outputs: ``[T, V]`` logits of the story.
        trace: the model's `DNCTrace` for a batch of one (``[1, T, ...]``).
        words: the ``T`` input words; ``targets`` the answer word or None per step.

    Returns:
        One dict per answer step: ``step``, ``target``, ``output``, and ``reads``,
        a list per read head of ``(row, weight, written_at, written_word)``: the
        row it weighted most, and the step (and its input word) at which that
        row received its largest write weight up to then.
    """
    read_weights = trace.read_weights[0]  # [T, R, N]
    write_weights = trace.write_weights[0].sum(1)  # [T, N], summed over write heads
    result = []
    for step, target in enumerate(targets):
        if target is None:
            continue
        reads = []
        for head in range(read_weights.shape[1]):
            row = int(read_weights[step, head].argmax())
            written_at = int(write_weights[: step + 1, row].argmax())
            reads.append((row, float(read_weights[step, head, row]), written_at, words[written_at]))
        result.append({"step": step, "target": target,
                       "output": vocabulary_words[int(outputs[step].argmax())], "reads": reads})
    return result


def plot_story(model: nn.Module, task: BabiTask, path: Path | str, split: str = "test",
               babi_task: int = 1, number: int = 0, max_heads: int = 4, title: str = "") -> Path:
    """Draw one story: words along time, write and read weightings over slots.

    Panels (slots x time, words as tick labels): the write weighting (summed
    over write heads), then each read head's weighting with the row it reads
    most marked at every answer step ('-' steps, dashed lines); below, per
    answer step, the target and output and the rows read with the word that
    was being input when each was written.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    index = task.find_story(split, babi_task, number)
    batch = task.make_batch(split, torch.tensor([index])).to(device_of(model))
    with torch.no_grad():
        outputs, _, trace = model(batch.inputs, mask=batch.mask, return_trace=True)
    words = task.story_words(split, index)
    vocabulary = task.vocabulary.words
    targets = [vocabulary[int(t.argmax())] if scored else None
               for t, scored in zip(batch.targets[0], batch.loss_mask[0].bool().tolist())]
    answers = answer_reads(outputs[0].cpu(), trace, words, targets, vocabulary)
    write = trace.write_weights[0].sum(1).cpu()  # [T, N]
    reads = trace.read_weights[0].cpu()  # [T, R, N]
    heads = min(reads.shape[1], max_heads)
    steps, slots = write.shape

    panels = [("write weighting (sum over write heads)", write)]
    panels += [(f"read weighting, head {r}", reads[:, r]) for r in range(heads)]
    width = min(max(8.0, 0.13 * steps), 80.0)
    figure, axes = plt.subplots(len(panels) + 1, 1, figsize=(width, 2.2 * len(panels) + 2.4),
                                sharex=True, constrained_layout=True,
                                gridspec_kw={"height_ratios": [3] * len(panels) + [2]})
    answer_steps = [a["step"] for a in answers]
    for panel, (axis, (label, image)) in enumerate(zip(axes, panels)):
        axis.imshow(image.T.numpy(), aspect="auto", cmap="gray_r", interpolation="nearest",
                    vmin=0, vmax=1, extent=(-0.5, steps - 0.5, slots - 0.5, -0.5))
        for step in answer_steps:
            axis.axvline(step, color="tab:blue", lw=0.6, ls="--", alpha=0.6)
        if panel > 0:
            head = panel - 1
            axis.scatter(answer_steps, [a["reads"][head][0] for a in answers], marker="x",
                         color="tab:red", s=18, label="row read at an answer step")
            axis.legend(fontsize=7, loc="upper right")
        axis.set_title(label, fontsize=9, loc="left")
        axis.set_ylabel("slot", fontsize=8)
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    text_axis = axes[-1]
    text_axis.axis("off")
    lines = []
    for a in answers:
        rows = ", ".join(f"h{h}: row {row} ({weight:.2f}), written at {at} '{word}'"
                         for h, (row, weight, at, word) in enumerate(a["reads"][:heads]))
        mark = "ok" if a["output"] == a["target"] else "WRONG"
        lines.append(f"step {a['step']}: target '{a['target']}', output '{a['output']}' ({mark}); {rows}")
    text_axis.text(0.0, 1.0, "\n".join(lines) or "no answer steps", va="top", ha="left",
                   fontsize=7, family="monospace", transform=text_axis.transAxes)
    axes[-2].set_xticks(range(steps))
    axes[-2].set_xticklabels(words, rotation=90, fontsize=6)
    axes[-2].tick_params(axis="x", labelbottom=True)
    for tick, word in zip(axes[-2].get_xticklabels(), words):
        if word == ANSWER_TOKEN:
            tick.set_color("tab:blue")
    return save_figure(figure, path,
                       title or f"bAbI task {babi_task}, {split} story {number} ({steps} steps)",
                       dpi=100)
