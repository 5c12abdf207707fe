"""Mini-SHRDLU, the block puzzle of Graves et al. 2016 (Methods, "Mini-SHRDLU";
Fig. 4; Extended Data Table 6), vectorised over a batch of boards in torch.

The board is 3 columns x 3 rows; blocks numbered 1..k (k <= 6) stand in stacks
(a block always rests on the one below it or on the floor). A move takes the
top block of one column and puts it on top of another; with the pass there are
7 moves (`MOVES`). A move from an empty column or onto a full one is invalid:
the board stays as it is and a small cost is paid.

A goal is a set of constraints on adjacent blocks, "X below Y" (same column, X
directly under Y), "X above Y", "X left of Y" (same row, X in the column
directly left of Y's), "X right of Y". Goals are made as the paper says: a
board D moves away from the start (one uniform pick from the breadth-first
layer at distance D) is chosen, and constraints true there but not at the
start are sampled from it, never both forms of one fact ("1 left of 2" and "2
right of 1"). The least number of moves L that satisfies a goal is found by
breadth-first search over the boards (it can be below D: a goal pins down
only part of a board).

Everything is batched: boards ``[B, 3, 3]`` (0 = empty, else the block id),
moves ``[B]``. The configuration graph of each block count (at most 7,200
boards for 6 blocks) is built once and cached, so breadth-first searches are
a few tensor operations per layer for the whole batch.

Choices where the paper is silent (docs/shrdlu.md lists them): blocks are
numbered 1..k; an invalid move is a no-op that costs `INVALID_MOVE_COST`;
undoing a reached goal costs `UNDO_PENALTY` per constraint of the goal.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

COLUMNS = 3
HEIGHT = 3
MAX_BLOCKS = 6
LETTERS = 26
# The 7 moves: (from column, to column) for the 6 ordered pairs, then the pass.
MOVES = tuple(itertools.permutations(range(COLUMNS), 2)) + (None,)
PASS = len(MOVES) - 1
# Relations, one-hot in this order (the paper fixes only "above" = 1000).
RELATIONS = ("above", "below", "left of", "right of")
SHORT = ("a", "b", "l", "r")
INVALID_MOVE_COST = 0.1
UNDO_PENALTY = 1.0  # per constraint of the goal, when a satisfied goal is broken again


# -- boards --------------------------------------------------------------------------


def legal(boards: Tensor) -> Tensor:
    """Boards whose blocks all rest on something (and that hold distinct blocks), ``[B]``."""
    filled = boards > 0
    floating = filled[:, 1:] & ~filled[:, :-1]  # rows are bottom (0) to top (2)
    return ~floating.any(-1).any(-1)


def heights(boards: Tensor) -> Tensor:
    """Blocks per column, ``[B, 3]``; boards are ``[B, rows, columns]``, row 0 at the bottom."""
    return (boards > 0).sum(1)


def move(boards: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    """Apply one move per board: (new boards, invalid ``[B]`` bool).

    ``actions`` index `MOVES`; an invalid move (from an empty column, onto a
    full one) leaves its board as it was.
    """
    batch = torch.arange(len(boards), device=boards.device)
    table = torch.tensor([m if m is not None else (0, 0) for m in MOVES], device=boards.device)
    source, target = table[actions, 0], table[actions, 1]
    height = heights(boards)
    is_pass = actions == PASS
    invalid = ~is_pass & ((height[batch, source] == 0) | (height[batch, target] == HEIGHT))
    moving = ~is_pass & ~invalid
    top = (height[batch, source] - 1).clamp(min=0)
    block = boards[batch, top, source]
    new = boards.clone()
    rows = batch[moving]
    new[rows, top[moving], source[moving]] = 0
    new[rows, height[batch, target][moving], target[moving]] = block[moving]
    return new, invalid


def positions(boards: Tensor) -> Tensor:
    """(row, column) of every block id 1..6, ``[B, 7, 2]`` (-10 for absent blocks)."""
    B = len(boards)
    where = torch.full((B, MAX_BLOCKS + 1, 2), -10, dtype=torch.long, device=boards.device)
    flat = boards.reshape(B, -1)
    cells = torch.arange(HEIGHT * COLUMNS, device=boards.device)
    rows, cols = cells // COLUMNS, cells % COLUMNS
    index = flat.clamp(min=0)
    where.scatter_(1, index.unsqueeze(-1).expand(-1, -1, 2),
                   torch.stack([rows, cols], -1).expand(B, -1, -1))
    where[:, 0] = -10  # id 0 is "empty"
    return where


def facts(boards: Tensor) -> Tensor:
    """Which constraints hold on each board: ``[B, 7, 4, 7]`` bool over (first
    block, relation, second block), relations in `RELATIONS` order."""
    where = positions(boards)
    row, col = where[..., 0], where[..., 1]  # [B, 7]
    present = row >= 0
    dr = row.unsqueeze(2) - row.unsqueeze(1)  # first minus second, [B, 7, 7]
    dc = col.unsqueeze(2) - col.unsqueeze(1)
    both = present.unsqueeze(2) & present.unsqueeze(1)
    above = both & (dc == 0) & (dr == 1)
    below = both & (dc == 0) & (dr == -1)
    left = both & (dr == 0) & (dc == -1)
    right = both & (dr == 0) & (dc == 1)
    return torch.stack([above, below, left, right], dim=2)


def satisfied(boards: Tensor, constraints: Tensor, valid: Tensor) -> Tensor:
    """How many of each board's constraints hold, ``[B]``.

    ``constraints`` ``[B, C, 3]`` (first block, relation index, second block),
    ``valid`` ``[B, C]`` marks the real ones.
    """
    table = facts(boards)
    batch = torch.arange(len(boards), device=boards.device).unsqueeze(1)
    c = constraints.clamp(min=0)
    holds = table[batch, c[..., 0], c[..., 1], c[..., 2]]
    return (holds & valid).sum(-1)


# -- the configuration graph -----------------------------------------------------------


@dataclass(frozen=True)
class Graph:
    """Every board with blocks 1..k, and where each move leads (cached per k)."""

    boards: Tensor  # [S, 3, 3]
    next: Tensor  # [S, 7] state index after each move (itself for invalid moves)
    index: dict  # board bytes -> state index
    facts: Tensor  # [S, 7, 4, 7]

    def lookup(self, boards: Tensor) -> Tensor:
        return torch.tensor([self.index[b.to(torch.int8).numpy().tobytes()] for b in boards.cpu()])


@lru_cache(maxsize=MAX_BLOCKS + 1)
def graph(blocks: int) -> Graph:
    if not 1 <= blocks <= MAX_BLOCKS:
        raise ValueError(f"blocks: expected 1..{MAX_BLOCKS}, got {blocks}")
    boards = []
    for sizes in itertools.product(range(HEIGHT + 1), repeat=COLUMNS):
        if sum(sizes) != blocks:
            continue
        for order in itertools.permutations(range(1, blocks + 1)):
            board = torch.zeros(HEIGHT, COLUMNS, dtype=torch.long)
            i = 0
            for column, size in enumerate(sizes):
                for row in range(size):
                    board[row, column] = order[i]
                    i += 1
            boards.append(board)
    stacked = torch.stack(boards)
    index = {b.to(torch.int8).numpy().tobytes(): i for i, b in enumerate(stacked)}
    follow = torch.zeros(len(stacked), len(MOVES), dtype=torch.long)
    for action in range(len(MOVES)):
        after, _ = move(stacked, torch.full((len(stacked),), action))
        follow[:, action] = torch.tensor([index[b.to(torch.int8).numpy().tobytes()] for b in after])
    return Graph(stacked, follow, index, facts(stacked))


def distances(g: Graph, starts: Tensor, depth: int) -> Tensor:
    """Breadth-first distance (up to ``depth``; -1 beyond) from each start, ``[B, S]``."""
    B, S = len(starts), len(g.boards)
    distance = torch.full((B, S), -1, dtype=torch.long)
    frontier = torch.zeros(B, S, dtype=torch.bool)
    frontier[torch.arange(B), starts] = True
    distance[frontier] = 0
    for d in range(1, depth + 1):
        reached = torch.zeros(B, S, dtype=torch.bool)
        rows, states = frontier.nonzero(as_tuple=True)
        reached[rows.repeat_interleave(len(MOVES)), g.next[states].reshape(-1)] = True
        frontier = reached & (distance < 0)
        distance[frontier] = d
    return distance


# -- episodes ----------------------------------------------------------------------------


@dataclass
class Problems:
    """A batch of puzzles: start boards, goals and which goal is asked for.

    Attributes:
        boards: start boards ``[B, 3, 3]``.
        constraints: ``[B, G, C, 3]`` (first block, relation, second block), -1 padding.
        valid: ``[B, G, C]`` which constraints exist.
        letters: goal labels ``[B, G]`` (0..25), -1 padding.
        chosen: the goal to carry out ``[B]``.
        least_moves: L, the fewest moves that satisfy the chosen goal ``[B]``.
        blocks: block count ``[B]``.
    """

    boards: Tensor
    constraints: Tensor
    valid: Tensor
    letters: Tensor
    chosen: Tensor
    least_moves: Tensor
    blocks: Tensor

    def chosen_goal(self) -> tuple[Tensor, Tensor]:
        batch = torch.arange(len(self.boards))
        return self.constraints[batch, self.chosen], self.valid[batch, self.chosen]

    @staticmethod
    def cat(parts: list["Problems"]) -> "Problems":
        """Problems of several batches as one (goals and constraints padded)."""
        goals = max(p.valid.shape[1] for p in parts)
        width = max(p.valid.shape[2] for p in parts)

        def pad(t: Tensor, value, dims: int) -> Tensor:
            shape = list(t.shape)
            shape[1] = goals
            if dims >= 3:
                shape[2] = width
            out = torch.full(shape, value, dtype=t.dtype)
            index = (slice(None), slice(0, t.shape[1])) + ((slice(0, t.shape[2]),) if dims >= 3 else ())
            out[index] = t
            return out

        return Problems(torch.cat([p.boards for p in parts]),
                        torch.cat([pad(p.constraints, -1, 3) for p in parts]),
                        torch.cat([pad(p.valid, False, 3) for p in parts]),
                        torch.cat([pad(p.letters, -1, 2) for p in parts]),
                        torch.cat([p.chosen for p in parts]),
                        torch.cat([p.least_moves for p in parts]),
                        torch.cat([p.blocks for p in parts]))


def make_problems(batch: int, generator: torch.Generator, goals: tuple[int, int] = (2, 2),
                  blocks: tuple[int, int] = (3, 3), constraints: tuple[int, int] = (1, 1),
                  depth: tuple[int, int] = (1, 1)) -> Problems:
    """Random puzzles as in the paper's Methods; each range is (low, high), inclusive."""
    count = _draw(generator, *blocks, batch)
    max_goals, max_constraints = goals[1], constraints[1]
    out_boards = torch.zeros(batch, HEIGHT, COLUMNS, dtype=torch.long)
    out_constraints = torch.full((batch, max_goals, max_constraints, 3), -1, dtype=torch.long)
    out_valid = torch.zeros(batch, max_goals, max_constraints, dtype=torch.bool)
    out_letters = torch.full((batch, max_goals), -1, dtype=torch.long)
    out_chosen = torch.zeros(batch, dtype=torch.long)
    out_least = torch.zeros(batch, dtype=torch.long)
    for k in count.unique().tolist():
        rows = (count == k).nonzero().flatten()
        g = graph(k)
        starts = torch.randint(len(g.boards), (len(rows),), generator=generator)
        out_boards[rows] = g.boards[starts]
        far = distances(g, starts, depth[1])
        # [rows, S]: whether a board holds any fact its start does not
        flat = g.facts.flatten(1).float()
        adds_facts = (1 - flat[starts]) @ flat.T > 0
        n_goals = _draw(generator, *goals, len(rows))
        for slot in range(max_goals):
            # A target board D moves away (D drawn per goal); where that layer is
            # empty, or its board adds no new fact, any board that does.
            d = _draw(generator, *depth, len(rows))
            layer = (far == d.unsqueeze(1)) & adds_facts
            empty = ~layer.any(1)
            layer[empty] = (far[empty] != 0) & adds_facts[empty]
            targets = torch.multinomial(layer.float(), 1, generator=generator).squeeze(1)
            new = g.facts[targets] & ~g.facts[starts]
            picked = _constraints(new, _draw(generator, *constraints, len(rows)), generator,
                                  max_constraints)
            use = slot < n_goals
            out_constraints[rows[use], slot] = picked[use]
            out_valid[rows[use], slot] = picked[use][..., 0] >= 0
        letters = torch.stack([torch.randperm(LETTERS, generator=generator)[:max_goals]
                               for _ in range(len(rows))])
        letters[torch.arange(max_goals).unsqueeze(0) >= n_goals.unsqueeze(1)] = -1
        out_letters[rows] = letters
        out_chosen[rows] = (torch.rand(len(rows), generator=generator) * n_goals).long()
        chosen_constraints = out_constraints[rows, out_chosen[rows]]
        chosen_valid = out_valid[rows, out_chosen[rows]]
        out_least[rows] = least_moves(g, starts, chosen_constraints, chosen_valid, depth[1])
    return Problems(out_boards, out_constraints, out_valid, out_letters, out_chosen, out_least, count)


