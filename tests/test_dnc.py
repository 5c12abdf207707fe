"""Specification of `torchdnc.DNC`: the paper's model, used like `nn.LSTM`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import reference
from conftest import assert_same, leaves
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


def _reference_params(dnc: DNC) -> dict:
    """The DNC's weights in the NumPy reference's layout."""
    controller = dnc.controller
    if hasattr(controller, "cells"):
        layers = [dict(w_ih=c.weight_ih, w_hh=c.weight_hh, b_ih=c.bias_ih, b_hh=c.bias_hh)
                  for c in controller.cells]
    else:
        rnn = controller.rnn
        layers = [dict(w_ih=getattr(rnn, f"weight_ih_l{l}"), w_hh=getattr(rnn, f"weight_hh_l{l}"),
                       b_ih=getattr(rnn, f"bias_ih_l{l}"), b_hh=getattr(rnn, f"bias_hh_l{l}"))
                  for l in range(rnn.num_layers)]
    numpy = lambda t: t.detach().numpy()  # noqa: E731
    return dict(layers=[{k: numpy(v) for k, v in layer.items()} for layer in layers],
                w_xi=numpy(dnc.access.interface.weight), b_xi=numpy(dnc.access.interface.bias),
                w_y=numpy(dnc.output.weight), b_y=numpy(dnc.output.bias))


@pytest.mark.parametrize("implementation", ["plain", "auto"])
@pytest.mark.parametrize("layers,writes,clip", [(2, 1, 20.0), (2, 2, 0.3), (3, 1, 0.3), (3, 2, 0.0)])
def test_deep_lstm_controller_matches_reference(layers, writes, clip, implementation):
    """The paper's deep LSTM: chi_t into every layer, [h^1; ...; h^L] to interface and output."""
    torch.manual_seed(4)
    dnc = DNC(input_size=5, output_size=4, hidden_size=6, num_layers=layers, memory_size=5,
              word_size=3, num_reads=2, num_writes=writes, clip=clip,
              implementation=implementation).double()
    for p in dnc.parameters():
        torch.nn.init.normal_(p, std=0.8)
    x = torch.randn(2, 15, 5, dtype=f64) * 2
    y, state = dnc(x)
    for b in range(2):
        expected = reference.dnc_run(x[b].numpy(), _reference_params(dnc), N=5, W=3, R=2,
                                     K=writes, clip=clip)
        np.testing.assert_allclose(y[b].detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    assert state.controller.hidden.shape == state.controller.cell.shape == (2, layers, 6)


def test_deep_lstm_controller_is_built_as_the_paper_says():
    dnc = DNC(input_size=5, output_size=4, hidden_size=6, num_layers=3, memory_size=5,
              word_size=3, num_reads=2)
    cells = [m for m in dnc.modules() if isinstance(m, torch.nn.LSTMCell)]
    assert cells == list(dnc.controller.cells) and len(cells) == 3
    chi = 5 + 2 * 3
    assert [c.input_size for c in cells] == [chi, chi + 6, chi + 6]
    assert all(c.hidden_size == 6 and c.bias for c in cells)
    assert dnc.access.interface.in_features == 3 * 6
    assert dnc.output.in_features == 3 * 6 + 2 * 3
    names = [n for n, _ in dnc.named_parameters()]
    assert names.index("controller.cells.0.weight_ih") < names.index("controller.cells.1.weight_ih")
    assert not any(isinstance(m, torch.nn.LSTM) for m in dnc.modules())


def test_gru_controller_matches_reference():
    """The GRU stack (not the paper's controller) against the NumPy reference."""
    torch.manual_seed(5)
    dnc = DNC(input_size=5, output_size=4, hidden_size=6, num_layers=2, controller="gru",
              memory_size=5, word_size=3, num_reads=2, num_writes=2, clip=0.3).double()
    for p in dnc.parameters():
        torch.nn.init.normal_(p, std=0.8)
    x = torch.randn(2, 10, 5, dtype=f64) * 2
    y, _ = dnc(x)
    for b in range(2):
        expected = reference.dnc_run(x[b].numpy(), _reference_params(dnc), N=5, W=3, R=2, K=2,
                                     clip=0.3, controller="gru")
        np.testing.assert_allclose(y[b].detach().numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layers", [1, 3])
def test_lstm_and_gru_controllers_are_their_torch_modules(layers):
    torch.manual_seed(2)
    for cls in (LSTMController, GRUController) if layers == 1 else (GRUController,):
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


def test_float_mask_is_accepted():
    dnc = small_dnc()
    x = torch.randn(2, 4, 5, dtype=f64)
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]], dtype=f64)
    assert_same(dnc(x, mask=mask)[0], dnc(x, mask=mask.bool())[0])


