"""Specification of `torchdnc.DNC`: the paper's model, used like `nn.LSTM`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import reference
from conftest import assert_same
from torchdnc import DNC, DNCConfig, DNCState
from torchdnc.controller import GRUController, LSTMController

f64 = torch.float64
SMALL = dict(input_size=5, output_size=4, hidden_size=9, memory_size=6, word_size=3,
             num_reads=3, num_writes=2)
CONTROLLERS = [dict(controller="lstm"), dict(controller="lstm", num_layers=2),
               dict(controller="gru"), dict(controller="feedforward", num_layers=2)]


def small_dnc(**overrides) -> DNC:
    torch.manual_seed(0)
    return DNC(**{**SMALL, **overrides}).double()


@pytest.mark.parametrize("implementation", ["plain", "auto"])
@pytest.mark.parametrize("clip", [20.0, 0.3, 0.0])
def test_whole_dnc_matches_reference(clip, implementation):
    """One-layer LSTM, interface and output layers against the NumPy reference."""
    torch.manual_seed(1)
    dnc = DNC(input_size=5, output_size=4, hidden_size=7, memory_size=6, word_size=3,
              num_reads=2, num_writes=1, clip=clip, implementation=implementation).double()
    for p in dnc.parameters():  # larger weights so that clipping really bites
        torch.nn.init.normal_(p, std=0.8)
    x = torch.randn(3, 15, 5, dtype=f64) * 2
    y, _ = dnc(x)
    rnn = dnc.controller.rnn
    params = dict(w_ih=rnn.weight_ih_l0, w_hh=rnn.weight_hh_l0, b_ih=rnn.bias_ih_l0,
                  b_hh=rnn.bias_hh_l0, w_xi=dnc.access.interface.weight,
                  b_xi=dnc.access.interface.bias, w_y=dnc.output.weight, b_y=dnc.output.bias)
    params = {k: v.detach().numpy() for k, v in params.items()}
    for b in range(3):
        expected = reference.dnc_run(x[b].numpy(), params, N=6, W=3, R=2, K=1, clip=clip)
        np.testing.assert_allclose(y[b].detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    if clip:
        assert y.abs().max() <= clip


def test_clipping_changes_the_result_where_it_bites():
    dnc = small_dnc()
    for p in dnc.parameters():
        torch.nn.init.normal_(p, std=1.0)
    x = torch.randn(2, 6, 5, dtype=f64) * 3
    loose, _ = dnc(x)
    tight, state = DNC(dnc.config, clip=0.2).double().requires_grad_(False), None
    tight.load_state_dict(dnc.state_dict())
    y, state = tight(x)
    assert not torch.allclose(loose, y)
    assert y.abs().max() <= 0.2 and state.controller.cell.abs().max() <= 0.2
    assert state.controller.hidden.abs().max() <= 0.2


@pytest.mark.parametrize("layers", [1, 3])
def test_lstm_and_gru_controllers_are_their_torch_modules(layers):
    torch.manual_seed(2)
    for cls in (LSTMController, GRUController):
        controller = cls(input_size=4, read_size=6, hidden_size=5, num_layers=layers).double()
        x, reads = torch.randn(3, 4, dtype=f64), torch.randn(3, 6, dtype=f64)
        state = controller.initial_state(3)
        state = type(state)(*(torch.randn_like(t) for t in state))
        h, new = controller.step(controller.project_inputs(x), reads, state)
        torch_state = tuple(t.transpose(0, 1).contiguous() for t in state)
        torch_state = torch_state if cls is LSTMController else torch_state[0]
        out, torch_new = controller.rnn(torch.cat([x, reads], -1)[None], torch_state)
        torch_new = torch_new if cls is LSTMController else (torch_new,)
        assert_same(h, out[0])
        assert_same(new, tuple(t.transpose(0, 1) for t in torch_new))


@pytest.mark.parametrize("kind", CONTROLLERS)
def test_chunks_with_carried_state_equal_one_pass(kind):
    dnc = small_dnc(**kind)
    x = torch.randn(7, 12, 5, dtype=f64)
    whole, whole_state = dnc(x)
    state, parts = None, []
    for chunk in x.split([5, 1, 6], dim=1):
        y, state = dnc(chunk, state)
        parts.append(y)
    assert_same(torch.cat(parts, 1), whole)
    assert_same(state, whole_state)


@pytest.mark.parametrize("kind", CONTROLLERS)
def test_step_by_step_equals_whole_sequence(kind):
    dnc = small_dnc(**kind)
    x = torch.randn(7, 9, 5, dtype=f64)
    whole, whole_state = dnc(x)
    state, ys = None, []
    for t in range(9):
        y, state = dnc.step(x[:, t], state)
        ys.append(y)
    assert_same(torch.stack(ys, 1), whole)
    assert_same(state, whole_state)


@pytest.mark.parametrize("kind", CONTROLLERS)
def test_padded_and_masked_equals_unpadded(kind):
    dnc = small_dnc(**kind)
    lengths = [9, 4, 1, 6]
    xs = [torch.randn(1, n, 5, dtype=f64) for n in lengths]
    T = max(lengths) + 2
    padded = torch.randn(len(lengths), T, 5, dtype=f64)  # garbage in the padding
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    # Sequence 1 is padded in the middle too: the state must be carried through.
    positions = [list(range(9)), [0, 1, 5, 6], [3], list(range(6))]
    for b, (x, where) in enumerate(zip(xs, positions)):
        padded[b, where] = x[0]
        mask[b, where] = True
    y, state = dnc(padded, mask=mask)
    assert torch.all(y[~mask] == 0)
    for b, (x, where) in enumerate(zip(xs, positions)):
        alone, alone_state = dnc(x)
        assert_same(y[b, where], alone[0])
        assert_same(tuple(t[b] for t in _leaves(state)), tuple(t[0] for t in _leaves(alone_state)))


def _leaves(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in _leaves(part)]


def test_float_mask_is_accepted():
    dnc = small_dnc()
    x = torch.randn(2, 4, 5, dtype=f64)
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]], dtype=f64)
    assert_same(dnc(x, mask=mask)[0], dnc(x, mask=mask.bool())[0])


def test_batch_first_equals_time_major():
    dnc = small_dnc()
    time_major = DNC(dnc.config, batch_first=False).double()
    time_major.load_state_dict(dnc.state_dict())
    x = torch.randn(3, 8, 5, dtype=f64)
    mask = torch.rand(3, 8) > 0.3
    y, state = dnc(x, mask=mask)
    y_t, state_t = time_major(x.transpose(0, 1), mask=mask.T)
    assert_same(y_t.transpose(0, 1), y)
    assert_same(state_t, state)
    y1, _ = time_major.step(x[:, 0])
    assert_same(y1, y[:, 0])


@pytest.mark.parametrize("kind", CONTROLLERS)
def test_previous_read_vectors_reach_the_controller(kind):
    """Fails if r_{t-1} is not part of the controller's input."""
    dnc = small_dnc(**kind)
    first = dnc.controller.rnn.weight_ih_l0 if kind["controller"] != "feedforward" \
        else dnc.controller.layers[0].weight
    x = torch.randn(2, 3, 5, dtype=f64)
    y, _ = dnc(x)
    y[:, -1].sum().backward()
    read_columns = first.grad[:, SMALL["input_size"]:]
    assert read_columns.abs().sum() > 0
    # And cutting those columns changes the output from step 2 on, not step 1.
    with torch.no_grad():
        first[:, SMALL["input_size"]:] = 0
        cut, _ = dnc(x)
    assert_same(cut[:, 0], y[:, 0].detach())
    assert not torch.allclose(cut[:, 1:], y[:, 1:])


