"""Specification of `torchdnc.sparse`: SAM and the SDNC (Rae et al. 2016)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.autograd import gradcheck

from conftest import assert_same, leaves
from torchdnc import addressing as dense
from torchdnc import DNCConfig
from torchdnc.sparse import (ExactIndex, SparseSession, SparseDNC, SparseDNCConfig,
                             SparseDNCState, SparseMemoryState, densify, index as index_module)
from torchdnc.sparse import addressing as sparse
from torchdnc.sparse.journal import Tape
from torchdnc.sparse.memory import SparseInterface

f64 = torch.float64
try:
    import faiss  # noqa: F401

    HAS_FAISS = True
except ImportError:
    HAS_FAISS = False
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed "
                                 "(pip install 'torchdnc[ann]'); the exact index needs nothing")
SMALL = dict(input_size=5, output_size=4, hidden_size=9, memory_size=12, word_size=3,
             num_reads=2, sparse_reads=3)
VARIANTS = [dict(link_entries=0), dict(link_entries=4), dict(link_entries=0, usage="discounted"),
            dict(link_entries=3, controller="gru")]


def small_model(**overrides) -> SparseDNC:
    torch.manual_seed(0)
    return SparseDNC(**{**SMALL, **overrides}).double()


def read_through_tape(memory: torch.Tensor, keys, strengths, k: int):
    """Sparse content read of ``memory`` via a fresh tape (as the model does)."""
    tape = Tape(torch.is_grad_enabled(), memory.dtype, memory.device)
    handle = tape.add(memory.clone())
    ids = ExactIndex().search(tape.stores[handle], keys, k)
    valid = ids >= 0  # -1: fewer than k rows to find (empty rows are never read)
    batch, heads = keys.shape[:2]
    rows = tape.gather(handle, ids.clamp(min=0).view(batch, -1)).view(batch, heads, k, -1)
    weights = sparse.sparse_content_weights(rows, keys, strengths, valid)
    return ids, weights, (weights.unsqueeze(-1) * rows).sum(-2)


# -- reads ----------------------------------------------------------------------------


def test_k_equal_n_content_reads_equal_dense_content_weights():
    memory = torch.randn(7, 6, 3, dtype=f64)
    keys, strengths = torch.randn(7, 2, 3, dtype=f64), 1 + torch.rand(7, 2, dtype=f64) * 5
    ids, weights, reads = read_through_tape(memory, keys, strengths, k=6)
    expected = dense.content_weights(memory, keys, strengths)
    assert_same(densify(ids, weights, 6), expected)
    assert_same(reads, dense.read_vectors(memory, expected))


def test_empty_rows_are_never_read():
    """An all-zero row holds nothing: it is not found (id -1, no weight), so the
    content softmax runs over the written rows only (as the faiss index does)."""
    memory = torch.randn(7, 6, 3, dtype=f64)
    memory[2, 4] = 0
    memory[5, :4] = 0  # only two rows written: K_R = 3 finds two and one -1
    keys, strengths = torch.randn(7, 2, 3, dtype=f64), 1 + torch.rand(7, 2, dtype=f64) * 5
    ids = ExactIndex().search(memory, keys, 3)
    assert not (ids[2] == 4).any()
    assert (ids[5] == -1).sum(-1).tolist() == [1, 1] and set(ids[5].flatten().tolist()) == {-1, 4, 5}
    ids, weights, reads = read_through_tape(memory, keys, strengths, k=6)
    written = memory.square().sum(-1) > 0
    scores = strengths[..., None] * dense.cosine_similarity(memory, keys)
    expected = torch.softmax(scores.masked_fill(~written[:, None], float("-inf")), -1)
    assert_same(densify(ids.clamp(min=0), weights, 6), expected)
    assert_same(reads, dense.read_vectors(memory, expected))


@needs_faiss
def test_exact_and_faiss_find_the_same_rows_of_a_partly_empty_memory():
    from torchdnc.sparse import FaissIndex

    memory, keys = torch.randn(3, 40, 4), torch.randn(3, 2, 4)
    memory[:, ::2] = 0  # every other slot never written
    memory[2, 2:] = 0  # one memory with a single written row (slot 1)
    index = FaissIndex(4, 40, lists=1, probes=1)
    index.prepare(memory)
    exact, approximate = ExactIndex().search(memory, keys, 6), index.search(memory, keys, 6)
    assert torch.equal(approximate.sort(-1).values, exact.sort(-1).values)
    assert (exact[2] == -1).sum(-1).tolist() == [5, 5]


def test_k_sparse_read_is_the_renormalised_top_k_of_the_dense_softmax():
    memory = torch.randn(3, 20, 4, dtype=f64)
    keys, strengths = torch.randn(3, 2, 4, dtype=f64), torch.full((3, 2), 3.0, dtype=f64)
    ids, weights, _ = read_through_tape(memory, keys, strengths, k=5)
    full = dense.content_weights(memory, keys, strengths)
    top = full.topk(5, dim=-1)
    assert torch.equal(ids.sort(-1).values, top.indices.sort(-1).values)
    assert_same(weights.sort(-1).values, (top.values / top.values.sum(-1, keepdim=True)).sort(-1).values)


def test_chunked_exact_search_equals_one_pass(monkeypatch):
    memory, keys = torch.randn(2, 300, 4), torch.randn(2, 3, 4)
    whole = ExactIndex().search(memory, keys, 7)
    monkeypatch.setattr(index_module, "EXACT_CHUNK", 64)
    chunked = ExactIndex().search(memory, keys, 7)
    assert torch.equal(whole.sort(-1).values, chunked.sort(-1).values)


# -- writes, usage ---------------------------------------------------------------------


def test_write_weights_mix_previous_reads_and_least_used_slot():
    read_ids = torch.tensor([[[1, 2], [2, 5]]])
    read_weights = torch.tensor([[[0.6, 0.4], [0.5, 0.5]]], dtype=f64)
    alpha, gamma = torch.tensor([[0.8]], dtype=f64), torch.tensor([[0.25]], dtype=f64)
    ids, totals, first = sparse.write_weights(read_ids, read_weights, torch.tensor([7]), alpha, gamma)
    weights = densify(ids, totals * first, 8)[0]
    # alpha (gamma mean_i w^R_i + (1 - gamma) I^U): mean of heads = (0, .3, .45, 0, 0, .25, 0, 0)
    expected = 0.8 * (0.25 * torch.tensor([0, .3, .45, 0, 0, .25, 0, 0], dtype=f64)
                      + 0.75 * torch.eye(8, dtype=f64)[7])
    assert_same(weights, expected)
    assert torch.equal(first[0], torch.tensor([True, True, False, True, True]))


def test_least_used_row_is_erased_and_previous_reads_are_added_to():
    rows = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=f64)
    ids, weights = torch.tensor([[4, 9]]), torch.tensor([[0.5, 0.25]], dtype=f64)
    vector = torch.tensor([[[2.0, -2.0]]], dtype=f64)
    new = sparse.erase_and_write(rows, ids, torch.tensor([9]), weights, vector)
    assert_same(new, torch.tensor([[[2.0, 1.0], [0.5, -0.5]]], dtype=f64))


def test_least_used_is_the_smallest_key_lowest_index_first_across_blocks():
    usage = torch.tensor([[5.0, 3.0, 9.0, 8.0, 4.0, 3.0, 7.0, 6.0, 5.0, 3.5]], dtype=f64)
    width = sparse.block_size(10)
    blocks = torch.stack([usage[:, i:i + width].amin(-1) for i in range(0, 10, width)], 1)
    assert sparse.least_used(usage, blocks).tolist() == [1]
    usage[0, 1] = 10.0
    blocks = torch.stack([usage[:, i:i + width].amin(-1) for i in range(0, 10, width)], 1)
    assert sparse.least_used(usage, blocks).tolist() == [5]


def test_last_access_counts_only_accesses_above_threshold():
    previous = torch.tensor([[-float("inf"), 2.0, 2.0]], dtype=f64)
    access = torch.tensor([[0.5, 0.001, 0.2]], dtype=f64)
    keys = sparse.usage_keys(previous, access, torch.tensor([6]), "last_access", 0.005, 0.99)
    assert keys.tolist() == [[6.0, 2.0, 6.0]]


def test_discounted_usage_keys_order_like_the_discounted_sum():
    accesses = torch.rand(12, 5, dtype=f64) * (torch.rand(12, 5) < 0.4)
    keys = torch.full((1, 5), -float("inf"), dtype=f64)
    usage = torch.zeros(5, dtype=f64)
    for t in range(12):
        keys = sparse.usage_keys(keys, accesses[t:t + 1], torch.tensor([t]), "discounted", 0, 0.9)
        usage = 0.9 * usage + accesses[t]
    assert_same(torch.exp(keys[0] + 11 * torch.log(torch.tensor(0.9, dtype=f64))), usage)


# -- links (SDNC) ---------------------------------------------------------------------------


def test_sparse_links_without_pruning_equal_the_dense_links_and_read_weights():
    torch.manual_seed(3)
    B, N, R = 2, 6, 2
    state = SparseMemoryState.zeros(B, N, 3, R, N, N, dtype=f64)
    access = SparseSession(state, ExactIndex(), N, "last_access", 0.005, 0.99)
    state = access.buffers(state)
    link, precedence = torch.zeros(B, 1, N, N, dtype=f64), torch.zeros(B, 1, N, dtype=f64)
    for _ in range(5):
        ids = torch.stack([torch.randperm(N)[:3] for _ in range(B)])
        values = torch.rand(B, 3, dtype=f64) / 3
        first = torch.ones(B, 3, dtype=torch.bool)
        state = access._update_links(state, ids, values, first, None)
        w = densify(ids, values, N).unsqueeze(1)
        link = dense.link_update(link, precedence, w)
        precedence = dense.precedence_update(precedence, w)
    rows = densify(state.link_row_ids, state.link_row_values, N)
    columns = densify(state.link_column_ids, state.link_column_values, N)
    assert_same(rows, link[:, 0])
    assert_same(columns.transpose(1, 2), link[:, 0])
    assert_same(densify(state.precedence_ids, state.precedence_values, N), precedence[:, 0])

    previous = torch.softmax(torch.randn(B, R, N, dtype=f64), -1)
    state = state._replace(read_ids=torch.arange(N).expand(B, R, N), read_weights=previous)
    content = torch.softmax(torch.randn(B, R, N, dtype=f64), -1)
    modes = torch.softmax(torch.randn(B, R, 3, dtype=f64), -1)
    ids, weights = access._mix(state, modes, torch.arange(N).expand(B, R, N), content)
    forward, backward = dense.directional_weights(link, previous)
    assert_same(densify(ids, weights, N), dense.read_weights(content, forward, backward, modes))


def test_links_keep_at_most_k_l_entries_per_row_and_column():
    model = small_model(link_entries=2, memory_size=10)
    _, state = model(torch.randn(3, 15, 5, dtype=f64))
    for values in (state.access.link_row_values, state.access.link_column_values):
        assert values.shape == (3, 10, 2) and (values >= 0).all() and (values <= 1 + 1e-12).all()
    rows = densify(state.access.link_row_ids, state.access.link_row_values, 10)
    assert (rows.diagonal(dim1=1, dim2=2) == 0).all()


# -- backward keeps only touched rows ---------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS[:2])
def test_memory_gradient_reaches_only_touched_rows(variant):
    model = small_model(memory_size=40, sparse_reads=2, **variant)
    state = model.initial_state(2)
    memory = torch.randn(2, 40, 3, dtype=f64, requires_grad=True)
    state = state._replace(access=state.access._replace(memory=memory.clone()))
    y, _, trace = model(torch.randn(2, 4, 5, dtype=f64), state, return_trace=True)
    y.pow(2).sum().backward()
    touched = torch.zeros(2, 40, dtype=torch.bool)
    for ids in (trace.read_ids, trace.write_ids, trace.read_content_ids):
        touched.scatter_(1, ids.flatten(1), True)
    assert touched.sum() < 60  # most rows untouched
    assert (memory.grad[~touched] == 0).all()
    assert memory.grad[touched].abs().sum() > 0


def _saved_sizes(memory_size: int) -> list[int]:
    model = small_model(memory_size=memory_size, link_entries=2, word_size=4)
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, _ = model(torch.randn(2, 6, 5, dtype=f64))
    y.sum().backward()
    return sizes


def test_nothing_of_size_n_is_saved_for_backward():
    small, large = _saved_sizes(256), _saved_sizes(4096)
    assert max(large) < 4096 * 4
    assert sum(small) == sum(large)  # backward memory independent of N


# -- equivalences --------------------------------------------------------------------------------


def _gradients(model):
    return [p.grad.clone() for p in model.parameters()]


def test_state_passed_in_is_updated_in_place_and_clone_keeps_a_copy():
    model = small_model()
    x = torch.randn(2, 3, 5, dtype=f64)
    _, state = model(x)
    kept = state.clone()
    y1, _ = model(x, state)
    y2, _ = model(x, kept.clone())
    assert_same(y1, y2)
    assert not torch.equal(state.access.memory, kept.access.memory)


# -- scale ------------------------------------------------------------------------------------


def test_model_trained_at_64_slots_runs_with_100_000():
    torch.manual_seed(0)
    model = SparseDNC(input_size=5, output_size=4, hidden_size=16, memory_size=64, word_size=8,
                      num_reads=2, sparse_reads=4, link_entries=4)
    big = model.with_memory_size(100_000)
    assert big.output.weight is model.output.weight
    y, state = big(torch.randn(2, 10, 5))
    y.pow(2).sum().backward()
    assert state.access.memory.shape == (2, 100_000, 8)
    assert torch.isfinite(y).all() and model.interface.weight.grad.abs().sum() > 0


# -- numerical gradients ----------------------------------------------------------------------


def test_gradcheck_sparse_read():
    torch.manual_seed(1)
    memory = torch.randn(2, 6, 3, dtype=f64, requires_grad=True)
    keys = torch.randn(2, 2, 3, dtype=f64, requires_grad=True)
    strengths = (1 + torch.rand(2, 2, dtype=f64)).requires_grad_()
    assert gradcheck(lambda m, k, s: read_through_tape(m, k, s, 3)[2], (memory, keys, strengths))


def test_gradcheck_sparse_write_then_read():
    torch.manual_seed(2)
    memory = torch.randn(2, 6, 3, dtype=f64, requires_grad=True)
    read_ids = torch.tensor([[[0, 4], [4, 2]], [[5, 1], [3, 3]]])
    read_weights = torch.rand(2, 2, 2, dtype=f64, requires_grad=True)
    vector = torch.randn(2, 1, 3, dtype=f64, requires_grad=True)
    gates = torch.rand(2, 2, dtype=f64, requires_grad=True)

    def write_then_read(memory, read_weights, vector, gates):
        tape = Tape(True, f64, memory.device)
        handle = tape.add(memory.clone())
        least_used = torch.tensor([3, 0])
        ids, totals, _ = sparse.write_weights(read_ids, read_weights, least_used,
                                              gates[:, :1], gates[:, 1:])
        old = tape.gather(handle, ids)
        tape.scatter(handle, ids, sparse.erase_and_write(old, ids, least_used, totals, vector))
        everything = torch.arange(6).expand(2, 6)
        return tape.gather(handle, everything)

    assert gradcheck(write_then_read, (memory, read_weights, vector, gates))


@pytest.mark.parametrize("variant", [dict(link_entries=0), dict(link_entries=3)])
def test_gradcheck_whole_model(variant):
    model = small_model(memory_size=7, **variant)
    x = torch.randn(2, 4, 5, dtype=f64)
    names = ["interface.weight", "controller.rnn.weight_hh_l0"]
    params = dict(model.named_parameters())

    def run(*values):
        override = dict(zip(names, values))
        return torch.func.functional_call(model, {**params, **override}, (x,))[0]

    assert gradcheck(run, tuple(params[n].detach().clone().requires_grad_() for n in names),
                     atol=1e-6, fast_mode=True)


# -- configuration and input checks ------------------------------------------------------------


@pytest.mark.parametrize("fields, name", [
    (dict(sparse_reads=13), "sparse_reads"), (dict(index="annoy"), "index"),
    (dict(usage="lru"), "usage"), (dict(link_entries=-1), "link_entries"),
    (dict(usage_discount=1.0), "usage_discount"), (dict(memory_size=0), "memory_size")])
def test_bad_configuration_raises_naming_the_field(fields, name):
    with pytest.raises(ValueError, match=name):
        SparseDNC(**{**SMALL, **fields})


def test_bad_inputs_raise_naming_the_argument():
    model = small_model()
    with pytest.raises(ValueError, match="x:"):
        model(torch.randn(2, 3, 4, dtype=f64))
    with pytest.raises(ValueError, match="x:"):
        model(torch.randn(2, 5, dtype=f64))
    with pytest.raises(ValueError, match="mask:"):
        model(torch.randn(2, 3, 5, dtype=f64), mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="state"):
        model(torch.randn(2, 3, 5, dtype=f64), state=model.initial_state(3))
    with pytest.raises(ValueError, match="sparse_reads"):
        model.with_memory_size(2)
    with pytest.raises(ValueError, match="x_t:"):
        model.step(torch.randn(2, 3, 5, dtype=f64))


def test_config_from_dense_and_json_round_trip():
    config = SparseDNCConfig.from_dense(DNCConfig(memory_size=32, word_size=8), link_entries=4)
    assert config.memory_size == 32 and config.link_entries == 4
    assert SparseDNCConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="num_writes"):
        SparseDNCConfig.from_dense(DNCConfig(num_writes=2))


def test_trace_shapes_and_dense_view():
    model = small_model(link_entries=2)
    _, state, trace = model(torch.randn(2, 5, 5, dtype=f64), return_trace=True)
    assert isinstance(state, SparseDNCState)
    assert trace.read_ids.shape == trace.read_weights.shape == (2, 5, 2, 3)
    assert trace.write_ids.shape == (2, 5, 1, 7) and trace.least_used.shape == (2, 5)
    reads = trace.dense(trace.read_ids, trace.read_weights, 12)
    writes = trace.dense(trace.write_ids, trace.write_weights, 12)
    assert reads.shape == (2, 5, 2, 12) and writes.shape == (2, 5, 1, 12)
    assert (reads.sum(-1) <= 1 + 1e-9).all() and (writes.sum(-1) <= 1 + 1e-9).all()


def test_interface_layout():
    model = small_model(link_entries=2)
    xi = torch.randn(3, model.interface.out_features, dtype=f64)
    from torchdnc.sparse import parse_sparse_interface
    parsed = parse_sparse_interface(xi, 2, 3, links=True)
    assert isinstance(parsed, SparseInterface)
    assert_same(parsed.read_modes.sum(-1), torch.ones(3, 2, dtype=f64))
    assert (parsed.read_strengths >= 1).all()


# -- approximate index -----------------------------------------------------------------------------


@needs_faiss
def test_faiss_with_one_list_finds_the_exact_neighbours_and_follows_writes():
    from torchdnc.sparse import FaissIndex

    memory, keys = torch.randn(2, 50, 4), torch.randn(2, 3, 4)
    index = FaissIndex(4, 50, lists=1)
    index.prepare(memory)
    exact = ExactIndex().search(memory, keys, 5)
    assert torch.equal(index.search(memory, keys, 5).sort(-1).values, exact.sort(-1).values)
    ids = torch.tensor([[3, 7], [0, 49]])
    rows = keys[:, :2] * 2  # rows equal to the keys become the nearest ones
    memory[torch.arange(2).unsqueeze(1), ids] = rows
    index.update(memory, ids, rows)
    found = index.search(memory, keys, 1)
    assert found[:, :2, 0].tolist() == ids.tolist()
    memory[0, 10] = keys[0, 2]  # changed behind the index's back: re-indexed on prepare
    index.prepare(memory)
    assert index.search(memory, keys, 1)[0, 2, 0].item() == 10


@needs_faiss
def test_faiss_model_runs_chunks_like_one_pass():
    model = small_model(index="faiss", index_lists=2, index_probes=2, link_entries=2)
    x = torch.randn(3, 10, 5, dtype=f64)
    whole, whole_state = model(x)
    state, parts = None, []
    for chunk in x.split([4, 6], dim=1):
        y, state = model(chunk, state)
        parts.append(y)
    assert_same(torch.cat(parts, 1), whole)
    assert_same(state, whole_state)
    copied = copy.deepcopy(model)  # the index's cache is rebuilt, not copied
    assert_same(copied(x)[0], whole)


def test_write_read_gradient_off_changes_gradients_only_through_the_write_path():
    """``write_read_gradient=False`` gives the same outputs and state; the gradient
    no longer flows from the write weights into the previous step's read weights
    (the read -> write -> read loop behind SAM's gradient spikes on copy)."""
    x = torch.randn(3, 7, 5, dtype=f64)
    on, off = small_model(), small_model(write_read_gradient=False)
    off.load_state_dict(on.state_dict())
    (y1, s1), (y2, s2) = on(x), off(x)
    assert_same(y2, y1)
    for a, b in zip(leaves(s1), leaves(s2)):
        assert_same(b, a)
    g1 = torch.autograd.grad(y1.square().sum(), list(on.parameters()))
    g2 = torch.autograd.grad(y2.square().sum(), list(off.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(g1, g2))
    with pytest.raises(ValueError, match="write_read_gradient"):
        SparseDNCConfig(write_read_gradient="no")
