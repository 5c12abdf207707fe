"""The fused recurrence: a C++ forward over the whole sequence and its
hand-derived backward, for a DNC with a one-layer LSTM controller.

The extension is compiled on first use with `torch.utils.cpp_extension`
(about 30 s, said once through `logging`; ``torchdnc build`` does it ahead of
time) and cached in ``~/.cache/torch_extensions`` or
``$TORCH_EXTENSIONS_DIR`` under a key made of the source, the compiler flags
and this CPU's instruction set (objects built with ``-march=native`` on one
CPU are never loaded on another). Where the build fails (no compiler, no
ninja) the DNC falls back to the plain PyTorch path with one warning.

Results equal the plain path up to floating-point rounding; tests/test_speed.py
holds them to 1e-10 in float64 and 1e-6 in float32. Autograd's contract is
kept: the per-step tensors go through ``ctx.save_for_backward``; a second
``backward`` through a retained graph rebuilds what the first one released;
``create_graph=True`` (higher-order gradients) differentiates a plain PyTorch
recomputation of the same recurrence. Under ``torch.no_grad()`` /
``torch.inference_mode()`` nothing per step is kept beyond the outputs.

Memory: the memory matrix and the link matrices are stored only at the start
of every recompute chunk and rebuilt in the backward pass, so the backward
keeps about sqrt(2 T) of them rather than T.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
import time
from pathlib import Path

import torch
from torch import Tensor

from torchdnc.controller import LSTMState, lstm_cell
from torchdnc.memory import MemoryState, memory_step, parse_interface

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_EXTENSION = None
_FAILED: str | None = None
BUILD_SECONDS: float | None = None  # time the last build (or cache load) took
SOURCE = Path(__file__).parent / "csrc" / "fused_dnc.cpp"
MAX_READS = 64  # kMaxReads in the kernel; larger R runs the plain path

# Below this many bytes for all T link matrices, store them all (no recompute).
STORE_ALL_BYTES = 64 * 2**20


def cpu_signature() -> str:
    """What ``-march=native`` compiles for: the machine, CPU model and feature flags."""
    parts = [platform.machine(), platform.processor()]
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key in ("model name", "flags", "Features", "CPU part"):
                parts.append(line)
                if key in ("flags", "Features"):
                    break
    except OSError:  # not Linux: the platform strings above must do
        pass
    return "\n".join(parts)


def build_flags() -> list[str]:
    # -fopenmp: ATen's parallel_for is header-inline and runs serially without it.
    flags = ["-O3", "-fopenmp", "-fno-math-errno"]
    if os.environ.get("TORCHDNC_NATIVE", "1") != "0":
        flags.append("-march=native")
    return flags


def extension_name() -> str:
    """The cache key: a hash of the source, the flags and (with -march=native) the CPU."""
    flags = build_flags()
    key = SOURCE.read_bytes() + " ".join(flags).encode()
    if "-march=native" in flags:
        key += cpu_signature().encode()
    return f"torchdnc_fused_{hashlib.sha1(key).hexdigest()[:12]}"


def _is_built(name: str) -> bool:
    from torch.utils.cpp_extension import _get_build_directory

    try:
        folder = Path(_get_build_directory(name, verbose=False))
    except Exception:  # an unusual torch: assume it must be built
        return False
    return any(folder.glob(f"{name}*.so")) or any(folder.glob(f"{name}*.pyd"))


def load_extension(verbose: bool = False):
    """The compiled extension, or None when it cannot be built here."""
    global _EXTENSION, _FAILED, BUILD_SECONDS
    if _EXTENSION is not None or _FAILED is not None:
        return _EXTENSION
    with _LOCK:
        if _EXTENSION is not None or _FAILED is not None:
            return _EXTENSION
        start = time.perf_counter()
        try:
            from torch.utils.cpp_extension import load

            name = extension_name()
            if not _is_built(name):
                log.warning("torchdnc: building the fused CPU kernel, once, about 30 s "
                            "(`torchdnc build` does it ahead of time)")
            _EXTENSION = load(name=name, sources=[str(SOURCE)], extra_cflags=build_flags(),
                              extra_ldflags=["-fopenmp"], verbose=verbose)
        except Exception as error:  # no compiler, no ninja, ...
            message = str(error).strip().splitlines()
            _FAILED = f"{type(error).__name__}: {message[-1] if message else ''}"
            log.warning("torchdnc: the fused C++ DNC could not be built (%s); using the plain "
                        "PyTorch implementation", _FAILED)
        BUILD_SECONDS = time.perf_counter() - start
    return _EXTENSION


def available() -> bool:
    return load_extension() is not None


def failure() -> str | None:
    """Why the extension could not be built (None if it was, or was not tried)."""
    return _FAILED


def auto_chunk(steps: int, batch: int, num_writes: int, memory_size: int, element_size: int) -> int:
    """Recompute chunk: all steps in one chunk when the links are small, else 0,
    the kernel's triangular schedule (about sqrt(2 T) copies of M and L alive)."""
    total = steps * batch * num_writes * memory_size * memory_size * element_size
    if total <= STORE_ALL_BYTES:
        return max(steps, 1)
    return 0


