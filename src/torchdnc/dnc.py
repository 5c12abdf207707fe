"""The Differentiable Neural Computer as an `nn.Module` that feels like `nn.LSTM`.

    dnc = DNC(input_size=8, output_size=8)
    y, state = dnc(x)                 # x [B, T, 8] -> y [B, T, 8]
    y2, state = dnc(x2, state)        # carry the state on
    state = state.detach()            # truncated backprop

One time step (DESIGN.md section 3, controller paragraph):

    h_t, s_t = controller([x_t; r_{t-1}], s_{t-1});  h_t, s_t clipped to +-clip
    xi_t = W_xi h_t + b_xi;  r_t, memory_t = memory_step(memory_{t-1}, xi_t)
    y_t = clip(W_y [h_t; r_t] + b_y)

Parameters: ``controller.rnn`` (the `nn.LSTM` / `nn.GRU`; or
``controller.layers`` for the feed-forward controller), ``access.interface``
(`nn.Linear`, h_t -> xi_t) and ``output`` (`nn.Linear` on [h_t; r_t], r_t
flattened head-major).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import weakref
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from torchdnc import fused
from torchdnc.controller import CONTROLLERS, make_controller
from torchdnc.memory import STRENGTH_ACTIVATIONS, MemoryAccess, MemoryState, traced_memory_step


log = logging.getLogger(__name__)

IMPLEMENTATIONS = ("auto", "fused", "plain", "compile")


def dataclass_from_dict(cls, values: dict[str, Any], what: str):
    """``cls(**values)``, refusing unknown keys with a message listing the valid ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {unknown}; valid fields: {names}")
    return cls(**values)


