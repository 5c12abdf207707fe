"""Every speed option gives the plain implementation's outputs and gradients
(1e-10 in float64, 1e-6 in float32; with layer norm, which magnifies float32
rounding, as close to float64 as the plain path is)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import leaves
from torchdnc import DNC
from torchdnc.kernels import fused

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


def _leaf_state(state):
    """A copy of ``state`` whose tensors are leaves that want gradients."""
    state = state.detach()
    return type(state)(*[type(p)(*[t.clone().requires_grad_(True) for t in p])
                         if not isinstance(p, torch.Tensor) else p.clone().requires_grad_(True)
                         for p in state])


def _check(plain, other, x, mask=None, state=None, tol=1e-10):
    torch.manual_seed(1)
    y1, s1 = plain(x, state=state, mask=mask)
    y2, s2 = other(x, state=state, mask=mask)
    torch.testing.assert_close(y2, y1, rtol=tol, atol=tol)
    weights = torch.randn_like(y1)
    inputs = ([x] if x.requires_grad else []) + \
        ([] if state is None else [t for t in leaves(state) if t.requires_grad])
    g1 = torch.autograd.grad(_loss(y1, s1, weights), [*plain.parameters(), *inputs], allow_unused=True)
    g2 = torch.autograd.grad(_loss(y2, s2, weights), [*other.parameters(), *inputs], allow_unused=True)
    for a, b in zip(g1, g2):
        if a is None:
            assert b is None or torch.all(b == 0)
            continue
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)
    for a, b in zip(leaves(s1), leaves(s2)):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


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
@pytest.mark.parametrize("variant", [{}, dict(masking=True, deallocation=True, sharpness=True),
                                     dict(temporal_links=False)])
def test_fused_equals_plain_float32(variant):
    plain, fast = _pair("fused", torch.float32, num_reads=4, num_writes=1, clip=20.0, **variant)
    plain.float(), fast.float()
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.3)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(4, 12, 5, requires_grad=True)
    _check(plain, fast, x, tol=1e-6)


@needs_fused
@pytest.mark.parametrize("variant", [{}, dict(layer_norm=True), dict(layer_norm=True, temporal_links=False)])
def test_fused_float32_is_as_close_to_float64_as_plain(variant):
    # Layer norm divides by the interface vector's standard deviation, which
    # magnifies float32 rounding: there the two float32 paths can differ by a
    # little more than 1e-6 while each is as far from float64 as the other.
    # The check: the kernel's float32 outputs and gradients are no farther from
    # the float64 ones than the plain path's float32 ones (and within 1e-5).
    plain, fast = _pair("fused", torch.float32, num_reads=4, num_writes=1, clip=20.0, **variant)
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.3)
    fast.load_state_dict(plain.state_dict())
    exact = DNC(**{**BASE, **variant}, num_reads=4, clip=20.0, implementation="plain").double()
    exact.load_state_dict(plain.state_dict())
    x = torch.randn(4, 12, 5)
    results = []
    for model, inputs in ((plain, x), (fast, x), (exact, x.double())):
        y, state = model(inputs)
        grads = torch.autograd.grad(_loss(y, state, torch.ones_like(y)), list(model.parameters()))
        results.append(torch.cat([y.flatten(), *(g.flatten() for g in grads)]).double())
    plain_error = (results[0] - results[2]).abs().max().item()
    fused_error = (results[1] - results[2]).abs().max().item()
    assert fused_error <= 2 * plain_error + 1e-7, (fused_error, plain_error)
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-5)


@needs_fused
def test_fused_continues_from_a_state_with_gradient():
    plain, fast = _pair("fused", torch.float64, num_reads=2, num_writes=2, clip=1.0)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    _, start = plain(x)  # a non-trivial state; its tensors carry gradient to the weights
    _check(plain, fast, torch.randn(3, 6, 5, dtype=torch.float64), state=_leaf_state(start))


@needs_fused
def test_fused_reads_the_callers_state_in_place_and_leaves_it_unchanged():
    # The kernel's first step reads M_0 and L_0 where they are and writes the new
    # state elsewhere; a sequence padded at its first step gets them copied over.
    plain, fast = _pair("fused", torch.float64, num_reads=2, num_writes=2)
    _, start = plain(torch.randn(3, 4, 5, dtype=torch.float64))
    start = start.detach()
    before = [t.clone() for t in leaves(start)]
    x = torch.randn(3, 3, 5, dtype=torch.float64)
    mask = torch.tensor([[False, True, True], [True, True, True], [False, False, True]])
    _check(plain, fast, x, mask=mask, state=_leaf_state(start))
    with torch.no_grad():
        (y1, s1), (y2, s2) = plain(x, start, mask=mask), fast(x, start, mask=mask)
    for a, b in zip([y1, *leaves(s1)], [y2, *leaves(s2)]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    for a, b in zip(before, leaves(start)):
        assert torch.equal(a, b)


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


@pytest.mark.parametrize("kind", [dict(controller="gru"), dict(num_layers=2), dict(num_reads=65)])
def test_auto_runs_the_plain_path_where_the_kernel_does_not_apply(kind, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the fused kernel ran")

    monkeypatch.setattr(fused, "run", refuse)
    model = DNC(**{**BASE, **kind}).double()
    y, _ = model(torch.randn(2, 3, 5, dtype=torch.float64))
    assert y.shape == (2, 3, 4) and torch.isfinite(y).all()


def test_fused_refuses_more_reads_than_the_kernel_handles():
    with pytest.raises(ValueError, match="implementation: 'fused' handles num_reads <= 64, got "
                                         "num_reads=65"):
        DNC(**BASE, num_reads=65, implementation="fused")


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


# -- autograd's contract -------------------------------------------------------


@pytest.mark.parametrize("implementation", ["plain", "fused"])
def test_backward_twice_through_a_retained_graph(implementation):
    plain, other = _pair(implementation, torch.float64, num_reads=2, num_writes=1, clip=2.0)
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    for model in (plain, other):
        y, state = model(x)
        loss = y.square().sum() + state.access.memory.sum()
        loss.backward(retain_graph=True)
        once = [p.grad.clone() for p in model.parameters()]
        loss.backward()
        for p, g in zip(model.parameters(), once):
            torch.testing.assert_close(p.grad, 2 * g, rtol=1e-12, atol=1e-12)
    for a, b in zip(plain.parameters(), other.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-10)


def test_fused_second_backward_without_retain_graph_is_torchs_error():
    _, fast = _pair("fused", torch.float64, num_reads=2)
    y, _ = fast(torch.randn(2, 4, 5, dtype=torch.float64))
    loss = y.sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


@pytest.mark.parametrize("variant", [{}, dict(layer_norm=True, temporal_links=False,
                                                bidirectional=True)])
def test_fused_gradients_of_gradients_equal_plain(variant):
    plain, fast = _pair("fused", torch.float64, num_reads=2, num_writes=2, clip=1.5, **variant)
    x = torch.randn(2, 5, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)
    results = []
    for model in (plain, fast):
        y, _ = model(x, mask=mask)
        grads = torch.autograd.grad(y.square().sum(), list(model.parameters()), create_graph=True)
        penalty = sum(g.square().sum() for g in grads)  # a gradient penalty needs second order
        results.append(torch.autograd.grad(penalty, list(model.parameters())))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)


def test_fused_saves_its_per_step_tensors_through_save_for_backward():
    _, fast = _pair("fused", torch.float64, num_reads=2)
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t.shape) or t, lambda t: t):
        y, _ = fast(torch.randn(3, 6, 5, dtype=torch.float64))
    assert (7, 3, 6) in packed  # usage before and after every step, [T + 1, B, N]
    assert len(packed) >= 20
    y.sum().backward()  # unpacked through the hooks
    assert all(p.grad is not None for p in fast.parameters())


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("variant", [{}, dict(layer_norm=True, temporal_links=False,
                                                bidirectional=True)])
def test_fused_forward_without_gradients_keeps_nothing_and_gives_the_same(mode, variant):
    _, fast = _pair("fused", torch.float64, num_reads=2, num_writes=2, clip=1.0, **variant)
    x = torch.randn(3, 9, 5, dtype=torch.float64)
    mask = torch.rand(3, 9) > 0.3
    y, state = fast(x, mask=mask)
    packed = []
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context, torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t,
                                                           lambda t: t):
        y2, state2 = fast(x, mask=mask)
    assert packed == []
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    for a, b in zip(leaves(state), leaves(state2)):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_inference_memory_does_not_grow_with_the_sequence():
    """Peak RSS of a no_grad forward at T = 100 and T = 4000 (in fresh processes)."""
    import subprocess
    import sys

    script = (
        "import resource, sys, torch\n"
        "from torchdnc import DNC\n"
        "torch.manual_seed(0)\n"
        "m = DNC(input_size=8, output_size=8, hidden_size=32, memory_size=64, word_size=16,\n"
        "        num_reads=4, implementation='fused')\n"
        "x = torch.randn(8, int(sys.argv[1]), 8)\n"
        "with torch.no_grad():\n"
        "    m(x[:, :2])\n"
        "    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    m(x)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n")
    growth = {T: int(subprocess.run([sys.executable, "-c", script, str(T)], capture_output=True,
                                    text=True, check=True).stdout.split()[-1]) / 1024
              for T in (100, 4000)}
    # Kept per step for a backward this would be ~190 MB at T = 4000; the outputs
    # (y, hidden and reads, [8, 4000, 104] floats) are ~13 MB.
    assert growth[4000] - growth[100] < 100, growth


# -- building the kernel, and torch.compile -------------------------------------------


def test_kernel_cache_key_includes_the_cpu(monkeypatch):
    monkeypatch.delenv("TORCHDNC_NATIVE", raising=False)
    monkeypatch.setattr(fused, "cpu_signature", lambda: "x86_64 flags: sse2 avx2")
    here = fused.extension_name()
    monkeypatch.setattr(fused, "cpu_signature", lambda: "x86_64 flags: sse2 avx2 avx512f")
    assert fused.extension_name() != here  # -march=native objects are per CPU
    monkeypatch.setenv("TORCHDNC_NATIVE", "0")
    assert "-march=native" not in fused.build_flags()
    portable = fused.extension_name()
    monkeypatch.setattr(fused, "cpu_signature", lambda: "aarch64")
    assert fused.extension_name() == portable


def _fresh_loader(monkeypatch, load):
    import torch.utils.cpp_extension

    monkeypatch.setattr(fused, "_EXTENSION", None)
    monkeypatch.setattr(fused, "_FAILED", None)
    monkeypatch.setattr(fused, "_is_built", lambda name: False)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", load)


def test_the_first_build_says_so_once(monkeypatch, caplog):
    built = object()
    _fresh_loader(monkeypatch, lambda **kwargs: built)
    with caplog.at_level("INFO", logger="torchdnc"):
        assert fused.load_extension() is built
        assert fused.load_extension() is built
    notes = [r.getMessage() for r in caplog.records if "building the fused CPU kernel" in r.getMessage()]
    assert notes == ["torchdnc: building the fused CPU kernel, once, about 30 s "
                     "(`torchdnc build` does it ahead of time)"]


def test_a_failed_build_falls_back_to_plain_with_a_warning(monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("Error building extension 'torchdnc_fused': no compiler")

    _fresh_loader(monkeypatch, broken)
    plain, model = _pair("auto", torch.float64, num_reads=2)
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    with caplog.at_level("WARNING", logger="torchdnc"):
        torch.testing.assert_close(model(x)[0], plain(x)[0], rtol=0, atol=0)
    assert any("could not be built (RuntimeError: Error building extension 'torchdnc_fused': no "
               "compiler); using the plain PyTorch implementation" in r.getMessage()
               for r in caplog.records)
    assert fused.failure().startswith("RuntimeError")


def test_build_command_compiles_the_kernel(capsys):
    from torchdnc.cli import main

    assert main(["build"]) == 0
    assert "fused CPU kernel ready: torchdnc_fused_" in capsys.readouterr().out


def test_compile_falls_back_to_the_plain_step_when_compilation_fails(monkeypatch, caplog):
    def failing_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("backend exploded")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    plain, compiled = _pair("compile", torch.float64, num_reads=2)
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    with caplog.at_level("WARNING", logger="torchdnc"):
        torch.testing.assert_close(compiled(x)[0], plain(x)[0], rtol=0, atol=0)
        compiled(x)
    warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert warnings == ["torchdnc: torch.compile failed (RuntimeError: backend exploded); this model "
                        "uses the plain step"]


def test_compile_does_not_keep_models_alive(monkeypatch):
    import gc
    import weakref

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # the cache, not inductor
    model = DNC(**BASE, implementation="compile")
    model(torch.randn(2, 3, 5))
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_gpu_check_script_runs_in_dry_run_mode(tmp_path):
    # The GPU script's steps (device tests, bench, table) on the CPU at tiny sizes,
    # so that the script a GPU machine runs once is known to work.
    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), "--dry-run", "--out", str(tmp_path)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    table = (tmp_path / "table.md").read_text()
    for kind in ("fused", "plain", "lstmcell", "lstm"):
        assert f"| a T=4 | {kind} |" in table
    assert "error" not in table
    assert "[100%]" in (tmp_path / "tests.log").read_text()  # pytest failing fails the script


@needs_fused
def test_inference_sees_weights_changed_in_place_and_replaced():
    # An optimizer step (in place), a change through .data, load_state_dict and
    # .to() must all show in the next forward without gradients.
    model = DNC(**BASE, num_reads=2, implementation="fused").double()
    x = torch.randn(2, 4, BASE["input_size"], dtype=torch.float64)

    def agrees():
        plain = DNC(**BASE, num_reads=2, implementation="plain").double()
        plain.load_state_dict(model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(model(x)[0], plain(x)[0], rtol=1e-10, atol=1e-10)

    agrees()
    with torch.no_grad():
        model.controller.rnn.weight_hh_l0.add_(0.1)
        model.controller.rnn.weight_ih_l0.mul_(0.9)
    agrees()
    model.controller.rnn.weight_hh_l0.data.mul_(1.1)  # no version bump through .data
    agrees()
    model.load_state_dict({k: v + 0.01 for k, v in model.state_dict().items()})
    agrees()
    model.float().double()
    agrees()


@needs_fused
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_equals_plain_whatever_the_kernel_threads(threads, monkeypatch):
    # Each kernel thread takes a slice of the batch through the whole sequence
    # (forward, recompute and backward): uneven slices, padding and several
    # recompute chunks must not change a number.
    monkeypatch.setattr(fused, "STORE_ALL_BYTES", 0)
    previous = fused.threads()
    fused.set_threads(threads)
    try:
        plain, fast = _pair("fused", torch.float64, num_reads=2, num_writes=2, clip=2.0,
                            hidden_size=40, memory_size=12, word_size=8)
        x = torch.randn(7, 17, 5, dtype=torch.float64, requires_grad=True)
        _check(plain, fast, x, mask=torch.rand(7, 17) > 0.2)
        with torch.inference_mode():
            torch.testing.assert_close(fast(x.detach())[0], plain(x.detach())[0], rtol=1e-10,
                                       atol=1e-10)
    finally:
        fused.set_threads(previous)


def test_kernel_threads_are_checked():
    with pytest.raises(ValueError, match="threads: expected an integer >= 0, got -1"):
        fused.set_threads(-1)


@needs_fused
def test_training_gives_the_kernel_the_threads_and_restores_them(tmp_path, monkeypatch):
    from torchdnc.training import resolve_config, train

    seen = []
    original = fused._kernel_forward

    def spy(*args, **kwargs):
        seen.append((fused.threads(), torch.get_num_threads()))
        return original(*args, **kwargs)

    monkeypatch.setattr(fused, "_kernel_forward", spy)
    before = (torch.get_num_threads(), fused._THREADS)
    config = resolve_config("copy", "quick", {"iterations": 2, "eval_interval": 2,
                                              "eval_batches": 1, "threads": 2,
                                              "progress": False})
    train(config, tmp_path / "run")
    assert seen and all(s == (2, 1) for s in seen)  # kernel 2 threads, torch's ops 1
    assert (torch.get_num_threads(), fused._THREADS) == before


@needs_fused
@pytest.mark.parametrize("held", [dict(fixed_free_gates=0.0), dict(fixed_allocation_gates=0.0),
                                  dict(fixed_free_gates=1.0, fixed_allocation_gates=0.5)])
def test_fused_runs_the_held_gate_ablations_as_plain(held):
    plain, fast = _pair("fused", torch.float64, num_reads=2, num_writes=2, clip=2.0, **held)
    assert fast._kernel_applies()
    x = torch.randn(3, 9, 5, dtype=torch.float64, requires_grad=True)
    _check(plain, fast, x, mask=torch.rand(3, 9) > 0.2)


@needs_fused
@pytest.mark.parametrize("reads,writes,chunk,extra", [
    (1, 1, 0, dict(deallocation=True)), (2, 1, 2, dict(deallocation=True)),
    (3, 2, 3, dict(deallocation=True)), (2, 3, 1, dict(deallocation=True, fixed_free_gates=1.0)),
    (1, 1, 0, dict(masking=True)), (3, 2, 2, dict(masking=True, mask_min=0.2)),
    (2, 1, 0, dict(masking=True, deallocation=True)),
    (2, 2, 3, dict(masking=True, deallocation=True, mask_min=0.1, fixed_allocation_gates=0.0)),
    (1, 1, 0, dict(sharpness=True)), (3, 2, 2, dict(sharpness=True)),
    (2, 2, 0, dict(masking=True, deallocation=True, sharpness=True)),
    (4, 3, 1, dict(masking=True, deallocation=True, sharpness=True, mask_min=0.05)),
    # The rsDNC's memory unit: layer norm over xi, content reads only, and both.
    (1, 1, 0, dict(layer_norm=True)), (3, 2, 2, dict(layer_norm=True, sharpness=True)),
    (1, 1, 0, dict(temporal_links=False)), (3, 2, 3, dict(temporal_links=False)),
    (2, 1, 0, dict(layer_norm=True, temporal_links=False)),
    (5, 2, 1, dict(layer_norm=True, temporal_links=False, masking=True, deallocation=True,
                   sharpness=True, mask_min=0.1)),
    # The bi-rsDNC: the backward controller's share of xi enters the kernel per step.
    (2, 1, 0, dict(layer_norm=True, temporal_links=False, bidirectional=True)),
    (3, 2, 2, dict(bidirectional=True)),
])
def test_fused_runs_the_successors_as_plain(reads, writes, chunk, extra):
    # DNC-MDS: masked content addressing ("M", every read and write head), the
    # retention erasing freed rows ("D") and sharpened forward / backward
    # weightings ("S") inside the kernel; the rsDNC's layer norm (its gain and bias
    # get gradients), content-based unit (no link matrix at all) and the
    # bi-rsDNC's backward controller (padding respected): forward,
    # recomputed chunks and backward agree with the plain path, the masks' and
    # exponents' gradients included.
    plain, fast = _pair("auto", torch.float64, num_reads=reads, num_writes=writes, clip=2.0,
                        backward_chunk=chunk, **extra)
    assert fast._kernel_applies()
    x = torch.randn(3, 9, 5, dtype=torch.float64, requires_grad=True)
    _check(plain, fast, x, mask=torch.rand(3, 9) > 0.2)
    _, start = plain(x.detach())  # continue from a used memory, gradients into the state too
    _check(plain, fast, torch.randn(3, 5, 5, dtype=torch.float64), state=_leaf_state(start))


@needs_fused
def test_fused_deallocation_changes_the_memory():
    # Not the paper's DNC by accident: with free gates held at 1 every row read
    # last step is erased, so the kernel's result differs from the kernel without D.
    _, on = _pair("fused", torch.float64, num_reads=2, deallocation=True, fixed_free_gates=1.0)
    off = DNC(**{**BASE, "num_reads": 2, "fixed_free_gates": 1.0}, implementation="fused").double()
    off.load_state_dict(on.state_dict())
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        _, s_on = on(x)
        _, s_off = off(x)
    assert not torch.allclose(s_on.access.memory, s_off.access.memory)
