"""Specification of `torchdnc.addressing`: the paper's equations, one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import B, K, N, R, W, random_interface, random_state
from torch.autograd import gradcheck

import reference
from torchdnc import addressing as A

f64 = torch.float64


# -- hand-computed cases -------------------------------------------------------


def test_allocation_hand_computed_with_epsilon_mapping():
    usage = torch.tensor([[0.4, 0.1, 1.0, 0.0]], dtype=f64)
    eps = A.ALLOCATION_EPSILON
    u = eps + (1 - eps) * usage[0]
    # free list: slot 3 (u=eps), slot 1, slot 0, slot 2
    expected = torch.zeros(4, dtype=f64)
    expected[3] = 1 - u[3]
    expected[1] = (1 - u[1]) * u[3]
    expected[0] = (1 - u[0]) * u[3] * u[1]
    expected[2] = (1 - u[2]) * u[3] * u[1] * u[0]
    got = A.allocation_weights(usage)[0]
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)
    # Without the mapping slot 3 would take all of it: with it, a tiny share is left.
    assert got[3] == pytest.approx(1 - 1e-6, abs=1e-15)
    assert got[1] == pytest.approx((1 - (eps + (1 - eps) * 0.1)) * eps, rel=1e-12)


def test_allocation_ties_lower_index_is_freer():
    usage = torch.tensor([[0.5, 0.2, 0.5, 0.2]], dtype=f64)
    got = A.allocation_weights(usage)[0]
    u = A.ALLOCATION_EPSILON + (1 - A.ALLOCATION_EPSILON) * usage[0]
    # order: 1, 3, 0, 2
    assert got[1] == pytest.approx(1 - u[1].item(), rel=1e-14)
    assert got[3] == pytest.approx((1 - u[3].item()) * u[1].item(), rel=1e-14)
    assert got[0] == pytest.approx((1 - u[0].item()) * u[1].item() * u[3].item(), rel=1e-14)
    assert got[2] == pytest.approx(
        (1 - u[2].item()) * u[1].item() * u[3].item() * u[0].item(), rel=1e-14)
    all_equal = A.allocation_weights(torch.full((1, 3), 0.5, dtype=f64))[0]
    assert all_equal[0] > all_equal[1] > all_equal[2]


def test_allocation_fully_used_memory_allocates_almost_nothing():
    got = A.allocation_weights(torch.ones(2, 6, dtype=f64))
    assert got.sum(-1).max() < 1e-5


def test_multi_head_allocation_simulates_earlier_heads():
    usage = torch.tensor([[0.0, 0.5, 1.0]], dtype=f64)
    gates = torch.tensor([[1.0, 1.0]], dtype=f64)
    got = A.allocation_weights(usage, gates)
    assert got.shape == (1, 2, 3)
    first = A.allocation_weights(usage)
    torch.testing.assert_close(got[:, 0], first)
    simulated = usage + (1 - usage) * 1.0 * first
    torch.testing.assert_close(got[:, 1], A.allocation_weights(simulated))
    # Head 0 takes slot 0, so head 1 goes for slot 1.
    assert got[0, 0].argmax() == 0 and got[0, 1].argmax() == 1
    # Closed gate for head 0: head 1 sees the same usage.
    closed = A.multi_head_allocation_weights(usage, torch.tensor([[0.0, 1.0]], dtype=f64))
    torch.testing.assert_close(closed[:, 1], first)
    assert usage.tolist() == [[0.0, 0.5, 1.0]]  # the caller's usage is untouched


def test_content_weights_known_memory():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]], dtype=f64)
    keys = torch.tensor([[[1.0, 0.0]]], dtype=f64)
    strengths = torch.tensor([[2.0]], dtype=f64)
    eps = A.SIMILARITY_EPSILON
    key_norm = np.sqrt(1 + eps)
    sims = np.array([
        1 / (key_norm * np.sqrt(1 + eps) + eps),
        0.0,
        1 / (key_norm * np.sqrt(2 + eps) + eps),
        0.0,
    ])
    expected = np.exp(2 * sims) / np.exp(2 * sims).sum()
    got = A.content_weights(memory, keys, strengths)
    np.testing.assert_allclose(got[0, 0].numpy(), expected, rtol=1e-14)
    torch.testing.assert_close(A.cosine_similarity(memory, keys)[0, 0],
                               torch.tensor(sims, dtype=f64), rtol=1e-14, atol=0)


def test_usage_with_free_gates_hand_computed():
    usage = torch.tensor([[0.5, 0.0, 1.0]], dtype=f64)
    write = torch.tensor([[[0.0, 0.5, 0.0]]], dtype=f64)  # K = 1
    read = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.5]]], dtype=f64)  # R = 2
    free = torch.tensor([[1.0, 0.5]], dtype=f64)
    got = A.usage_update(usage, write, free, read)
    # slot 0: (0.5) * (1 - 1*1) = 0; slot 1: 0.5 * 1; slot 2: 1 * (1 - 0.25)
    torch.testing.assert_close(got, torch.tensor([[0.0, 0.5, 0.75]], dtype=f64))


def test_usage_write_weights_enter_without_gradient():
    write = torch.rand(2, 2, 4, dtype=f64, requires_grad=True)
    free = torch.rand(2, 3, dtype=f64, requires_grad=True)
    read = torch.rand(2, 3, 4, dtype=f64, requires_grad=True)
    A.usage_update(torch.rand(2, 4, dtype=f64), write, free, read).sum().backward()
    assert write.grad is None
    assert free.grad is not None and read.grad is not None


def test_link_after_sequence_of_one_hot_writes():
    slots = 4
    link = torch.zeros(1, 1, slots, slots, dtype=f64)
    precedence = torch.zeros(1, 1, slots, dtype=f64)
    for slot in [2, 0, 3]:
        write = torch.zeros(1, 1, slots, dtype=f64)
        write[0, 0, slot] = 1
        link = A.link_update(link, precedence, write)
        precedence = A.precedence_update(precedence, write)
    expected = torch.zeros(slots, slots, dtype=f64)
    expected[0, 2] = 1  # 0 was written after 2
    expected[3, 0] = 1  # 3 after 0
    torch.testing.assert_close(link[0, 0], expected)
    torch.testing.assert_close(precedence[0, 0], torch.tensor([0, 0, 0, 1.0], dtype=f64))
    # Forward from 2 leads to 0, backward from 3 leads to 0.
    read = torch.zeros(1, 2, slots, dtype=f64)
    read[0, 0, 2] = 1
    read[0, 1, 3] = 1
    forward, backward = A.directional_weights(link, read)
    assert forward.shape == backward.shape == (1, 2, 1, slots)
    assert forward[0, 0, 0].argmax() == 0 and forward[0, 0, 0].sum() == 1
    assert backward[0, 1, 0].argmax() == 0 and backward[0, 1, 0].sum() == 1


def test_link_uses_previous_precedence():
    # Writing to the same slot twice must not link it to itself, and the
    # link must come from the precedence BEFORE this write.
    link = torch.zeros(1, 1, 2, 2, dtype=f64)
    precedence = torch.tensor([[[0.0, 1.0]]], dtype=f64)
    write = torch.tensor([[[1.0, 0.0]]], dtype=f64)
    link = A.link_update(link, precedence, write)
    assert link[0, 0, 0, 1] == 1 and link[0, 0, 1, 0] == 0 and link[0, 0, 0, 0] == 0


def test_write_weights_by_hand():
    # Head 0: g^w 0.5, g^a 0.8 -> 0.5 (0.8 a + 0.2 c); head 1: g^a 0 -> content only.
    alloc = torch.tensor([[[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]], dtype=f64)
    content = torch.tensor([[[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]], dtype=f64)
    ga = torch.tensor([[0.8, 0.0]], dtype=f64)
    gw = torch.tensor([[0.5, 1.0]], dtype=f64)
    expected = torch.tensor([[[0.21, 0.12, 0.17], [0.3, 0.3, 0.4]]], dtype=f64)
    torch.testing.assert_close(A.write_weights(alloc, content, ga, gw), expected, rtol=0, atol=1e-15)


def test_erase_and_write_product_erase_and_summed_writes():
    memory = torch.ones(1, 2, 2, dtype=f64)
    write = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]], dtype=f64)  # two heads
    erase = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=f64)
    values = torch.tensor([[[2.0, 3.0], [4.0, 5.0]]], dtype=f64)
    got = A.erase_and_write(memory, write, erase, values)
    # row 0: keep (1-1)(1-.5)=0, (1-0)(1-.5)=.5 ; add 2+2, 3+2.5
    torch.testing.assert_close(got[0, 0], torch.tensor([4.0, 6.0], dtype=f64))
    torch.testing.assert_close(got[0, 1], torch.tensor([1.0, 1.0], dtype=f64))


def test_read_weights_mode_layout_backward_content_forward():
    content = torch.zeros(1, 1, 3, dtype=f64)
    content[0, 0, 1] = 1
    forward = torch.zeros(1, 1, 2, 3, dtype=f64)
    backward = torch.zeros(1, 1, 2, 3, dtype=f64)
    backward[0, 0, 0, 0] = 1  # b_1
    backward[0, 0, 1, 0] = 2  # b_2
    forward[0, 0, 0, 2] = 1  # f_1
    forward[0, 0, 1, 2] = 3  # f_2
    modes = torch.tensor([[[0.1, 0.2, 0.3, 0.15, 0.25]]], dtype=f64)
    got = A.read_weights(content, forward, backward, modes)[0, 0]
    torch.testing.assert_close(got, torch.tensor([0.1 + 0.4, 0.3, 0.15 + 0.75], dtype=f64))


# -- invariants on random inputs ------------------------------------------------


def test_invariants_on_random_states():
    state = random_state(steps=6)
    assert state.usage.min() >= 0 and state.usage.max() <= 1
    link = state.link
    assert link.min() >= 0 and link.max() <= 1
    assert torch.all(torch.diagonal(link, dim1=-2, dim2=-1) == 0)
    assert link.sum(-1).max() <= 1 + 1e-12 and link.sum(-2).max() <= 1 + 1e-12
    assert state.read_weights.min() >= 0 and state.read_weights.sum(-1).max() <= 1 + 1e-12
    assert state.write_weights.sum(-1).max() <= 1 + 1e-12
    assert state.precedence.sum(-1).max() <= 1 + 1e-12
    alloc = A.allocation_weights(torch.rand(B, N, dtype=f64), torch.rand(B, K, dtype=f64))
    assert alloc.shape == (B, K, N)
    assert alloc.min() >= 0 and alloc.sum(-1).max() <= 1 + 1e-12


def test_memory_unchanged_when_write_gate_is_zero():
    state = random_state()
    interface = random_interface()._replace(write_gates=torch.zeros(B, K, dtype=f64))
    from torchdnc.memory import memory_step

    new_state, _ = memory_step(state, interface)
    torch.testing.assert_close(new_state.memory, state.memory, rtol=0, atol=0)
    assert torch.all(new_state.write_weights == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_functions_keep_dtype(dtype):
    state = random_state(dtype=dtype)
    i = random_interface(dtype=dtype)
    assert A.content_weights(state.memory, i.read_keys, i.read_strengths).dtype == dtype
    assert A.allocation_weights(state.usage).dtype == dtype
    assert A.directional_weights(state.link, state.read_weights)[0].dtype == dtype


# -- agreement with the plain reference -----------------------------------------


def test_functions_match_reference():
    state = random_state()
    i = random_interface()
    for b in range(B):
        M = state.memory[b].numpy()
        for r in range(R):
            np.testing.assert_allclose(
                A.content_weights(state.memory, i.read_keys, i.read_strengths)[b, r].numpy(),
                reference.content(M, i.read_keys[b, r].numpy(), i.read_strengths[b, r].item()),
                rtol=1e-12)
        gates = (i.allocation_gates * i.write_gates)[b].numpy()
        np.testing.assert_allclose(
            A.allocation_weights(state.usage, i.allocation_gates * i.write_gates)[b].numpy(),
            reference.multi_allocation(state.usage[b].numpy(), gates), rtol=1e-12)


# -- gradients ------------------------------------------------------------------


def _inputs(*tensors):
    return tuple(t.detach().clone().requires_grad_(True) for t in tensors)


def test_gradcheck_every_function():
    torch.manual_seed(1)
    s = random_state(batch=2)
    i = random_interface(batch=2)
    usage = torch.rand(2, N, dtype=f64) * 0.9 + 0.05  # distinct values almost surely
    checks = {
        "cosine_similarity": (A.cosine_similarity, _inputs(s.memory, i.read_keys)),
        "content_weights": (A.content_weights, _inputs(s.memory, i.read_keys, i.read_strengths)),
        "usage_update": (lambda u, f, r: A.usage_update(u, s.write_weights, f, r),
                         _inputs(s.usage, i.free_gates, s.read_weights)),
        "allocation_weights": (A.allocation_weights, _inputs(usage)),
        "multi_head_allocation": (A.allocation_weights,
                                  _inputs(usage, i.allocation_gates * i.write_gates)),
        "write_weights": (A.write_weights, _inputs(torch.rand(2, K, N, dtype=f64),
                                                   torch.rand(2, K, N, dtype=f64),
                                                   i.allocation_gates, i.write_gates)),
        "erase_and_write": (A.erase_and_write,
                            _inputs(s.memory, s.write_weights, i.erase, i.write_vectors)),
        "precedence_update": (A.precedence_update, _inputs(s.precedence, s.write_weights)),
        "link_update": (A.link_update, _inputs(s.link, s.precedence, s.write_weights)),
        "directional_weights": (A.directional_weights, _inputs(s.link, s.read_weights)),
        "read_weights": (A.read_weights, _inputs(torch.rand(2, R, N, dtype=f64),
                                                 torch.rand(2, R, K, N, dtype=f64),
                                                 torch.rand(2, R, K, N, dtype=f64),
                                                 i.read_modes)),
        "read_vectors": (A.read_vectors, _inputs(s.memory, s.read_weights)),
    }
    for name, (fn, args) in checks.items():
        assert gradcheck(fn, args), name


def test_no_nan_at_zero_memory_and_extreme_strengths():
    memory = torch.zeros(B, N, W, dtype=torch.float32, requires_grad=True)
    keys = torch.zeros(B, R, W, requires_grad=True)
    strengths = torch.full((B, R), 1e4, requires_grad=True)
    out = A.content_weights(memory, keys, strengths)
    out.sum().backward()
    for t in (out, memory.grad, keys.grad, strengths.grad):
        assert torch.isfinite(t).all()
    big = torch.randn(B, N, W, requires_grad=True)
    out = A.content_weights(big, torch.randn(B, R, W), torch.full((B, R), 1e4))
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(big.grad).all()
