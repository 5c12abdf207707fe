"""The DNC's successors as options (docs/semantics.md): masking, de-allocation and
sharpness control (Csordás & Schmidhuber 2019), layer normalisation, bypass
dropout, the content-based memory unit and the bidirectional controller
(Franke et al. 2018). Each against the NumPy reference, by gradcheck, by its
invariants, and equal to the plain DNC where its parameter makes it vanish."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import reference
from conftest import B, K, N, R, W, assert_same, leaves, random_interface, random_state, random_xi
from torchdnc import DNC, DNCConfig
from torchdnc import addressing as A
from torchdnc.memory import (InterfaceExtras, MemoryOptions, interface_size, memory_step,
                             split_interface)
from torchdnc.training.config import VARIANTS, resolve_config

f64 = torch.float64
OPTIONS = {
    "masking": dict(masking=True),
    "deallocation": dict(deallocation=True),
    "sharpness": dict(sharpness=True),
    "dnc-md": VARIANTS["dnc-md"],
    "dnc-mds": VARIANTS["dnc-mds"],
    "layer_norm": dict(layer_norm=True),
    "content-only": dict(temporal_links=False),
    "rsdnc": VARIANTS["rsdnc"],
    "bi-rsdnc": VARIANTS["bi-rsdnc"],
}


def reference_params(dnc: DNC) -> dict:
    numpy = lambda t: t.detach().numpy()  # noqa: E731
    rnn = dnc.controller.rnn
    params = dict(w_ih=rnn.weight_ih_l0, w_hh=rnn.weight_hh_l0, b_ih=rnn.bias_ih_l0,
                  b_hh=rnn.bias_hh_l0, w_xi=dnc.access.interface.weight,
                  b_xi=dnc.access.interface.bias, w_y=dnc.output.weight, b_y=dnc.output.bias)
    params = {k: numpy(v) for k, v in params.items()}
    if hasattr(dnc.access, "layer_norm"):
        params.update(ln_gain=numpy(dnc.access.layer_norm.weight),
                      ln_bias=numpy(dnc.access.layer_norm.bias))
    if hasattr(dnc, "backward_controller"):
        lstm = dnc.backward_controller
        params["backward"] = dict(w_ih=numpy(lstm.weight_ih_l0), w_hh=numpy(lstm.weight_hh_l0),
                                  b_ih=numpy(lstm.bias_ih_l0), b_hh=numpy(lstm.bias_hh_l0))
    return params


@pytest.mark.parametrize("writes", [1, 2])
@pytest.mark.parametrize("name", OPTIONS)
def test_each_option_matches_the_reference(name, writes):
    torch.manual_seed(7)
    options = OPTIONS[name]
    dnc = DNC(input_size=4, output_size=3, hidden_size=6, memory_size=5, word_size=3,
              num_reads=2, num_writes=writes, clip=0.0, **options).double().eval()
    for p in dnc.parameters():
        torch.nn.init.normal_(p, std=0.8)
    x = torch.randn(2, 12, 4, dtype=f64) * 2
    y, _ = dnc(x)
    for b in range(2):
        expected = reference.dnc_run(x[b].numpy(), reference_params(dnc), N=5, W=3, R=2,
                                     K=writes, clip=0.0, options=options)
        np.testing.assert_allclose(y[b].detach().numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["dnc-mds", "content-only", "layer_norm", "bi-rsdnc"])
def test_gradcheck_with_options(name):
    """Allocation gates shut, so that the usage's stop-gradient plays no part."""
    torch.manual_seed(8)
    dnc = DNC(input_size=2, output_size=2, hidden_size=3, memory_size=3, word_size=2, num_reads=2,
              clip=0.0, **OPTIONS[name]).double().eval()
    for p in dnc.parameters():
        torch.nn.init.normal_(p, std=0.6)
    allocation = 2 * 2 + 2 + 3 * 2 + 1 + 2  # R W + R + 3 K W + K + R
    with torch.no_grad():
        shut = dnc.access.layer_norm if hasattr(dnc.access, "layer_norm") else dnc.access.interface
        shut.weight[allocation] = 0
        shut.bias[allocation] = -40.0
    x = torch.randn(2, 4, 2, dtype=f64, requires_grad=True)
    assert gradcheck(lambda x: dnc(x)[0], (x,), atol=1e-7, rtol=1e-5)


