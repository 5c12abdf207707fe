"""The sparse DNC (SAM, or the SDNC with temporal links) as an `nn.Module`.

    model = SparseDNC(input_size=8, output_size=8, memory_size=64, sparse_reads=4)
    y, state = model(x)                      # x [B, T, 8] -> y [B, T, 8]
    big = model.with_memory_size(1_000_000)  # same weights, a million slots
    y, state = big(x)

Same API and conventions as `torchdnc.DNC`: state in, state out
(`SparseDNCState`, NamedTuples of batch-first tensors with `detach`),
``batch_first``, padding masks that carry the state through padded steps,
`step` for one time step, an opt-in trace. One difference follows from the
paper's efficiency argument: the memory (and the link tables) in a state is
updated in place by the next call, so a state is consumed by the call it is
passed to; `SparseDNCState.clone` keeps an independent copy.

Controller and layers are those of the dense DNC: ``controller`` (LSTM, GRU
or feed-forward on [x_t; r_{t-1}]), ``interface`` (`nn.Linear`, h_t -> xi_t,
layout of `parse_sparse_interface`) and ``output`` (`nn.Linear` on
[h_t; r_t]); clipping as in the dense DNC.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from torchdnc.controller import CONTROLLERS
from torchdnc.dnc import DNCConfig, RecurrentMemoryModel, map_state
from torchdnc.memory import STRENGTH_ACTIVATIONS
from torchdnc.sparse.addressing import USAGE_KINDS, densify
from torchdnc.sparse.index import INDEXES, make_index
from torchdnc.sparse.memory import (SparseAccess, SparseMemoryState, parse_sparse_interface,
                                    sparse_interface_size)

# DNCConfig fields that have no meaning here: SAM has one write head and its
# own addressing, and none of the dense implementations apply.
DENSE_ONLY = ("num_writes", "implementation", "backward_chunk")


@dataclass
class SparseDNCConfig:
    """Everything that defines a sparse DNC's shape; saved with every checkpoint.

    The fields shared with `torchdnc.DNCConfig` mean the same. Sparse ones:
    ``sparse_reads`` K (non-zero read weights per head, K <= N),
    ``link_entries`` K_L (0: SAM, no temporal links; > 0: SDNC with K_L
    entries per row and column of the link matrix), ``index`` (``"exact"``
    or ``"faiss"``), ``index_lists`` / ``index_probes`` (faiss: inverted
    lists, 0 = round(sqrt N); lists probed per key), ``usage``
    (``"last_access"`` with threshold ``usage_threshold`` delta, or
    ``"discounted"`` with factor ``usage_discount`` lambda).
    """

    input_size: int = 8
    output_size: int = 8
    controller: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    memory_size: int = 64  # N
    word_size: int = 16  # W
    num_reads: int = 4  # R
    clip: float = 20.0
    strength_activation: str = "oneplus"
    batch_first: bool = True
    sparse_reads: int = 4  # K
    link_entries: int = 0  # K_L; 0 = SAM, > 0 = SDNC
    index: str = "exact"
    index_lists: int = 0
    index_probes: int = 8
    usage: str = "last_access"
    usage_threshold: float = 0.005  # delta: an access counts when its weight exceeds this
    usage_discount: float = 0.99  # lambda of the discounted usage
    check_finite: bool = True  # as DNCConfig.check_finite

    def __post_init__(self) -> None:
        for name in ("input_size", "output_size", "hidden_size", "num_layers", "memory_size",
                     "word_size", "num_reads", "sparse_reads", "index_probes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("link_entries", "index_lists"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
        if self.sparse_reads > self.memory_size:
            raise ValueError(f"sparse_reads: K = {self.sparse_reads} exceeds memory_size "
                             f"N = {self.memory_size}")
        if self.controller not in CONTROLLERS:
            raise ValueError(f"controller: expected one of {CONTROLLERS}, got {self.controller!r}")
        if self.strength_activation not in STRENGTH_ACTIVATIONS:
            raise ValueError(f"strength_activation: expected one of {STRENGTH_ACTIVATIONS}, "
                             f"got {self.strength_activation!r}")
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)) or self.clip < 0:
            raise ValueError(f"clip: expected a number >= 0 (0 disables), got {self.clip!r}")
        if self.index not in INDEXES:
            raise ValueError(f"index: expected one of {INDEXES}, got {self.index!r}")
        if self.usage not in USAGE_KINDS:
            raise ValueError(f"usage: expected one of {USAGE_KINDS}, got {self.usage!r}")
        if not (isinstance(self.usage_threshold, (int, float)) and 0 <= self.usage_threshold < 1):
            raise ValueError(f"usage_threshold: expected a number in [0, 1), "
                             f"got {self.usage_threshold!r}")
        if not (isinstance(self.usage_discount, (int, float)) and 0 < self.usage_discount < 1):
            raise ValueError(f"usage_discount: expected a number in (0, 1), "
                             f"got {self.usage_discount!r}")
        for name in ("batch_first", "check_finite"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")

    @classmethod
    def from_dense(cls, config: DNCConfig, **sparse: Any) -> "SparseDNCConfig":
        """The shared fields of a `DNCConfig` plus the sparse ones given as keywords.

        ``num_writes`` must be 1 (SAM has one write head); the dense
        implementation choices are ignored.
        """
        if config.num_writes != 1:
            raise ValueError(f"num_writes: the sparse DNC has one write head, got {config.num_writes}")
        shared = {k: v for k, v in config.to_dict().items() if k not in DENSE_ONLY}
        return cls.from_dict({**shared, **sparse})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SparseDNCConfig":
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"SparseDNCConfig: unknown field(s) {unknown}; valid fields: {names}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "SparseDNCConfig":
        return cls.from_dict(json.loads(text))


class SparseDNCState(NamedTuple):
    """The whole recurrent state: controller state, `SparseMemoryState`, r_{t-1} ``[B, R, W]``."""

    controller: tuple
    access: SparseMemoryState
    read_vectors: Tensor

    def detach(self) -> "SparseDNCState":
        """The same state cut from the autograd graph (truncated backprop)."""
        return map_state(lambda t: t.detach(), self)

    def clone(self) -> "SparseDNCState":
        """An independent copy, O(N W): the model's next call will not change it."""
        return map_state(lambda t: t.detach().clone(), self)