def test_initial_state_is_zero_with_read_vectors():
    dnc = small_dnc()
    state = dnc.initial_state(4, dtype=torch.float32)
    assert isinstance(state, DNCState)
    assert state.read_vectors.shape == (4, 3, 3) and state.read_vectors.dtype == torch.float32
    assert state.access.link.shape == (4, 2, 6, 6)
    assert all(torch.all(t == 0) for t in _leaves(state))


def test_detach_cuts_the_graph():
    dnc = small_dnc()
    _, state = dnc(torch.randn(2, 3, 5, dtype=f64))
    assert state.access.memory.requires_grad
    detached = state.detach()
    assert not any(t.requires_grad for t in _leaves(detached))
    assert type(detached.controller).__name__ == "LSTMState"


def test_trace_shapes_and_no_effect_on_results():
    dnc = small_dnc()
    x = torch.randn(2, 5, 5, dtype=f64)
    y, state, trace = dnc(x, return_trace=True)
    y2, state2 = dnc(x)
    assert_same(y, y2)
    assert trace.read_weights.shape == (2, 5, 3, 6)
    assert trace.write_weights.shape == trace.allocation.shape == (2, 5, 2, 6)
    assert trace.usage.shape == (2, 5, 6)
    assert trace.free_gates.shape == (2, 5, 3)
    assert trace.allocation_gates.shape == trace.write_gates.shape == (2, 5, 2)
    assert trace.read_modes.shape == (2, 5, 3, 5)
    assert_same(trace.usage[:, -1], state.access.usage)
    assert_same(trace.read_weights[:, -1], state.access.read_weights)


