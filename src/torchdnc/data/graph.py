"""Labelled directed graphs: the data structure of the graph tasks.

A graph is its list of (source, edge, destination) label triples, labels
0-999 (`BLANK`, -1, stands for an unspecified label in queries), with
optional display names, so that a random graph (`torchdnc.tasks.graphs`), the
London Underground (`torchdnc.data.london`) and a family tree all look the same
to the tasks.
"""

from __future__ import annotations

import difflib
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

BLANK = -1  # the unspecified label "_"
MAX_LABEL = 999

Triple = tuple[int, int, int]


class QueryError(ValueError):
    """A query that has no answer in the graph (unknown node, no such edge)."""


@dataclass(frozen=True)
class LabelledGraph:
    """A directed graph given by its (source, edge, destination) label triples.

    Attributes:
        triples: the graph description, one triple per directed edge.
        node_names, edge_names: optional display names of labels.
        positions: optional (x, y) of nodes, for drawing.
        description: how the graph was made (shown in reports).
    """

    triples: tuple[Triple, ...]
    node_names: dict[int, str] = field(default_factory=dict)
    edge_names: dict[int, str] = field(default_factory=dict)
    positions: dict[int, tuple[float, float]] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        for triple in self.triples:
            if len(triple) != 3 or not all(0 <= int(x) <= MAX_LABEL for x in triple):
                raise ValueError(f"graph triple {triple}: expected three labels in 0-{MAX_LABEL}")
        out: dict[int, list[Triple]] = {}
        for s, e, d in self.triples:
            out.setdefault(s, []).append((s, e, d))
            out.setdefault(d, [])
        object.__setattr__(self, "_out", out)

    @property
    def nodes(self) -> list[int]:
        return sorted(self._out)  # type: ignore[attr-defined]

    def out_edges(self, node: int) -> list[Triple]:
        """Triples leaving ``node``, in description order."""
        self._check_node(node)
        return list(self._out[node])  # type: ignore[attr-defined]

    def name(self, label: int, edge: bool = False) -> str:
        if label == BLANK:
            return "_"
        names = self.edge_names if edge else self.node_names
        return names.get(label, str(label))

    def triple_text(self, triple: Sequence[int]) -> str:
        s, e, d = (int(x) for x in triple)
        return f"({self.name(s)}, {self.name(e, edge=True)}, {self.name(d)})"

    def _check_node(self, node: int) -> None:
        if node not in self._out:  # type: ignore[attr-defined]
            raise QueryError(f"node {self.name(node)!r} (label {node}) is not in the graph")

    def node_label(self, name: str | int) -> int:
        """The label of a node given by label or display name (case-insensitive)."""
        return self._label(name, self.node_names, "node")

    def edge_label(self, name: str | int) -> int:
        """The label of an edge given by label or display name (case-insensitive)."""
        return self._label(name, self.edge_names, "edge")

    def _label(self, name: str | int, names: dict[int, str], kind: str) -> int:
        if isinstance(name, int):
            return name
        by_name = {text.lower(): label for label, text in names.items()}
        if name.strip().lower() in by_name:
            return by_name[name.strip().lower()]
        close = difflib.get_close_matches(name, list(names.values()))
        hint = f"; did you mean {close}?" if close else ""
        raise QueryError(f"unknown {kind} {name!r} in {self.description or 'the graph'}{hint}")

    def destinations(self, source: int, edge: int) -> list[int]:
        return [d for _, e, d in self.out_edges(source) if e == edge]

    def follow(self, source: int, edge: int) -> int:
        """The destination of edge ``edge`` from ``source``; QueryError if none or several."""
        found = self.destinations(source, edge)
        if not found:
            leaving = sorted({self.name(e, edge=True) for _, e, _ in self.out_edges(source)})
            raise QueryError(f"no edge {self.name(edge, edge=True)!r} (label {edge}) leaves "
                             f"{self.name(source)!r}; edges from there: {leaving}")
        if len(found) > 1:
            raise QueryError(f"edge {self.name(edge, edge=True)!r} from {self.name(source)!r} is "
                             f"ambiguous: it leads to {[self.name(d) for d in found]}")
        return found[0]

    def ambiguous_moves(self) -> set[tuple[int, int]]:
        """(source, edge) pairs that lead to more than one destination."""
        seen: dict[tuple[int, int], int] = {}
        for s, e, _ in self.triples:
            seen[s, e] = seen.get((s, e), 0) + 1
        return {key for key, count in seen.items() if count > 1}

    def distances_from(self, source: int) -> dict[int, int]:
        """Hop counts of shortest paths from ``source`` to every reachable node (BFS)."""
        self._check_node(source)
        distance, queue = {source: 0}, deque([source])
        while queue:
            node = queue.popleft()
            for _, _, d in self._out[node]:  # type: ignore[attr-defined]
                if d not in distance:
                    distance[d] = distance[node] + 1
                    queue.append(d)
        return distance

    def distances_to(self, goal: int) -> dict[int, int]:
        """Hop counts of shortest paths from every node that can reach ``goal``."""
        self._check_node(goal)
        incoming: dict[int, list[int]] = {}
        for s, _, d in self.triples:
            incoming.setdefault(d, []).append(s)
        distance, queue = {goal: 0}, deque([goal])
        while queue:
            node = queue.popleft()
            for s in incoming.get(node, ()):
                if s not in distance:
                    distance[s] = distance[node] + 1
                    queue.append(s)
        return distance
