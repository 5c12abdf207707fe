"""Equivalences every memory model keeps (the dense DNC, SAM, the SDNC): the
time loop is one (`torchdnc.recurrent`), so these are one parametrised set.

Chunks with carried state equal one pass (gradients included); step by step
equals the whole sequence; padded and masked equals unpadded (the state is
carried through padding, the output there is zero); batch-first equals
time-major.
"""

from __future__ import annotations

import pytest
import torch

from conftest import assert_same, leaves
from torchdnc import DNC
from torchdnc.sparse import SparseDNC

f64 = torch.float64
DENSE = dict(input_size=5, output_size=4, hidden_size=9, memory_size=6, word_size=3,
             num_reads=3, num_writes=2)
SPARSE = dict(input_size=5, output_size=4, hidden_size=9, memory_size=12, word_size=3,
              num_reads=2, sparse_reads=3)
MODELS = {
    "dnc-lstm": (DNC, dict(DENSE, controller="lstm")),
    "dnc-lstm-plain": (DNC, dict(DENSE, controller="lstm", implementation="plain")),
    "dnc-deep-lstm": (DNC, dict(DENSE, controller="lstm", num_layers=2)),
    "dnc-gru": (DNC, dict(DENSE, controller="gru")),
    "dnc-feedforward": (DNC, dict(DENSE, controller="feedforward", num_layers=2)),
    "sam": (SparseDNC, dict(SPARSE, link_entries=0)),
    "sdnc": (SparseDNC, dict(SPARSE, link_entries=4)),
    "sam-discounted": (SparseDNC, dict(SPARSE, link_entries=0, usage="discounted")),
    "sdnc-gru": (SparseDNC, dict(SPARSE, link_entries=3, controller="gru")),
}


def make(name: str, **overrides):
    cls, fields = MODELS[name]
    torch.manual_seed(0)
    return cls(**{**fields, **overrides}).double()


def gradients(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name", MODELS)
def test_a_float32_model_takes_its_own_state_back_and_so_does_it_after_double(name):
    cls, fields = MODELS[name]
    model = cls(**fields)  # float32: the sparse usage keys stay float64 inside the state
    x = torch.randn(2, 4, 5)
    _, state = model(x)
    model(x, state)
    model(x, model.initial_state(2))
    model.double()  # the same module, now float64: its state layout follows
    _, state = model(x.double())
    model(x.double(), state)


@pytest.mark.parametrize("name", MODELS)
def test_chunks_with_carried_state_equal_one_pass(name):
    model = make(name)
    x = torch.randn(7, 12, 5, dtype=f64)
    whole, whole_state = model(x)
    whole.pow(2).sum().backward()
    whole_grads = gradients(model)
    model.zero_grad()
    state, parts = None, []
    for chunk in x.split([5, 1, 6], dim=1):
        y, state = model(chunk, state)
        parts.append(y)
    torch.cat(parts, 1).pow(2).sum().backward()  # backprop across the chunk boundaries
    assert_same(torch.cat(parts, 1), whole)
    assert_same(state, whole_state)
    assert_same(gradients(model), whole_grads)


@pytest.mark.parametrize("name", MODELS)
def test_step_by_step_equals_whole_sequence(name):
    model = make(name)
    x = torch.randn(7, 9, 5, dtype=f64)
    whole, whole_state = model(x)
    state, ys = None, []
    for t in range(9):
        y, state = model.step(x[:, t], state)
        ys.append(y)
    assert_same(torch.stack(ys, 1), whole)
    assert_same(state, whole_state)


@pytest.mark.parametrize("name", MODELS)
def test_padded_and_masked_equals_unpadded(name):
    model = make(name)
    lengths = [9, 4, 1, 6]
    xs = [torch.randn(1, n, 5, dtype=f64) for n in lengths]
    T = max(lengths) + 3
    padded = torch.randn(len(lengths), T, 5, dtype=f64)  # garbage in the padding
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    # Padding before, after and in the middle: the state must be carried through.
    positions = [list(range(9)), [0, 1, 5, 6], [11], list(range(2, 8))]
    for b, (x, where) in enumerate(zip(xs, positions)):
        padded[b, where] = x[0]
        mask[b, where] = True
    y, state = model(padded, mask=mask)
    assert torch.all(y[~mask] == 0)
    for b, (x, where) in enumerate(zip(xs, positions)):
        alone, alone_state = model(x)
        assert_same(y[b, where], alone[0])
        assert_same([t[b] for t in leaves(state)], [t[0] for t in leaves(alone_state)])


@pytest.mark.parametrize("name", MODELS)
def test_batch_first_equals_time_major(name):
    model = make(name)
    time_major = make(name, batch_first=False)
    time_major.load_state_dict(model.state_dict())
    x = torch.randn(3, 8, 5, dtype=f64)
    mask = torch.rand(3, 8) > 0.3
    y, state = model(x, mask=mask)
    y_t, state_t = time_major(x.transpose(0, 1), mask=mask.T)
    assert_same(y_t.transpose(0, 1), y)
    assert_same(state_t, state)
    y1, _ = time_major.step(x[:, 0])
    assert_same(y1, model(x[:, :1])[0][:, 0])


@pytest.mark.parametrize("name", MODELS)
def test_inference_in_chunks_equals_one_pass(name, monkeypatch):
    """Without gradients a long sequence runs in chunks; nothing changes."""
    import torchdnc.recurrent as recurrent

    model = make(name)
    x = torch.randn(2, 11, 5, dtype=f64)
    with torch.no_grad():
        whole, whole_state = model(x)
        monkeypatch.setattr(recurrent, "INFERENCE_CHUNK", 4)
        chunked, chunked_state = model(x)
    assert_same(chunked, whole)
    assert_same(chunked_state, whole_state)