@dataclass
class DNCConfig:
    """Everything that defines a DNC's shape; saved with every checkpoint.

    Defaults follow DeepMind's reference training script.
    """

    input_size: int = 8
    output_size: int = 8
    controller: str = "lstm"  # one of "lstm", "gru", "feedforward"
    hidden_size: int = 64
    num_layers: int = 1
    memory_size: int = 16  # N
    word_size: int = 16  # W
    num_reads: int = 4  # R
    num_writes: int = 1  # K
    clip: float = 20.0  # on h_t, the carried controller state and y_t; 0 disables
    strength_activation: str = "oneplus"  # "oneplus" (paper) or "softplus" (DeepMind)
    batch_first: bool = True
    # How to run it; every choice gives the same results up to rounding:
    # "auto" (fused C++ recurrence where it applies, else plain), "fused",
    # "plain" (PyTorch ops step by step) or "compile" (plain step under torch.compile).
    implementation: str = "auto"
    backward_chunk: int = 0  # fused: recompute memory and links every this many steps; 0 = auto
    # Refuse NaN / inf in x (outside padding) with a ValueError, before it poisons
    # the carried state; one reduction and one host sync per call. False lets it through.
    check_finite: bool = True

    def __post_init__(self) -> None:
        for name in ("input_size", "output_size", "hidden_size", "num_layers",
                     "memory_size", "word_size", "num_reads", "num_writes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.controller not in CONTROLLERS:
            raise ValueError(f"controller: expected one of {CONTROLLERS}, got {self.controller!r}")
        if self.strength_activation not in STRENGTH_ACTIVATIONS:
            raise ValueError(
                f"strength_activation: expected one of {STRENGTH_ACTIVATIONS}, "
                f"got {self.strength_activation!r}"
            )
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)) or self.clip < 0:
            raise ValueError(f"clip: expected a number >= 0 (0 disables), got {self.clip!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation: expected one of {IMPLEMENTATIONS}, "
                             f"got {self.implementation!r}")
        if self.implementation == "fused" and (self.controller != "lstm" or self.num_layers != 1):
            raise ValueError("implementation: 'fused' needs controller='lstm' with num_layers=1, "
                             f"got controller={self.controller!r}, num_layers={self.num_layers}")
        if self.implementation == "fused" and self.num_reads > fused.MAX_READS:
            raise ValueError(f"implementation: 'fused' handles num_reads <= {fused.MAX_READS}, "
                             f"got num_reads={self.num_reads} (use 'auto' or 'plain')")
        if isinstance(self.backward_chunk, bool) or not isinstance(self.backward_chunk, int) \
                or self.backward_chunk < 0:
            raise ValueError(f"backward_chunk: expected an integer >= 0, got {self.backward_chunk!r}")
        for name in ("batch_first", "check_finite"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DNCConfig":
        """Inverse of `to_dict`; unknown keys are an error that lists the valid ones."""
        return dataclass_from_dict(cls, values, "DNCConfig")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "DNCConfig":
        return cls.from_dict(json.loads(text))


class DNCState(NamedTuple):
    """The whole recurrent state of a DNC.

    Attributes:
        controller: the controller's state (`LSTMState`, `GRUState`, ...).
        access: the `MemoryState`.
        read_vectors: r_{t-1}, ``[B, R, W]``, fed to the controller next step.
    """

    controller: tuple
    access: MemoryState
    read_vectors: Tensor

    def detach(self) -> "DNCState":
        """The same state cut from the autograd graph (truncated backprop)."""
        return map_state(lambda t: t.detach(), self)


class DNCTrace(NamedTuple):
    """Memory internals per time step, each ``[B, T, ...]`` (``return_trace=True``)."""

    read_weights: Tensor  # w^r, [B, T, R, N]
    write_weights: Tensor  # w^w, [B, T, K, N]
    usage: Tensor  # u, [B, T, N]
    allocation: Tensor  # a, [B, T, K, N]
    free_gates: Tensor  # f, [B, T, R]
    allocation_gates: Tensor  # g^a, [B, T, K]
    write_gates: Tensor  # g^w, [B, T, K]
    read_modes: Tensor  # pi, [B, T, R, 1 + 2K]: backward_1..K, content, forward_1..K
    write_content_weights: Tensor  # c^w, [B, T, K, N]
    read_content_weights: Tensor  # c^r, [B, T, R, N]


def map_state(fn, *states):
    """Apply ``fn`` leaf-wise over matching (nested NamedTuple) states."""
    first = states[0]
    if isinstance(first, Tensor):
        return fn(*states)
    return type(first)(*(map_state(fn, *parts) for parts in zip(*states)))


class RecurrentMemoryModel(nn.Module):
    """What the dense and the sparse DNC share: ``nn.LSTM``-style layout
    handling, input and state checks, and `step`.

    Subclasses set ``config`` (with ``input_size`` and ``batch_first``), an
    ``output`` layer (its weight fixes the default device and dtype), the
    ``state_type`` of their state and ``initial_state``.
    """

    state_type: type = tuple

    def _build(self, config_type: type, config, kwargs: dict[str, Any], memory_layers) -> None:
        """Set ``config`` (built from ``kwargs``, or ``config`` with ``kwargs`` replaced),
        then the controller on ``[x_t; r_{t-1}]``, ``memory_layers(config)`` and the
        output layer on ``[h_t; r_t]``, in that order (the order of initialisation)."""
        if config is None:
            config = config_type(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        read_size = config.num_reads * config.word_size
        self.controller = make_controller(
            config.controller, config.input_size, read_size, config.hidden_size, config.num_layers
        )
        memory_layers(config, self.controller.output_size)
        self.output = nn.Linear(self.controller.output_size + read_size, config.output_size)

    @property
    def batch_first(self) -> bool:
        return self.config.batch_first

    def _device_and_dtype(self, batch_size: int, device, dtype) -> tuple[Any, Any]:
        """Check an initial state's batch size; the module's device and dtype unless given."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        weight = self.output.weight
        return (weight.device if device is None else device,
                weight.dtype if dtype is None else dtype)

    def _check_inputs(self, x: Tensor, state, mask) -> Tensor | None:
        """Refuse bad input with a message naming the argument, the expected and
        the actual; returns the mask as booleans (None without one)."""
        c = self.config
        layout = "[batch, time, input_size]" if c.batch_first else "[time, batch, input_size]"
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != c.input_size:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x: expected a 3-D tensor {layout} with input_size={c.input_size} "
                f"(batch_first={c.batch_first}), got {shape}"
            )
        if x.numel() == 0:
            raise ValueError(f"x: expected at least one sequence and one time step {layout}, "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
        weight = self.output.weight
        if x.dtype != weight.dtype or x.device != weight.device:
            raise ValueError(
                f"x: expected dtype {weight.dtype} on {weight.device} (the model's parameters), "
                f"got dtype {x.dtype} on {x.device}; convert one of them, e.g. model.to(x.dtype)"
            )
        keep = None
        if mask is not None:
            keep = _check_mask(mask, x, c.batch_first)
        if state is not None:
            batch = x.shape[0] if c.batch_first else x.shape[1]
            self._check_state(state, batch, x)
        if getattr(c, "check_finite", False):
            real = x if keep is None else x[keep]
            if not bool(torch.isfinite(real).all()):
                where = (~torch.isfinite(x)).any(-1)
                if keep is not None:
                    where &= keep
                first = [int(i) for i in where.nonzero()[0]]
                axes = ("batch element", "step") if c.batch_first else ("step", "batch element")
                raise ValueError(
                    f"x: NaN or inf at {axes[0]} {first[0]}, {axes[1]} {first[1]} (not padding); it "
                    "would poison the carried state. Clean the input, mask the step out, or build "
                    "the model with check_finite=False to let it through")
        return keep

    def _check_state(self, state, batch_size: int, x: Tensor | None = None) -> None:
        if not isinstance(state, self.state_type):
            raise ValueError(f"state: expected a {self.state_type.__name__}, "
                             f"got {type(state).__name__}")
        expected = self.initial_state(batch_size, device="meta")
        paths = _state_paths(expected)
        try:
            actual = [t for _, t in _state_paths(state)]
        except TypeError as error:
            raise ValueError(f"state: does not match this model's structure ({error})") from None
        if len(actual) != len(paths):
            raise ValueError(
                f"state: expected {len(paths)} tensors for controller={self.config.controller!r}, "
                f"got {len(actual)}"
            )
        for (name, want), have in zip(paths, actual):
            if not isinstance(have, Tensor) or tuple(have.shape) != tuple(want.shape):
                shape = tuple(have.shape) if isinstance(have, Tensor) else type(have).__name__
                raise ValueError(
                    f"state.{name}: expected shape {tuple(want.shape)} for batch size "
                    f"{batch_size} and this model's configuration, got {shape}"
                )
            if x is not None and want.is_floating_point() and (
                    have.dtype != x.dtype or have.device != x.device):
                raise ValueError(f"state.{name}: expected dtype {x.dtype} on {x.device} (as x), "
                                 f"got dtype {have.dtype} on {have.device}")
            if x is not None and not want.is_floating_point() and (
                    have.dtype != want.dtype or have.device != x.device):
                raise ValueError(f"state.{name}: expected dtype {want.dtype} on {x.device}, "
                                 f"got dtype {have.dtype} on {have.device}")

    def step(self, x_t: Tensor, state=None):
        """One time step, ``x_t [B, input_size] -> y_t [B, output_size]``.

        Gives exactly what `forward` gives at that step (for RL and decoding).
        """
        if not isinstance(x_t, Tensor) or x_t.dim() != 2:
            shape = tuple(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(
                f"x_t: expected a 2-D tensor [batch, input_size={self.config.input_size}], got {shape}"
            )
        time_axis = 1 if self.config.batch_first else 0
        y, state = self(x_t.unsqueeze(time_axis), state)
        return y.squeeze(time_axis), state


class DNC(RecurrentMemoryModel):
    """Differentiable Neural Computer (Graves et al. 2016), multi-write-head.

    Build it from a `DNCConfig` or from the config's fields as keywords:
    ``DNC(input_size=8, output_size=8, memory_size=32)``.
    """

    state_type = DNCState

    def __init__(self, config: DNCConfig | None = None, **kwargs: Any) -> None:
        super().__init__()

        def memory_layers(c: DNCConfig, controller_output: int) -> None:
            self.access = MemoryAccess(controller_output, c.memory_size, c.word_size, c.num_reads,
                                       c.num_writes, c.strength_activation)

        self._build(DNCConfig, config, kwargs, memory_layers)

    def extra_repr(self) -> str:
        c = self.config
        return (f"N={c.memory_size}, W={c.word_size}, R={c.num_reads}, K={c.num_writes}, "
                f"clip={c.clip}, batch_first={c.batch_first}")

    def with_memory_size(self, memory_size: int) -> "DNC":
        """The same DNC (shared parameters) with N = ``memory_size`` slots.

        The weights do not depend on N, so a model trained with a small memory
        can run with a larger one at test time.
        """
        resized = copy.copy(self)
        resized.config = dataclasses.replace(self.config, memory_size=memory_size)
        return resized

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> DNCState:
        """All-zero state on the module's device and dtype unless given."""
        device, dtype = self._device_and_dtype(batch_size, device, dtype)
        c = self.config
        return DNCState(
            controller=self.controller.initial_state(batch_size, device, dtype),
            access=MemoryState.zeros(batch_size, c.memory_size, c.word_size, c.num_reads,
                                     c.num_writes, device=device, dtype=dtype),
            read_vectors=torch.zeros(batch_size, c.num_reads, c.word_size, device=device, dtype=dtype),
        )

    # -- running ----------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        state: DNCState | None = None,
        mask: Tensor | None = None,
        return_trace: bool = False,
    ):
        """Run the DNC over a sequence.

        Args:
            x: inputs, ``[B, T, input_size]`` (``[T, B, input_size]`` if not
                ``batch_first``).
            state: the `DNCState` to start from; zeros when ``None``.
            mask: optional padding mask with x's two leading axes, true (or 1)
                on real steps. On a padded step the whole state is carried
                through unchanged and the output is zero.
            return_trace: also return a `DNCTrace` of memory internals.

        Returns:
            ``(y, state)`` or ``(y, state, trace)``; y has x's layout with
            ``output_size`` features.
        """
        keep = self._check_inputs(x, state, mask)
        if not self.config.batch_first:
            x = x.transpose(0, 1)
            keep = None if keep is None else keep.transpose(0, 1)
        batch, steps = x.shape[:2]
        if state is None:
            state = self.initial_state(batch, device=x.device, dtype=x.dtype)
        if keep is not None:  # padding may hold anything (NaN too): it must not reach a gradient
            x = torch.where(keep.unsqueeze(-1), x, 0.0)

        # Without gradients nothing of a step is needed once its output exists: run
        # in chunks so that memory holds the outputs and one chunk, whatever T is.
        chunk = steps if return_trace or _wants_gradient(self, x, state) else INFERENCE_CHUNK
        ys, traces = [], []
        for start in range(0, steps, chunk):
            part = slice(start, start + chunk)
            y, state, trace = self._sequence(x[:, part], state, None if keep is None else keep[:, part],
                                             return_trace)
            ys.append(y)
            traces.extend(trace)
        y = ys[0] if len(ys) == 1 else torch.cat(ys, 1)
        if not self.config.batch_first:
            y = y.transpose(0, 1)
        if return_trace:
            return y, state, _stack_trace(traces)
        return y, state

    def _sequence(self, x: Tensor, state: DNCState, keep: Tensor | None, return_trace: bool):
        """(y, new state, per-step traces) for batch-first ``x`` from ``state``."""
        projected = self.controller.project_inputs(x)
        if self._fused_applies(x, return_trace):
            hiddens, read_sequence, new_state = fused.fused_forward(
                self, projected, state, keep, self.config.backward_chunk)
            traces = []
        else:
            hiddens, read_sequence, new_state, traces = self._run_steps(
                projected, state, keep, return_trace)

        # The output layer is time-parallel: one product for the whole sequence.
        y = self.output(torch.cat([hiddens, read_sequence.flatten(2)], dim=-1))
        clip = self.config.clip
        if clip:
            y = y.clamp(-clip, clip)
        if keep is not None:
            y = torch.where(keep.unsqueeze(-1), y, 0.0)
        return y, new_state, traces

    def _fused_applies(self, x: Tensor, return_trace: bool) -> bool:
        c = self.config
        if c.implementation not in ("auto", "fused") or return_trace:
            return False
        if c.controller != "lstm" or c.num_layers != 1 or x.device.type != "cpu" \
                or c.num_reads > fused.MAX_READS:
            return False
        if x.dtype not in (torch.float32, torch.float64):
            return False
        return fused.available()

    def _run_steps(self, projected: Tensor, state: DNCState, keep: Tensor | None,
                   return_trace: bool):
        """The plain path: one memory step at a time with PyTorch ops."""
        compiled = _compiled_step(self) if self.config.implementation == "compile" else None
        controller_state, memory_state, reads = state
        hiddens, all_reads, traces = [], [], []
        for t in range(projected.shape[1]):
            step_keep = None if keep is None else keep[:, t]
            args = (projected[:, t], step_keep, controller_state, memory_state, reads)
            if compiled is not None:
                try:
                    result = compiled(self, *args)
                except Exception as error:  # a backend that cannot compile this step
                    _compile_failed(self, error)
                    compiled, result = None, self._step(*args)
            else:
                result = self._step(*args)
            hidden, controller_state, memory_state, reads, step_trace = result
            hiddens.append(hidden)
            all_reads.append(reads)
            if return_trace:
                traces.append(step_trace)
        new_state = DNCState(controller_state, memory_state, reads)
        return torch.stack(hiddens, 1), torch.stack(all_reads, 1), new_state, traces

    def _step(self, projected_t: Tensor, keep_t: Tensor | None, controller_state,
              memory_state: MemoryState, reads: Tensor):
        """One time step: controller, clipping, interface, memory (DESIGN.md section 3)."""
        hidden, new_controller = self.controller.step(projected_t, reads.flatten(1), controller_state,
                                                      self.config.clip)
        interface = self.access.parse(hidden)
        new_memory, new_reads, step_trace = traced_memory_step(memory_state, interface)
        if keep_t is not None:
            def carry(new: Tensor, old: Tensor) -> Tensor:
                return torch.where(keep_t.view(-1, *([1] * (new.dim() - 1))), new, old)

            new_controller = map_state(carry, new_controller, controller_state)
            new_memory = map_state(carry, new_memory, memory_state)
            new_reads = carry(new_reads, reads)
        return hidden, new_controller, new_memory, new_reads, (new_memory, interface, step_trace)


# One compiled step per model, dropped with the model (the compiled function
# takes the model as an argument, so it holds no reference to it).
_COMPILED: "weakref.WeakKeyDictionary[DNC, Any]" = weakref.WeakKeyDictionary()


def _compiled_step(dnc: "DNC"):
    """``dnc._step`` under `torch.compile` (None once compilation has failed for it)."""
    if dnc not in _COMPILED:
        def step(model, *args):
            return model._step(*args)

        try:
            _COMPILED[dnc] = torch.compile(step, dynamic=False)
        except Exception as error:  # torch.compile unavailable on this platform
            _compile_failed(dnc, error)
    return _COMPILED[dnc]


def _compile_failed(dnc: "DNC", error: Exception) -> None:
    log.warning("torchdnc: torch.compile failed (%s: %s); this model uses the plain step",
                type(error).__name__, str(error).strip().splitlines()[0] if str(error).strip() else "")
    _COMPILED[dnc] = None


# Steps per chunk of a forward pass that needs no gradient.
INFERENCE_CHUNK = 256


def _wants_gradient(model: nn.Module, x: Tensor, state) -> bool:
    """Whether autograd will record this forward pass."""
    if not torch.is_grad_enabled():
        return False
    if x.requires_grad or any(p.requires_grad for p in model.parameters()):
        return True
    return state is not None and any(t.requires_grad for _, t in _state_paths(state))


def _check_mask(mask, x: Tensor, batch_first: bool) -> Tensor:
    """A padding mask as booleans: bool, or numbers that are exactly 0 or 1."""
    what = "[batch, time]" if batch_first else "[time, batch]"
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(x.shape[:2]):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected shape {what} = {tuple(x.shape[:2])}, got {shape}")
    if mask.device != x.device:
        raise ValueError(f"mask: expected a tensor on {x.device} (as x), got one on {mask.device}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist() if not mask.is_complex() else []
        raise ValueError(f"mask: expected booleans, or numbers that are exactly 0 or 1 "
                         f"(1 = a real step), got dtype {mask.dtype} with values such as {bad}")
    return mask != 0


def _state_paths(state, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten a nested NamedTuple state into (dotted name, leaf) pairs."""
    if isinstance(state, Tensor) or not hasattr(state, "_fields"):
        if not isinstance(state, Tensor):
            raise TypeError(f"{prefix or 'state'} is a {type(state).__name__}, not a tensor")
        return [(prefix, state)]
    paths = []
    for name, part in zip(state._fields, state):
        paths.extend(_state_paths(part, f"{prefix}.{name}" if prefix else name))
    return paths


def _stack_trace(traces: list) -> DNCTrace:
    def stack(get) -> Tensor:
        return torch.stack([get(*step) for step in traces], dim=1)

    return DNCTrace(
        read_weights=stack(lambda m, i, s: m.read_weights),
        write_weights=stack(lambda m, i, s: m.write_weights),
        usage=stack(lambda m, i, s: m.usage),
        allocation=stack(lambda m, i, s: s.allocation),
        free_gates=stack(lambda m, i, s: i.free_gates),
        allocation_gates=stack(lambda m, i, s: i.allocation_gates),
        write_gates=stack(lambda m, i, s: i.write_gates),
        read_modes=stack(lambda m, i, s: i.read_modes),
        write_content_weights=stack(lambda m, i, s: s.write_content_weights),
        read_content_weights=stack(lambda m, i, s: s.read_content_weights),
    )
