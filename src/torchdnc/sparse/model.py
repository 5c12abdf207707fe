"""The sparse DNC (SAM, or the SDNC with temporal links) as an `nn.Module`.

    model = SparseDNC(input_size=8, output_size=8, memory_size=64, sparse_reads=4)
    y, state = model(x)                      # x [B, T, 8] -> y [B, T, 8]
    big = model.with_memory_size(1_000_000)  # same weights, a million slots
    y, state = big(x)

Same API and conventions as `torchdnc.DNC`: state in, state out
(`SparseDNCState`, NamedTuples of batch-first tensors with `detach`),
``batch_first``, padding masks that carry the state through padded steps,
`step` for one time step, an opt-in trace; the time loop is
`torchdnc.recurrent`'s, with the sparse memory plugged in. One difference
follows from the paper's efficiency argument: the memory (and the link tables) in a state is
updated in place by the next call, so a state is consumed by the call it is
passed to; `SparseDNCState.clone` keeps an independent copy.

Controller and layers are those of the dense DNC: ``controller`` (LSTM, GRU
or feed-forward on [x_t; r_{t-1}]), ``interface`` (`nn.Linear`, h_t -> xi_t,
layout of `parse_sparse_interface`) and ``output`` (`nn.Linear` on
[h_t; r_t]); clipping as in the dense DNC.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor, nn

from torchdnc import fields
from torchdnc.dnc import DNCConfig
from torchdnc.recurrent import RecurrentMemoryModel, RecurrentState, check_model_config
from torchdnc.sparse.addressing import USAGE_KINDS, densify
from torchdnc.sparse.index import INDEXES, make_index
from torchdnc.sparse.memory import (SparseMemoryState, SparseSession, parse_sparse_interface,
                                    sparse_interface_size)

# DNCConfig fields that have no meaning here: SAM has one write head and its own
# addressing; the dense implementations and the dense successors' options do not
# apply (`from_dense` refuses them when they are not at their defaults).
IGNORED_DENSE = ("implementation", "backward_chunk")


@dataclass
class SparseDNCConfig(fields.ConfigIO):
    """Everything that defines a sparse DNC's shape; saved with every checkpoint.

    The fields shared with `torchdnc.DNCConfig` mean the same. Sparse ones
    (Rae et al. 2016; symbols as in docs/semantics.md): ``sparse_reads`` K_R
    (non-zero read weights per head, K_R <= N), ``link_entries`` K_L (0: SAM,
    no temporal links; > 0: SDNC with K_L entries per row and column of the
    link matrix), ``index`` (``"exact"`` or ``"faiss"``), ``index_lists`` /
    ``index_probes`` (faiss: inverted lists, 0 = round(sqrt N); lists probed
    per key), ``usage`` (``"last_access"`` with threshold ``usage_threshold``
    delta, or ``"discounted"`` with factor ``usage_discount`` lambda).
    ``write_read_gradient`` False stops the gradient through w^R_{t-1} in the
    write weights alpha (gamma w^R_{t-1} + (1 - gamma) I^U) (not in the paper:
    that path is a read -> write -> read loop whose gradient explodes on copy;
    README, sparse access).
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
    sparse_reads: int = 4  # K_R
    link_entries: int = 0  # K_L; 0 = SAM, > 0 = SDNC
    index: str = "exact"
    index_lists: int = 0
    index_probes: int = 8
    usage: str = "last_access"
    usage_threshold: float = 0.005  # delta: an access counts when its weight exceeds this
    usage_discount: float = 0.99  # lambda of the discounted usage
    check_finite: bool = True  # as DNCConfig.check_finite
    write_read_gradient: bool = True  # False: no gradient through w^R_{t-1} in the write (not the paper's)

    def __post_init__(self) -> None:
        check_model_config(self)
        fields.integer("sparse_reads", self.sparse_reads, 1)
        fields.integer("index_probes", self.index_probes, 1)
        fields.integer("link_entries", self.link_entries, 0)
        fields.integer("index_lists", self.index_lists, 0)
        if self.sparse_reads > self.memory_size:
            raise ValueError(f"sparse_reads: K_R = {self.sparse_reads} exceeds memory_size "
                             f"N = {self.memory_size}")
        fields.choice("index", self.index, INDEXES)
        fields.choice("usage", self.usage, USAGE_KINDS)
        fields.number("usage_threshold", self.usage_threshold, 0, below=1)
        fields.number("usage_discount", self.usage_discount, above=0, below=1)
        fields.boolean("write_read_gradient", self.write_read_gradient)

    @classmethod
    def from_dense(cls, config: DNCConfig, **sparse: Any) -> "SparseDNCConfig":
        """The shared fields of a `DNCConfig` plus the sparse ones given as keywords.

        ``num_writes`` must be 1 (SAM has one write head); the dense
        implementation choices are ignored.
        """
        if config.num_writes != 1:
            raise ValueError(f"num_writes: the sparse DNC has one write head, got {config.num_writes}")
        mine = {f.name for f in dataclasses.fields(cls)}
        defaults = DNCConfig().to_dict()
        shared = {}
        for name, value in config.to_dict().items():
            if name in mine:
                shared[name] = value
            elif name not in IGNORED_DENSE and name != "num_writes" and value != defaults[name]:
                raise ValueError(f"{name}: an option of the dense DNC; the sparse DNC does not "
                                 f"have it (got {name}={value!r})")
        return cls.from_dict({**shared, **sparse})