class SparseDNCTrace(NamedTuple):
    """Sparse memory internals per time step, each ``[B, T, ...]`` (``return_trace=True``).

    Weights are given as (ids, weights) pairs; `dense` turns a pair into
    ``[B, T, heads, N]`` for plots when N is small.
    """

    read_ids: Tensor  # [B, T, R, K]
    read_weights: Tensor  # w^R, [B, T, R, K]
    write_ids: Tensor  # [B, T, 1, S], S = R K + 1
    write_weights: Tensor  # w^W, [B, T, 1, S]
    least_used: Tensor  # I^U_t, the erased slot, [B, T]
    write_gates: Tensor  # alpha, [B, T, 1]
    interpolation_gates: Tensor  # gamma, [B, T, 1]
    read_modes: Tensor  # pi, [B, T, R, 3]: backward, content, forward
    read_content_ids: Tensor  # [B, T, R, K]
    read_content_weights: Tensor  # c^r, [B, T, R, K]

    def dense(self, ids: Tensor, weights: Tensor, memory_size: int) -> Tensor:
        """``densify(ids, weights, memory_size)``, e.g.
        ``trace.dense(trace.read_ids, trace.read_weights, 64)`` -> ``[B, T, R, 64]``."""
        return densify(ids, weights, memory_size)