def test_gradcheck_small_dnc(monkeypatch):
    # w^w_{t-1} enters the usage without gradient by design, which a numerical
    # check cannot see; everything else is checked with that stop removed.
    from torchdnc import addressing

    original = addressing.usage_update

    def usage_with_gradient(usage, write_weights, free_gates, read_weights):
        detached = original(usage, write_weights.detach(), free_gates, read_weights)
        written = 1 - torch.prod(1 - write_weights, dim=1)
        retention = torch.prod(1 - free_gates.unsqueeze(-1) * read_weights, dim=1)
        return detached + (written - written.detach()) * (1 - usage) * retention

    monkeypatch.setattr(addressing, "usage_update", usage_with_gradient)
    dnc = DNC(input_size=2, output_size=2, hidden_size=3, memory_size=3, word_size=2,
              num_reads=2, num_writes=2, implementation="plain").double()
    x = torch.randn(2, 4, 2, dtype=f64, requires_grad=True)
    assert gradcheck(lambda x: dnc(x)[0], (x,))


def test_float32_runs_and_learns_direction():
    dnc = DNC(**SMALL)
    x = torch.randn(2, 6, 5)
    y, _ = dnc(x)
    assert y.dtype == torch.float32
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in dnc.parameters())


def test_larger_memory_at_test_time_shares_weights():
    dnc = small_dnc()
    big = dnc.with_memory_size(40)
    assert big.config.memory_size == 40 and dnc.config.memory_size == 6
    assert big.output.weight is dnc.output.weight
    y, state = big(torch.randn(2, 4, 5, dtype=f64))
    assert state.access.memory.shape == (2, 40, 3)
    with pytest.raises(ValueError, match="state.access.memory: expected shape"):
        dnc(torch.randn(2, 4, 5, dtype=f64), state)


def test_config_round_trips_through_json():
    config = DNCConfig(controller="gru", memory_size=32, num_writes=2, clip=0.0,
                       strength_activation="softplus", batch_first=False)
    again = DNCConfig.from_json(config.to_json())
    assert again == config
    assert DNCConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    dnc = DNC(again)
    assert dnc.config == config


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("field,value,message", [
    ("memory_size", 0, "memory_size: expected an integer >= 1, got 0"),
    ("num_reads", -1, "num_reads: expected an integer >= 1, got -1"),
    ("word_size", 2.5, "word_size: expected an integer >= 1, got 2.5"),
    ("controller", "transformer", r"controller: expected one of \('lstm', 'gru', 'feedforward'\), got 'transformer'"),
    ("clip", -1, "clip: expected a number >= 0"),
    ("strength_activation", "exp", "strength_activation: expected one of"),
])
def test_bad_config_is_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        DNC(**{**SMALL, field: value})


def test_unknown_config_field_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['mem_size'\]; valid fields: \["):
        DNCConfig.from_dict({"mem_size": 3})


def test_bad_inputs_name_argument_and_shapes():
    dnc = small_dnc()
    with pytest.raises(ValueError, match=r"x: expected a 3-D tensor \[batch, time, input_size\] "
                                         r"with input_size=5 .*got \(2, 5\)"):
        dnc(torch.randn(2, 5, dtype=f64))
    with pytest.raises(ValueError, match=r"x: .*input_size=5.*got \(2, 3, 4\)"):
        dnc(torch.randn(2, 3, 4, dtype=f64))
    with pytest.raises(ValueError, match=r"mask: expected shape \[batch, time\] = \(2, 3\), got \(3, 2\)"):
        dnc(torch.randn(2, 3, 5, dtype=f64), mask=torch.ones(3, 2))
    _, state = dnc(torch.randn(2, 3, 5, dtype=f64))
    with pytest.raises(ValueError, match=r"state.controller.hidden: expected shape \(4, 1, 9\) "
                                         r"for batch size 4.*got \(2, 1, 9\)"):
        dnc(torch.randn(4, 3, 5, dtype=f64), state)
    other = DNC(**{**SMALL, "num_reads": 2}).double()
    with pytest.raises(ValueError, match=r"state.access.read_weights: expected shape \(2, 2, 6\)"):
        other(torch.randn(2, 3, 5, dtype=f64), state)
    gru = DNC(**{**SMALL, "controller": "gru"}).double()
    with pytest.raises(ValueError, match="state"):
        gru(torch.randn(2, 3, 5, dtype=f64), state)
    with pytest.raises(ValueError, match="state: expected a DNCState, got dict"):
        dnc(torch.randn(2, 3, 5, dtype=f64), {})
    with pytest.raises(ValueError, match=r"x_t: expected a 2-D tensor \[batch, input_size=5\]"):
        dnc.step(torch.randn(2, 1, 5, dtype=f64))
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        dnc.initial_state(0)