class SparseDNCState(RecurrentState):
    """The whole recurrent state: ``controller``, ``access`` (the
    `SparseMemoryState`, updated in place by the next call) and ``read_vectors``
    r_{t-1} ``[B, R, W]``; `clone` keeps an independent copy (O(N W))."""

    __slots__ = ()


class SparseDNCTrace(NamedTuple):
    """Sparse memory internals per time step, each ``[B, T, ...]`` (``return_trace=True``).

    Weights are given as (ids, weights) pairs; `dense` turns a pair into
    ``[B, T, heads, N]`` for plots when N is small.
    """

    read_ids: Tensor  # [B, T, R, K_R]
    read_weights: Tensor  # w^R, [B, T, R, K_R]
    write_ids: Tensor  # [B, T, 1, S], S = R K_R + 1
    write_weights: Tensor  # w^W, [B, T, 1, S]
    least_used: Tensor  # I^U_t, the erased slot, [B, T]
    write_gates: Tensor  # alpha, [B, T, 1]
    interpolation_gates: Tensor  # gamma, [B, T, 1]
    read_modes: Tensor  # pi, [B, T, R, 3]: backward, content, forward
    read_content_ids: Tensor  # [B, T, R, K_R]
    read_content_weights: Tensor  # c^r, [B, T, R, K_R]

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
    config_type = SparseDNCConfig
    symbols = (("K_R", "sparse_reads"), ("K_L", "link_entries"), ("index", "index"),
               ("usage", "usage"))

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

    def _resized(self) -> None:
        self.index = self._make_index()

    def _initial_access(self, batch_size: int, device, dtype) -> SparseMemoryState:
        c = self.config
        access = SparseMemoryState.zeros(batch_size, c.memory_size, c.word_size, c.num_reads,
                                         c.sparse_reads, c.link_entries, device, dtype)
        if access.memory.device.type != "meta":
            self.index.register_empty(access.memory)  # nothing to index in an empty memory
        return access

    def _memory_session(self, state: SparseMemoryState):
        c = self.config
        session = SparseSession(state, self.index, c.sparse_reads, c.usage, c.usage_threshold,
                                c.usage_discount, c.write_read_gradient)
        return session, session.buffers(state)

    def _memory_step(self, session: SparseSession, state: SparseMemoryState, hidden: Tensor,
                     keep_t: Tensor | None):
        c = self.config
        interface = parse_sparse_interface(self.interface(hidden), c.num_reads, c.word_size,
                                           c.link_entries > 0, c.strength_activation)
        new_state, reads, parts = session.step(state, interface, keep_t)
        return new_state, reads, (interface, parts)

    def _trace_record(self, state: SparseMemoryState, details) -> SparseDNCTrace:
        interface, parts = details
        return SparseDNCTrace(state.read_ids, state.read_weights, parts.write_ids,
                              parts.write_weights, parts.least_used, interface.write_gate,
                              interface.interpolation_gate, interface.read_modes,
                              parts.read_content_ids, parts.read_content_weights)

    def _memory_finish(self, session: SparseSession, state: SparseMemoryState) -> SparseMemoryState:
        return session.finish(state)
