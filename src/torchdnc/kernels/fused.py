"""The fused recurrence: a C++ forward over the whole sequence and its
hand-derived backward, for a DNC with a one-layer LSTM controller.

This module knows tensors, not models: `run` takes the recurrence's inputs
(projected inputs, weights, the initial state) and returns its outputs;
`torchdnc.dnc` supplies them and, for gradients of gradients, the same
recurrence written with PyTorch ops (``reference``).

The extension is compiled on first use with `torch.utils.cpp_extension`
(about 30 s, said once through `logging`; ``torchdnc build`` does it ahead of
time) and cached in ``~/.cache/torch_extensions`` or
``$TORCH_EXTENSIONS_DIR`` under a key made of the source, the compiler flags
and this CPU's instruction set (objects built with ``-march=native`` on one
CPU are never loaded on another). Where the build fails (no compiler, no
ninja) the DNC falls back to the plain PyTorch path with one warning.

Results equal the plain path up to floating-point rounding; tests/test_speed.py
holds them to 1e-10 in float64 and 1e-6 in float32 (with layer norm, which
magnifies float32 rounding, to as close to float64 as the plain path is).
Autograd's contract is kept: the per-step tensors go through
``ctx.save_for_backward``; a second ``backward`` through a retained graph
rebuilds what the first one released;
``create_graph=True`` (higher-order gradients) differentiates the caller's
plain PyTorch recomputation of the same recurrence. Under ``torch.no_grad()`` /
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
from typing import NamedTuple

import torch
from torch import Tensor

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


_THREADS = 0


def set_threads(count: int) -> None:
    """Threads of the fused kernel (0, the default: ``torch.get_num_threads()``).

    Each thread carries its own slice of the batch through the whole sequence,
    so the kernel meets no barrier per time step. The training loop gives the
    kernel every thread it was given and keeps torch's small ops around it on
    one (`torchdnc.training`), so that a busy neighbour on the cores slows a run
    down in proportion instead of stalling it at every barrier.
    """
    global _THREADS
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"threads: expected an integer >= 0, got {count!r}")
    _THREADS = count


def take_threads() -> None:
    """Give the kernel torch's intra-op threads and leave torch's own ops one
    (what the training loop does for a model on the kernel; see `set_threads`)."""
    set_threads(torch.get_num_threads())
    torch.set_num_threads(1)


def threads() -> int:
    """The fused kernel's thread count now (see `set_threads`)."""
    return _THREADS or torch.get_num_threads()


def available() -> bool:
    return load_extension() is not None


def failure() -> str | None:
    """Why the extension could not be built (None if it was, or was not tried)."""
    return _FAILED


def auto_chunk(steps: int, batch: int, num_writes: int, link_size: int, element_size: int,
               memory_words: int = 0) -> int:
    """Recompute chunk: all steps in one chunk when the T copies of the links
    (``link_size`` slots a side, 0 without temporal links) and of the memory
    (``memory_words`` = N W numbers) are small, else 0, the kernel's triangular
    schedule (about sqrt(2 T) copies of M and L alive)."""
    total = steps * batch * (num_writes * link_size * link_size + memory_words) * element_size
    if total <= STORE_ALL_BYTES:
        return max(steps, 1)
    return 0


# The Function's tensor inputs, in order: projected [B, T, 4H], w_cat [4H, RW + H],
# w_xi [I, H], b_xi [I], h0, c0 [B, H], r0 [B, R, W], the six MemoryState tensors
# (link [B, K, 0, 0] and precedence [B, K, 0] without temporal links: the rsDNC's
# content-based unit), keep ([B, T] bool or empty), the layer norm's gain and
# bias over xi ([I] each, or both empty: no layer norm), and a per-step term
# added to the raw xi ([B, T, I] or empty: the bi-rsDNC's backward controller
# through its share of the interface weights).
NUM_INPUTS = 17
DIFFERENTIABLE = (*range(13), 14, 15, 16)  # every input but keep


class KernelOptions(NamedTuple):
    """What the kernel runs besides the paper's DNC, in the order its entry points
    take them: the free / allocation gates held at a value (-1: learned; the
    running-out-of-memory ablations), de-allocation ("D"), masked content
    addressing ("M") with its floor, sharpness ("S")."""

    fixed_free: float = -1.0
    fixed_allocation: float = -1.0
    deallocation: bool = False
    masking: bool = False
    mask_min: float = 0.0
    sharpness: bool = False


NO_OPTIONS = KernelOptions()  # the paper's DNC


