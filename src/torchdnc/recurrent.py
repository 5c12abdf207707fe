"""The recurrent memory model: one time loop for every memory (the dense DNC,
SAM and the SDNC).

One time step (DESIGN.md section 3, controller paragraph):

    h_t, s_t = controller([x_t; r_{t-1}], s_{t-1})   every layer's h, c clipped to +-clip
    r_t, m_t = memory(m_{t-1}, h_t)                   the part a model plugs in
    y_t = clip(W_y [h_t; r_t] + b_y)                  one product for the whole sequence

A model is a controller (`torchdnc.controller`), a memory unit and the output
layer. What differs between models is the memory unit, which a subclass
provides through three methods:

    session, m = self._memory_session(m)             once per call (sparse: tape, index)
    m, r_t, details = self._memory_step(session, m, h_t, keep_t)
    m = self._memory_finish(session, m)
    record = self._trace_record(m, details)           only when a trace is asked for

and optionally ``_whole_sequence`` (a fused kernel that runs all steps at once).
Everything else is here, once: input and state checks, batch-first and
time-major layouts, padding masks (on a padded step the whole state is carried
through unchanged and the output is zero), chunked inference when no gradient
is wanted (memory then does not grow with T beyond the outputs), `step`, the
per-step trace records stacked along time, and ``implementation="compile"``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import weakref
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchdnc import fields, tensorfile
from torchdnc.addressing import STRENGTH_ACTIVATIONS
from torchdnc.controller import CONTROLLERS, make_controller
from torchdnc.version import __version__

log = logging.getLogger(__name__)

# Steps per chunk of a forward pass that records no gradient.
INFERENCE_CHUNK = 256


def check_model_config(config) -> None:
    """The checks every model config shares (`DNCConfig`, `SparseDNCConfig`)."""
    for name in ("input_size", "output_size", "hidden_size", "num_layers", "memory_size",
                 "word_size", "num_reads"):
        fields.integer(name, getattr(config, name), 1)
    fields.choice("controller", config.controller, CONTROLLERS)
    fields.choice("strength_activation", config.strength_activation, STRENGTH_ACTIVATIONS)
    fields.number("clip", config.clip, 0, note="0 disables")
    fields.boolean("batch_first", config.batch_first)
    fields.boolean("check_finite", config.check_finite)


class RecurrentState(NamedTuple):
    """The whole recurrent state of a model.

    Attributes:
        controller: the controller's state (`LSTMState`, `GRUState`, ...).
        access: the memory unit's state (`MemoryState`, `SparseMemoryState`).
        read_vectors: r_{t-1}, ``[B, R, W]``, fed to the controller next step.
    """

    controller: tuple
    access: Any
    read_vectors: Tensor

    def detach(self):
        """The same state cut from the autograd graph (truncated backprop)."""
        return map_state(lambda t: t.detach(), self)

    def clone(self):
        """An independent copy that no later call changes."""
        return map_state(lambda t: t.detach().clone(), self)


PRETRAINED_CONFIG = "config.json"
PRETRAINED_WEIGHTS = "model.safetensors"


def read_pretrained(directory: Path | str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(``config.json`` as a dict, the weights) of a `save_pretrained` folder."""
    directory = Path(directory)
    config, weights = directory / PRETRAINED_CONFIG, directory / PRETRAINED_WEIGHTS
    for path in (config, weights):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {directory} is not a saved torchdnc "
                                    "model (save_pretrained writes config.json and model.safetensors)")
    try:
        description = json.loads(config.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config}: not valid JSON ({error})") from None
    if not isinstance(description, dict) or "model" not in description or "config" not in description:
        raise ValueError(f"{config}: not a torchdnc model description (needs 'model' and 'config')")
    weights_, _ = tensorfile.load(weights)
    return description, weights_


def load_pretrained(directory: Path | str, device: torch.device | str = "cpu"):
    """Whatever model `save_pretrained` wrote into ``directory`` (DNC, SparseDNC, ...)."""
    return RecurrentMemoryModel.from_pretrained(directory, device)


def map_state(fn, *states):
    """Apply ``fn`` leaf-wise over matching (nested NamedTuple) states."""
    first = states[0]
    if isinstance(first, Tensor):
        return fn(*states)
    parts = [map_state(fn, *leaves) for leaves in zip(*states)]
    return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)