def _read_columns(dnc: DNC) -> list[torch.Tensor]:
    """The columns of every controller weight that multiply r_{t-1}."""
    I, RW = SMALL["input_size"], SMALL["num_reads"] * SMALL["word_size"]
    controller = dnc.controller
    if hasattr(controller, "cells"):
        weights = [cell.weight_ih for cell in controller.cells]
    elif hasattr(controller, "rnn"):
        weights = [controller.rnn.weight_ih_l0]
    else:
        weights = [controller.layers[0].weight]
    return [(w, slice(I, I + RW)) for w in weights]


@pytest.mark.parametrize("kind", CONTROLLERS)
def test_previous_read_vectors_reach_the_controller(kind):
    """Fails if r_{t-1} is not part of the controller's input (r_{t-2} would not do)."""
    dnc = small_dnc(**kind)
    x = torch.randn(2, 4, 5, dtype=f64)
    y, _ = dnc(x)
    y[:, -1].sum().backward()
    assert all(w.grad[:, cols].abs().sum() > 0 for w, cols in _read_columns(dnc))
    # Cutting those columns changes the output at step 1 (where r_0 is the first
    # non-zero read vector) and at every later step, never at step 0.
    with torch.no_grad():
        for w, cols in _read_columns(dnc):
            w[:, cols] = 0
        cut, _ = dnc(x)
    assert_same(cut[:, 0], y[:, 0].detach())
    for t in range(1, 4):
        assert not torch.allclose(cut[:, t], y[:, t]), t


def test_initial_state_is_zero_with_read_vectors():
    dnc = small_dnc()
    state = dnc.initial_state(4, dtype=torch.float32)
    assert isinstance(state, DNCState)
    assert state.read_vectors.shape == (4, 3, 3) and state.read_vectors.dtype == torch.float32
    assert state.access.link.shape == (4, 2, 6, 6)
    assert all(torch.all(t == 0) for t in leaves(state))


def test_detach_cuts_the_graph():
    dnc = small_dnc()
    _, state = dnc(torch.randn(2, 3, 5, dtype=f64))
    assert state.access.memory.requires_grad
    detached = state.detach()
    assert not any(t.requires_grad for t in leaves(detached))
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


