"""Specification of `torchdnc.memory`: interface layout and the access step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import B, K, N, R, W, random_interface, random_state, random_xi
from torch.autograd import gradcheck

import reference
from torchdnc import addressing as A
from torchdnc.memory import (Interface, MemoryAccess, MemoryState, interface_size,
                             memory_step, parse_interface)

f64 = torch.float64


def test_interface_size_formula():
    assert interface_size(4, 16, 1) == 4 * 16 + 3 * 16 + 5 * 4 + 3
    assert interface_size(R, W, K) == R * W + R + 3 * K * W + 3 * K + R + R * (1 + 2 * K)


def test_field_names():
    assert MemoryState._fields == ("memory", "usage", "link", "precedence",
                                   "read_weights", "write_weights")
    assert Interface._fields == ("read_keys", "read_strengths", "write_keys", "write_strengths",
                                 "erase", "write_vectors", "free_gates", "allocation_gates",
                                 "write_gates", "read_modes")


@pytest.mark.parametrize("strength", ["oneplus", "softplus"])
def test_parse_interface_layout_and_nonlinearities(strength):
    xi = random_xi()
    parsed = parse_interface(xi, R, W, K, strength_activation=strength)
    for b in range(B):
        expected = reference.parse(xi[b].numpy(), R, W, K, strength)
        for name, value in expected.items():
            np.testing.assert_allclose(getattr(parsed, name)[b].numpy(), value, rtol=1e-14,
                                       err_msg=name)
    assert parsed.read_modes.shape == (B, R, 1 + 2 * K)
    torch.testing.assert_close(parsed.read_modes.sum(-1), torch.ones(B, R, dtype=f64))


def test_parse_interface_rejects_wrong_size():
    with pytest.raises(ValueError, match=r"xi: expected last dimension 16.*got shape \(2, 21\)"):
        parse_interface(torch.zeros(2, 21), num_reads=1, word_size=2, num_writes=1)
    with pytest.raises(ValueError, match="strength_activation"):
        parse_interface(random_xi(), R, W, K, strength_activation="relu")


def _to_numpy(state, b):
    return {name: getattr(state, name)[b].numpy() for name in MemoryState._fields}


@pytest.mark.parametrize("writes", [1, 2])
def test_ten_steps_match_reference(writes):
    state = MemoryState.zeros(B, N, W, R, writes, dtype=f64)
    ref = [reference.zero_state(N, W, R, writes) for _ in range(B)]
    for _ in range(10):
        xi = random_xi(writes=writes, scale=2.0)
        state, reads = memory_step(state, parse_interface(xi, R, W, writes))
        for b in range(B):
            ref[b], ref_reads = reference.memory_step(ref[b], reference.parse(xi[b].numpy(), R, W, writes))
            np.testing.assert_allclose(reads[b].numpy(), ref_reads, rtol=1e-10, atol=1e-13)
            for name, value in _to_numpy(state, b).items():
                np.testing.assert_allclose(value, ref[b][name], rtol=1e-10, atol=1e-13, err_msg=name)


def test_single_head_through_multi_head_path_equals_paper_formulas():
    state = random_state(writes=1)
    i = random_interface(writes=1)
    new_state, reads = memory_step(state, i)
    # The paper's K = 1 equations written out without head axes.
    u = A.usage_update(state.usage, state.write_weights, i.free_gates, state.read_weights)
    a = A.allocation_weights(u)  # [B, N]
    cw = A.content_weights(state.memory, i.write_keys, i.write_strengths)[:, 0]
    ga, gw = i.allocation_gates, i.write_gates  # [B, 1]
    ww = gw * (ga * a + (1 - ga) * cw)
    M = state.memory * (1 - ww[:, :, None] * i.erase) + ww[:, :, None] * i.write_vectors
    L0, p0 = state.link[:, 0], state.precedence[:, 0]
    L = (1 - ww[:, :, None] - ww[:, None, :]) * L0 + ww[:, :, None] * p0[:, None, :]
    L = L * (1 - torch.eye(N, dtype=f64))
    p = (1 - ww.sum(-1, keepdim=True)) * p0 + ww
    cr = A.content_weights(M, i.read_keys, i.read_strengths)
    prev = state.read_weights
    fwd = torch.einsum("bij,brj->bri", L, prev)
    bwd = torch.einsum("bji,brj->bri", L, prev)
    pi = i.read_modes
    wr = pi[..., 0:1] * bwd + pi[..., 1:2] * cr + pi[..., 2:3] * fwd
    for got, want in [(new_state.usage, u), (new_state.write_weights[:, 0], ww),
                      (new_state.memory, M), (new_state.link[:, 0], L),
                      (new_state.precedence[:, 0], p), (new_state.read_weights, wr),
                      (reads, wr @ M)]:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_gradcheck_memory_step():
    torch.manual_seed(3)
    state = random_state(batch=2, slots=4)
    xi = random_xi(batch=2)

    # w^w_{t-1} enters only the usage update, where it carries no gradient by
    # design (DESIGN.md section 3, step 1), so it is held fixed here.
    def step(xi, memory, usage, link, precedence, read_weights):
        s = MemoryState(memory, usage, link, precedence, read_weights, state.write_weights)
        new, reads = memory_step(s, parse_interface(xi, R, W, K))
        return (reads, *new)

    inputs = tuple(t.clone().requires_grad_(True) for t in (xi, *state[:-1]))
    assert gradcheck(step, inputs)


def test_free_gate_one_frees_what_was_read():
    state = random_state()
    i = random_interface()._replace(free_gates=torch.ones(B, R, dtype=f64))
    onehot = torch.zeros(B, R, N, dtype=f64)
    onehot[:, :, 1] = 1
    new_state, _ = memory_step(state._replace(read_weights=onehot), i)
    assert torch.all(new_state.usage[:, 1] == 0)


@pytest.mark.parametrize("case", ["zeros", "strong", "free_all"])
def test_no_nan_or_inf(case):
    torch.manual_seed(5)
    state = MemoryState.zeros(B, N, W, R, K)
    xi = torch.randn(B, interface_size(R, W, K), requires_grad=True)
    i = parse_interface(xi, R, W, K)
    if case == "zeros":
        i = i._replace(read_keys=i.read_keys * 0, write_keys=i.write_keys * 0)
    if case == "strong":
        i = i._replace(read_strengths=i.read_strengths * 0 + 1e4,
                       write_strengths=i.write_strengths * 0 + 1e4)
    if case == "free_all":
        i = i._replace(free_gates=i.free_gates * 0 + 1)
    total = 0
    for _ in range(3):
        state, reads = memory_step(state, i)
        total = total + reads.sum() + state.usage.sum()
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(xi.grad).all()


@pytest.mark.parametrize("implementation", ["plain", "auto"])
def test_thousand_steps_stay_finite_with_gradients(implementation):
    from torchdnc import DNC

    torch.manual_seed(7)
    dnc = DNC(input_size=6, output_size=3, hidden_size=8, memory_size=N, word_size=W,
              num_reads=R, num_writes=K, implementation=implementation)
    y, state = dnc(torch.randn(2, 1000, 6))
    loss = y.square().mean() + state.access.memory.square().mean()
    loss.backward()
    assert torch.isfinite(y).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in dnc.parameters())
    for t in state.access:
        assert torch.isfinite(t).all()
    assert state.access.usage.max() <= 1


def test_memory_access_rejects_bad_sizes():
    with pytest.raises(ValueError, match="memory_size: expected an integer >= 1, got 0"):
        MemoryAccess(4, memory_size=0)
