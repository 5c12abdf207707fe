"""Specification of `torchdnc.memory`: interface layout and the access step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import B, K, N, R, W, random_interface, random_state, random_xi
from torch.autograd import gradcheck

import reference
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
    """K = 1 through the head-axis code against the paper's equations written
    out without head axes (the loop-based NumPy reference, step by step)."""
    state = random_state(writes=1)
    i = random_interface(writes=1)
    new_state, reads = memory_step(state, i)
    for b in range(B):
        prev = {name: getattr(state, name)[b].numpy() for name in MemoryState._fields}
        u = prev["usage"].copy()
        for n in range(N):  # usage: (u + w - u w) prod_r (1 - f_r w^r_r)
            w = prev["write_weights"][0, n]
            psi = np.prod([1 - i.free_gates[b, r].item() * prev["read_weights"][r, n] for r in range(R)])
            u[n] = (u[n] + w - u[n] * w) * psi
        a = reference.allocation(u)
        cw = reference.content(prev["memory"], i.write_keys[b, 0].numpy(), i.write_strengths[b, 0].item())
        ga, gw = i.allocation_gates[b, 0].item(), i.write_gates[b, 0].item()
        ww = gw * (ga * a + (1 - ga) * cw)
        e, v = i.erase[b, 0].numpy(), i.write_vectors[b, 0].numpy()
        M = prev["memory"] * (1 - np.outer(ww, e)) + np.outer(ww, v)
        L0, p0 = prev["link"][0], prev["precedence"][0]
        L = np.array([[0.0 if r == c else (1 - ww[r] - ww[c]) * L0[r, c] + ww[r] * p0[c]
                       for c in range(N)] for r in range(N)])
        p = (1 - ww.sum()) * p0 + ww
        wr = np.zeros((R, N))
        for r in range(R):
            pi = i.read_modes[b, r].numpy()
            cr = reference.content(M, i.read_keys[b, r].numpy(), i.read_strengths[b, r].item())
            last = prev["read_weights"][r]
            wr[r] = pi[0] * (L.T @ last) + pi[1] * cr + pi[2] * (L @ last)
        for got, want in [(new_state.usage[b], u), (new_state.write_weights[b, 0], ww),
                          (new_state.memory[b], M), (new_state.link[b, 0], L),
                          (new_state.precedence[b, 0], p), (new_state.read_weights[b], wr),
                          (reads[b], wr @ M)]:
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-11, atol=1e-13)


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