# -- invariants -------------------------------------------------------------------


def test_a_zero_mask_ignores_that_part_of_key_and_memory():
    memory, keys = torch.randn(B, N, W, dtype=f64), torch.randn(B, R, W, dtype=f64)
    strengths = 1 + torch.rand(B, R, dtype=f64) * 4
    masks = torch.ones(B, R, W, dtype=f64)
    masks[..., 1] = 0
    keep = [0, 2]
    assert_same(A.content_weights(memory, keys, strengths, masks),
                A.content_weights(memory[..., keep], keys[..., keep], strengths))
    # masks of ones are no masks
    assert_same(A.content_weights(memory, keys, strengths, torch.ones_like(masks)),
                A.content_weights(memory, keys, strengths))


def test_deallocation_erases_what_the_free_gates_free():
    state = random_state()
    interface = random_interface()
    # Read head 0 read slot 2 alone at t-1; its free gate is 1: slot 2 is freed.
    read_weights = state.read_weights.clone()
    read_weights[:, 0] = 0
    read_weights[:, 0, 2] = 1
    state = state._replace(read_weights=read_weights)
    interface = interface._replace(free_gates=torch.cat([torch.ones(B, 1, dtype=f64),
                                                         interface.free_gates[:, 1:]], 1))
    freed, _ = memory_step(state, interface, MemoryOptions(deallocation=True))
    kept, _ = memory_step(state, interface)
    # The freed slot holds only what was written into it at t.
    written = torch.einsum("bk,bkw->bw", freed.write_weights[:, :, 2], interface.write_vectors)
    assert_same(freed.memory[:, 2], written)
    assert not torch.allclose(kept.memory[:, 2], written)
    # Free gates at 0: the same step as the DNC's.
    shut = interface._replace(free_gates=torch.zeros_like(interface.free_gates))
    assert_same(memory_step(state, shut, MemoryOptions(deallocation=True)), memory_step(state, shut))


def test_sharpened_weightings_are_distributions_and_exponent_one_only_normalises():
    link = random_state(steps=6).link
    previous = torch.softmax(torch.randn(B, R, N, dtype=f64), -1)
    forward, _ = A.directional_weights(link, previous)
    sharp = A.sharpen(forward, 1 + torch.rand(B, R, dtype=f64) * 5)
    assert torch.all((sharp >= 0) & (sharp <= 1))
    assert_same(sharp.sum(-1), torch.ones(B, R, K, dtype=f64))
    shifted = forward + A.SHARPNESS_EPSILON
    assert_same(A.sharpen(forward, torch.ones(B, R, dtype=f64)), shifted / shifted.sum(-1, keepdim=True))
    # A larger exponent moves weight to the largest entry.
    flat, steep = (A.sharpen(forward, torch.full((B, R), s, dtype=f64)) for s in (1.0, 8.0))
    assert torch.all(steep.amax(-1) >= flat.amax(-1) - 1e-12)


def test_the_interface_grows_by_the_options_parts_only_at_its_end():
    options = MemoryOptions(masking=True, sharpness=True)
    size = interface_size(R, W, K, options)
    assert size == interface_size(R, W, K) + (R + K) * W + 2 * R
    assert interface_size(R, W, K, MemoryOptions(temporal_links=False)) == \
        interface_size(R, W, K) - R * (1 + 2 * K)
    xi = random_xi()
    extra = torch.randn(B, (R + K) * W + 2 * R, dtype=f64)
    interface, extras = split_interface(torch.cat([xi, extra], -1), R, W, K, options=options)
    plain, none = split_interface(xi, R, W, K)
    assert_same(interface, plain)
    assert none == InterfaceExtras()
    assert extras.read_masks.shape == (B, R, W) and extras.write_masks.shape == (B, K, W)
    assert torch.all(extras.forward_sharpness >= 1) and extras.backward_sharpness.shape == (B, R)


