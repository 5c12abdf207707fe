"""The Differentiable Neural Computer as an `nn.Module` that feels like `nn.LSTM`.

    dnc = DNC(input_size=8, output_size=8)
    y, state = dnc(x)                 # x [B, T, 8] -> y [B, T, 8]
    y2, state = dnc(x2, state)        # carry the state on
    state = state.detach()            # truncated backprop

The time loop, checks, masks and layouts are `torchdnc.recurrent`'s; this module
plugs in the dense memory (`torchdnc.memory`, DESIGN.md section 3) and the fused
C++ recurrence (`torchdnc.kernels.fused`) where it applies.

Parameters: ``controller.rnn`` (the one-layer `nn.LSTM`, or the `nn.GRU`),
``controller.cells`` (the paper's deep LSTM, one `nn.LSTMCell` per layer) or
``controller.layers`` (feed-forward), ``access.interface`` (`nn.Linear`,
h_t -> xi_t) and ``output`` (`nn.Linear` on [h_t; r_t], r_t flattened head-major).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from torchdnc import fields
from torchdnc.controller import LSTMState, lstm_cell
from torchdnc.kernels import fused
from torchdnc.memory import (LAYER_NORM_EPSILON, MemoryAccess, MemoryOptions, MemoryState,
                             floor_and_hold, memory_step, split_interface, traced_memory_step)
from torchdnc.recurrent import (RecurrentMemoryModel, RecurrentState, carry_where,
                                check_model_config)

IMPLEMENTATIONS = ("auto", "fused", "plain", "compile")


@dataclass
class DNCConfig(fields.ConfigIO):
    """Everything that defines a DNC's shape; saved with every checkpoint.

    Defaults follow DeepMind's reference training script.
    """

    input_size: int = 8
    output_size: int = 8
    controller: str = "lstm"  # one of "lstm", "gru", "feedforward"
    hidden_size: int = 64
    num_layers: int = 1  # an LSTM with L > 1 is the paper's deep controller
    memory_size: int = 16  # N
    word_size: int = 16  # W
    num_reads: int = 4  # R
    num_writes: int = 1  # K
    clip: float = 20.0  # on every layer's h and c, the carried state and y_t; 0 disables
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
    # The DNC's successors (docs/semantics.md); all off is the paper's DNC, bit for bit.
    # Csordás & Schmidhuber 2019: masked content addressing (M), de-allocation that
    # erases freed slots (D), sharpness control of the link distributions (S).
    masking: bool = False
    mask_min: float = 0.0  # masks m <- m (1 - mask_min) + mask_min (their "beta"; 0.1 on recall)
    deallocation: bool = False
    sharpness: bool = False
    # Franke et al. 2018 (rsDNC): layer normalisation of the memory unit's input,
    # dropout on the controller's path around the memory, the content-based memory
    # unit (no temporal links), and a backward LSTM over the whole input (bi-rsDNC).
    layer_norm: bool = False
    bypass_dropout: float = 0.0
    temporal_links: bool = True
    bidirectional: bool = False
    # Ablations (docs/scaling.md, Extended Data Fig. 1): hold the free gates or the
    # allocation gates at a value in [0, 1] instead of learning them; -1 learns them.
    fixed_free_gates: float = -1.0
    fixed_allocation_gates: float = -1.0

    def __post_init__(self) -> None:
        check_model_config(self)
        for name in ("masking", "deallocation", "sharpness", "layer_norm", "temporal_links",
                     "bidirectional"):
            fields.boolean(name, getattr(self, name))
        fields.number("mask_min", self.mask_min, 0, below=1)
        for name in ("fixed_free_gates", "fixed_allocation_gates"):
            value = getattr(self, name)
            if value != -1:
                fields.number(name, value, 0, 1, note="-1 learns them")
        fields.number("bypass_dropout", self.bypass_dropout, 0, below=1)
        if self.mask_min and not self.masking:
            raise ValueError(f"mask_min: needs masking=True, got mask_min={self.mask_min}")
        fields.integer("num_writes", self.num_writes, 1)
        fields.choice("implementation", self.implementation, IMPLEMENTATIONS)
        if self.implementation == "fused" and (self.controller != "lstm" or self.num_layers != 1):
            raise ValueError("implementation: 'fused' needs controller='lstm' with num_layers=1, "
                             f"got controller={self.controller!r}, num_layers={self.num_layers}")
        if self.implementation == "fused" and self.num_reads > fused.MAX_READS:
            raise ValueError(f"implementation: 'fused' handles num_reads <= {fused.MAX_READS}, "
                             f"got num_reads={self.num_reads} (use 'auto' or 'plain')")
        fields.integer("backward_chunk", self.backward_chunk, 0)

    @property
    def memory_options(self) -> MemoryOptions:
        return MemoryOptions(self.masking, self.deallocation, self.sharpness, self.temporal_links)


class DNCState(RecurrentState):
    """The whole recurrent state of a DNC: ``controller`` (`LSTMState`, ...),
    ``access`` (the `MemoryState`) and ``read_vectors`` r_{t-1} ``[B, R, W]``."""

    __slots__ = ()


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


class DNC(RecurrentMemoryModel):
    """Differentiable Neural Computer (Graves et al. 2016), multi-write-head.

    Build it from a `DNCConfig` or from the config's fields as keywords:
    ``DNC(input_size=8, output_size=8, memory_size=32)``.
    """

    state_type = DNCState
    config_type = DNCConfig
    symbols = (("K", "num_writes"), ("clip", "clip"), ("batch_first", "batch_first"))

    def __init__(self, config: DNCConfig | None = None, **kwargs: Any) -> None:
        super().__init__()

        def memory_layers(c: DNCConfig, controller_output: int) -> None:
            self.access = MemoryAccess(controller_output, c.memory_size, c.word_size, c.num_reads,
                                       c.num_writes, c.strength_activation, c.memory_options,
                                       c.layer_norm, c.mask_min, c.fixed_free_gates,
                                       c.fixed_allocation_gates)

        self._build(DNCConfig, config, kwargs, memory_layers)

    def with_held_gates(self, free_gates: float | None = None,
                        allocation_gates: float | None = None) -> "DNC":
        """The same model (shared parameters) with its free gates and/or
        allocation gates held at a value in [0, 1] (-1 learns them again): a
        test-time ablation. ``dnc.with_held_gates(free_gates=0)`` asks what a
        trained DNC does when it can no longer free a slot; the model itself is
        left as it is."""
        changes = {}
        for name, value in (("fixed_free_gates", free_gates),
                            ("fixed_allocation_gates", allocation_gates)):
            if value is not None:
                changes[name] = float(value) if not isinstance(value, bool) else value
        held = copy.copy(self)
        held.config = dataclasses.replace(self.config, **changes)  # validates the values
        held._modules = dict(self._modules)  # a new access module; the rest shared
        access = copy.copy(self.access)
        access.fixed_gates = {"free_gates": held.config.fixed_free_gates,
                              "allocation_gates": held.config.fixed_allocation_gates}
        held._modules["access"] = access
        return held

    def _initial_access(self, batch_size: int, device, dtype) -> MemoryState:
        c = self.config
        return MemoryState.zeros(batch_size, c.memory_size, c.word_size, c.num_reads, c.num_writes,
                                 device=device, dtype=dtype, temporal_links=c.temporal_links)

    def _memory_step(self, session, state: MemoryState, hidden: Tensor, keep_t: Tensor | None):
        interface, extras = self.access.parse_all(hidden)
        new_state, reads, parts = traced_memory_step(state, interface, self.access.options, extras)
        return carry_where(keep_t, new_state, state), reads, (interface, parts)

    def _trace_record(self, state: MemoryState, details) -> DNCTrace:
        interface, parts = details
        return DNCTrace(state.read_weights, state.write_weights, state.usage, parts.allocation,
                        interface.free_gates, interface.allocation_gates, interface.write_gates,
                        interface.read_modes, parts.write_content_weights,
                        parts.read_content_weights)

    # -- the fused recurrence -------------------------------------------------------

    def _whole_sequence(self, x: Tensor, projected: Tensor, state: DNCState, keep: Tensor | None,
                        context: Tensor | None = None):
        c = self.config
        if not self._kernel_applies() or x.device.type != "cpu" \
                or x.dtype not in (torch.float32, torch.float64) or not fused.available():
            return None
        w_cat, bias = self._kernel_weights()
        projected = projected + bias
        controller, access, reads = state
        chunk = c.backward_chunk or fused.auto_chunk(
            projected.shape[1], projected.shape[0], c.num_writes, access.link.shape[-1],
            projected.element_size(), access.memory[0].numel())
        empty = torch.empty(0, dtype=torch.bool, device=projected.device)
        norm = getattr(self.access, "layer_norm", None)
        none = projected.new_empty(0)
        w_xi = self.access.interface.weight
        if context is not None:  # bi-rsDNC: W_xi [h; h^bw] = W_xi[:, :H] h + W_xi[:, H:] h^bw
            hidden_size = controller.hidden.shape[-1]
            w_xi, context = w_xi[:, :hidden_size], F.linear(context, w_xi[:, hidden_size:])
        inputs = (projected, w_cat, w_xi, self.access.interface.bias,
                  controller.hidden.select(1, 0), controller.cell.select(1, 0), reads, *access,
                  empty if keep is None else keep, none if norm is None else norm.weight,
                  none if norm is None else norm.bias, none if context is None else context)
        oneplus = c.strength_activation == "oneplus"
        options = fused.KernelOptions(float(c.fixed_free_gates), float(c.fixed_allocation_gates),
                                      bool(c.deallocation), bool(c.masking), float(c.mask_min),
                                      bool(c.sharpness))
        hidden, read_sequence, h, cell, *memory = fused.run(
            inputs, float(c.clip), oneplus, int(chunk),
            lambda *tensors: plain_recurrence(*tensors, float(c.clip), oneplus, options), options)
        new_state = DNCState(LSTMState(h.unsqueeze(1), cell.unsqueeze(1)), MemoryState(*memory),
                             read_sequence.select(1, -1))
        return hidden, read_sequence, new_state


    def _kernel_applies(self) -> bool:
        """Whether this configuration runs on the fused kernel (on a CPU, in float)."""
        c = self.config
        return c.implementation in ("auto", "fused") and c.controller == "lstm" \
            and c.num_layers == 1 and c.num_reads <= fused.MAX_READS

    def _kernel_weights(self) -> tuple[Tensor, Tensor]:
        """(w_cat = [W_ih[:, input:], W_hh], b_hh) as the kernel takes them. Made
        afresh every call: a cache keyed on storage and version would miss
        weights changed through ``.data``, and the concatenation is cheap."""
        rnn = self.controller.rnn
        w_cat = torch.cat([rnn.weight_ih_l0[:, self.config.input_size:], rnn.weight_hh_l0], 1)
        return w_cat, rnn.bias_hh_l0


def plain_recurrence(projected, w_cat, w_xi, b_xi, h0, c0, r0, memory, usage, link, precedence,
                     read_weights, write_weights, keep, ln_w, ln_b, xi_context, clip: float,
                     oneplus: bool, options: fused.KernelOptions = fused.NO_OPTIONS):
    """The fused kernel's recurrence (same inputs and outputs) with PyTorch ops,
    differentiable to any order: what gradients of gradients go through.
    ``options``: the `torchdnc.kernels.fused.KernelOptions` the kernel takes;
    an empty link matrix means no temporal links, empty ``ln_w`` no layer norm,
    a non-empty ``xi_context`` [B, T, I] a per-step term of the raw xi."""
    R, W, K = r0.shape[1], r0.shape[2], link.shape[1]
    state = MemoryState(memory, usage, link, precedence, read_weights, write_weights)
    hidden, cell, reads = h0, c0, r0
    hiddens, all_reads = [], []
    strength = "oneplus" if oneplus else "softplus"
    held = {"free_gates": options.fixed_free, "allocation_gates": options.fixed_allocation}
    memory_options = MemoryOptions(options.masking, options.deallocation, options.sharpness,
                                   temporal_links=link.shape[-1] > 0)
    for t in range(projected.shape[1]):
        gates = projected[:, t] + torch.cat([reads.flatten(1), hidden], -1) @ w_cat.T
        new_hidden, new_cell = lstm_cell(gates, cell, clip)
        xi = F.linear(new_hidden, w_xi, b_xi)
        if xi_context.numel():
            xi = xi + xi_context[:, t]
        if ln_w.numel():
            xi = F.layer_norm(xi, xi.shape[-1:], ln_w, ln_b, LAYER_NORM_EPSILON)
        interface, extras = floor_and_hold(
            *split_interface(xi, R, W, K, strength, memory_options), options.mask_min, held)
        new_state, new_reads = memory_step(state, interface, memory_options, extras)
        on = keep[:, t] if keep.numel() else None
        hidden, cell, reads, state = carry_where(on, (new_hidden, new_cell, new_reads, new_state),
                                                 (hidden, cell, reads, state))
        hiddens.append(hidden)
        all_reads.append(reads)
    return (torch.stack(hiddens, 1), torch.stack(all_reads, 1), hidden, cell, *state)
