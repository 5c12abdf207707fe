"""Inference on graphs and family trees (Graves et al. 2016, Fig. 2c, Methods).

Methods, "Inference": labels 0-9 are single edge labels; a relation is a
sequence of 2-5 single edges with a label of its own, 100 distinct sequences
per length, fixed for all networks (`relation_table`: lengths 2, 3, 4, 5 get
labels 10-109, 110-209, 210-309, 310-409; the paper says "10 to 410" for its
400 relations). A query is (start, relation, _), then 10 planning steps, then
one answer step whose target is (start, relation, end); the relations are
never shown to the network, only their labels. Extended Data Table 4 puts 3
queries in each sequence, each with its own query, planning and answer phases.

Training graphs are the paper's random k-nearest-neighbour graphs with edge
labels from 0-9. The paper does not say how those labels are drawn; here each
node's outbound labels are distinct (drawn without repeats from 0-9), so a
relation leads from a start node to at most one end node. A query is drawn by
choosing its relation length uniformly, then a (start, relation) pair
uniformly among those whose relation can be followed in the graph (a new
graph is drawn when there is none).

Family trees (the test, Fig. 2c: "four-step relations such as ... Freya to
Fergus, her maternal great uncle"). The paper shows its invented tree only as
a figure, so `random_family_tree` makes one: founding couples, children,
spouses marrying in from outside, over a number of generations. Its edges use
the single labels 0 mother, 1 father, 2 son, 3 daughter: each parent-child
link gives (child, mother|father, parent) and (parent, son|daughter, child).
Named family relations are sequences of these and are always in the relation
table, e.g. maternal great uncle = (mother, mother, mother, son), the brother
of the maternal grandmother. Unlike the training graphs, a family tree has
several sons or daughters per node, so a relation can lead to several
people; test queries are the (person, relation) pairs with exactly one answer,
and `family_queries` counts those left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Sequence

import torch

from torchdnc.tasks.base import Batch, check_positive, randint
from torchdnc.tasks.graphs import BLANK, Episode, GraphTask, collate, lesson_levels, random_graph, shuffled
from torchdnc.data.graph import MAX_LABEL, LabelledGraph

EDGE_LABELS = 10  # single edge labels 0-9
RELATION_LENGTHS = (2, 3, 4, 5)
RELATIONS_PER_LENGTH = 100
FIRST_RELATION = 10
MOTHER, FATHER, SON, DAUGHTER = 0, 1, 2, 3
FAMILY_EDGES = {MOTHER: "mother", FATHER: "father", SON: "son", DAUGHTER: "daughter"}
def _family_relations() -> dict[tuple[int, ...], str]:
    """Named kinship relations as edge sequences, all kept in `relation_table`.

    A sibling is named only when reached as a parent's child of the other sex
    than the person in between (a woman's mother's son is her brother; a
    man's mother's son may be himself), so that the relation never leads back.
    """
    side = {MOTHER: "maternal", FATHER: "paternal"}
    parent = {MOTHER: "mother", FATHER: "father"}
    child = {SON: "son", DAUGHTER: "daughter"}
    names: dict[tuple[int, ...], str] = {}
    for a in (MOTHER, FATHER):
        # Grandparents and great grandparents.
        for b in (MOTHER, FATHER):
            names[a, b] = f"{side[a]} grand{parent[b]}"
            for c in (MOTHER, FATHER):
                names[a, b, c] = f"{side[a]} great grand{parent[c]} (grand{parent[b]}'s {parent[c]})"
        # The mother's brothers and the father's sisters, and their children.
        sibling, word = (SON, "uncle") if a == MOTHER else (DAUGHTER, "aunt")
        for b in (MOTHER, FATHER):
            names[a, b, sibling] = f"{side[a]} {word} (via grand{parent[b]})"
            for d in (SON, DAUGHTER):
                names[a, b, sibling, d] = f"{side[a]} cousin ({word}'s {child[d]}, via grand{parent[b]})"
        # The grandmother's brothers and the grandfather's sisters, and their children.
        for b, sibling, word in ((MOTHER, SON, "great uncle"), (FATHER, DAUGHTER, "great aunt")):
            for c in (MOTHER, FATHER):
                names[a, b, c, sibling] = f"{side[a]} {word} (via great grand{parent[c]})"
                for d in (SON, DAUGHTER):
                    names[a, b, c, sibling, d] = f"{side[a]} {word}'s {child[d]} (via great grand{parent[c]})"
    return names


NAMED_RELATIONS = _family_relations()
# Extended Data Table 4: (nodes, out-degree, relation length) ranges and queries per sequence.
# Lessons 3 and 4, and 10 and 11, are identical in the table as published.
INFERENCE_LESSONS = (
    ((3, 3), (2, 2), (2, 2), 3), ((3, 5), (2, 2), (2, 2), 3), ((4, 6), (2, 4), (2, 2), 3),
    ((4, 6), (2, 4), (2, 2), 3), ((6, 12), (2, 4), (2, 2), 3), ((12, 18), (2, 4), (2, 2), 3),
    ((4, 6), (2, 4), (2, 3), 3), ((6, 12), (2, 4), (2, 3), 3), ((12, 18), (2, 4), (2, 3), 3),
    ((4, 6), (2, 4), (2, 4), 3), ((4, 6), (2, 4), (2, 4), 3), ((6, 12), (2, 4), (2, 4), 3),
    ((12, 18), (2, 4), (2, 4), 3), ((4, 6), (2, 4), (2, 5), 3), ((6, 12), (2, 4), (2, 5), 3),
    ((12, 18), (2, 4), (2, 5), 3), ((20, 25), (2, 4), (2, 5), 3),
)
GRAPH_ATTEMPTS = 200  # random graphs tried before a relation length is declared impossible


@lru_cache(maxsize=1)
def relation_table() -> dict[int, tuple[int, ...]]:
    """The fixed relations: ``{relation label: sequence of single edge labels}``.

    Per length, the `NAMED_RELATIONS` of that length come first, then distinct
    sequences taken in order from SHA-256 digests of ``"length:index"`` (a
    derivation that no library version can change), until there are 100.
    Length 2 has exactly 100 sequences, so it holds all of them.
    """
    table: dict[int, tuple[int, ...]] = {}
    for position, length in enumerate(RELATION_LENGTHS):
        chosen = [r for r in NAMED_RELATIONS if len(r) == length]
        index = 0
        while len(chosen) < RELATIONS_PER_LENGTH:
            digest = hashlib.sha256(f"{length}:{index}".encode()).digest()
            sequence = tuple(byte % EDGE_LABELS for byte in digest[:length])
            if sequence not in chosen:
                chosen.append(sequence)
            index += 1
        first = FIRST_RELATION + position * RELATIONS_PER_LENGTH
        table.update({first + i: sequence for i, sequence in enumerate(chosen)})
    return table


def relation_labels() -> dict[tuple[int, ...], int]:
    """The inverse of `relation_table`."""
    return {sequence: label for label, sequence in relation_table().items()}


def relation_name(label: int) -> str:
    sequence = relation_table()[label]
    words = "-".join(FAMILY_EDGES.get(e, str(e)) for e in sequence)
    return NAMED_RELATIONS.get(sequence, words)


def follow_relation(graph: LabelledGraph, start: int, sequence: Sequence[int]) -> set[int]:
    """Every node reached from ``start`` along the edge labels ``sequence``."""
    frontier = {start}
    for edge in sequence:
        frontier = {d for node in frontier for _, e, d in graph.out_edges(node) if e == edge}
    return frontier


# -- family trees ------------------------------------------------------------------------


FEMALE_NAMES = ("Freya", "Alice", "Bella", "Clara", "Daisy", "Edith", "Fiona", "Grace", "Hazel",
                "Iris", "Jane", "Kate", "Lily", "Mabel", "Nora", "Olive", "Poppy", "Rose",
                "Sophie", "Tess", "Una", "Vera", "Wendy", "Yvonne", "Zara")
MALE_NAMES = ("Fergus", "Adam", "Ben", "Colin", "David", "Ewan", "Frank", "George", "Harry",
              "Ian", "Jack", "Keith", "Leo", "Max", "Ned", "Oscar", "Paul", "Rory", "Sam",
              "Tom", "Victor", "Will", "Xavier", "Yusuf", "Zack")


@dataclass(frozen=True)
class Person:
    label: int
    name: str
    female: bool
    mother: int | None = None
    father: int | None = None


def random_family_tree(generator: torch.Generator, generations: int = 4, founding_couples: int = 2,
                       min_children: int = 2, max_children: int = 3, marriage_rate: float = 0.5,
                       max_people: int = 60) -> tuple[LabelledGraph, list[Person]]:
    """A random family tree and its people.

    Generation 0 is ``founding_couples`` couples. Each couple has
    ``min_children`` to ``max_children`` children (sex drawn at random); in every generation but
    the last, each child marries, with probability ``marriage_rate``, a spouse
    from outside the tree (no parents in it) and the couple has children in
    turn. No more children are added once there are ``max_people`` people.
    Labels are drawn from 0-999 without repeats; names come from fixed lists.
    """
    labels = iter(torch.randperm(MAX_LABEL + 1, generator=generator).tolist())
    people: list[Person] = []

    def person(female: bool, mother: int | None = None, father: int | None = None) -> Person:
        names = FEMALE_NAMES if female else MALE_NAMES
        count = sum(p.female == female for p in people)
        name = names[count % len(names)] + ("" if count < len(names) else f" {count // len(names) + 1}")
        people.append(Person(next(labels), name, female, mother, father))
        return people[-1]

    couples = [(person(True), person(False)) for _ in range(founding_couples)]
    for generation in range(1, generations):
        children = []
        for mother, father in couples:
            for _ in range(randint(generator, min_children, max_children)):
                if len(people) >= max_people:
                    break
                female = bool(torch.rand((), generator=generator) < 0.5)
                children.append(person(female, mother.label, father.label))
        couples = []
        if generation < generations - 1:
            for child in children:
                if len(people) < max_people and float(torch.rand((), generator=generator)) < marriage_rate:
                    spouse = person(not child.female)
                    couples.append((child, spouse) if child.female else (spouse, child))
    triples = []
    for child in people:
        for parent, edge in ((child.mother, MOTHER), (child.father, FATHER)):
            if parent is not None:
                triples.append((child.label, edge, parent))
                triples.append((parent, DAUGHTER if child.female else SON, child.label))
    graph = LabelledGraph(tuple(triples), node_names={p.label: p.name for p in people},
                          edge_names=dict(FAMILY_EDGES),
                          description=f"family tree: {len(people)} people, {len(triples)} triples")
    return graph, people


@lru_cache(maxsize=4)
def default_family_tree(seed: int = 0, generations: int = 4) -> LabelledGraph:
    """The test family tree: `random_family_tree` drawn with ``seed``."""
    return random_family_tree(torch.Generator().manual_seed(seed), generations=generations)[0]


def family_queries(graph: LabelledGraph, lengths: Sequence[int]) -> tuple[list[tuple[int, int, int]], int]:
    """Test queries: ``([(start, relation label, end), ...], left out)``.

    Every (person, relation) with a relation length in ``lengths`` that leads
    to exactly one person is a query; ``left out`` counts those that lead to
    several people (ambiguous answers).
    """
    queries, ambiguous = [], 0
    for label, sequence in relation_table().items():
        if len(sequence) not in lengths:
            continue
        for start in graph.nodes:
            ends = follow_relation(graph, start, sequence)
            if len(ends) == 1:
                queries.append((start, label, next(iter(ends))))
            elif len(ends) > 1:
                ambiguous += 1
    return queries, ambiguous


# -- the task ------------------------------------------------------------------------------


def inference_episode(graph: LabelledGraph, queries: Sequence[tuple[int, int, int]],
                      generator: torch.Generator, planning_steps: int = 10) -> Episode:
    """Graph description, then per query: (start, relation, _), planning, one answer."""
    episode = Episode()
    episode.describe(shuffled(graph.triples, generator))
    table = relation_table()
    for start, relation, end in queries:
        query = episode.new_query(len(table[relation]))
        episode.add((start, relation, BLANK), phase=True)
        episode.plan(planning_steps)
        episode.add(target=(start, relation, end), phase=True, query=query)
    return episode


@lru_cache(maxsize=16)
def _family_options(seed: int, generations: int, length: int) -> list[tuple[int, int, int]]:
    return family_queries(default_family_tree(seed, generations), (length,))[0]


def _valid_queries(graph: LabelledGraph, length: int) -> list[tuple[int, int, int]]:
    step = {(s, e): d for s, e, d in graph.triples}  # labels are unique per node here
    found = []
    for label, sequence in relation_table().items():
        if len(sequence) != length:
            continue
        for start in graph.nodes:
            node: int | None = start
            for edge in sequence:
                node = step.get((node, edge))
                if node is None:
                    break
            if node is not None:
                found.append((start, label, node))
    return found


@dataclass
class InferenceTask(GraphTask):
    """Answer (start, relation label, _) with the node the hidden relation leads to.

    Options:
        lessons: train on the first ``lessons`` of the paper's 17 (ED Table 4).
        earlier_fraction: share of sequences from earlier lessons (Methods: 10%).
        planning_steps: blank steps after each query (paper: 10).
        family_seed, family_generations: the test family tree
            (`default_family_tree`); test_relation_length: its relations'
            length in `generalisation` (paper: 4).
    """

    name: ClassVar[str] = "inference"
    summary: ClassVar[str] = "infer the node a hidden multi-edge relation leads to (DNC, Fig. 2c)"

    lessons: int = len(INFERENCE_LESSONS)
    earlier_fraction: float = 0.1
    planning_steps: int = 10
    family_seed: int = 0
    family_generations: int = 4
    test_relation_length: int = 4

    def __post_init__(self) -> None:
        check_positive("inference", lessons=self.lessons, family_generations=self.family_generations)
        if self.lessons > len(INFERENCE_LESSONS):
            raise ValueError(f"inference.lessons: the paper's curriculum has {len(INFERENCE_LESSONS)} "
                             f"lessons, got {self.lessons}")
        if not 0 <= self.earlier_fraction <= 1:
            raise ValueError(f"inference.earlier_fraction: expected 0-1, got {self.earlier_fraction}")
        if self.planning_steps < 0:
            raise ValueError(f"inference.planning_steps: expected >= 0, got {self.planning_steps}")
        if self.test_relation_length not in RELATION_LENGTHS:
            raise ValueError(f"inference.test_relation_length: expected one of {RELATION_LENGTHS}, "
                             f"got {self.test_relation_length}")

    def levels(self) -> list[dict[str, Any]]:
        return lesson_levels(INFERENCE_LESSONS, ("nodes", "degree", "length", "queries"), self.lessons)

    def family_tree(self) -> LabelledGraph:
        return default_family_tree(self.family_seed, self.family_generations)

    def generalisation(self) -> dict[str, dict[str, Any]]:
        n = self.test_relation_length
        return {f"family tree, {n}-step relations": {"family": True, "min_length": n, "max_length": n}}

    def episode(self, generator: torch.Generator, min_nodes: int = 3, max_nodes: int = 3,
                min_degree: int = 2, max_degree: int = 2, min_length: int = 2, max_length: int = 2,
                queries: int = 3, family: bool = False) -> Episode:
        lengths = [randint(generator, min_length, max_length) for _ in range(queries)]
        for _ in range(GRAPH_ATTEMPTS):
            if family:
                graph = self.family_tree()
                options = {n: _family_options(self.family_seed, self.family_generations, n)
                           for n in set(lengths)}
            else:
                graph = random_graph(generator, randint(generator, min_nodes, max_nodes),
                                     min_degree, max_degree, edge_label_pool=EDGE_LABELS)
                options = {n: _valid_queries(graph, n) for n in set(lengths)}
            if all(options.values()):
                chosen = [options[n][randint(generator, 0, len(options[n]) - 1)] for n in lengths]
                return inference_episode(graph, chosen, generator, self.planning_steps)
            if family:
                break
        raise ValueError(f"inference: found no relation of length {sorted(set(lengths))} in "
                         f"{GRAPH_ATTEMPTS} graphs of {min_nodes}-{max_nodes} nodes")

    def batch_for(self, graph: LabelledGraph, queries: Sequence[Sequence[tuple[int, int, int]]],
                  generator: torch.Generator) -> Batch:
        """A batch with one sequence per list of (start, relation, end) queries."""
        return collate([inference_episode(graph, q, generator, self.planning_steps) for q in queries])