def test_content_only_reads_equal_the_dnc_with_the_content_mode_forced():
    state = random_state()
    interface = random_interface()
    modes = torch.zeros_like(interface.read_modes)
    modes[..., K] = 1
    content_only = state._replace(link=state.link[:, :, :0, :0], precedence=state.precedence[:, :, :0])
    got, reads = memory_step(content_only, interface, MemoryOptions(temporal_links=False))
    want, want_reads = memory_step(state, interface._replace(read_modes=modes))
    for name in ("memory", "usage", "read_weights", "write_weights"):
        assert_same(getattr(got, name), getattr(want, name))
    assert_same(reads, want_reads)
    assert got.link.shape == (B, K, 0, 0)  # nothing of size N x N is kept


# -- the model ----------------------------------------------------------------------


def test_options_off_is_the_dnc_bit_for_bit():
    torch.manual_seed(3)
    plain = DNC(input_size=4, output_size=3, memory_size=5, word_size=3, num_reads=2).double()
    off = DNC(plain.config, masking=False, deallocation=False, sharpness=False, layer_norm=False,
              bypass_dropout=0.0, temporal_links=True, bidirectional=False).double()
    off.load_state_dict(plain.state_dict())
    x = torch.randn(3, 7, 4, dtype=f64)
    assert torch.equal(off(x)[0], plain(x)[0])


def test_bypass_dropout_drops_only_the_path_around_the_memory():
    torch.manual_seed(4)
    dnc = DNC(input_size=4, output_size=3, memory_size=5, word_size=3, num_reads=2,
              bypass_dropout=0.5).double()
    x = torch.randn(3, 6, 4, dtype=f64)
    dnc.train()
    assert not torch.equal(dnc(x)[0], dnc(x)[0])  # dropped at random while training
    dnc.eval()
    assert torch.equal(dnc(x)[0], dnc(x)[0])
    with torch.no_grad():  # no weight on h_t: what is left (the reads) is never dropped
        dnc.output.weight[:, : dnc.controller.output_size] = 0
    dnc.train()
    assert torch.equal(dnc(x)[0], dnc(x)[0])


def test_bidirectional_respects_padding_and_refuses_step_mode():
    torch.manual_seed(5)
    dnc = DNC(input_size=4, output_size=3, memory_size=5, word_size=3, num_reads=2,
              **VARIANTS["bi-rsdnc"]).double().eval()
    xs = [torch.randn(1, n, 4, dtype=f64) for n in (6, 3)]
    padded = torch.randn(2, 8, 4, dtype=f64)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    positions = [[0, 1, 2, 3, 4, 5], [1, 4, 6]]
    for b, where in enumerate(positions):
        padded[b, where], mask[b, where] = xs[b][0], True
    y, state = dnc(padded, mask=mask)
    for b, where in enumerate(positions):
        alone, alone_state = dnc(xs[b])
        assert_same(y[b, where], alone[0])
        assert_same([t[b] for t in leaves(state)], [t[0] for t in leaves(alone_state)])
    with pytest.raises(ValueError, match="step: a bidirectional model reads the whole input"):
        dnc.step(torch.randn(2, 4, dtype=f64))


def test_options_are_checked():
    with pytest.raises(ValueError, match="bypass_dropout: expected a number >= 0 and < 1, got 1.5"):
        DNCConfig(bypass_dropout=1.5)
    with pytest.raises(ValueError, match="mask_min: needs masking=True"):
        DNCConfig(mask_min=0.1)
    # The kernel runs every successor: DNC-MDS, the rsDNC and the bi-rsDNC.
    DNCConfig(masking=True, deallocation=True, sharpness=True, implementation="fused")
    DNCConfig(layer_norm=True, temporal_links=False, bidirectional=True, implementation="fused")