def state_paths(state, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten a nested NamedTuple state into (dotted name, leaf) pairs."""
    if isinstance(state, Tensor) or not hasattr(state, "_fields"):
        if not isinstance(state, Tensor):
            raise TypeError(f"{prefix or 'state'} is a {type(state).__name__}, not a tensor")
        return [(prefix, state)]
    paths = []
    for name, part in zip(state._fields, state):
        paths.extend(state_paths(part, f"{prefix}.{name}" if prefix else name))
    return paths


def state_leaves(state) -> list:
    """The leaves of a nested NamedTuple state in `state_paths` order, without
    their names (cheap enough for a check on every `step` call)."""
    if not hasattr(state, "_fields"):
        return [state]
    leaves = []
    for part in state:
        if hasattr(part, "_fields"):
            leaves.extend(state_leaves(part))
        else:
            leaves.append(part)
    return leaves


def carry_where(keep: Tensor | None, new, old):
    """``new`` where ``keep [B]`` is true, ``old`` elsewhere, leaf-wise over a state."""
    if keep is None:
        return new

    def carry(n: Tensor, o: Tensor) -> Tensor:
        return torch.where(keep.view(-1, *([1] * (n.dim() - 1))), n, o)

    return map_state(carry, new, old)


class RecurrentMemoryModel(nn.Module):
    """What every memory model shares; see the module docstring.

    Subclasses call `_build` (config, controller, their memory layers, the
    output layer, in that order), set ``state_type`` and provide the memory
    unit: ``_initial_access``, ``_memory_session``, ``_memory_step``,
    ``_memory_finish``, ``_trace_record`` (and may provide ``_whole_sequence``).
    """

    state_type: type = RecurrentState
    # (symbol, config field) pairs that `extra_repr` shows after N, W and R.
    symbols: tuple[tuple[str, str], ...] = ()
    # Model classes by name, for `load_pretrained`.
    kinds: dict[str, type] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        RecurrentMemoryModel.kinds[cls.__name__] = cls

    # -- saving and loading (no pickle) --------------------------------------------

    def save_pretrained(self, directory: Path | str, **extra: Any) -> Path:
        """Write ``config.json`` (the model's kind and config) and
        ``model.safetensors`` (the weights) into ``directory``; ``extra``
        JSON-able values go to ``config.json`` too (e.g. ``training``, the
        `TrainConfig` that made the model, which ``torchdnc eval --pretrained``
        uses). Nothing is pickled: loading runs no code."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        description = {"model": type(self).__name__, "torchdnc_version": __version__,
                       "config": self.config.to_dict(), **extra}
        (directory / PRETRAINED_CONFIG).write_text(json.dumps(description, indent=2) + "\n")
        tensorfile.save(directory / PRETRAINED_WEIGHTS, self.state_dict())
        return directory

    @classmethod
    def from_pretrained(cls, directory: Path | str, device: torch.device | str = "cpu"):
        """The model `save_pretrained` wrote into ``directory``, in eval mode."""
        description, weights = read_pretrained(directory)
        kind = RecurrentMemoryModel.kinds.get(description.get("model"))
        if kind is None or not issubclass(kind, cls):
            raise ValueError(f"{directory}: holds a {description.get('model')!r}, not a {cls.__name__}")
        model = kind(kind.config_type.from_dict(description["config"]))
        try:
            model.load_state_dict(weights)
        except RuntimeError as error:
            raise ValueError(f"{directory}: weights do not fit its config "
                             f"({str(error).splitlines()[0]})") from None
        return model.to(device).eval()

    def _build(self, config_type: type, config, kwargs: dict[str, Any], memory_layers) -> None:
        """Set ``config`` (built from ``kwargs``, or ``config`` with ``kwargs`` replaced),
        then the controller on ``[x_t; r_{t-1}]``, ``memory_layers(config, controller
        output size)`` and the output layer on ``[h_t; r_t]``, in that order (the order
        of initialisation)."""
        if config is None:
            config = config_type(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        read_size = config.num_reads * config.word_size
        self.controller = make_controller(
            config.controller, config.input_size, read_size, config.hidden_size, config.num_layers)
        memory_input = self.controller.output_size
        if getattr(config, "bidirectional", False):
            # bi-rsDNC (Franke et al. 2018): an LSTM reads the whole input backwards
            # first; its output h^bw_t joins h_t as the memory unit's input.
            self.backward_controller = nn.LSTM(config.input_size, config.hidden_size,
                                               batch_first=True)
            memory_input += config.hidden_size
        memory_layers(config, memory_input)
        self.output = nn.Linear(memory_input + read_size, config.output_size)

    @property
    def batch_first(self) -> bool:
        return self.config.batch_first

    def extra_repr(self) -> str:
        c = self.config
        shown = [("N", "memory_size"), ("W", "word_size"), ("R", "num_reads"), *self.symbols]
        return ", ".join(f"{symbol}={getattr(c, name)!r}" for symbol, name in shown)

    def with_memory_size(self, memory_size: int):
        """The same model (shared parameters) with N = ``memory_size`` slots.

        The weights do not depend on N, so a model trained with a small memory
        can run with a larger one at test time.
        """
        fields.integer("memory_size", memory_size, 1)
        resized = copy.copy(self)
        resized.config = dataclasses.replace(self.config, memory_size=memory_size)
        resized._resized()
        return resized

    def _resized(self) -> None:
        """Called on the copy that `with_memory_size` made."""

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None):
        """All-zero state (an empty memory) on the module's device and dtype unless given."""
        fields.integer("batch_size", batch_size, 1)
        weight = self.output.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        c = self.config
        return self.state_type(
            controller=self.controller.initial_state(batch_size, device, dtype),
            access=self._initial_access(batch_size, device, dtype),
            read_vectors=torch.zeros(batch_size, c.num_reads, c.word_size, device=device, dtype=dtype),
        )

    # -- running -------------------------------------------------------------------

    def forward(self, x: Tensor, state=None, mask: Tensor | None = None, return_trace: bool = False):
        """Run the model over a sequence.

        Args:
            x: inputs, ``[B, T, input_size]`` (``[T, B, input_size]`` if not
                ``batch_first``).
            state: the state to start from; zeros (an empty memory) when ``None``.
            mask: optional padding mask with x's two leading axes, true (or 1) on
                real steps. On a padded step the whole state is carried through
                unchanged and the output is zero; padding may hold anything.
            return_trace: also return the model's trace of memory internals.

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
        # in chunks so that memory holds the outputs and one chunk, whatever T is
        # (not when a backward controller must see the whole input first).
        whole = return_trace or self._bidirectional or self._wants_gradient(x, state)
        chunk = steps if whole else INFERENCE_CHUNK
        ys, records = [], []
        for start in range(0, steps, chunk):
            part = slice(start, start + chunk)
            y, state, trace = self._sequence(x[:, part], state, None if keep is None else keep[:, part],
                                             return_trace)
            ys.append(y)
            records.extend(trace)
        y = ys[0] if len(ys) == 1 else torch.cat(ys, 1)
        if not self.config.batch_first:
            y = y.transpose(0, 1)
        if return_trace:
            return y, state, stack_records(records)
        return y, state

    def step(self, x_t: Tensor, state=None):
        """One time step, ``x_t [B, input_size] -> y_t [B, output_size]``.

        Gives exactly what `forward` gives at that step (for RL and decoding).
        """
        if self._bidirectional:
            raise ValueError("step: a bidirectional model reads the whole input backwards before "
                             "its memory pass, so it cannot run one step at a time; call it on "
                             "the whole sequence")
        if not isinstance(x_t, Tensor) or x_t.dim() != 2:
            shape = tuple(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(
                f"x_t: expected a 2-D tensor [batch, input_size={self.config.input_size}], got {shape}")
        time_axis = 1 if self.config.batch_first else 0
        y, state = self(x_t.unsqueeze(time_axis), state)
        return y.squeeze(time_axis), state

    @property
    def _bidirectional(self) -> bool:
        return "backward_controller" in self._modules

    def _sequence(self, x: Tensor, state, keep: Tensor | None, trace: bool):
        """(y, new state, per-step trace records) for batch-first ``x`` from ``state``."""
        projected = self.controller.project_inputs(x)
        context = self._backward_context(x, keep) if self._bidirectional else None
        fast = None if trace else self._whole_sequence(x, projected, state, keep, context)
        if fast is not None:
            hiddens, read_sequence, state = fast
            records = []
        else:
            hiddens, read_sequence, state, records = self._run_steps(projected, state, keep, trace,
                                                                     context)
        if context is not None:
            hiddens = torch.cat([hiddens, context], dim=-1)
        dropout = getattr(self.config, "bypass_dropout", 0.0)
        if dropout:  # rsDNC: only the path around the memory, never the read vectors
            hiddens = F.dropout(hiddens, dropout, self.training)
        # The output layer is time-parallel: one product for the whole sequence.
        y = self.output(torch.cat([hiddens, read_sequence.flatten(2)], dim=-1))
        clip = self.config.clip
        if clip:
            y = y.clamp(-clip, clip)
        if keep is not None:
            y = torch.where(keep.unsqueeze(-1), y, 0.0)
        return y, state, records

    def _backward_context(self, x: Tensor, keep: Tensor | None) -> Tensor:
        """h^bw_t: the backward LSTM over each sequence's real steps, last to first,
        ``[B, T, hidden]`` (zero on padding)."""
        if keep is None:
            out, _ = self.backward_controller(x.flip(1))
            return out.flip(1)
        steps = x.shape[1]
        position = torch.arange(steps, device=x.device).expand_as(keep)
        order = torch.where(keep, -position, steps + position).argsort(1)  # real steps reversed
        reversed_x = x.gather(1, order.unsqueeze(-1).expand_as(x))
        lengths = keep.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(reversed_x, lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.backward_controller(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=steps)
        context = torch.zeros_like(out).scatter(1, order.unsqueeze(-1).expand_as(out), out)
        return context * keep.unsqueeze(-1)

    def _run_steps(self, projected: Tensor, state, keep: Tensor | None, trace: bool,
                   context: Tensor | None = None):
        """The time loop: one controller step and one memory step per time step."""
        compiled = _compiled_step(self) if getattr(self.config, "implementation", "") == "compile" \
            else None
        controller_state, access_state, reads = state
        session, access_state = self._memory_session(access_state)
        hiddens, all_reads, records = [], [], []
        for t in range(projected.shape[1]):
            args = (projected[:, t], None if keep is None else keep[:, t], controller_state,
                    access_state, reads, session, trace, None if context is None else context[:, t])
            if compiled is not None:
                try:
                    result = compiled(self, *args)
                except Exception as error:  # a backend that cannot compile this step
                    _compile_failed(self, error)
                    compiled, result = None, self._step(*args)
            else:
                result = self._step(*args)
            hidden, controller_state, access_state, reads, record = result
            hiddens.append(hidden)
            all_reads.append(reads)
            if trace:
                records.append(record)
        access_state = self._memory_finish(session, access_state)
        new_state = self.state_type(controller_state, access_state, reads)
        return torch.stack(hiddens, 1), torch.stack(all_reads, 1), new_state, records

    def _step(self, projected_t: Tensor, keep_t: Tensor | None, controller_state, access_state,
              reads: Tensor, session, trace: bool, context_t: Tensor | None = None):
        """One time step: controller (clipped), memory, and the carry over padding."""
        hidden, new_controller = self.controller.step(projected_t, reads.flatten(1),
                                                      controller_state, self.config.clip)
        memory_input = hidden if context_t is None else torch.cat([hidden, context_t], dim=-1)
        access_state, new_reads, details = self._memory_step(session, access_state, memory_input,
                                                             keep_t)
        record = self._trace_record(access_state, details) if trace else None
        new_controller = carry_where(keep_t, new_controller, controller_state)
        new_reads = carry_where(keep_t, new_reads, reads)
        return hidden, new_controller, access_state, new_reads, record

    # -- the memory unit (subclasses) ---------------------------------------------------

    def _initial_access(self, batch_size: int, device, dtype):
        raise NotImplementedError

    def _memory_session(self, access_state):
        """(per-call object, the state to step) at the start of a call."""
        return None, access_state

    def _memory_step(self, session, access_state, hidden: Tensor, keep_t: Tensor | None):
        """(new access state, r_t ``[B, R, W]``, details for `_trace_record`); on a
        padded step (``keep_t`` false) the access state must come back unchanged."""
        raise NotImplementedError

    def _trace_record(self, access_state, details):
        """The model's trace NamedTuple for one step (``[B, ...]`` tensors)."""
        raise NotImplementedError

    def _memory_finish(self, session, access_state):
        return access_state

    def _whole_sequence(self, x: Tensor, projected: Tensor, state, keep: Tensor | None,
                        context: Tensor | None = None):
        """(hiddens, reads, new state) of all steps at once, or None to run the loop.
        ``context``: the backward controller's h^bw ``[B, T, H]`` (bidirectional)."""
        return None

    # -- checks --------------------------------------------------------------------

    def _wants_gradient(self, x: Tensor, state) -> bool:
        """Whether autograd will record this forward pass."""
        if not torch.is_grad_enabled():
            return False
        if x.requires_grad or any(p.requires_grad for p in self.parameters()):
            return True
        return state is not None and any(t.requires_grad for t in state_leaves(state))

    def _check_inputs(self, x: Tensor, state, mask) -> Tensor | None:
        """Refuse bad input with a message naming the argument, the expected and
        the actual; returns the mask as booleans (None without one)."""
        c = self.config
        layout = "[batch, time, input_size]" if c.batch_first else "[time, batch, input_size]"
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != c.input_size:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected a 3-D tensor {layout} with input_size={c.input_size} "
                             f"(batch_first={c.batch_first}), got {shape}")
        if x.numel() == 0:
            raise ValueError(f"x: expected at least one sequence and one time step {layout}, "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
        weight = self.output.weight
        if x.dtype != weight.dtype or x.device != weight.device:
            raise ValueError(
                f"x: expected dtype {weight.dtype} on {weight.device} (the model's parameters), "
                f"got dtype {x.dtype} on {x.device}; convert one of them, e.g. model.to(x.dtype)")
        keep = None if mask is None else _check_mask(mask, x, c.batch_first)
        if state is not None:
            self._check_state(state, x.shape[0] if c.batch_first else x.shape[1], x)
        if c.check_finite:
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

    def _check_state(self, state, batch_size: int, x: Tensor) -> None:
        if not isinstance(state, self.state_type):
            raise ValueError(f"state: expected a {self.state_type.__name__}, "
                             f"got {type(state).__name__}")
        expected = self._state_layout(batch_size)
        actual = state_leaves(state)
        if not all(isinstance(t, Tensor) for t in actual):
            try:
                state_paths(state)  # names the first leaf that is not a tensor
            except TypeError as error:
                raise ValueError(f"state: does not match this model's structure ({error})") \
                    from None
        if len(actual) != len(expected):
            raise ValueError(f"state: expected {len(expected)} tensors for "
                             f"controller={self.config.controller!r}, got {len(actual)}")
        for (name, shape, follows_x, dtype), have in zip(expected, actual):
            if not isinstance(have, Tensor) or have.shape != shape:
                got = tuple(have.shape) if isinstance(have, Tensor) else type(have).__name__
                raise ValueError(f"state.{name}: expected shape {tuple(shape)} for batch size "
                                 f"{batch_size} and this model's configuration, got {got}")
            dtype = x.dtype if follows_x else dtype
            if have.dtype != dtype or have.device != x.device:
                raise ValueError(f"state.{name}: expected dtype {dtype} on {x.device}"
                                 f"{' (as x)' if follows_x else ''}, "
                                 f"got dtype {have.dtype} on {have.device}")

    def _state_layout(self, batch_size: int) -> list[tuple[str, torch.Size, bool, torch.dtype]]:
        """(name, shape, follows x's dtype, dtype) of every state tensor, for ``batch_size``
        (cached: a state check per `step` call stays cheap). Floating tensors in the
        parameters' dtype follow x; the others keep a fixed dtype (integers, the
        sparse memory's float64 usage keys)."""
        cache = self.__dict__.setdefault("_layouts", {})
        own = self.output.weight.dtype  # as initial_state's
        key = (batch_size, id(self.config), own)  # with_memory_size: a new config; .double()
        if key not in cache:
            paths = state_paths(self.initial_state(batch_size, device="meta"))
            cache[key] = [(name, t.shape, t.is_floating_point() and t.dtype == own, t.dtype)
                          for name, t in paths]
        return cache[key]


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
        bad = [] if mask.is_complex() else mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
        raise ValueError(f"mask: expected booleans, or numbers that are exactly 0 or 1 "
                         f"(1 = a real step), got dtype {mask.dtype} with values such as {bad}")
    return mask != 0


def stack_records(records: list):
    """Per-step trace records (NamedTuples of ``[B, ...]``) as one of ``[B, T, ...]``."""
    return type(records[0])(*(torch.stack(parts, dim=1) for parts in zip(*records)))


# -- implementation="compile" -----------------------------------------------------------

# One compiled step per model, dropped with the model (the compiled function
# takes the model as an argument, so it holds no reference to it).
_COMPILED: "weakref.WeakKeyDictionary[nn.Module, Any]" = weakref.WeakKeyDictionary()


def _compiled_step(model: RecurrentMemoryModel):
    """``model._step`` under `torch.compile` (None once compilation has failed for it)."""
    if model not in _COMPILED:
        def step(module, *args):
            return module._step(*args)

        try:
            _COMPILED[model] = torch.compile(step, dynamic=False)
        except Exception as error:  # torch.compile unavailable on this platform
            _compile_failed(model, error)
    return _COMPILED[model]


def _compile_failed(model: RecurrentMemoryModel, error: Exception) -> None:
    text = str(error).strip()
    log.warning("torchdnc: torch.compile failed (%s: %s); this model uses the plain step",
                type(error).__name__, text.splitlines()[0] if text else "")
    _COMPILED[model] = None