@pytest.mark.parametrize("implementation", ["plain", "auto"])
def test_bad_inputs_are_refused_before_any_kernel_runs(implementation):
    dnc = small_dnc(implementation=implementation)
    x = torch.randn(2, 3, 5, dtype=f64)
    with pytest.raises(ValueError, match=r"x: expected at least one sequence and one time step .*"
                                         r"got shape \(2, 0, 5\)"):
        dnc(torch.randn(2, 0, 5, dtype=f64))
    with pytest.raises(ValueError, match=r"x: expected dtype torch.float64 on cpu \(the model's "
                                         r"parameters\), got dtype torch.float32"):
        dnc(x.float())
    _, state = dnc(x)
    with pytest.raises(ValueError, match=r"state.access.memory: expected dtype torch.float64 on cpu "
                                         r"\(as x\), got dtype torch.float32"):
        dnc(x, DNCState(state.controller, state.access._replace(memory=state.access.memory.float()),
                        state.read_vectors))
    with pytest.raises(ValueError, match=r"state.controller.cell: expected dtype torch.float64"):
        dnc(x, state._replace(controller=state.controller._replace(cell=state.controller.cell.float())))
    for bad in (torch.full((2, 3), 0.5, dtype=f64), torch.tensor([[1, 0, float("nan")]] * 2),
                torch.full((2, 3), 2)):
        with pytest.raises(ValueError, match=r"mask: expected booleans, or numbers that are exactly "
                                             r"0 or 1"):
            dnc(x, mask=bad)
    with pytest.raises(ValueError, match=r"mask: expected shape \[batch, time\] = \(2, 3\), got \(2, 4\)"):
        dnc(x, mask=torch.ones(2, 4, dtype=torch.bool))
    assert_same(dnc(x, mask=torch.tensor([[1, 1, 0], [1, 0, 1]]))[0],
                dnc(x, mask=torch.tensor([[True, True, False], [True, False, True]]))[0])


@pytest.mark.parametrize("implementation", ["plain", "auto"])
def test_nan_in_the_input_is_refused_and_padding_may_hold_anything(implementation):
    dnc = small_dnc(implementation=implementation)
    x = torch.randn(2, 4, 5, dtype=f64)
    poisoned = x.clone()
    poisoned[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"x: NaN or inf at batch element 1, step 2 \(not padding\)"):
        dnc(poisoned)
    poisoned[0, 1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"batch element 0, step 1"):
        dnc(poisoned)
    # In padding, NaN and inf change nothing: zero output, state carried, finite gradients.
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2] = mask[0, 1] = False
    y, state = dnc(poisoned, mask=mask)
    clean, clean_state = dnc(torch.where(mask[..., None], x, 0.0), mask=mask)
    assert torch.all(y[~mask] == 0)
    assert_same(y, clean)
    assert_same(state, clean_state)
    y.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in dnc.parameters())
    # check_finite=False lets it through (and then it propagates, as anywhere in torch).
    loose = DNC(dnc.config, check_finite=False).double()
    loose.load_state_dict(dnc.state_dict())
    y, state = loose(poisoned)
    assert torch.isnan(y[1, 2:]).all() and torch.isnan(state.access.memory[1]).any()


@pytest.mark.parametrize("implementation", ["plain", "fused"])
def test_gradcheck_every_path_with_allocation_shut(implementation):
    """Numerical gradients through everything, the read feedback r_{t-1} included.

    w^w_{t-1} enters the usage without gradient by design; with the allocation
    gates shut (g^a ~ 1e-18) the usage has no effect, so the analytic gradient
    must equal the numerical one on every path (a detached r_{t-1} would not).
    """
    torch.manual_seed(6)
    dnc = DNC(input_size=2, output_size=2, hidden_size=3, memory_size=3, word_size=2,
              num_reads=2, num_writes=1, clip=0.0, implementation=implementation).double()
    for p in dnc.parameters():
        torch.nn.init.normal_(p, std=0.6)
    R, W, K = 2, 2, 1
    allocation = R * W + R + 3 * K * W + K + R  # offset of the allocation gates in xi
    with torch.no_grad():
        dnc.access.interface.weight[allocation : allocation + K] = 0
        dnc.access.interface.bias[allocation : allocation + K] = -40.0
    x = torch.randn(2, 5, 2, dtype=f64, requires_grad=True)
    assert gradcheck(lambda x: dnc(x)[0], (x,), atol=1e-7, rtol=1e-5)
    weight = dnc.controller.rnn.weight_ih_l0.detach().clone().requires_grad_(True)

    def through_the_read_columns(w):
        return torch.func.functional_call(dnc, {"controller.rnn.weight_ih_l0": w}, (x.detach(),))[0]

    assert gradcheck(through_the_read_columns, (weight,), atol=1e-7, rtol=1e-5)
