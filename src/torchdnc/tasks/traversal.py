"""Traversal on graphs (Graves et al. 2016, Fig. 2b, Methods, "Traversal").

Trains on random graphs (`torchdnc.tasks.graphs.random_graph`) with the paper's
curriculum (Extended Data Table 3) and tests, with no retraining, on the
London Underground (`torchdnc.data.london`): seven-step traversals.

A random walk from a random start node. The query is (source, edge, _) and
then (_, edge, _) for each further edge; the answer phase has blank inputs and
its targets are the path's complete triples, one per step. A step that is
ambiguous in the graph (one source and edge label, several destinations; only
the full London map has them) is never walked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from torchdnc.data.graph import LabelledGraph, Triple
from torchdnc.tasks.base import Batch, check_positive, randint
from torchdnc.tasks.graphs import (BLANK, GRAPH_ATTEMPTS, LESSON_KEYS, Episode, GraphTask,
                                   check_graph_task, collate, lesson_levels,
                                   london_available, london_graph, random_graph, shuffled)

# Extended Data Table 3: (nodes, out-degree, path length) ranges per lesson.
TRAVERSAL_LESSONS = (
    ((3, 10), (2, 4), (1, 1)), ((3, 10), (2, 4), (1, 2)), ((5, 10), (2, 4), (1, 3)),
    ((5, 10), (2, 4), (1, 4)), ((10, 15), (2, 4), (1, 4)), ((10, 15), (2, 4), (1, 5)),
    ((10, 20), (2, 4), (1, 5)), ((10, 20), (2, 4), (1, 6)), ((10, 30), (2, 4), (1, 6)),
    ((10, 30), (2, 4), (1, 7)), ((10, 30), (2, 4), (1, 8)), ((10, 30), (2, 4), (1, 9)),
    ((10, 40), (2, 6), (1, 10)), ((10, 40), (2, 6), (1, 20)),
)

# -- traversal ----------------------------------------------------------------------


def traversal_path(graph: LabelledGraph, start: int | str, edges: Sequence[int | str]) -> list[Triple]:
    """The triples of the walk from ``start`` along ``edges`` (labels or names).

    Raises `QueryError` for an unknown node or edge, or a move that does not
    exist or is ambiguous in the graph.
    """
    node = graph.node_label(start)
    graph.out_edges(node)  # checks that the node exists
    path = []
    for edge in edges:
        label = graph.edge_label(edge)
        destination = graph.follow(node, label)
        path.append((node, label, destination))
        node = destination
    return path


def random_walk(graph: LabelledGraph, length: int, generator: torch.Generator) -> list[Triple]:
    """A walk of ``length`` unambiguous moves from a uniformly drawn start node,
    each move uniform among the unambiguous triples leaving the current node."""
    ambiguous = graph.ambiguous_moves()
    moves = {n: [t for t in graph.out_edges(n) if (t[0], t[1]) not in ambiguous] for n in graph.nodes}
    starts = [n for n in graph.nodes if moves[n]]
    for _ in range(GRAPH_ATTEMPTS):
        node, path = starts[randint(generator, 0, len(starts) - 1)], []
        while len(path) < length and moves[node]:
            path.append(moves[node][randint(generator, 0, len(moves[node]) - 1)])
            node = path[-1][2]
        if len(path) == length:
            return path
    raise ValueError(f"no walk of {length} unambiguous moves found in {graph.description}")


def traversal_episode(graph: LabelledGraph, path: Sequence[Triple], generator: torch.Generator,
                      planning_steps: int = 0) -> Episode:
    """Graph description (shuffled), query, planning, answer for one walk."""
    episode = Episode()
    episode.describe(shuffled(graph.triples, generator))
    query = episode.new_query(len(path))
    for i, (source, edge, _) in enumerate(path):
        episode.add((source if i == 0 else BLANK, edge, BLANK), phase=i == 0)
    episode.plan(planning_steps)
    for i, triple in enumerate(path):
        episode.add(target=triple, phase=i == 0, query=query)
    return episode


@dataclass
class TraversalTask(GraphTask):
    """Follow a start node and a sequence of edge labels; answer the path's triples.

    Options:
        lessons: train on the first ``lessons`` of the paper's 14 (ED Table 3).
        earlier_fraction: share of sequences drawn from earlier lessons (Methods: 10%).
        planning_steps: blank steps between query and answer (paper: none).
        test_map, test_steps, london_dir: the London test (`generalisation`):
            "zone1" or "full" map, walk length (paper: 7), data folder ("" =
            the default search, see `torchdnc.data.london.candidate_dirs`).
    """

    name: ClassVar[str] = "traversal"
    summary: ClassVar[str] = "follow edge labels from a start node on a graph (DNC, Fig. 2b)"

    lessons: int = len(TRAVERSAL_LESSONS)
    earlier_fraction: float = 0.1
    planning_steps: int = 0
    test_map: str = "zone1"
    test_steps: int = 7
    london_dir: str = ""

    def __post_init__(self) -> None:
        check_positive("traversal", lessons=self.lessons, test_steps=self.test_steps)
        check_graph_task("traversal", self, len(TRAVERSAL_LESSONS))

    def levels(self) -> list[dict[str, Any]]:
        return lesson_levels(TRAVERSAL_LESSONS, LESSON_KEYS, self.lessons)

    def generalisation(self) -> dict[str, dict[str, Any]]:
        """The London test, when the data folder is found (else nothing)."""
        if not london_available(self.london_dir):
            return {}
        return {f"London {self.test_map} map, {self.test_steps}-step traversals": {
            "london_map": self.test_map, "min_length": self.test_steps, "max_length": self.test_steps}}

    def episode(self, generator: torch.Generator, min_nodes: int = 3, max_nodes: int = 10,
                min_degree: int = 2, max_degree: int = 4, min_length: int = 1, max_length: int = 1,
                london_map: str | None = None) -> Episode:
        if london_map:
            graph = london_graph(london_map, self.london_dir)
        else:
            graph = random_graph(generator, randint(generator, min_nodes, max_nodes),
                                 min_degree, max_degree)
        path = random_walk(graph, randint(generator, min_length, max_length), generator)
        return traversal_episode(graph, path, generator, self.planning_steps)

    def batch_for(self, graph: LabelledGraph, paths: Sequence[Sequence[Triple]],
                  generator: torch.Generator) -> Batch:
        """A batch of the given walks (e.g. from `traversal_path`) on ``graph``."""
        return collate([traversal_episode(graph, p, generator, self.planning_steps) for p in paths])
