"""Graph tasks of the DNC paper: the shared encoding, sequences and scoring.

Methods, "Graph task descriptions" (Graves et al. 2016). Every time step
carries one triple (source label, edge label, destination label). A label is a
number 0-999 written as three decimal digits, most significant first, each a
10-way one-hot: 30 inputs per label, 90 per triple. The all-zero label is the
"blank" label ``_`` (an unspecified slot, `BLANK` = -1 here). Two binary
channels follow the triple, making the input 92 wide:

- channel 90, phase change: on at the first step of every phase after the
  graph description (each query, planning and answer phase);
- channel 91, answer required: on throughout every answer phase.

The output is 90 units read as nine 10-way softmaxes (three digits for each of
source, edge, destination). The loss is the summed digit cross-entropy on the
answer steps, averaged over sequences; an answer triple is right only when all
nine digits' argmax is right, and a sequence only when all its answer triples
are. The paper ends an answer with a reserved termination pattern; here the
answer length follows from the query (traversal: one triple per edge in the
query; inference: one triple; shortest path: evaluation stops when the goal is
reached), so no termination pattern is emitted or scored.

Sequences: the graph's triples in random order, then for each query a query
phase, an optional planning phase of blank steps, and an answer phase. Each
sequence starts at step 0 and is padded at the END to the longest sequence of
the batch (all-zero inputs, nothing scored); a recurrent model cannot see the
future, so end padding changes no scored output and `Batch.mask` stays None.
`torchdnc.evaluation.graphs.rollout_shortest_path` left-pads instead and masks
the padding there.

The graphs are `torchdnc.data.graph.LabelledGraph`s: random ones made here
(`random_graph`, Methods, "Random graph generation": nodes are points drawn
uniformly in the unit square; each node gets K outbound edges to its K nearest
neighbours, K drawn uniformly per node and capped at N - 1 (a choice: lesson 1
of traversal allows 3 nodes with out-degree up to 4); node labels are drawn
from 0-999 without repeats; for N nodes, N distinct numbers from 0-999 are
drawn and each node's outbound edge labels are picked from them without
repeats, so edge labels are unique per outbound node but not across the
graph), the London Underground from `torchdnc.data.london`, family trees from
`torchdnc.tasks.inference`. The tasks: `torchdnc.tasks.traversal`,
`torchdnc.tasks.shortest_path`, `torchdnc.tasks.inference`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from torchdnc.data.graph import BLANK, MAX_LABEL, LabelledGraph, Triple
from torchdnc.data.london import MAPS, find_london_dir, underground_map
from torchdnc.tasks.base import Batch, Task, randint

DIGITS = 3  # decimal digits per label
CLASSES = 10  # one-hot width per digit
LABEL_SIZE = DIGITS * CLASSES  # 30
TRIPLE_SIZE = 3 * LABEL_SIZE  # 90
PHASE_CHANNEL = TRIPLE_SIZE  # 90
ANSWER_CHANNEL = TRIPLE_SIZE + 1  # 91
INPUT_SIZE = TRIPLE_SIZE + 2  # 92
OUTPUT_SIZE = TRIPLE_SIZE  # 90


# -- encoding ------------------------------------------------------------------


def label_digits(labels: Tensor) -> Tensor:
    """Decimal digits of labels, most significant first: ``[...] -> [..., 3]``.

    Blank labels (-1) give digit -1 everywhere.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if torch.any((labels < BLANK) | (labels > MAX_LABEL)):
        bad = labels[(labels < BLANK) | (labels > MAX_LABEL)][0].item()
        raise ValueError(f"label {bad}: labels are 0-{MAX_LABEL}, or {BLANK} for blank")
    powers = torch.tensor([100, 10, 1])
    digits = torch.div(labels.clamp(min=0).unsqueeze(-1), powers, rounding_mode="floor") % CLASSES
    return torch.where(labels.unsqueeze(-1) == BLANK, torch.full_like(digits, BLANK), digits)