# The Function's tensor inputs, in order: projected [B, T, 4H], w_cat [4H, RW + H],
# w_xi [I, H], b_xi [I], h0, c0 [B, H], r0 [B, R, W], the six MemoryState tensors,
# keep ([B, T] bool or empty).
NUM_INPUTS = 14


class FusedRecurrence(torch.autograd.Function):
    """Whole-sequence DNC recurrence (controller + memory), see module docstring."""

    @staticmethod
    def forward(ctx, *args):
        inputs, (clip, oneplus, chunk) = args[:NUM_INPUTS], args[NUM_INPUTS:]
        out, boundaries = _kernel_forward(inputs, clip, oneplus, chunk, store=True)
        ctx.options = (clip, oneplus, chunk)
        ctx.save_for_backward(*inputs, *out[10:])
        ctx.boundaries = boundaries  # released chunk by chunk during backward
        hidden, reads = out[0].contiguous(), out[1].contiguous()
        return (hidden, reads, *out[2:10])

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        inputs, per_step = saved[:NUM_INPUTS], list(saved[NUM_INPUTS:])
        clip, oneplus, chunk = ctx.options
        reference = per_step[0]
        shapes = [(*inputs[0].shape[:2], inputs[4].shape[1]), (*inputs[0].shape[:2], *inputs[6].shape[1:]),
                  inputs[4].shape, inputs[5].shape, *(t.shape for t in inputs[7:13])]
        grads = [torch.zeros(shape, dtype=reference.dtype, device=reference.device) if g is None else g.contiguous()
                 for g, shape in zip(grads, shapes)]
        if torch.is_grad_enabled():  # create_graph=True: a graph for the gradient itself
            return (*_recomputed_gradients(inputs, grads, clip, oneplus), None, None, None, None)
        boundaries, ctx.boundaries = ctx.boundaries, None
        if boundaries is None:  # a second backward through a retained graph
            _, boundaries = _kernel_forward(inputs, clip, oneplus, chunk, store=True)
        ext = load_extension()
        result = ext.backward(per_step, boundaries, inputs[1].contiguous(), inputs[2].contiguous(),
                              grads[0], grads[1], grads[2:], clip, oneplus, chunk)
        del per_step, boundaries
        return (*result, None, None, None, None)


def _kernel_forward(inputs, clip: float, oneplus: bool, chunk: int, store: bool):
    ext = load_extension()
    projected, w_cat, w_xi, b_xi, h0, c0, r0 = (t.contiguous() for t in inputs[:7])
    memory_state, keep = inputs[7:13], inputs[13]
    return ext.forward(projected, w_cat, w_xi, b_xi, h0, c0, r0, *memory_state, keep, clip,
                       oneplus, chunk, store)