class FusedRecurrence(torch.autograd.Function):
    """Whole-sequence DNC recurrence (controller + memory), see module docstring."""

    @staticmethod
    def forward(ctx, *args):
        inputs, (clip, oneplus, chunk, reference, options) = args[:NUM_INPUTS], args[NUM_INPUTS:]
        out, boundaries = _kernel_forward(inputs, clip, oneplus, chunk, store=True, options=options)
        ctx.options = (clip, oneplus, chunk, options)
        ctx.reference = reference
        ctx.save_for_backward(*inputs, *out[10:])
        ctx.boundaries = boundaries  # released chunk by chunk during backward
        hidden, reads = out[0].contiguous(), out[1].contiguous()
        return (hidden, reads, *out[2:10])

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        inputs, per_step = saved[:NUM_INPUTS], list(saved[NUM_INPUTS:])
        clip, oneplus, chunk, options = ctx.options
        reference = per_step[0]
        shapes = [(*inputs[0].shape[:2], inputs[4].shape[1]), (*inputs[0].shape[:2], *inputs[6].shape[1:]),
                  inputs[4].shape, inputs[5].shape, *(t.shape for t in inputs[7:13])]
        grads = [torch.zeros(shape, dtype=reference.dtype, device=reference.device) if g is None else g.contiguous()
                 for g, shape in zip(grads, shapes)]
        if torch.is_grad_enabled():  # create_graph=True: a graph for the gradient itself
            return (*_recomputed_gradients(ctx.reference, inputs, grads), None, None, None, None,
                    None)
        boundaries, ctx.boundaries = ctx.boundaries, None
        if boundaries is None:  # a second backward through a retained graph
            _, boundaries = _kernel_forward(inputs, clip, oneplus, chunk, store=True, options=options)
        ext = load_extension()
        result = ext.backward(per_step, boundaries, inputs[1].contiguous(), inputs[2].contiguous(),
                              inputs[14], grads[0], grads[1], grads[2:], clip, oneplus, chunk,
                              threads(), *options)
        del per_step, boundaries
        context_grad = result[15] if inputs[16].numel() else None
        return (*result[:13], None, result[13], result[14], context_grad, None, None, None, None,
                None)


def _kernel_forward(inputs, clip: float, oneplus: bool, chunk: int, store: bool,
                    options: KernelOptions = NO_OPTIONS):
    ext = load_extension()
    projected, w_cat, w_xi, b_xi, h0, c0, r0 = (t.contiguous() for t in inputs[:7])
    memory_state, keep, ln_w, ln_b, context = inputs[7:13], *inputs[13:17]
    return ext.forward(projected, w_cat, w_xi, b_xi, h0, c0, r0, *memory_state, keep, ln_w, ln_b,
                       context.contiguous(), clip, oneplus, chunk, store, threads(), *options)


def _recomputed_gradients(reference, inputs, grads):
    """Input gradients with a graph of their own (``create_graph=True``): the
    gradients of ``reference(*inputs)``, the same recurrence in PyTorch ops; one
    per input (None for keep and for inputs that want none)."""
    differentiable = [i in DIFFERENTIABLE and t.requires_grad for i, t in enumerate(inputs)]
    with torch.enable_grad():
        # (without temporal links the empty link and precedence pass through untouched)
        outputs, grads = zip(*[(out, g) for out, g in zip(reference(*inputs), grads)
                               if out.requires_grad])
        wanted = [t for t, d in zip(inputs, differentiable) if d]
        found = iter(torch.autograd.grad(outputs, wanted, grads, create_graph=True, allow_unused=True))
    return [next(found) if d else None for d in differentiable]


def run(inputs: tuple[Tensor, ...], clip: float, oneplus: bool, chunk: int, reference,
        options: KernelOptions = NO_OPTIONS):
    """The recurrence over the whole sequence.

    Args:
        inputs: the `NUM_INPUTS` tensors (see above); ``keep`` may be empty.
        clip: clipping of h, c (0: none). oneplus: strengths through oneplus
            (else softplus). chunk: recompute chunk (0: the triangular schedule).
        reference: ``reference(*inputs)`` gives the same outputs with PyTorch
            ops; used only for gradients of gradients.
        options: `KernelOptions` (held gates, the successors' switches).

    Returns:
        (hidden [B, T, H], reads [B, T, R, W], h_T, c_T, and the six final
        memory-state tensors). With gradients wanted it goes through
        `FusedRecurrence`; otherwise straight to the kernel, keeping nothing
        for a backward.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return FusedRecurrence.apply(*inputs, clip, oneplus, chunk, reference, options)
    outputs, _ = _kernel_forward(inputs, clip, oneplus, chunk, store=False, options=options)
    return outputs