def encode_labels(labels: Tensor) -> Tensor:
    """One-hot digit codes of labels: ``[...] -> [..., 30]`` float; blank -> zeros."""
    digits = label_digits(labels)
    codes = F.one_hot(digits.clamp(min=0), CLASSES).float() * (digits >= 0).unsqueeze(-1)
    return codes.flatten(-2)


def decode_labels(codes: Tensor) -> Tensor:
    """Labels from 30-wide codes (one-hots or digit scores): ``[..., 30] -> [...]``.

    Each digit is the argmax of its 10 entries; an all-zero code is blank.
    """
    digits = codes.reshape(*codes.shape[:-1], DIGITS, CLASSES).argmax(-1)
    labels = (digits * torch.tensor([100, 10, 1], device=codes.device)).sum(-1)
    return torch.where((codes == 0).all(-1), torch.full_like(labels, BLANK), labels)


def encode_triples(triples: Tensor) -> Tensor:
    """``[..., 3]`` labels (source, edge, destination) -> ``[..., 90]`` codes."""
    return encode_labels(torch.as_tensor(triples, dtype=torch.long)).flatten(-2)


def decode_triples(vectors: Tensor) -> Tensor:
    """``[..., 90]`` codes or output logits -> ``[..., 3]`` labels."""
    return decode_labels(vectors.reshape(*vectors.shape[:-1], 3, LABEL_SIZE))


# -- sequences -------------------------------------------------------------------


@dataclass
class Episode:
    """One sequence under construction: graph description, queries, answers.

    Per step: the input triple, the target triple (None where nothing is
    scored), the phase-change flag and the index of the query answered.
    Shortest-path answer steps also carry the candidate triples (those leaving
    the current node), which of them lie on a shortest path, and the index of
    the target among them.
    """

    inputs: list[Triple] = field(default_factory=list)
    targets: list[Triple | None] = field(default_factory=list)
    phase: list[bool] = field(default_factory=list)
    query: list[int] = field(default_factory=list)
    candidates: list[list[Triple]] = field(default_factory=list)
    optimal: list[list[bool]] = field(default_factory=list)
    choice: list[int] = field(default_factory=list)
    query_lengths: list[int] = field(default_factory=list)
    graph_size: int = 0

    def add(self, triple: Triple = (BLANK, BLANK, BLANK), target: Triple | None = None,
            phase: bool = False, query: int = -1, candidates: Sequence[Triple] = (),
            optimal: Sequence[bool] = (), choice: int = -1) -> None:
        self.inputs.append(tuple(triple))  # type: ignore[arg-type]
        self.targets.append(None if target is None else tuple(target))  # type: ignore[arg-type]
        self.phase.append(phase)
        self.query.append(query)
        self.candidates.append(list(candidates))
        self.optimal.append(list(optimal))
        self.choice.append(choice)

    def describe(self, triples: Iterable[Triple]) -> None:
        """The graph description phase: one triple per step."""
        for triple in triples:
            self.add(triple)
            self.graph_size += 1

    def plan(self, steps: int) -> None:
        """A planning phase: ``steps`` blank steps, the first marked as a phase change."""
        for i in range(steps):
            self.add(phase=i == 0)

    def new_query(self, length: int) -> int:
        """Open a query of the given length (for per-length accuracy); its index."""
        self.query_lengths.append(length)
        return len(self.query_lengths) - 1

    def __len__(self) -> int:
        return len(self.inputs)


