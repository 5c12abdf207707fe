"""The graph tasks' generalisation tests, per query length, beside the paper.

Graves et al. 2016 trained on random graphs and tested with no retraining:

- traversal: random seven-step traversals of the London Underground Zone 1
  interchange map, 98.8 ± 1.6 % right (Fig. 2b, ED Table 3);
- shortest path: all four-step shortest paths on that map, 55.3 ± 6.4 %
  (ED Table 5), the network's own moves fed back ("free-running");
- inference: four-step relations on a family tree, 81.8 ± 13.5 % (ED Table 4).

The ± are over 20 training runs. Here the map is `torchdnc.data.london`'s
zone-1 interchange map (or the full network) and the tree
`torchdnc.tasks.inference.default_family_tree`; see those modules for how they
differ from the paper's.

    report = evaluate_graph_run("runs/traversal-default")
    print(to_markdown(report))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from torchdnc.data.graph import LabelledGraph, Triple
from torchdnc.tasks.base import Batch
from torchdnc.tasks.graphs import (ANSWER_CHANNEL, BLANK, PHASE_CHANNEL, GraphTask,
                                   accuracy_by_length, collate, encode_triples, london_graph)
from torchdnc.tasks.inference import InferenceTask, default_family_tree, family_queries
from torchdnc.tasks.shortest_path import (ShortestPathTask, candidate_scores, pairs_at_distance,
                                          shortest_path_prefix)
from torchdnc.tasks.traversal import TraversalTask, random_walk
from torchdnc.training.runs import load_trained


@dataclass(frozen=True)
class PaperResult:
    accuracy: float  # percent, mean over 20 runs
    spread: float  # percent, standard deviation over runs
    test: str


PAPER_RESULTS = {
    "traversal": PaperResult(98.8, 1.6, "random 7-step traversals, Zone 1 interchange map"),
    "shortest_path": PaperResult(55.3, 6.4, "all 4-step shortest paths, same map, free-running"),
    "inference": PaperResult(81.8, 13.5, "4-step relations, family tree"),
}


def _merge(total: dict[int, list[int]], part: dict[int, tuple[int, int]]) -> None:
    for length, (right, count) in part.items():
        entry = total.setdefault(length, [0, 0])
        entry[0] += right
        entry[1] += count


@torch.no_grad()
def accuracy_per_length(model: nn.Module, task: GraphTask, batches: Iterable[Batch],
                        device: torch.device | str = "cpu") -> dict[int, list[int]]:
    """``{query length: [right, total]}`` over ``batches`` (teacher-forced where the task is)."""
    table: dict[int, list[int]] = {}
    for batch in batches:
        batch = batch.to(device)
        outputs = model(batch.inputs, mask=batch.mask)[0]
        _merge(table, accuracy_by_length(*task.query_correct(outputs, batch)))
    return table


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def left_aligned(batch: Batch) -> tuple[Tensor, Tensor]:
    """Inputs moved so that every sequence ENDS at the last step, and the mask.

    Sequences of a `collate`d batch start at step 0 and are padded at the end;
    here the padding goes in front with mask false, where the model carries
    its (zero) initial state through unchanged, so each sequence is processed
    exactly as if alone. Returns ``inputs [B, T, 92]`` and ``mask [B, T]``.
    """
    lengths = batch.info["lengths"]
    steps = batch.inputs.shape[1]
    inputs = torch.zeros_like(batch.inputs)
    mask = torch.zeros(batch.inputs.shape[:2], dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        inputs[b, steps - n :] = batch.inputs[b, :n]
        mask[b, steps - n :] = True
    return inputs, mask


@torch.no_grad()
def rollout_shortest_path(model: nn.Module, task: ShortestPathTask, graph: LabelledGraph,
                          pairs: Sequence[tuple[int, int]], generator: torch.Generator,
                          device: torch.device | str = "cpu") -> list[list[Triple]]:
    """Free-running shortest paths: the network's own moves are fed back.

    For each (start, goal): the graph description, query and planning phase,
    then as many answer steps as the shortest path has. At each answer step
    the network's move is the most likely triple among those leaving its
    current node (Methods, "Structured prediction": renormalised output,
    modal choice; with ``task.renormalise`` false, the nine-digit argmax, and
    a triple that does not leave the current node ends the walk); the next
    step's input is that move. Returns the paths walked; a path is right when
    it ends at the goal (it then has the shortest length by construction).
    """
    prefixes, targets = [], []
    for start, goal in pairs:
        episode, distance = shortest_path_prefix(graph, start, goal, generator, task.planning_steps)
        prefixes.append(episode)
        targets.append(distance[start])
    inputs, mask = left_aligned(collate(prefixes))
    _, state = model(inputs.to(device), mask=mask.to(device))
    nodes = [start for start, _ in pairs]
    previous = torch.full((len(pairs), 3), BLANK, dtype=torch.long)
    paths: list[list[Triple]] = [[] for _ in pairs]
    alive = [True] * len(pairs)
    for step in range(max(targets)):
        x = torch.zeros(len(pairs), 1, inputs.shape[-1])
        x[:, 0, :PHASE_CHANNEL] = encode_triples(previous)
        x[:, 0, PHASE_CHANNEL] = float(step == 0)
        x[:, 0, ANSWER_CHANNEL] = 1.0
        y, state = model(x.to(device), state)
        log_probs = task.digit_log_probs(y[:, 0].cpu())
        for b in range(len(pairs)):
            if not alive[b] or step >= targets[b]:
                continue
            options = graph.out_edges(nodes[b])
            if task.renormalise:
                scores = candidate_scores(log_probs[b][None, None], torch.tensor([[options]]))[0, 0]
                move = options[int(scores.argmax())]
            else:
                predicted = tuple(int(v) for v in _decode(log_probs[b]))
                if predicted not in options:
                    alive[b] = False
                    continue
                move = predicted  # type: ignore[assignment]
            paths[b].append(move)
            previous[b] = torch.tensor(move)
            nodes[b] = move[2]
    return paths


def _decode(log_probs: Tensor) -> Tensor:
    digits = log_probs.argmax(-1).view(3, 3)
    return (digits * torch.tensor([100, 10, 1])).sum(-1)


def _report(task: str, test: str, table: dict[int, list[int]], **extra: Any) -> dict[str, Any]:
    right = sum(r for r, _ in table.values())
    total = sum(n for _, n in table.values())
    paper = PAPER_RESULTS[task]
    return {"task": task, "test": test, "rows": [
        {"length": length, "right": r, "total": n, "accuracy": r / n if n else float("nan")}
        for length, (r, n) in sorted(table.items())],
        "accuracy": right / total if total else float("nan"), "queries": total,
        "paper": {"accuracy": paper.accuracy, "spread": paper.spread, "test": paper.test}, **extra}


def evaluate_traversal(model: nn.Module, task: TraversalTask, graph: LabelledGraph | None = None,
                       lengths: Sequence[int] = (7,), sequences: int = 500, batch_size: int = 50,
                       seed: int = 0, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Random walks of each length in ``lengths`` (``sequences`` each) on the London map."""
    graph = graph or london_graph(task.test_map, task.london_dir)
    generator = torch.Generator().manual_seed(seed)
    walks = [random_walk(graph, n, generator) for n in lengths for _ in range(sequences)]
    batches = (task.batch_for(graph, chunk, generator) for chunk in _chunks(walks, batch_size))
    table = accuracy_per_length(model, task, batches, device)
    ambiguous = graph.ambiguous_moves()
    return _report("traversal", graph.description, table,
                   excluded_moves=f"{len(ambiguous)} ambiguous (station, edge) moves never walked")