def test_variants_from_the_command_line(tmp_path):
    config = resolve_config("copy", "quick", {"variant": "dnc-md"})
    assert config.variant == "dnc-md" and config.dnc["masking"] and config.dnc["deallocation"]
    assert not config.dnc["sharpness"]
    config = resolve_config("babi", "quick", {"variant": "rsdnc", "bypass_dropout": "0.2"})
    assert config.dnc["bypass_dropout"] == 0.2 and not config.dnc["temporal_links"]
    with pytest.raises(ValueError, match=r"variant: expected one of \('dnc', "):
        resolve_config("copy", "quick", {"variant": "ntm"})
    with pytest.raises(ValueError, match="variant: 'rsdnc' sets options of the dense DNC"):
        resolve_config("copy", "quick", {"variant": "rsdnc", "model": "sparse"})


def test_gates_can_be_held_for_an_ablation():
    torch.manual_seed(9)
    dnc = DNC(input_size=4, output_size=3, memory_size=5, word_size=3, num_reads=2,
              fixed_free_gates=0.0, fixed_allocation_gates=0.0).double()
    y, state, trace = dnc(torch.randn(2, 8, 4, dtype=f64), return_trace=True)
    assert torch.all(trace.free_gates == 0) and torch.all(trace.allocation_gates == 0)
    assert torch.all(trace.usage[:, 1:] >= trace.usage[:, :-1] - 1e-12)  # nothing is ever freed
    assert_same(trace.write_weights, trace.write_gates[..., None] * trace.write_content_weights)
    with pytest.raises(ValueError, match="fixed_free_gates: expected a number >= 0 and <= 1"):
        DNCConfig(fixed_free_gates=2.0)


@pytest.mark.parametrize("implementation", ["plain", "fused"])
def test_gates_can_be_held_at_test_time_on_a_trained_model(implementation):
    # with_held_gates: the same weights, run as a DNC built with the gates held;
    # the model it came from keeps learning its gates.
    torch.manual_seed(10)
    options = dict(input_size=4, output_size=3, memory_size=5, word_size=3, num_reads=2,
                   implementation=implementation)
    dnc = DNC(**options).double()
    x = torch.randn(2, 8, 4, dtype=f64)
    before, _, trace = dnc(x, return_trace=True)
    assert trace.free_gates.abs().sum() > 0
    for held_gates, built in ((dict(free_gates=0), dict(fixed_free_gates=0.0)),
                              (dict(allocation_gates=0.25), dict(fixed_allocation_gates=0.25)),
                              (dict(free_gates=1, allocation_gates=0),
                               dict(fixed_free_gates=1.0, fixed_allocation_gates=0.0))):
        held = dnc.with_held_gates(**held_gates)
        reference = DNC(**options, **built).double()
        reference.load_state_dict(dnc.state_dict())
        assert held.output.weight is dnc.output.weight
        y, state, trace = held(x, return_trace=True)
        want, want_state, _ = reference(x, return_trace=True)
        assert_same(y, want)
        assert_same(state.access.usage, want_state.access.usage)
        if "free_gates" in held_gates:
            assert torch.all(trace.free_gates == held_gates["free_gates"])
        if "allocation_gates" in held_gates:
            assert torch.all(trace.allocation_gates == held_gates["allocation_gates"])
    again, _ = dnc(x)
    assert_same(again, before)  # the original still learns its gates
    assert dnc.config.fixed_free_gates == -1 and dnc.access.fixed_gates["free_gates"] == -1
    with pytest.raises(ValueError, match="fixed_allocation_gates: expected a number >= 0 and <= 1"):
        dnc.with_held_gates(allocation_gates=1.5)


def test_bench_times_every_variant(tmp_path, capsys):
    # `torchdnc bench --variant` takes every named set; the bi-rsDNC has no step
    # mode, so its step-loop column stays empty instead of the bench failing.
    from torchdnc.bench import speed

    out = tmp_path / "bench.json"
    speed.main(["--configs", "a", "--implementations", "fused", "--baselines", "",
                "--variant", "bi-rsdnc", "--repeats", "1", "--steps", "3", "--batch", "2",
                "--json", str(out)])
    (result,) = json.loads(out.read_text())
    assert result["name"] == "a T=3 bi-rsdnc" and result["train_s"] > 0
    assert "step_loop_s" not in result
    with pytest.raises(SystemExit):
        speed.main(["--variant", "ntm"])
    assert "--variant: expected one of ['dnc', " in capsys.readouterr().err