def collate(episodes: Sequence[Episode]) -> Batch:
    """Episodes -> a `Batch`, each sequence from step 0, padded at the end.

    ``info`` holds, batch first: ``input_labels`` and ``target_labels``
    ``[B, T, 3]`` (-1 for blank / no target), ``answer_query`` ``[B, T]`` (the
    query an answer step belongs to, else -1), ``query_lengths`` ``[B, Q]``
    (-1 where a sequence has fewer queries), ``lengths`` and ``graph_sizes``
    ``[B]``; and when any step has candidates, ``candidates`` ``[B, T, C, 3]``
    (-1 padded), ``optimal`` ``[B, T, C]`` and ``choice`` ``[B, T]``.
    """
    batch, steps = len(episodes), max(len(e) for e in episodes)
    queries = max(max(len(e.query_lengths) for e in episodes), 1)
    input_labels = torch.full((batch, steps, 3), BLANK, dtype=torch.long)
    target_labels = torch.full((batch, steps, 3), BLANK, dtype=torch.long)
    phase = torch.zeros(batch, steps)
    answer_query = torch.full((batch, steps), -1, dtype=torch.long)
    query_lengths = torch.full((batch, queries), -1, dtype=torch.long)
    width = max(len(c) for e in episodes for c in e.candidates)
    for b, episode in enumerate(episodes):
        n = len(episode)
        input_labels[b, :n] = torch.tensor(episode.inputs, dtype=torch.long)
        phase[b, :n] = torch.tensor(episode.phase, dtype=torch.float)
        answer_query[b, :n] = torch.tensor(episode.query, dtype=torch.long)
        scored = [t for t, target in enumerate(episode.targets) if target is not None]
        if scored:
            target_labels[b, scored] = torch.tensor([episode.targets[t] for t in scored])
        query_lengths[b, : len(episode.query_lengths)] = torch.tensor(episode.query_lengths,
                                                                      dtype=torch.long)
    answer = (target_labels[..., 0] != BLANK).float()
    inputs = torch.cat([encode_triples(input_labels), phase.unsqueeze(-1), answer.unsqueeze(-1)], -1)
    targets = encode_triples(target_labels)
    info: dict[str, Any] = {
        "input_labels": input_labels, "target_labels": target_labels,
        "answer_query": answer_query, "query_lengths": query_lengths,
        "lengths": torch.tensor([len(e) for e in episodes]),
        "graph_sizes": torch.tensor([e.graph_size for e in episodes]),
    }
    if width:
        candidates = torch.full((batch, steps, width, 3), BLANK, dtype=torch.long)
        optimal = torch.zeros(batch, steps, width, dtype=torch.bool)
        choice = torch.full((batch, steps), -1, dtype=torch.long)
        for b, episode in enumerate(episodes):
            for t, options in enumerate(episode.candidates):
                if options:
                    candidates[b, t, : len(options)] = torch.tensor(options)
                    optimal[b, t, : len(options)] = torch.tensor(episode.optimal[t])
                    choice[b, t] = episode.choice[t]
        info.update(candidates=candidates, optimal=optimal, choice=choice)
    return Batch(inputs, targets, answer, info=info)


# -- the shared task logic --------------------------------------------------------


def lesson_levels(lessons: Sequence[tuple], keys: Sequence[str], count: int) -> list[dict[str, Any]]:
    """Curriculum dicts from rows of (low, high) ranges, numbered from lesson 1."""
    levels = []
    for i, row in enumerate(lessons[:count]):
        level: dict[str, Any] = {"lesson": i + 1}
        for key, value in zip(keys, row):
            if isinstance(value, tuple):
                level[f"min_{key}"], level[f"max_{key}"] = value
            else:
                level[key] = value
        levels.append(level)
    return levels