def plain_recurrence(projected, w_cat, w_xi, b_xi, h0, c0, r0, memory, usage, link, precedence,
                     read_weights, write_weights, keep, clip: float, oneplus: bool):
    """The fused Function's recurrence written with PyTorch ops (same inputs and
    outputs), differentiable to any order."""
    steps = projected.shape[1]
    R, W, K = r0.shape[1], r0.shape[2], link.shape[1]
    state = MemoryState(memory, usage, link, precedence, read_weights, write_weights)
    hidden, cell, reads = h0, c0, r0
    hiddens, all_reads = [], []
    strength = "oneplus" if oneplus else "softplus"
    for t in range(steps):
        gates = projected[:, t] + torch.cat([reads.flatten(1), hidden], -1) @ w_cat.T
        new_hidden, new_cell = lstm_cell(gates, cell, clip)
        interface = parse_interface(torch.nn.functional.linear(new_hidden, w_xi, b_xi), R, W, K, strength)
        new_state, new_reads = memory_step(state, interface)
        if keep.numel():
            on = keep[:, t]

            def carry(new: Tensor, old: Tensor) -> Tensor:
                return torch.where(on.view(-1, *([1] * (new.dim() - 1))), new, old)

            new_hidden, new_cell, new_reads = carry(new_hidden, hidden), carry(new_cell, cell), \
                carry(new_reads, reads)
            new_state = MemoryState(*(carry(n, o) for n, o in zip(new_state, state)))
        hidden, cell, reads, state = new_hidden, new_cell, new_reads, new_state
        hiddens.append(hidden)
        all_reads.append(reads)
    return (torch.stack(hiddens, 1), torch.stack(all_reads, 1), hidden, cell, *state)


def _recomputed_gradients(inputs, grads, clip: float, oneplus: bool):
    """Input gradients with a graph of their own (``create_graph=True``)."""
    differentiable = [t.requires_grad for t in inputs[:13]]
    with torch.enable_grad():
        outputs = plain_recurrence(*inputs, clip, oneplus)
        wanted = [t for t, d in zip(inputs[:13], differentiable) if d]
        found = iter(torch.autograd.grad(outputs, wanted, grads, create_graph=True, allow_unused=True))
    return [next(found) if d else None for d in differentiable]


def fused_forward(dnc, projected: Tensor, state, keep: Tensor | None, chunk: int):
    """Run the fused recurrence for ``dnc`` from ``state``.

    With gradients wanted it goes through `FusedRecurrence`; under no_grad (or
    when nothing requires a gradient) straight to the kernel without storing
    anything for a backward.

    Returns (hidden [B, T, H], reads [B, T, R, W], new `DNCState`).
    """
    rnn = dnc.controller.rnn
    config = dnc.config
    input_size = config.input_size
    w_cat = torch.cat([rnn.weight_ih_l0[:, input_size:], rnn.weight_hh_l0], dim=1)
    projected = projected + rnn.bias_hh_l0
    controller, access, reads = state
    steps = projected.shape[1]
    if chunk <= 0:  # auto
        chunk = auto_chunk(steps, projected.shape[0], config.num_writes, access.memory.shape[1],
                           projected.element_size())
    empty = torch.empty(0, dtype=torch.bool, device=projected.device)
    inputs = (projected, w_cat, dnc.access.interface.weight, dnc.access.interface.bias,
              controller.hidden[:, 0], controller.cell[:, 0], reads, *access,
              empty if keep is None else keep)
    options = (float(config.clip), config.strength_activation == "oneplus", int(chunk))
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        outputs = FusedRecurrence.apply(*inputs, *options)
    else:
        outputs, _ = _kernel_forward(inputs, *options, store=False)
    hidden, read_sequence, h, c, *memory = outputs
    new_state = type(state)(LSTMState(h.unsqueeze(1), c.unsqueeze(1)), MemoryState(*memory),
                            read_sequence[:, -1])
    return hidden, read_sequence, new_state
