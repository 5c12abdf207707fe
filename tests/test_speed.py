"""Every speed option gives the plain implementation's outputs and gradients
(1e-10 in float64, 1e-6 in float32)."""

from __future__ import annotations

import pytest
import torch

from torchdnc import DNC, fused

needs_fused = pytest.mark.skipif(not fused.available(), reason="fused C++ extension not buildable here")

BASE = dict(input_size=5, output_size=4, hidden_size=7, memory_size=6, word_size=3)


def _pair(implementation: str, dtype, **kw):
    torch.manual_seed(0)
    plain = DNC(**{**BASE, **kw}, implementation="plain").to(dtype)
    for p in plain.parameters():  # weights large enough for clipping and saturation
        torch.nn.init.normal_(p, std=0.7)
    other = DNC(**{**BASE, **kw}, implementation=implementation).to(dtype)
    other.load_state_dict(plain.state_dict())
    return plain, other


def _loss(y, state, weights):
    # Touch the outputs and every part of the final state, so that gradients
    # through the carried state are checked as well.
    access = state.access
    return ((y * weights).sum() + access.memory.sin().sum() + access.link.square().sum()
            + access.usage.sum() + access.precedence.sum() + access.read_weights.square().sum()
            + access.write_weights.sum() + state.read_vectors.sum()
            + state.controller.hidden.sum() + state.controller.cell.square().sum())


def _check(plain, other, x, mask=None, state=None, tol=1e-10):
    torch.manual_seed(1)
    y1, s1 = plain(x, state=state, mask=mask)
    y2, s2 = other(x, state=state, mask=mask)
    torch.testing.assert_close(y2, y1, rtol=tol, atol=tol)
    weights = torch.randn_like(y1)
    inputs = ([x] if x.requires_grad else []) + \
        ([] if state is None else [t for t in _leaves(state) if t.requires_grad])
    g1 = torch.autograd.grad(_loss(y1, s1, weights), [*plain.parameters(), *inputs], allow_unused=True)
    g2 = torch.autograd.grad(_loss(y2, s2, weights), [*other.parameters(), *inputs], allow_unused=True)
    for a, b in zip(g1, g2):
        if a is None:
            assert b is None or torch.all(b == 0)
            continue
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)
    for a, b in zip(_leaves(s1), _leaves(s2)):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


def _leaves(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in _leaves(part)]


@needs_fused
@pytest.mark.parametrize("reads,writes,clip,masked,chunk,strength", [
    (1, 1, 20.0, False, 0, "oneplus"),
    (3, 1, 0.3, True, 2, "oneplus"),
    (2, 2, 0.0, False, 3, "softplus"),
    (3, 2, 5.0, True, 1, "oneplus"),
    (4, 3, 0.5, True, 4, "softplus"),
    (5, 1, 2.0, False, 0, "oneplus"),  # R beyond the kernel's specialised read counts
])
def test_fused_equals_plain_float64(reads, writes, clip, masked, chunk, strength):
    plain, fast = _pair("fused", torch.float64, num_reads=reads, num_writes=writes, clip=clip,
                        backward_chunk=chunk, strength_activation=strength)
    x = torch.randn(5, 9, 5, dtype=torch.float64, requires_grad=True) * 2
    mask = (torch.rand(5, 9) > 0.3) if masked else None
    _check(plain, fast, x, mask)


@needs_fused
def test_fused_equals_plain_float32():
    plain, fast = _pair("fused", torch.float32, num_reads=4, num_writes=1, clip=20.0)
    plain.float(), fast.float()
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.3)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(4, 12, 5, requires_grad=True)
    _check(plain, fast, x, tol=1e-6)


@needs_fused
def test_fused_continues_from_a_state_with_gradient():
    plain, fast = _pair("fused", torch.float64, num_reads=2, num_writes=2, clip=1.0)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    _, start = plain(x)  # a non-trivial state; its tensors carry gradient to the weights
    start = start.detach()
    start = type(start)(*[type(p)(*[t.clone().requires_grad_(True) for t in p])
                          if not isinstance(p, torch.Tensor) else p.clone().requires_grad_(True)
                          for p in start])
    _check(plain, fast, torch.randn(3, 6, 5, dtype=torch.float64), state=start)


@needs_fused
def test_fused_chunk_sizes_agree_exactly():
    torch.manual_seed(2)
    x = torch.randn(2, 10, 5, dtype=torch.float64)
    results = []
    for chunk in (1, 3, 10):
        model = DNC(**BASE, num_reads=2, backward_chunk=chunk, implementation="fused").double()
        torch.manual_seed(3)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.5)
        y, _ = model(x)
        y.sum().backward()
        results.append([p.grad.clone() for p in model.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)  # recomputation reproduces the forward bit for bit


def test_fused_needs_a_one_layer_lstm():
    with pytest.raises(ValueError, match="implementation: 'fused' needs controller='lstm' with "
                                         "num_layers=1, got controller='gru'"):
        DNC(**BASE, controller="gru", implementation="fused")


def test_auto_falls_back_to_plain_for_other_controllers():
    torch.manual_seed(0)
    model = DNC(**BASE, controller="gru").double()
    plain = DNC(**BASE, controller="gru", implementation="plain").double()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    assert torch.equal(model(x)[0], plain(x)[0])


def test_compiled_step_equals_plain():
    plain, compiled = _pair("compile", torch.float64, num_reads=2, num_writes=1, clip=1.0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    _check(plain, compiled, x)


@needs_fused
def test_fused_triangular_schedule_equals_plain_on_long_sequences(monkeypatch):
    # Force the triangular recompute schedule (normally only for large link matrices).
    monkeypatch.setattr(fused, "STORE_ALL_BYTES", 0)
    plain, fast = _pair("fused", torch.float64, num_reads=2, num_writes=1, clip=2.0)
    x = torch.randn(3, 23, 5, dtype=torch.float64, requires_grad=True)
    _check(plain, fast, x, mask=torch.rand(3, 23) > 0.2)