def least_moves(g: Graph, starts: Tensor, constraints: Tensor, valid: Tensor, depth: int) -> Tensor:
    """The fewest moves from each start to a board that satisfies its constraints."""
    far = distances(g, starts, depth)
    c = constraints.clamp(min=0)  # [B, C, 3]
    holds = g.facts[:, c[..., 0], c[..., 1], c[..., 2]]  # [S, B, C]
    goal = (holds | ~valid.unsqueeze(0)).all(-1).T  # [B, S]
    reachable = torch.where(goal & (far >= 0), far, torch.full_like(far, 10**6))
    return reachable.min(1).values


def _constraints(new: Tensor, counts: Tensor, generator: torch.Generator, width: int) -> Tensor:
    """Up to ``counts`` facts from ``new`` ``[B, 7, 4, 7]``, each fact in one of its
    two forms (at random), as ``[B, width, 3]`` with -1 padding."""
    B = len(new)
    # Each fact once: "a below b" (also "b above a") and "a left of b" (also "b right of a").
    pool = torch.cat([new[:, :, 1, :].reshape(B, -1), new[:, :, 2, :].reshape(B, -1)], 1).float()
    out = torch.full((B, width, 3), -1, dtype=torch.long)
    take = torch.minimum(counts, pool.sum(1).long())
    side = (MAX_BLOCKS + 1) ** 2
    for row in range(B):
        if take[row] == 0:
            continue
        chosen = torch.multinomial(pool[row], int(take[row]), generator=generator)
        flip = torch.rand(int(take[row]), generator=generator) < 0.5
        for i, (index, swap) in enumerate(zip(chosen.tolist(), flip.tolist())):
            kind, rest = divmod(index, side)
            a, b = divmod(rest, MAX_BLOCKS + 1)
            forward, backward = (1, 0) if kind == 0 else (2, 3)  # below / above, left / right
            out[row, i] = torch.tensor([b, backward, a] if swap else [a, forward, b])
    return out


def _draw(generator: torch.Generator, low: int, high: int, count: int) -> Tensor:
    return torch.randint(low, high + 1, (count,), generator=generator)


def constraint_text(constraint) -> str:
    """``(6, 1, 2)`` -> ``"6b2"``, the paper's notation."""
    first, relation, second = (int(v) for v in constraint)
    return f"{first}{SHORT[relation]}{second}"