class SparseDNC(RecurrentMemoryModel):
    """Sparse Access Memory (Rae et al. 2016) with the DNC's controller; with
    ``link_entries > 0`` the Sparse DNC (SDNC).

    Build it from a `SparseDNCConfig` or from its fields as keywords.
    """

    state_type = SparseDNCState

    def __init__(self, config: SparseDNCConfig | None = None, **kwargs: Any) -> None:
        super().__init__()

        def memory_layers(c: SparseDNCConfig, controller_output: int) -> None:
            self.interface = nn.Linear(controller_output, sparse_interface_size(
                c.num_reads, c.word_size, c.link_entries > 0))

        self._build(SparseDNCConfig, config, kwargs, memory_layers)
        self.index = self._make_index()

    def _make_index(self):
        c = self.config
        options = {"lists": c.index_lists, "probes": c.index_probes} if c.index == "faiss" else {}
        return make_index(c.index, c.word_size, c.memory_size, **options)

    def extra_repr(self) -> str:
        c = self.config
        return (f"N={c.memory_size}, W={c.word_size}, R={c.num_reads}, K={c.sparse_reads}, "
                f"K_L={c.link_entries}, index={c.index!r}, usage={c.usage!r}")

    def with_memory_size(self, memory_size: int) -> "SparseDNC":
        """The same model (shared parameters) with N = ``memory_size`` slots."""
        resized = copy.copy(self)
        resized.config = dataclasses.replace(self.config, memory_size=memory_size)
        resized.index = resized._make_index()
        return resized

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> SparseDNCState:
        """Empty memory, zero controller state, on the module's device and dtype unless given."""
        device, dtype = self._device_and_dtype(batch_size, device, dtype)
        c = self.config
        access = SparseMemoryState.zeros(batch_size, c.memory_size, c.word_size, c.num_reads,
                                         c.sparse_reads, c.link_entries, device, dtype)
        if access.memory.device.type != "meta":
            self.index.register_empty(access.memory)  # nothing to index in an empty memory
        return SparseDNCState(
            controller=self.controller.initial_state(batch_size, device, dtype),
            access=access,
            read_vectors=torch.zeros(batch_size, c.num_reads, c.word_size, device=device,
                                     dtype=dtype),
        )

    # -- running --------------------------------------------------------------------

    def forward(self, x: Tensor, state: SparseDNCState | None = None, mask: Tensor | None = None,
                return_trace: bool = False):
        """Run over a sequence; arguments and results as `torchdnc.DNC.forward`.

        Returns:
            ``(y, state)`` or ``(y, state, trace)`` with a `SparseDNCTrace`.
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
        c = self.config
        clip = c.clip

        projected = self.controller.project_inputs(x)
        controller_state, memory_state, reads = state
        access = SparseAccess(memory_state, self.index, c.sparse_reads, c.usage,
                              c.usage_threshold, c.usage_discount)
        memory_state = access.buffers(memory_state)
        hiddens, all_reads, traces = [], [], []
        for t in range(steps):
            keep_t = None if keep is None else keep[:, t]
            hidden, new_controller = self.controller.step(projected[:, t], reads.flatten(1),
                                                          controller_state, clip)
            interface = parse_sparse_interface(self.interface(hidden), c.num_reads, c.word_size,
                                               c.link_entries > 0, c.strength_activation)
            memory_state, new_reads, step_trace = access.step(memory_state, interface, keep_t)
            if keep_t is not None:
                def carry(new: Tensor, old: Tensor) -> Tensor:
                    return torch.where(keep_t.view(-1, *([1] * (new.dim() - 1))), new, old)

                new_controller = map_state(carry, new_controller, controller_state)
                new_reads = carry(new_reads, reads)
            controller_state, reads = new_controller, new_reads
            hiddens.append(hidden)
            all_reads.append(reads)
            if return_trace:
                traces.append((memory_state, interface, step_trace))
        memory_state = access.finish(memory_state)
        new_state = SparseDNCState(controller_state, memory_state, reads)

        y = self.output(torch.cat([torch.stack(hiddens, 1), torch.stack(all_reads, 1).flatten(2)],
                                  dim=-1))
        if clip:
            y = y.clamp(-clip, clip)
        if keep is not None:
            y = torch.where(keep.unsqueeze(-1), y, 0.0)
        if not c.batch_first:
            y = y.transpose(0, 1)
        if return_trace:
            return y, new_state, _stack_trace(traces)
        return y, new_state


def _stack_trace(traces: list) -> SparseDNCTrace:
    def stack(get) -> Tensor:
        return torch.stack([get(*step) for step in traces], dim=1)

    return SparseDNCTrace(
        read_ids=stack(lambda m, i, s: m.read_ids),
        read_weights=stack(lambda m, i, s: m.read_weights),
        write_ids=stack(lambda m, i, s: s.write_ids),
        write_weights=stack(lambda m, i, s: s.write_weights),
        least_used=stack(lambda m, i, s: s.least_used),
        write_gates=stack(lambda m, i, s: i.write_gate),
        interpolation_gates=stack(lambda m, i, s: i.interpolation_gate),
        read_modes=stack(lambda m, i, s: i.read_modes),
        read_content_ids=stack(lambda m, i, s: s.read_content_ids),
        read_content_weights=stack(lambda m, i, s: s.read_content_weights),
    )