def evaluate_shortest_path(model: nn.Module, task: ShortestPathTask, graph: LabelledGraph | None = None,
                           min_length: int = 1, max_length: int = 4, batch_size: int = 50,
                           seed: int = 0, device: torch.device | str = "cpu",
                           max_pairs: int | None = None) -> dict[str, Any]:
    """Every pair min_length to max_length steps apart, free-running and teacher-forced.

    With ``max_pairs``, a seeded random sample of that many pairs when there are
    more (the report says so); the zone-1 map's pairs are always all tested.
    """
    graph = graph or london_graph(task.test_map, task.london_dir)
    pairs = [p for found in pairs_at_distance(graph, min_length, max_length).values() for p in found]
    generator = torch.Generator().manual_seed(seed)
    extra: dict[str, Any] = {}
    if max_pairs is not None and len(pairs) > max_pairs:
        chosen = torch.randperm(len(pairs), generator=generator)[:max_pairs].tolist()
        extra["excluded_queries"] = (f"a random sample of {max_pairs} of the map's {len(pairs)} "
                                     f"pairs {min_length}-{max_length} steps apart")
        pairs = [pairs[i] for i in sorted(chosen)]
    table: dict[int, list[int]] = {}
    for chunk in _chunks(pairs, batch_size):
        walked = rollout_shortest_path(model, task, graph, chunk, generator, device)
        for (start, goal), path in zip(chunk, walked):
            length = graph.distances_from(start)[goal]
            right = len(path) == length and path[-1][2] == goal
            _merge(table, {length: (int(right), 1)})
    forced = accuracy_per_length(model, task, (task.batch_for(graph, chunk, generator)
                                               for chunk in _chunks(pairs, batch_size)), device)
    return _report("shortest_path", graph.description, table,
                   teacher_forced=[{"length": n, "right": r, "total": t} for n, (r, t) in sorted(forced.items())],
                   **extra)


