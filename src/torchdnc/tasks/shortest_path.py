"""Shortest path on graphs (Graves et al. 2016, Fig. 2b, Methods, "Shortest
path" and "Structured prediction").

Trains on random graphs (`torchdnc.tasks.graphs.random_graph`) with the paper's
curriculum (Extended Data Table 5) and tests, with no retraining, on the
London Underground (`torchdnc.data.london`): shortest paths of up to four steps.

The query (source, _, destination), a planning phase of 10 blank steps, then
one answer step per edge of a shortest path. Teacher forcing: the input of
answer step k > 0 is the TARGET triple of step k - 1 (the paper's "action
chosen on the previous time-step", here always the optimal planner's, i.e.
DAgger with beta = 1; the paper trained with beta = 0.8, mixing in the
network's own moves, which `Task.sample` cannot do since it never sees the
model). Answer step 0 has a blank input. Where several shortest paths exist,
the target's next move is drawn uniformly among the optimal ones at each step.
The network's choice at a step is the most likely triple among those leaving
the current node (the paper renormalises the output distribution over them;
with ``renormalise=False`` the plain nine-digit argmax and loss are used
instead), and it is right when it lies on a shortest path to the goal. A
sequence is right when every choice is (ED Table 5: "a path is correct if it
is a shortest path"; the Methods text says "no more than one step longer",
which is not used); ``digit_error`` still compares with the teacher's path, so
it counts a different shortest path as wrong digits. All this is scored under
teacher forcing; the paper's free-running test, feeding the network its own
moves, is `torchdnc.evaluation.graphs.rollout_shortest_path`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from torchdnc.data.graph import LabelledGraph, QueryError
from torchdnc.tasks.base import Batch, check_positive, randint
from torchdnc.tasks.graphs import (BLANK, GRAPH_ATTEMPTS, LESSON_KEYS, Episode, GraphTask,
                                   check_graph_task, collate, label_digits, lesson_levels,
                                   london_available, london_graph, random_graph, shuffled)

# Extended Data Table 5: (nodes, out-degree, path length) ranges per lesson.
SHORTEST_PATH_LESSONS = (
    ((5, 10), (1, 2), (2, 2)), ((5, 20), (1, 2), (2, 2)), ((10, 20), (1, 2), (2, 2)),
    ((10, 20), (1, 2), (2, 3)), ((10, 20), (1, 3), (2, 3)), ((10, 20), (2, 3), (2, 3)),
    ((10, 20), (2, 3), (2, 4)), ((10, 20), (2, 4), (2, 4)), ((10, 25), (2, 4), (2, 4)),
    ((10, 25), (2, 4), (2, 5)), ((10, 25), (2, 4), (2, 5)), ((15, 25), (2, 4), (2, 5)),
    ((15, 25), (2, 5), (2, 5)), ((20, 25), (2, 5), (2, 5)), ((20, 25), (2, 6), (2, 5)),
)

def shortest_path_prefix(graph: LabelledGraph, start: int, goal: int, generator: torch.Generator,
                         planning_steps: int = 10) -> tuple[Episode, dict[int, int]]:
    """Graph description, query (start, _, goal) and planning; and the
    distances to the goal. Raises `QueryError` when there is no path."""
    distance = graph.distances_to(goal)
    graph.out_edges(start)  # checks that the node exists
    if start not in distance or start == goal:
        raise QueryError(f"no path of at least one step from {graph.name(start)!r} to {graph.name(goal)!r}")
    episode = Episode()
    episode.describe(shuffled(graph.triples, generator))
    episode.new_query(distance[start])
    episode.add((start, BLANK, goal), phase=True)
    episode.plan(planning_steps)
    return episode, distance


def shortest_path_episode(graph: LabelledGraph, start: int, goal: int, generator: torch.Generator,
                          planning_steps: int = 10) -> Episode:
    """`shortest_path_prefix`, then the teacher-forced answer along a shortest path."""
    episode, distance = shortest_path_prefix(graph, start, goal, generator, planning_steps)
    query = 0
    node, previous = start, (BLANK, BLANK, BLANK)
    for i in range(distance[start]):
        options = graph.out_edges(node)
        optimal = [distance.get(d, -2) == distance[node] - 1 for _, _, d in options]
        best = [j for j, ok in enumerate(optimal) if ok]
        pick = best[randint(generator, 0, len(best) - 1)]
        episode.add(previous, target=options[pick], phase=i == 0, query=query,
                    candidates=options, optimal=optimal, choice=pick)
        previous, node = options[pick], options[pick][2]
    return episode


def pairs_at_distance(graph: LabelledGraph, low: int, high: int) -> dict[int, list[tuple[int, int]]]:
    """``{d: [(start, goal), ...]}`` for every pair whose shortest path has d steps, low <= d <= high."""
    found: dict[int, list[tuple[int, int]]] = {d: [] for d in range(low, high + 1)}
    for start in graph.nodes:
        for goal, d in sorted(graph.distances_from(start).items()):
            if low <= d <= high and d > 0:
                found[d].append((start, goal))
    return found


@dataclass
class ShortestPathTask(GraphTask):
    """Given start and goal, answer the triples of a shortest path (teacher-forced).

    Options:
        lessons: train on the first ``lessons`` of the paper's 15 (ED Table 5).
        planning_steps: blank steps after the query (paper: 10).
        renormalise: score and train the choice among the triples leaving the
            current node (paper); False uses the plain nine-digit softmaxes.
        test_map, test_min_length, test_max_length, london_dir: the London
            test in `generalisation` (random pairs, teacher-forced); see
            `torchdnc.evaluation.graphs` for all pairs, free-running.
    """

    name: ClassVar[str] = "shortest_path"
    summary: ClassVar[str] = "answer a shortest path between two nodes (DNC, Fig. 2b)"

    lessons: int = len(SHORTEST_PATH_LESSONS)
    planning_steps: int = 10
    renormalise: bool = True
    test_map: str = "zone1"
    test_min_length: int = 1
    test_max_length: int = 4
    london_dir: str = ""

    def __post_init__(self) -> None:
        check_positive("shortest_path", lessons=self.lessons, test_min_length=self.test_min_length,
                       test_max_length=self.test_max_length)
        check_graph_task("shortest_path", self, len(SHORTEST_PATH_LESSONS))

    def levels(self) -> list[dict[str, Any]]:
        return lesson_levels(SHORTEST_PATH_LESSONS, LESSON_KEYS, self.lessons)

    def generalisation(self) -> dict[str, dict[str, Any]]:
        if not london_available(self.london_dir):
            return {}
        return {f"London {self.test_map} map, {self.test_min_length}-{self.test_max_length}-step "
                f"shortest paths (teacher-forced)": {
                    "london_map": self.test_map, "min_length": self.test_min_length,
                    "max_length": self.test_max_length}}

    def episode(self, generator: torch.Generator, min_nodes: int = 5, max_nodes: int = 10,
                min_degree: int = 1, max_degree: int = 2, min_length: int = 2, max_length: int = 2,
                london_map: str | None = None) -> Episode:
        length = randint(generator, min_length, max_length)
        for _ in range(GRAPH_ATTEMPTS):
            if london_map:
                graph = london_graph(london_map, self.london_dir)
            else:
                graph = random_graph(generator, randint(generator, min_nodes, max_nodes),
                                     min_degree, max_degree)
            pairs = pairs_at_distance(graph, length, length)[length]
            if pairs:
                start, goal = pairs[randint(generator, 0, len(pairs) - 1)]
                return shortest_path_episode(graph, start, goal, generator, self.planning_steps)
            if london_map:
                break
        raise ValueError(f"shortest_path: no pair {length} steps apart in {GRAPH_ATTEMPTS} graphs "
                         f"of {min_nodes}-{max_nodes} nodes, out-degree {min_degree}-{max_degree}")

    def batch_for(self, graph: LabelledGraph, pairs: Sequence[tuple[int, int]],
                  generator: torch.Generator) -> Batch:
        """A batch of the given (start, goal) queries on ``graph``."""
        return collate([shortest_path_episode(graph, s, g, generator, self.planning_steps)
                        for s, g in pairs])

    # -- scoring: the choice among the triples leaving the current node ------------

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy of the optimal move, renormalised over the moves available."""
        if not self.renormalise:
            return super().loss(outputs, batch)
        scores = candidate_scores(self.digit_log_probs(outputs), batch.info["candidates"])
        available = torch.isfinite(scores).any(-1, keepdim=True)
        log_q = torch.where(available, scores, torch.zeros_like(scores)).log_softmax(-1)
        choice = batch.info["choice"].clamp(min=0).unsqueeze(-1)
        per_step = -log_q.gather(-1, choice).squeeze(-1)
        return (per_step * batch.loss_mask).sum() / outputs.shape[0]

    def step_correct(self, outputs: Tensor, batch: Batch) -> Tensor:
        """The move chosen at each step lies on a shortest path to the goal."""
        candidates, optimal = batch.info["candidates"], batch.info["optimal"]
        log_probs = self.digit_log_probs(outputs)
        if self.renormalise:
            chosen = candidate_scores(log_probs, candidates).argmax(-1, keepdim=True)
            return optimal.gather(-1, chosen).squeeze(-1)
        predicted = label_digits(candidates).flatten(-2)  # [B, T, C, 9]
        same = (predicted == log_probs.argmax(-1).unsqueeze(2)).all(-1)
        return (same & optimal).any(-1)


def candidate_scores(log_probs: Tensor, candidates: Tensor) -> Tensor:
    """log Pr of each candidate triple: Σ of its nine digits' log-probabilities.

    Args:
        log_probs: ``[B, T, 9, 10]`` per-digit log-softmax.
        candidates: ``[B, T, C, 3]`` labels, -1 rows for padding.

    Returns:
        ``[B, T, C]``, -inf for padding.
    """
    digits = label_digits(candidates).flatten(-2).clamp(min=0)  # [B, T, C, 9]
    expanded = log_probs.unsqueeze(2).expand(*digits.shape, log_probs.shape[-1])
    scores = expanded.gather(-1, digits.unsqueeze(-1)).squeeze(-1).sum(-1)
    return scores.masked_fill(candidates[..., 0] == BLANK, float("-inf"))
