"""Mini-SHRDLU figures: a board, and one episode in the manner of the paper's
Figure 4 (write weightings while the goals are shown, read weightings while
acting, and the boards the moves made)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from torchdnc.envs import shrdlu
from torchdnc.tasks.shrdlu import ShrdluTask
from torchdnc.viz.style import pyplot, save_figure

COLOURS = ("#ffffff", "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a6a600")


def draw_board(axis, board: torch.Tensor, title: str = "") -> None:
    """One 3 x 3 board (``[rows, columns]``, row 0 at the bottom) into ``axis``."""
    axis.set_xlim(0, shrdlu.COLUMNS)
    axis.set_ylim(0, shrdlu.HEIGHT)
    axis.set_aspect("equal")
    axis.set_xticks([])
    axis.set_yticks([])
    for row in range(shrdlu.HEIGHT):
        for column in range(shrdlu.COLUMNS):
            block = int(board[row, column])
            if block:
                axis.add_patch(pyplot().Rectangle((column + 0.05, row + 0.05), 0.9, 0.9,
                                                  color=COLOURS[block]))
                axis.text(column + 0.5, row + 0.5, str(block), ha="center", va="center",
                          fontsize=9, color="white", weight="bold")
    if title:
        axis.set_title(title, fontsize=7)


def board_figure(board: torch.Tensor, title: str = ""):
    """A board as a matplotlib Figure."""
    figure, axis = pyplot().subplots(figsize=(2, 2))
    draw_board(axis, board, title)
    return figure


@torch.no_grad()
def episode_figure(model: nn.Module, task: ShrdluTask, seed: int = 0, title: str = "",
                   **lesson):
    """Play one episode (greedy) with a DNC ``model`` and draw it (Figure 4 style).

    ``lesson``: the difficulty (a level of ``task.levels()``; the last by default).
    """
    plt = pyplot()
    params = {k: v for k, v in (lesson or task.levels()[-1]).items() if k != "lesson"}
    generator = torch.Generator().manual_seed(seed)
    problems = task.problems(1, generator, **params)
    batch = task.play(model, problems, generator, greedy=True)
    device = next(model.parameters()).device
    _, _, trace = model(batch.inputs.to(device), mask=batch.mask.to(device), return_trace=True)
    acting = batch.info["acting"][0]
    steps = int(batch.mask[0].sum())
    goal_steps = int((~acting[:steps]).sum())
    labels = []
    for t in range(goal_steps):
        x = batch.inputs[0, t]
        letter = chr(ord("A") + int(x[: shrdlu.LETTERS].argmax()))
        first = int(x[26:32].argmax()) + 1
        relation = int(x[32:36].argmax())
        second = int(x[36:42].argmax()) + 1
        labels.append(f"{letter}:{first}{shrdlu.SHORT[relation]}{second}")
    moves = batch.info["actions"][0, goal_steps:steps].tolist()
    letter = chr(ord("A") + int(problems.letters[0, problems.chosen[0]]))
    move_labels = [f"{letter}?" if i == 0 else "" for i in range(len(moves))]
    move_labels = [f"{lab} {'pass' if m == shrdlu.PASS else '%d>%d' % tuple(c + 1 for c in shrdlu.MOVES[m])}"
                   for lab, m in zip(move_labels, moves)]
    write = trace.write_weights[0, :steps].sum(1).cpu()  # [T, N]
    reads = trace.read_weights[0, :steps].cpu()  # [T, R, N]
    boards = [problems.boards[0]]
    for m in moves:
        boards.append(shrdlu.move(boards[-1].unsqueeze(0), torch.tensor([m]))[0][0])
    columns = max(len(boards), 4)
    figure = plt.figure(figsize=(max(8, 0.45 * steps + 2), 7), constrained_layout=True)
    grid = figure.add_gridspec(3, columns, height_ratios=[3, 3, 1.4])
    top = figure.add_subplot(grid[0, :])
    top.imshow(write[:goal_steps].T.numpy(), aspect="auto", cmap="gray_r", vmin=0, vmax=1,
               interpolation="nearest")
    top.set_xticks(range(goal_steps))
    top.set_xticklabels(labels, rotation=90, fontsize=7)
    top.set_ylabel("slot", fontsize=8)
    top.set_title("write weighting while the goals are shown", fontsize=9, loc="left")
    middle = figure.add_subplot(grid[1, :])
    middle.imshow(reads[goal_steps:].sum(1).T.numpy(), aspect="auto", cmap="gray_r", vmin=0,
                  vmax=1, interpolation="nearest")
    middle.set_xticks(range(len(moves)))
    middle.set_xticklabels(move_labels, rotation=90, fontsize=7)
    middle.set_ylabel("slot", fontsize=8)
    middle.set_title("read weightings (summed over heads) while acting", fontsize=9, loc="left")
    for i, b in enumerate(boards[:columns]):
        draw_board(figure.add_subplot(grid[2, i]), b, "start" if i == 0 else f"after move {i}")
    final = float(batch.info["final_fraction"][0])
    figure.suptitle(title or f"goal {letter}: {final:.0%} of its constraints hold at the end",
                    fontsize=10)
    return figure


def plot_episode(model: nn.Module, task: ShrdluTask, path: Path | str, seed: int = 0,
                 title: str = "", **lesson) -> Path:
    """`episode_figure` written to ``path``."""
    return save_figure(episode_figure(model, task, seed, title, **lesson), path)