def evaluate_inference(model: nn.Module, task: InferenceTask, graph: LabelledGraph | None = None,
                       lengths: Sequence[int] = (4,), queries_per_sequence: int = 3,
                       batch_size: int = 50, seed: int = 0,
                       device: torch.device | str = "cpu") -> dict[str, Any]:
    """Every unambiguous (person, relation) of the given lengths on the family tree,
    ``queries_per_sequence`` per sequence (ED Table 4: 3), in random order."""
    graph = graph or default_family_tree(task.family_seed, task.family_generations)
    queries, ambiguous = family_queries(graph, tuple(lengths))
    generator = torch.Generator().manual_seed(seed)
    queries = [queries[i] for i in torch.randperm(len(queries), generator=generator).tolist()]
    sequences = list(_chunks(queries, queries_per_sequence))
    batches = (task.batch_for(graph, chunk, generator) for chunk in _chunks(sequences, batch_size))
    table = accuracy_per_length(model, task, batches, device)
    return _report("inference", graph.description, table,
                   excluded_queries=f"{ambiguous} (person, relation) pairs with several answers left out")


# Shortest-path pairs tested on the full network (it has thousands within 4 steps).
FULL_MAP_MAX_PAIRS = 1000


def evaluate_graph_run(run_dir: Path | str, device: str = "cpu", seed: int = 0,
                       london_map: str | None = None, which: str = "best",
                       **options: Any) -> dict[str, Any]:
    """Load a trained run and apply the test of its task (options go to that test).

    ``london_map`` ("zone1" or "full") picks the Underground map of the traversal
    and shortest-path tests; by default the run's ``test_map``. ``which``
    checkpoint as `torchdnc.training.load_trained`.
    """
    config, task, model, payload = load_trained(run_dir, device, which)
    tests = {"traversal": evaluate_traversal, "shortest_path": evaluate_shortest_path,
             "inference": evaluate_inference}
    if config.task not in tests:
        raise ValueError(f"{run_dir}: task {config.task!r} is not a graph task ({sorted(tests)})")
    if london_map is not None:
        if config.task == "inference":
            raise ValueError(f"london_map: the inference test uses a family tree, not a map; "
                             f"got london_map={london_map!r}")
        options["graph"] = london_graph(london_map, task.london_dir)
        if config.task == "shortest_path" and london_map == "full":
            options.setdefault("max_pairs", FULL_MAP_MAX_PAIRS)
    report = tests[config.task](model, task, seed=seed, device=device, **options)
    report.update(run=str(run_dir), step=payload["step"],
                  level=payload["progress"]["level"] + 1, levels=len(task.levels()))
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """The per-length table, the overall accuracy and the paper's number."""
    paper = report["paper"]
    lines = [f"{report['task']} test on {report['test']}"
             + (f" (run {report['run']}, step {report['step']}, lesson {report['level']}/"
                f"{report['levels']})" if "run" in report else "") + ".", "",
             "| query length | right | total | accuracy |", "|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['length']} | {row['right']} | {row['total']} | {row['accuracy']:.1%} |")
    lines += ["", f"Overall: {report['accuracy']:.1%} of {report['queries']} queries. Paper: "
                  f"{paper['accuracy']} ± {paper['spread']} % ({paper['test']})."]
    for key in ("excluded_moves", "excluded_queries"):
        if key in report:
            lines.append(f"Note: {report[key]}.")
    if "teacher_forced" in report:
        forced = ", ".join(f"{r['length']}: {r['right']}/{r['total']}" for r in report["teacher_forced"])
        lines.append(f"Teacher-forced (every move optimal given the optimal prefix): {forced}.")
    return "\n".join(lines) + "\n"