class GraphTask(Task):
    """What the three graph tasks share: sizes, loss, metrics, lesson mixing.

    Metrics (sums over sequences, see `Task.metrics`): ``sequence_error``
    (sequences with any wrong answer triple; the primary metric, so the
    paper's "fraction of sequences correct" is 1 - sequence_error),
    ``triple_error`` (fraction of a sequence's answer triples that are wrong)
    and ``digit_error`` (fraction of its answer digits that are wrong, a
    smoother sign of learning).
    """

    primary_metric: ClassVar[str] = "sequence_error"
    report_metrics: ClassVar[tuple[str, ...]] = ("triple_error", "digit_error")
    input_size: int = INPUT_SIZE
    output_size: int = OUTPUT_SIZE

    # Subclasses: fraction of sequences drawn from earlier lessons (Methods:
    # 10% for traversal and inference, none for shortest path).
    earlier_fraction: float = 0.0

    def episode(self, generator: torch.Generator, **params: Any) -> Episode:
        raise NotImplementedError

    def sample(self, batch_size: int, generator: torch.Generator, **params: Any) -> Batch:
        """``batch_size`` sequences at ``params``; with a ``lesson`` number, each
        sequence comes with probability `earlier_fraction` from a uniformly
        chosen earlier lesson (Methods, "Curriculum learning")."""
        lesson = params.pop("lesson", None)
        earlier = self.levels()[: (lesson or 1) - 1]
        episodes = []
        for _ in range(batch_size):
            chosen = params
            if earlier and self.earlier_fraction > 0 and \
                    float(torch.rand((), generator=generator)) < self.earlier_fraction:
                chosen = dict(earlier[randint(generator, 0, len(earlier) - 1)])
                chosen.pop("lesson")
            episodes.append(self.episode(generator, **chosen))
        return collate(episodes)

    def validation_batches(self, batch_size: int, generator: torch.Generator, batches: int,
                           **params: Any):
        """Held-out batches of the lesson itself (no earlier lessons mixed in)."""
        params.pop("lesson", None)
        for _ in range(batches):
            yield collate([self.episode(generator, **params) for _ in range(batch_size)])

    # -- scoring ---------------------------------------------------------------

    def output_probabilities(self, outputs: Tensor) -> Tensor:
        """A softmax per digit, ``[B, T, 90]``."""
        return self.digit_log_probs(outputs).exp().flatten(-2)

    def digit_log_probs(self, outputs: Tensor) -> Tensor:
        """``[B, T, 90]`` logits -> ``[B, T, 9, 10]`` log-softmax per digit."""
        return outputs.reshape(*outputs.shape[:-1], 3 * DIGITS, CLASSES).log_softmax(-1)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """-Σ_t A(t) Σ_d log Pr(z_t^d | y_t^d), averaged over sequences (Methods)."""
        log_probs = self.digit_log_probs(outputs)
        targets = batch.targets.reshape(log_probs.shape)
        per_step = -(log_probs * targets).sum((-1, -2))
        return (per_step * batch.loss_mask).sum() / outputs.shape[0]

    def step_correct(self, outputs: Tensor, batch: Batch) -> Tensor:
        """``[B, T]`` bool: the answer triple at each step is right (all 9 digits)."""
        predicted = self.digit_log_probs(outputs).argmax(-1)
        expected = batch.targets.reshape(*predicted.shape, CLASSES).argmax(-1)
        return (predicted == expected).all(-1)

    def metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        answer = batch.loss_mask > 0
        correct = self.step_correct(outputs, batch) | ~answer
        sequence_ok = correct.all(1) & answer.any(1)
        answers = answer.sum(1).clamp(min=1)
        wrong_triples = (~correct).sum(1) / answers
        predicted = self.digit_log_probs(outputs).argmax(-1)
        expected = batch.targets.reshape(*predicted.shape, CLASSES).argmax(-1)
        wrong_digits = ((predicted != expected) & answer.unsqueeze(-1)).sum((1, 2)) / (answers * 9)
        digit_error = float(wrong_digits.sum())
        return {
            "sequences": float(outputs.shape[0]),
            "sequence_error": float((~sequence_ok).sum()),
            "triple_error": float(wrong_triples.sum()),
            "digit_error": digit_error,
        }

    def query_correct(self, outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """Per query: (right ``[B, Q]`` bool, length ``[B, Q]``, -1 where absent).

        A query is right when every answer step belonging to it is right. Its
        length is the traversal's number of edges, the shortest path's number
        of steps, or the relation's number of edges.
        """
        step_ok = self.step_correct(outputs, batch)
        owner = batch.info["answer_query"]
        lengths = batch.info["query_lengths"]
        right = torch.ones(lengths.shape, dtype=torch.bool, device=outputs.device)
        for q in range(lengths.shape[1]):
            belongs = owner == q
            right[:, q] = (step_ok | ~belongs).all(1) & belongs.any(1)
        return right, lengths


def accuracy_by_length(right: Tensor, lengths: Tensor) -> dict[int, tuple[int, int]]:
    """``{query length: (right, total)}`` from `GraphTask.query_correct`."""
    table: dict[int, tuple[int, int]] = {}
    for length in sorted(set(lengths[lengths >= 0].tolist())):
        chosen = lengths == length
        table[int(length)] = (int((right & chosen).sum()), int(chosen.sum()))
    return table


# -- graphs -------------------------------------------------------------------------

LESSON_KEYS = ("nodes", "degree", "length")
GRAPH_ATTEMPTS = 100  # random graphs tried before a setting is declared impossible


def random_graph(generator: torch.Generator, num_nodes: int, min_degree: int, max_degree: int,
                 edge_label_pool: int | None = None) -> LabelledGraph:
    """A random k-nearest-neighbour graph as in the paper's Methods.

    Args:
        num_nodes: N, the number of nodes (points in the unit square).
        min_degree, max_degree: range of K, the out-degree drawn per node
            (capped at N - 1).
        edge_label_pool: None for the traversal / shortest-path labelling
            (N distinct numbers from 0-999, each node's edge labels drawn from
            them without repeats); an integer P to draw each node's edge
            labels without repeats from 0..P-1 instead (inference: P = 10).
    """
    if num_nodes < 2:
        raise ValueError(f"random_graph: expected at least 2 nodes, got {num_nodes}")
    points = torch.rand(num_nodes, 2, generator=generator, dtype=torch.float64)
    order = torch.cdist(points, points).argsort(dim=1)  # column 0 is the node itself
    node_labels = torch.randperm(MAX_LABEL + 1, generator=generator)[:num_nodes].tolist()
    if edge_label_pool is None:
        pool = torch.randperm(MAX_LABEL + 1, generator=generator)[:num_nodes].tolist()
    else:
        pool = list(range(edge_label_pool))
    triples = []
    for i in range(num_nodes):
        k = min(randint(generator, min_degree, max_degree), num_nodes - 1, len(pool))
        labels = torch.randperm(len(pool), generator=generator)[:k].tolist()
        for j, neighbour in enumerate(order[i, 1 : k + 1].tolist()):
            triples.append((node_labels[i], pool[labels[j]], node_labels[neighbour]))
    positions = {node_labels[i]: (float(p[0]), float(p[1])) for i, p in enumerate(points)}
    return LabelledGraph(tuple(triples), positions=positions,
                         description=f"random graph, {num_nodes} nodes, {len(triples)} edges")


def shuffled(triples: Sequence[Triple], generator: torch.Generator) -> list[Triple]:
    """The graph description in random order (Methods: "presented in random order")."""
    return [triples[i] for i in torch.randperm(len(triples), generator=generator).tolist()]


@lru_cache(maxsize=8)
def london_graph(kind: str, data_dir: str = "") -> LabelledGraph:
    """The London test map ``kind`` ("zone1" or "full"), loaded once per process."""
    return underground_map(kind, data_dir or None)


def london_available(data_dir: str = "") -> bool:
    return find_london_dir(data_dir or None) is not None


def check_graph_task(owner: str, task: Any, lessons: int) -> None:
    if task.lessons > lessons:
        raise ValueError(f"{owner}.lessons: the paper's curriculum has {lessons} lessons, got {task.lessons}")
    if not 0 <= getattr(task, "earlier_fraction", 0.0) <= 1:
        raise ValueError(f"{owner}.earlier_fraction: expected 0-1, got {task.earlier_fraction}")
    if task.planning_steps < 0:
        raise ValueError(f"{owner}.planning_steps: expected >= 0, got {task.planning_steps}")
    if task.test_map not in MAPS:
        raise ValueError(f"{owner}.test_map: expected one of {MAPS}, got {task.test_map!r}")
    if task.london_dir and not Path(task.london_dir).is_dir():
        raise ValueError(f"{owner}.london_dir: London Underground data folder {task.london_dir} "
                         "does not exist")
    london_available(task.london_dir)  # a $TORCHDNC_LONDON_DIR that does not exist is an error
