"""Specification of the graph tasks: encoding, graphs, sequences, scoring,
curricula, the London Underground test maps and the family-tree test."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from torchdnc import DNC
from torchdnc.tasks import make_task
from torchdnc.data import london
from torchdnc.tasks.inference import (EDGE_LABELS, INFERENCE_LESSONS, NAMED_RELATIONS, InferenceTask,
                                   family_queries, follow_relation, random_family_tree,
                                   relation_labels, relation_table)
from torchdnc.tasks.graphs import (BLANK, INPUT_SIZE, OUTPUT_SIZE, accuracy_by_length, collate,
                                   decode_labels, decode_triples, encode_labels, encode_triples,
                                   random_graph)
from torchdnc.data.graph import LabelledGraph, QueryError
from torchdnc.tasks.shortest_path import (SHORTEST_PATH_LESSONS, ShortestPathTask,
                                          shortest_path_episode)
from torchdnc.tasks.traversal import TRAVERSAL_LESSONS, TraversalTask, random_walk, traversal_path


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def perfect(batch):
    """Logits whose every digit's argmax is the target's (the scored steps)."""
    return batch.targets * 60 - 30


# -- encoding -------------------------------------------------------------------------


def test_label_encoding_by_hand_and_round_trip():
    code = encode_labels(torch.tensor(407))
    assert code.shape == (30,)
    assert code.nonzero().flatten().tolist() == [4, 10 + 0, 20 + 7]  # digits 4, 0, 7
    assert torch.equal(encode_labels(torch.tensor(BLANK)), torch.zeros(30))  # blank "_"
    every = torch.arange(-1, 1000)
    assert torch.equal(decode_labels(encode_labels(every)), every)
    triples = torch.tensor([[12, BLANK, 999], [0, 5, 300]])
    codes = encode_triples(triples)
    assert codes.shape == (2, 90) and codes.sum(-1).tolist() == [6, 9]
    assert torch.equal(decode_triples(codes), triples)
    for bad in (1000, -2):
        with pytest.raises(ValueError, match="label"):
            encode_labels(torch.tensor(bad))


# -- a hand-built graph -------------------------------------------------------------------

# 1 --a--> 2 --a--> 4,  1 --b--> 3 --c--> 4,  1 --d--> 5 --a--> 1,  4 --a--> 1
A, B, C, D = 10, 11, 12, 13
TINY = LabelledGraph(((1, A, 2), (1, B, 3), (1, D, 5), (2, A, 4), (3, C, 4), (5, A, 1), (4, A, 1)),
                     node_names={1: "one", 2: "two", 3: "three", 4: "four", 5: "five"},
                     edge_names={A: "a", B: "b", C: "c", D: "d"})


def test_traversal_sequence_by_hand():
    path = traversal_path(TINY, "one", ["a", "a", "a"])
    assert path == [(1, A, 2), (2, A, 4), (4, A, 1)]
    batch = TraversalTask().batch_for(TINY, [path], generator())
    labels, flags = batch.info["input_labels"][0], batch.inputs[0, :, 90:]
    assert batch.inputs.shape == (1, 7 + 3 + 3, INPUT_SIZE)
    assert sorted(map(tuple, labels[:7].tolist())) == sorted(TINY.triples)  # graph, shuffled
    assert labels[7:10].tolist() == [[1, A, BLANK], [BLANK, A, BLANK], [BLANK, A, BLANK]]
    assert torch.all(labels[10:] == BLANK)  # the answer phase has no input triples
    assert flags[:, 0].tolist() == [0] * 7 + [1, 0, 0] + [1, 0, 0]  # phase changes
    assert flags[:, 1].tolist() == [0] * 10 + [1, 1, 1]  # answer required
    assert batch.loss_mask[0].tolist() == [0] * 10 + [1, 1, 1]
    assert batch.info["target_labels"][0, 10:].tolist() == [list(t) for t in path]
    assert torch.all(batch.targets[0, :10] == 0)
    assert batch.info["query_lengths"].tolist() == [[3]]


def test_traversal_queries_without_an_answer_are_errors():
    with pytest.raises(QueryError, match="unknown node 'nine'"):
        traversal_path(TINY, "nine", ["a"])
    with pytest.raises(QueryError, match="no edge 'c'.*leaves 'one'"):
        traversal_path(TINY, "one", ["c"])
    with pytest.raises(QueryError, match="unknown edge 'z'"):
        traversal_path(TINY, "one", ["z"])
    forked = LabelledGraph(TINY.triples + ((1, A, 3),))
    with pytest.raises(QueryError, match="ambiguous"):
        traversal_path(forked, 1, [A])


def test_shortest_path_sequence_by_hand():
    episode = shortest_path_episode(TINY, 1, 4, generator(), planning_steps=10)
    batch = collate([episode])
    labels, flags = batch.info["input_labels"][0], batch.inputs[0, :, 90:]
    assert batch.inputs.shape[1] == 7 + 1 + 10 + 2
    assert labels[7].tolist() == [1, BLANK, 4] and flags[7, 0] == 1  # query (start, _, goal)
    assert torch.all(labels[8:18] == BLANK) and flags[8:18, 0].tolist() == [1] + [0] * 9  # planning
    assert batch.loss_mask[0].tolist() == [0] * 18 + [1, 1]
    first, second = batch.info["target_labels"][0, 18:].tolist()
    assert first in ([1, A, 2], [1, B, 3]) and second[2] == 4 and second[0] == first[2]
    # Teacher forcing: answer step 0 sees a blank triple, step 1 the target of step 0.
    assert labels[18].tolist() == [BLANK] * 3 and labels[19].tolist() == first
    candidates = batch.info["candidates"][0, 18, :3].tolist()
    assert sorted(candidates) == sorted([[1, A, 2], [1, B, 3], [1, D, 5]])
    optimal = dict(zip(map(tuple, candidates), batch.info["optimal"][0, 18, :3].tolist()))
    assert optimal == {(1, A, 2): True, (1, B, 3): True, (1, D, 5): False}
    with pytest.raises(QueryError, match="no path"):
        shortest_path_episode(LabelledGraph(((1, A, 2),)), 2, 1, generator())


def test_shortest_path_scores_any_optimal_move_and_renormalises():
    task = ShortestPathTask()
    batch = collate([shortest_path_episode(TINY, 1, 4, generator(), task.planning_steps)])
    logits = perfect(batch)
    assert task.metrics(logits, batch)["sequence_error"] == 0
    assert task.loss(logits, batch) < 1e-6
    first = batch.info["target_labels"][0, 18].tolist()
    other = [1, B, 3] if first == [1, A, 2] else [1, A, 2]
    moved = logits.clone()
    moved[0, 18] = encode_triples(torch.tensor(other)) * 60 - 30  # the other shortest path
    assert task.metrics(moved, batch)["sequence_error"] == 0
    moved[0, 18] = encode_triples(torch.tensor([1, D, 5])) * 60 - 30  # a detour
    metrics = task.metrics(moved, batch)
    assert metrics["sequence_error"] == 1 and metrics["triple_error"] == 0.5
    # Uniform digits: each step's loss is log(number of moves leaving the node).
    zeros = torch.zeros_like(logits)
    second_node = batch.info["target_labels"][0, 18, 2].item()
    expected = math.log(3) + math.log(len(TINY.out_edges(second_node)))
    assert task.loss(zeros, batch).item() == pytest.approx(expected, rel=1e-5)
    plain = ShortestPathTask(renormalise=False)
    assert plain.loss(zeros, batch).item() == pytest.approx(2 * 9 * math.log(10), rel=1e-5)


# -- loss and metrics ----------------------------------------------------------------------


def test_loss_and_metrics_on_right_and_wrong_answers():
    task = TraversalTask()
    paths = [traversal_path(TINY, 1, [A, A]), traversal_path(TINY, 1, [B, C, A])]
    batch = task.batch_for(TINY, paths, generator())
    logits = perfect(batch)
    metrics = task.metrics(logits, batch)
    assert metrics == {"sequences": 2, "sequence_error": 0, "triple_error": 0, "digit_error": 0}
    assert task.loss(logits, batch) < 1e-6
    # One wrong digit in the second answer triple of sequence 1.
    step = int(batch.loss_mask[1].nonzero()[1])
    logits[1, step, 60:70] = torch.roll(logits[1, step, 60:70], 1)
    metrics = task.metrics(logits, batch)
    assert metrics["sequence_error"] == 1
    assert metrics["triple_error"] == pytest.approx(1 / 3)
    assert metrics["digit_error"] == pytest.approx(1 / 27)
    right, lengths = task.query_correct(logits, batch)
    assert accuracy_by_length(right, lengths) == {2: (1, 1), 3: (0, 1)}
    # The loss is the digits' summed cross-entropy, averaged over sequences.
    zeros = torch.zeros_like(logits)
    assert task.loss(zeros, batch).item() == pytest.approx((2 + 3) * 9 * math.log(10) / 2, rel=1e-5)
    assert task.metrics(-perfect(batch), batch)["sequence_error"] == 2


# -- random graphs and curricula ---------------------------------------------------------------


def test_random_graphs_follow_the_methods():
    for seed in range(20):
        n = 3 + seed
        graph = random_graph(generator(seed), n, 2, 4)
        nodes = graph.nodes
        assert len(nodes) == n and all(0 <= v <= 999 for v in nodes)
        edge_labels = {e for _, e, _ in graph.triples}
        assert len(edge_labels) <= n  # drawn from N numbers
        for node in nodes:
            out = graph.out_edges(node)
            assert min(2, n - 1) <= len(out) <= 4
            assert len({e for _, e, _ in out}) == len(out)  # unique per outbound node
            # The destinations are the nearest neighbours in the unit square.
            x, y = graph.positions[node]
            distance = {v: math.dist((x, y), graph.positions[v]) for v in nodes if v != node}
            assert max(distance[d] for _, _, d in out) <= sorted(distance.values())[len(out) - 1] + 1e-12
        assert not graph.ambiguous_moves()
    small = random_graph(generator(1), 12, 2, 4, edge_label_pool=EDGE_LABELS)
    assert {e for _, e, _ in small.triples} <= set(range(10))


def test_curricula_are_the_papers():
    traversal, shortest, inference = (make_task(n) for n in ("traversal", "shortest_path", "inference"))
    assert len(traversal.levels()) == 14 and len(shortest.levels()) == 15
    assert len(inference.levels()) == 17
    assert traversal.levels()[0] == {"lesson": 1, "min_nodes": 3, "max_nodes": 10, "min_degree": 2,
                                     "max_degree": 4, "min_length": 1, "max_length": 1}
    assert traversal.levels()[-1] == {"lesson": 14, "min_nodes": 10, "max_nodes": 40, "min_degree": 2,
                                      "max_degree": 6, "min_length": 1, "max_length": 20}
    assert shortest.levels()[0] == {"lesson": 1, "min_nodes": 5, "max_nodes": 10, "min_degree": 1,
                                    "max_degree": 2, "min_length": 2, "max_length": 2}
    assert shortest.levels()[-1] == {"lesson": 15, "min_nodes": 20, "max_nodes": 25, "min_degree": 2,
                                     "max_degree": 6, "min_length": 2, "max_length": 5}
    assert inference.levels()[-1] == {"lesson": 17, "min_nodes": 20, "max_nodes": 25, "min_degree": 2,
                                      "max_degree": 4, "min_length": 2, "max_length": 5, "queries": 3}
    assert (len(TRAVERSAL_LESSONS), len(SHORTEST_PATH_LESSONS), len(INFERENCE_LESSONS)) == (14, 15, 17)
    assert len(TraversalTask(lessons=4).levels()) == 4
    with pytest.raises(ValueError, match="14 lessons"):
        TraversalTask(lessons=15)
    assert TraversalTask().earlier_fraction == 0.1 and InferenceTask().earlier_fraction == 0.1
    assert ShortestPathTask().earlier_fraction == 0.0  # Methods: lessons already nest


def test_earlier_lessons_are_mixed_into_training_only():
    task = TraversalTask(earlier_fraction=1.0)
    level = task.levels()[3]  # lesson 4: paths of 1-4 steps
    lengths = task.sample(40, generator(), **level).info["query_lengths"].flatten()
    assert lengths.max() <= 3  # lessons 1-3 only
    held_out = next(task.validation_batches(40, generator(), 1, **level))
    assert held_out.info["query_lengths"].max() == 4
    plain = TraversalTask(earlier_fraction=0.0).sample(40, generator(), **level)
    assert plain.info["query_lengths"].max() == 4


def test_training_batches_are_seeded_and_padded_at_the_end():
    task = TraversalTask()
    level = task.levels()[4]
    batch = task.sample(6, generator(3), **level)
    again = task.sample(6, generator(3), **level)
    assert torch.equal(batch.inputs, again.inputs) and batch.mask is None
    for b, n in enumerate(batch.info["lengths"].tolist()):
        assert torch.all(batch.inputs[b, n:] == 0) and torch.all(batch.loss_mask[b, n:] == 0)
        assert batch.loss_mask[b, n - 1] == 1  # every sequence ends with its answer


# -- inference and family trees -----------------------------------------------------------------


def test_relation_table_is_fixed():
    table = relation_table()
    assert len(table) == 400 and min(table) == 10 and max(table) == 409
    for first, length in ((10, 2), (110, 3), (210, 4), (310, 5)):
        sequences = [table[first + i] for i in range(100)]
        assert all(len(s) == length for s in sequences) and len(set(sequences)) == 100
        assert all(0 <= e < 10 for s in sequences for e in s)
    assert set(NAMED_RELATIONS) <= set(table.values())
    labels = relation_labels()
    assert NAMED_RELATIONS[0, 0, 0, 2] == "maternal great uncle (via great grandmother)"
    # Pinned: a checkpoint's relation labels must mean the same sequences forever.
    assert labels[0, 0] == 10 and labels[0, 0, 0, 2] == 214
    assert table[409] == (1, 9, 8, 2, 9)
    assert table[150] == (3, 7, 3)


def test_maternal_great_uncle_in_a_hand_built_tree():
    # Freya's mother Mary, Mary's mother Gwen, Gwen's mother Ada; Ada's sons Fergus and Gwen's
    # sister Iris; Mary's father Tom.
    M, F, S, D = 0, 1, 2, 3
    freya, mary, gwen, ada, fergus, iris, tom = 1, 2, 3, 4, 5, 6, 7
    links = [(freya, M, mary), (mary, D, freya), (mary, M, gwen), (gwen, D, mary), (mary, F, tom),
             (tom, D, mary), (gwen, M, ada), (ada, D, gwen), (fergus, M, ada), (ada, S, fergus),
             (iris, M, ada), (ada, D, iris)]
    tree = LabelledGraph(tuple(links))
    uncle = relation_labels()[M, M, M, S]
    assert follow_relation(tree, freya, (M, M, M, S)) == {fergus}
    queries, _ = family_queries(tree, (4,))
    assert (freya, uncle, fergus) in queries
    assert follow_relation(tree, fergus, (M, D)) == {gwen, iris}  # his sisters: ambiguous
    queries, left_out = family_queries(tree, (2,))
    sister = relation_labels()[M, D]
    assert not [q for q in queries if q[:2] == (fergus, sister)] and left_out >= 1
    batch = InferenceTask().batch_for(tree, [[(freya, uncle, fergus)]], generator())
    labels = batch.info["input_labels"][0]
    assert labels[12].tolist() == [freya, uncle, BLANK] and torch.all(labels[13:24] == BLANK)
    assert batch.loss_mask[0].tolist() == [0] * 23 + [1]
    assert batch.info["target_labels"][0, 23].tolist() == [freya, uncle, fergus]
    assert batch.info["query_lengths"].tolist() == [[4]]


def test_random_family_trees_link_parents_and_children_both_ways():
    graph, people = random_family_tree(generator(0))
    with_parents = [p for p in people if p.mother is not None]
    assert len(graph.triples) == 4 * len(with_parents)
    for p in with_parents:
        assert (p.label, 0, p.mother) in graph.triples and (p.label, 1, p.father) in graph.triples
        assert (p.mother, 3 if p.female else 2, p.label) in graph.triples
    task = InferenceTask()
    tree = task.family_tree()
    queries, _ = family_queries(tree, (4,))
    assert len(queries) >= 20  # enough 4-step relations to test on
    batch = task.sample(3, generator(), **task.generalisation()["family tree, 4-step relations"])
    assert batch.info["query_lengths"].tolist() == [[4, 4, 4]] * 3


def test_inference_training_queries_follow_their_relation():
    task = InferenceTask()
    level = task.levels()[-1]
    table = relation_table()
    for seed in range(3):
        episode = task.episode(generator(seed), **{k: v for k, v in level.items() if k != "lesson"})
        graph = LabelledGraph(tuple(episode.inputs[: episode.graph_size]))
        targets = [t for t in episode.targets if t is not None]
        assert len(targets) == 3
        for start, relation, end in targets:
            assert follow_relation(graph, start, table[relation]) == {end}


# -- London Underground ------------------------------------------------------------------------

DATA = london.find_london_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="London Underground data folder not found "
                                "(set TORCHDNC_LONDON_DIR or place it at ../shared/data/london_underground)")


@needs_data
def test_london_loader_counts():
    network = london.load_london()
    assert (len(network.stations), len(network.lines), len(network.connections)) == (302, 13, 406)
    full = london.full_map(network)
    assert len(full.triples) == 812 and len(full.nodes) == 302
    assert network.station("Heathrow Terminals 1, 2 & 3").zone == 6  # the name with a comma


@needs_data
def test_zone1_interchange_map():
    graph = london.underground_map("zone1")
    assert len(graph.nodes) == 40 and len(graph.triples) == 192
    pairs = {(min(s, d), max(s, d), e // 10) for s, e, d in graph.triples}
    assert len(pairs) == 96
    assert not graph.ambiguous_moves()  # station + line + heading fixes the next station
    assert len(graph.distances_from(graph.nodes[0])) == 40  # one component
    # Oxford Circus, Central line eastbound: Tottenham Court Road; the non-interchange
    # zone-1 stations of the Northern line between Euston and Bank are collapsed.
    oxford = graph.node_label("Oxford Circus")
    assert graph.name(graph.follow(oxford, graph.edge_label("Central E"))) == "Tottenham Court Road"
    euston = graph.node_label("Euston")
    assert graph.name(graph.follow(euston, graph.edge_label("Northern E"))) == "King's Cross St. Pancras"
    path = traversal_path(graph, "Victoria", ["Victoria N", "Victoria N"])
    assert [graph.name(d) for _, _, d in path] == ["Green Park", "Oxford Circus"]


@needs_data
def test_branch_points_are_never_walked():
    graph = london.underground_map("full")
    ambiguous = graph.ambiguous_moves()
    assert len(ambiguous) == 14
    camden = graph.node_label("Camden Town")
    assert (camden, graph.edge_label("Northern S")) in ambiguous
    with pytest.raises(QueryError, match="ambiguous"):
        traversal_path(graph, "Camden Town", ["Northern S"])
    for seed in range(20):
        walk = random_walk(graph, 7, generator(seed))
        assert len(walk) == 7 and not {(s, e) for s, e, _ in walk} & ambiguous


@needs_data
def test_london_queries_without_an_answer_are_errors():
    graph = london.underground_map("zone1")
    with pytest.raises(QueryError, match="unknown node 'Piccadilly Circus'.*Picadilly Circus"):
        graph.node_label("Piccadilly Circus")  # spelled as in the data
    with pytest.raises(QueryError, match="no edge 'Central E'.*'Victoria'"):
        traversal_path(graph, "Victoria", ["Central E"])
    with pytest.raises(QueryError, match="unknown station 'Hogwarts'"):
        london.load_london().station("Hogwarts")


@needs_data
def test_malformed_or_missing_files_are_named(tmp_path, monkeypatch):
    for name in (london.STATIONS_FILE, london.LINES_FILE, london.CONNECTIONS_FILE):
        shutil.copy(DATA / name, tmp_path / name)
    stations = tmp_path / london.STATIONS_FILE
    rows = stations.read_bytes().split(b"\r\n")
    assert rows[5].startswith(b'5,51.5407,-0.2997,"Alperton",NULL,4,')
    rows[5] = rows[5].replace(b"NULL,4,", b"NULL,four,")  # data row 5: Alperton's zone
    stations.write_bytes(b"\r\n".join(rows))
    with pytest.raises(london.LondonDataError, match=r"london\.stations\.csv: row 5 .*'zone'.*'four'"):
        london.load_london(tmp_path)
    shutil.copy(DATA / london.STATIONS_FILE, stations)
    connections = tmp_path / london.CONNECTIONS_FILE
    connections.write_bytes(connections.read_bytes() + b"11,9999,1,1\r\n")
    with pytest.raises(london.LondonDataError, match=r"connections\.csv: row 407 .*unknown station id 9999"):
        london.load_london(tmp_path)
    (tmp_path / london.LINES_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="london.lines.csv"):
        london.load_london(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        london.load_london(tmp_path / "nowhere")
    monkeypatch.setenv(london.ENV_VAR, str(tmp_path))
    assert london.find_london_dir() == tmp_path  # the environment variable comes first


@needs_data
def test_london_test_batches_through_the_task_interface():
    task = TraversalTask()
    (name, params), = task.generalisation().items()
    assert "London zone1" in name and params["min_length"] == 7
    batch = task.sample(2, generator(), **params)
    assert batch.info["graph_sizes"].tolist() == [192, 192]
    assert batch.loss_mask.sum(1).tolist() == [7, 7]


# -- running a model ------------------------------------------------------------------------


def tiny_dnc():
    torch.manual_seed(0)
    return DNC(input_size=INPUT_SIZE, output_size=OUTPUT_SIZE, hidden_size=16, memory_size=8,
               word_size=4, num_reads=2).eval()


def test_a_model_trains_and_is_evaluated_on_the_graph_tasks(tmp_path):
    from torchdnc.evaluation.graphs import (evaluate_inference, evaluate_shortest_path,
                                           evaluate_traversal, left_aligned, to_markdown)

    model = tiny_dnc()
    for name in ("traversal", "shortest_path", "inference"):
        task = make_task(name)
        batch = task.sample(3, generator(), **task.levels()[0])
        loss = task.loss(model(batch.inputs)[0], batch)
        loss.backward()
        assert torch.isfinite(loss) and loss > 0
    # Left padding under the mask is the same as running each sequence alone.
    task = TraversalTask()
    batch = task.batch_for(TINY, [traversal_path(TINY, 1, [A]), traversal_path(TINY, 1, [B, C, A])],
                           generator())
    inputs, mask = left_aligned(batch)
    with torch.no_grad():
        together = model(inputs, mask=mask)[0][0, -1]
        alone = model(batch.inputs[:1, : int(batch.info["lengths"][0])])[0][0, -1]
    assert torch.allclose(together, alone, atol=1e-6)
    report = evaluate_traversal(model, task, graph=TINY, lengths=(1, 2), sequences=3)
    assert [(r["length"], r["total"]) for r in report["rows"]] == [(1, 3), (2, 3)]
    assert report["paper"]["accuracy"] == 98.8
    report = evaluate_shortest_path(model, ShortestPathTask(), graph=TINY, max_length=2)
    assert sum(r["total"] for r in report["rows"]) == len(TINY.nodes) * (len(TINY.nodes) - 1) - \
        sum(1 for s in TINY.nodes for d, n in TINY.distances_from(s).items() if n > 2)
    assert "Paper: 55.3" in to_markdown(report)
    sample = evaluate_shortest_path(model, ShortestPathTask(), graph=TINY, max_length=2, max_pairs=3)
    assert sample["queries"] == 3
    assert "a random sample of 3 of the map's" in to_markdown(sample)
    report = evaluate_inference(model, InferenceTask(), lengths=(4,))
    assert report["queries"] >= 20 and report["paper"]["accuracy"] == 81.8


@needs_data
def test_figure_3_plot_of_a_london_traversal(tmp_path):
    from torchdnc.viz.graphs import plot_underground_traversal

    path = plot_underground_traversal(tiny_dnc(), TraversalTask(), tmp_path / "fig3.png", steps=3)
    assert path.exists() and path.stat().st_size > 10_000


@pytest.mark.parametrize("name", ["traversal", "shortest_path", "inference"])
def test_the_paper_presets_run(name, tmp_path):
    """The full curricula are runnable as documented (two iterations of each)."""
    from torchdnc.cli import main

    args = ["train", name, "--preset", "paper", "--out", str(tmp_path), "--iterations=2",
            "--eval_interval=2", "--eval_batches=1", "--progress=false"]
    assert main(args) == 0
    from torchdnc.training import read_metrics

    start = [r for r in read_metrics(tmp_path) if r["kind"] == "start"][0]
    assert start["curriculum"].count("lesson=") == {"traversal": 14, "shortest_path": 15,
                                                    "inference": 17}[name]
