"""The DNC's external memory: its state, the interface vector and one access step.

`memory_step` applies DESIGN.md section 3 in order (usage, allocation, write,
links, read). `MemoryAccess` is the `nn.Module` that owns the interface layer
xi_t = W_xi h_t + b_xi and steps the memory.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchdnc import addressing
from torchdnc.addressing import STRENGTH_ACTIVATIONS


# LayerNorm's epsilon for the rsDNC's interface normalisation (as its authors' code).
LAYER_NORM_EPSILON = 1e-6


class MemoryState(NamedTuple):
    """The memory at one time step; all zeros at t = 0.

    Attributes:
        memory: M, ``[B, N, W]``.
        usage: u, ``[B, N]``.
        link: temporal link matrices L, one per write head, ``[B, K, N, N]``.
        precedence: precedence weightings p, ``[B, K, N]``.
        read_weights: w^r, ``[B, R, N]``.
        write_weights: w^w, ``[B, K, N]``.
    """

    memory: Tensor
    usage: Tensor
    link: Tensor
    precedence: Tensor
    read_weights: Tensor
    write_weights: Tensor

    @classmethod
    def zeros(
        cls,
        batch_size: int,
        memory_size: int,
        word_size: int,
        num_reads: int,
        num_writes: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        temporal_links: bool = True,
    ) -> "MemoryState":
        """The initial state: every tensor all zeros. Without ``temporal_links``
        (the content-based memory unit) link and precedence are empty,
        ``[B, K, 0, 0]`` and ``[B, K, 0]``: nothing of size N x N is kept."""
        B, N, W, R, K = batch_size, memory_size, word_size, num_reads, num_writes
        L = N if temporal_links else 0

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(shape, device=device, dtype=dtype)

        return cls(zeros(B, N, W), zeros(B, N), zeros(B, K, L, L), zeros(B, K, L),
                   zeros(B, R, N), zeros(B, K, N))

    def detach(self) -> "MemoryState":
        """The same state cut from the autograd graph (truncated backprop)."""
        return MemoryState(*(t.detach() for t in self))


class Interface(NamedTuple):
    """The interface vector xi_t after its nonlinearities (DESIGN.md section 3).

    Attributes:
        read_keys: k^r, ``[B, R, W]``.
        read_strengths: beta^r in [1, inf), ``[B, R]``.
        write_keys: k^w, ``[B, K, W]``.
        write_strengths: beta^w, ``[B, K]``.
        erase: erase vectors e in [0, 1], ``[B, K, W]``.
        write_vectors: v, ``[B, K, W]``.
        free_gates: f in [0, 1], ``[B, R]``.
        allocation_gates: g^a in [0, 1], ``[B, K]``.
        write_gates: g^w in [0, 1], ``[B, K]``.
        read_modes: pi, softmax over ``[backward_1..K, content, forward_1..K]``,
            ``[B, R, 1 + 2K]``; without temporal links the content mode is 1.
    """

    read_keys: Tensor
    read_strengths: Tensor
    write_keys: Tensor
    write_strengths: Tensor
    erase: Tensor
    write_vectors: Tensor
    free_gates: Tensor
    allocation_gates: Tensor
    write_gates: Tensor
    read_modes: Tensor


class InterfaceExtras(NamedTuple):
    """The interface parts that only the successors' options add (None when off):
    masks for masked content addressing and exponents for the sharpness control
    of Csordás & Schmidhuber 2019.

    Attributes:
        read_masks: m^r in [0, 1], ``[B, R, W]`` (``masking``).
        write_masks: m^w in [0, 1], ``[B, K, W]`` (``masking``).
        forward_sharpness: s^f in [1, inf), ``[B, R]`` (``sharpness``).
        backward_sharpness: s^b in [1, inf), ``[B, R]`` (``sharpness``).
    """

    read_masks: Tensor | None = None
    write_masks: Tensor | None = None
    forward_sharpness: Tensor | None = None
    backward_sharpness: Tensor | None = None


class MemoryOptions(NamedTuple):
    """The DNC's successors as switches; all off is the paper's DNC.

    Attributes:
        masking: masked content addressing (Csordás & Schmidhuber 2019, "M").
        deallocation: free gates also erase the freed slots' content ("D").
        sharpness: learned sharpening of the forward / backward weightings ("S").
        temporal_links: the link matrix and the forward / backward read modes;
            False is the rsDNC's content-based memory unit (Franke et al. 2018).
    """

    masking: bool = False
    deallocation: bool = False
    sharpness: bool = False
    temporal_links: bool = True


def interface_size(num_reads: int, word_size: int, num_writes: int = 1,
                   options: MemoryOptions = MemoryOptions()) -> int:
    """Length of the raw interface vector: R W + R + 3 K W + 3 K + R + R (1 + 2K);
    with the options: no read modes without temporal links, + (R + K) W masks,
    + 2 R sharpness exponents."""
    R, W, K = num_reads, word_size, num_writes
    size = R * W + R + 3 * K * W + 3 * K + R
    if options.temporal_links:
        size += R * (1 + 2 * K)
    if options.masking:
        size += (R + K) * W
    if options.sharpness:
        size += 2 * R
    return size


def parse_interface(
    xi: Tensor,
    num_reads: int,
    word_size: int,
    num_writes: int = 1,
    strength_activation: str = "oneplus",
) -> Interface:
    """Split the raw interface vector xi_t and apply its nonlinearities.

    Layout (DESIGN.md section 3): read keys [R, W], read strengths [R], write
    keys [K, W], write strengths [K], erase vectors [K, W], write vectors
    [K, W], free gates [R], allocation gates [K], write gates [K], read modes
    [R, 1 + 2K]. Keys and write vectors pass unchanged; strengths through
    oneplus (or softplus, DeepMind's choice); erase vectors and gates through
    a sigmoid; read modes through a softmax over each head's 1 + 2K modes.
    `split_interface` is the same with the successors' options.

    Args:
        xi: raw interface vectors, ``[..., interface_size]``.
        num_reads: R.
        word_size: W.
        num_writes: K.
        strength_activation: ``"oneplus"`` (the paper) or ``"softplus"``.

    Returns:
        The `Interface`, each part with the leading axes of ``xi``.
    """
    return split_interface(xi, num_reads, word_size, num_writes, strength_activation)[0]


def split_interface(
    xi: Tensor,
    num_reads: int,
    word_size: int,
    num_writes: int = 1,
    strength_activation: str = "oneplus",
    options: MemoryOptions = MemoryOptions(),
) -> tuple[Interface, InterfaceExtras]:
    """Split the raw interface vector xi_t and apply its nonlinearities.

    Layout (DESIGN.md section 3): read keys [R, W], read strengths [R], write
    keys [K, W], write strengths [K], erase vectors [K, W], write vectors
    [K, W], free gates [R], allocation gates [K], write gates [K], read modes
    [R, 1 + 2K]. Keys and write vectors pass unchanged; strengths through
    oneplus (or softplus, DeepMind's choice); erase vectors and gates through
    a sigmoid; read modes through a softmax over each head's 1 + 2K modes.

    The options (`MemoryOptions`) change the layout only at its end: without
    temporal links the read modes are absent (the content mode is 1); then,
    with masking, read masks [R, W] and write masks [K, W] (sigmoid); then,
    with sharpness, forward exponents [R] and backward exponents [R] (oneplus).

    Args:
        xi: raw interface vectors, ``[..., interface_size]``.
        num_reads: R.
        word_size: W.
        num_writes: K.
        strength_activation: ``"oneplus"`` (the paper) or ``"softplus"``.
        options: the successors' switches (`MemoryOptions`); all off by default.

    Returns:
        (the `Interface`, the `InterfaceExtras`), each part with the leading
        axes of ``xi``.
    """
    R, W, K = num_reads, word_size, num_writes
    expected = interface_size(R, W, K, options)
    if xi.shape[-1] != expected:
        raise ValueError(
            f"xi: expected last dimension {expected} (num_reads={R}, word_size={W}, "
            f"num_writes={K}, {options}), got shape {tuple(xi.shape)}"
        )
    if strength_activation == "oneplus":
        strength = addressing.oneplus
    elif strength_activation == "softplus":
        strength = F.softplus
    else:
        raise ValueError(
            f"strength_activation: expected one of {STRENGTH_ACTIVATIONS}, "
            f"got {strength_activation!r}"
        )
    lead = xi.shape[:-1]
    modes = R * (1 + 2 * K) if options.temporal_links else 0
    extra = (R + K) * W * options.masking + 2 * R * options.sharpness
    sizes = [R * W, R, K * W, K, K * W, K * W, R, K, K, modes]
    if extra:
        xi, rest = xi.split([xi.shape[-1] - extra, extra], dim=-1)
    (read_keys, read_strengths, write_keys, write_strengths, erase, write_vectors,
     free_gates, allocation_gates, write_gates, read_modes) = torch.split(xi, sizes, dim=-1)
    if options.temporal_links:
        read_modes = torch.softmax(read_modes.reshape(*lead, R, 1 + 2 * K), dim=-1)
    else:  # content reads only: the content mode is 1
        read_modes = F.one_hot(torch.full((), K, dtype=torch.long, device=xi.device),
                               1 + 2 * K).to(xi.dtype).expand(*lead, R, 1 + 2 * K)
    parts = {}
    if options.masking:
        read_masks, write_masks, rest = rest.split([R * W, K * W, rest.shape[-1] - (R + K) * W], -1)
        parts.update(read_masks=torch.sigmoid(read_masks).reshape(*lead, R, W),
                     write_masks=torch.sigmoid(write_masks).reshape(*lead, K, W))
    if options.sharpness:
        forward, backward = rest.split([R, R], dim=-1)
        parts.update(forward_sharpness=addressing.oneplus(forward),
                     backward_sharpness=addressing.oneplus(backward))
    interface = Interface(
        read_keys=read_keys.reshape(*lead, R, W),
        read_strengths=strength(read_strengths),
        write_keys=write_keys.reshape(*lead, K, W),
        write_strengths=strength(write_strengths),
        erase=torch.sigmoid(erase).reshape(*lead, K, W),
        write_vectors=write_vectors.reshape(*lead, K, W),
        free_gates=torch.sigmoid(free_gates),
        allocation_gates=torch.sigmoid(allocation_gates),
        write_gates=torch.sigmoid(write_gates),
        read_modes=read_modes,
    )
    return interface, InterfaceExtras(**parts)


class StepTrace(NamedTuple):
    """What one memory step computed besides its new state, for plots."""

    allocation: Tensor  # a_t per write head, [B, K, N]
    write_content_weights: Tensor  # c^w_t, [B, K, N]
    read_content_weights: Tensor  # c^r_t, [B, R, N]


def floor_and_hold(interface: Interface, extras: InterfaceExtras, mask_min: float = 0.0,
                   held: dict[str, float] | None = None) -> tuple[Interface, InterfaceExtras]:
    """The masks floored at ``mask_min`` (m <- m (1 - mask_min) + mask_min,
    Csordás & Schmidhuber's floor) and the gates named in ``held``
    ("free_gates", "allocation_gates") held at their values (-1: learned; the
    running-out-of-memory ablations)."""
    if mask_min and extras.read_masks is not None:
        extras = extras._replace(read_masks=extras.read_masks * (1 - mask_min) + mask_min,
                                 write_masks=extras.write_masks * (1 - mask_min) + mask_min)
    fixed = {name: torch.full_like(getattr(interface, name), value)
             for name, value in (held or {}).items() if value != -1}
    if fixed:  # an ablation
        interface = interface._replace(**fixed)
    return interface, extras


def traced_memory_step(
    state: MemoryState, interface: Interface, options: MemoryOptions = MemoryOptions(),
    extras: InterfaceExtras = InterfaceExtras(),
) -> tuple[MemoryState, Tensor, StepTrace]:
    """`memory_step` that also returns the allocation and content weightings."""
    usage = addressing.usage_update(
        state.usage, state.write_weights, interface.free_gates, state.read_weights
    )
    allocation = addressing.allocation_weights(
        usage, interface.allocation_gates * interface.write_gates
    )
    write_content = addressing.content_weights(
        state.memory, interface.write_keys, interface.write_strengths, extras.write_masks
    )
    write_weights = addressing.write_weights(
        allocation, write_content, interface.allocation_gates, interface.write_gates
    )
    retention = (addressing.retention(interface.free_gates, state.read_weights)
                 if options.deallocation else None)
    memory = addressing.erase_and_write(
        state.memory, write_weights, interface.erase, interface.write_vectors, retention
    )
    read_content = addressing.content_weights(
        memory, interface.read_keys, interface.read_strengths, extras.read_masks
    )
    if options.temporal_links:
        link = addressing.link_update(state.link, state.precedence, write_weights)
        precedence = addressing.precedence_update(state.precedence, write_weights)
        forward, backward = addressing.directional_weights(link, state.read_weights)
        if extras.forward_sharpness is not None:
            forward = addressing.sharpen(forward, extras.forward_sharpness)
            backward = addressing.sharpen(backward, extras.backward_sharpness)
        read_weights = addressing.read_weights(
            read_content, forward, backward, interface.read_modes
        )
    else:  # the content-based memory unit: content reads only, no links to keep
        link, precedence, read_weights = state.link, state.precedence, read_content
    read_vectors = addressing.read_vectors(memory, read_weights)
    new_state = MemoryState(memory, usage, link, precedence, read_weights, write_weights)
    return new_state, read_vectors, StepTrace(allocation, write_content, read_content)


def memory_step(state: MemoryState, interface: Interface,
                options: MemoryOptions = MemoryOptions(),
                extras: InterfaceExtras = InterfaceExtras()) -> tuple[MemoryState, Tensor]:
    """One memory access, DESIGN.md section 3 steps 1-8 in order.

    Usage from the previous weights and the free gates; allocation (several
    write heads on a simulated usage); write weights from content on the OLD
    memory; erase then write; links from the PREVIOUS precedence, then the
    precedence; read content on the NEW memory; forward / backward from the
    NEW links and the PREVIOUS read weights; read weights and read vectors.

    With ``options`` (`MemoryOptions`) and their ``extras`` the successors'
    changes apply (docs/semantics.md): masked content weights, de-allocation
    in the erase, sharpened forward / backward weightings, content-only reads.

    Args:
        state: the `MemoryState` at t - 1.
        interface: the parsed `Interface` at t.
        options: the successors' switches; all off is the paper's step.
        extras: the `InterfaceExtras` the options need.

    Returns:
        (state at t, read vectors r_t ``[B, R, W]``).
    """
    new_state, read_vectors, _ = traced_memory_step(state, interface, options, extras)
    return new_state, read_vectors


class MemoryAccess(nn.Module):
    """The DNC's memory with its interface layer.

    Maps the controller output h_t and the previous `MemoryState` to the read
    vectors r_t and the next `MemoryState`. Parameters: ``interface`` (one
    `nn.Linear`, h_t -> xi_t in the DESIGN.md layout) and, with ``layer_norm``,
    ``layer_norm`` (`nn.LayerNorm` over the whole raw xi_t, eps 1e-6, before it
    is split: the rsDNC's normalisation of the memory unit's input).

    Args:
        input_size: size of the controller output h_t.
        memory_size: N.
        word_size: W.
        num_reads: R.
        num_writes: K.
        strength_activation: ``"oneplus"`` or ``"softplus"``.
        options: the successors' switches (`MemoryOptions`).
        layer_norm: normalise xi_t (Franke et al. 2018).
        mask_min: with masking, masks m <- m (1 - mask_min) + mask_min.
        fixed_free_gates, fixed_allocation_gates: an ablation: the gates held at
            this value in [0, 1] (-1: learned, as in the paper).
    """

    def __init__(
        self,
        input_size: int,
        memory_size: int = 16,
        word_size: int = 16,
        num_reads: int = 4,
        num_writes: int = 1,
        strength_activation: str = "oneplus",
        options: MemoryOptions = MemoryOptions(),
        layer_norm: bool = False,
        mask_min: float = 0.0,
        fixed_free_gates: float = -1.0,
        fixed_allocation_gates: float = -1.0,
    ) -> None:
        super().__init__()
        for name, value in [("input_size", input_size), ("memory_size", memory_size),
                            ("word_size", word_size), ("num_reads", num_reads),
                            ("num_writes", num_writes)]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if strength_activation not in STRENGTH_ACTIVATIONS:
            raise ValueError(
                f"strength_activation: expected one of {STRENGTH_ACTIVATIONS}, "
                f"got {strength_activation!r}"
            )
        self.memory_size = memory_size
        self.word_size = word_size
        self.num_reads = num_reads
        self.num_writes = num_writes
        self.strength_activation = strength_activation
        self.options = options
        self.mask_min = mask_min
        self.fixed_gates = {"free_gates": fixed_free_gates, "allocation_gates": fixed_allocation_gates}
        size = interface_size(num_reads, word_size, num_writes, options)
        self.interface = nn.Linear(input_size, size)
        if layer_norm:
            self.layer_norm = nn.LayerNorm(size, eps=LAYER_NORM_EPSILON)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> MemoryState:
        """All-zero `MemoryState` on the layer's device and dtype by default."""
        weight = self.interface.weight
        return MemoryState.zeros(
            batch_size, self.memory_size, self.word_size, self.num_reads, self.num_writes,
            device=weight.device if device is None else device,
            dtype=weight.dtype if dtype is None else dtype,
            temporal_links=self.options.temporal_links,
        )

    def parse(self, controller_output: Tensor) -> Interface:
        """xi_t = W_xi h_t + b_xi, split and activated (see `parse_all`)."""
        return self.parse_all(controller_output)[0]

    def parse_all(self, controller_output: Tensor) -> tuple[Interface, InterfaceExtras]:
        """xi_t = W_xi h_t + b_xi (layer-normalised with ``layer_norm``), split and
        activated: the `Interface` and the options' `InterfaceExtras`."""
        xi = self.interface(controller_output)
        if hasattr(self, "layer_norm"):
            xi = self.layer_norm(xi)
        interface, extras = split_interface(xi, self.num_reads, self.word_size, self.num_writes,
                                            self.strength_activation, self.options)
        return floor_and_hold(interface, extras, self.mask_min, getattr(self, "fixed_gates", {}))

    def forward(self, controller_output: Tensor, state: MemoryState) -> tuple[Tensor, MemoryState]:
        """(h_t ``[B, input_size]``, state at t-1) -> (r_t ``[B, R, W]``, state at t)."""
        interface, extras = self.parse_all(controller_output)
        new_state, read_vectors = memory_step(state, interface, self.options, extras)
        return read_vectors, new_state
