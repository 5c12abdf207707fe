"""The fused recurrence: a C++ forward over the whole sequence and its
hand-derived backward, for a DNC with a one-layer LSTM controller.

The extension is compiled on first use with `torch.utils.cpp_extension`
(about a minute; cached afterwards in ``~/.cache/torch_extensions`` or
``$TORCH_EXTENSIONS_DIR``). Where that fails (no compiler, no ninja) the DNC
falls back to the plain PyTorch path with one warning. Results equal the plain
path up to floating-point rounding; tests/test_speed.py holds them to 1e-10 in
float64 and 1e-6 in float32.

Memory: the memory matrix and the link matrices are stored only at the start
of every chunk of ``chunk`` steps and recomputed in the backward pass, so the
backward keeps about (T / chunk + chunk) of them rather than T.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

_LOCK = threading.Lock()
_EXTENSION = None
_FAILED: str | None = None
BUILD_SECONDS: float | None = None  # time the last build (or cache load) took

# Below this many bytes for all T link matrices, store them all (no recompute).
STORE_ALL_BYTES = 64 * 2**20


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

            source = Path(__file__).parent / "csrc" / "fused_dnc.cpp"
            # -fopenmp: ATen's parallel_for is header-inline and runs serially without it.
            flags = ["-O3", "-fopenmp", "-fno-math-errno"]
            if os.environ.get("TORCHDNC_NATIVE", "1") != "0":
                flags.append("-march=native")
            # The name carries a hash of the source and flags, so that different
            # versions (e.g. two checkouts) never rebuild over each other's cache.
            digest = hashlib.sha1(source.read_bytes() + " ".join(flags).encode()).hexdigest()[:10]
            _EXTENSION = load(name=f"torchdnc_fused_{digest}", sources=[str(source)],
                              extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=verbose)
        except Exception as error:  # no compiler, no ninja, ...
            _FAILED = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error) else ''}"
            warnings.warn(f"torchdnc: the fused C++ DNC could not be built ({_FAILED}); "
                          "using the plain PyTorch implementation", RuntimeWarning, stacklevel=3)
        BUILD_SECONDS = time.perf_counter() - start
    return _EXTENSION


def available() -> bool:
    return load_extension() is not None


def auto_chunk(steps: int, batch: int, num_writes: int, memory_size: int, element_size: int) -> int:
    """Recompute chunk: all steps in one chunk when the links are small, else 0,
    the kernel's triangular schedule (about sqrt(2 T) copies of M and L alive)."""
    total = steps * batch * num_writes * memory_size * memory_size * element_size
    if total <= STORE_ALL_BYTES:
        return max(steps, 1)
    return 0


class FusedRecurrence(torch.autograd.Function):
    """Whole-sequence DNC recurrence (controller + memory), see module docstring."""

    @staticmethod
    def forward(ctx, projected, w_cat, w_xi, b_xi, h0, c0, r0, memory, usage, link, precedence,
                read_weights, write_weights, keep, clip, oneplus, chunk):
        ext = load_extension()
        out, boundaries = ext.forward(
            projected.contiguous(), w_cat.contiguous(), w_xi.contiguous(), b_xi.contiguous(),
            h0.contiguous(), c0.contiguous(), r0.contiguous(), memory, usage, link, precedence,
            read_weights, write_weights, keep, clip, oneplus, chunk)
        results = out[:10]
        ctx.final_shapes = [t.shape for t in results[2:]]
        ctx.saved_for_backward = out[10:]
        ctx.boundaries = boundaries  # released chunk by chunk during backward
        ctx.save_for_backward(w_cat, w_xi)
        ctx.options = (clip, oneplus, chunk)
        hidden, reads = results[0].contiguous(), results[1].contiguous()
        return (hidden, reads, *results[2:])

    @staticmethod
    def backward(ctx, grad_hidden, grad_reads, *grad_final):
        ext = load_extension()
        w_cat, w_xi = ctx.saved_tensors
        saved, boundaries = ctx.saved_for_backward, ctx.boundaries
        ctx.saved_for_backward = ctx.boundaries = None
        # Final state h_T, c_T, M, u, L, p, w^r, w^w: outputs 2-9; zeros where unused.
        finals = [torch.zeros(shape, dtype=grad_hidden.dtype, device=grad_hidden.device)
                  if grad is None else grad.contiguous()
                  for grad, shape in zip(grad_final, ctx.final_shapes)]
        clip, oneplus, chunk = ctx.options
        grads = ext.backward(saved, boundaries, w_cat, w_xi, grad_hidden.contiguous(),
                             grad_reads.contiguous(), finals, clip, oneplus, chunk)
        del saved, boundaries
        return (*grads, None, None, None, None)


def fused_forward(dnc, projected: Tensor, state, keep: Tensor | None, chunk: int):
    """Run `FusedRecurrence` for ``dnc`` from ``state``.

    Returns (hidden [B, T, H], reads [B, T, R, W], new `DNCState`).
    """
    from torchdnc.controller import LSTMState
    from torchdnc.dnc import DNCState
    from torchdnc.memory import MemoryState

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
    (hidden, read_sequence, h, c, memory, usage, link, precedence, read_weights,
     write_weights) = FusedRecurrence.apply(
        projected, w_cat, dnc.access.interface.weight, dnc.access.interface.bias,
        controller.hidden[:, 0], controller.cell[:, 0], reads, *access,
        empty if keep is None else keep, float(config.clip), config.strength_activation == "oneplus",
        int(chunk))
    new_state = DNCState(
        LSTMState(h.unsqueeze(1), c.unsqueeze(1)),
        MemoryState(memory, usage, link, precedence, read_weights, write_weights),
        read_sequence[:, -1])
    return hidden, read_sequence, new_state
