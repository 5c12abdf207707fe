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
    ) -> "MemoryState":
        """The initial state: every tensor all zeros."""
        B, N, W, R, K = batch_size, memory_size, word_size, num_reads, num_writes

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(shape, device=device, dtype=dtype)

        return cls(zeros(B, N, W), zeros(B, N), zeros(B, K, N, N), zeros(B, K, N),
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
            ``[B, R, 1 + 2K]``.
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


def interface_size(num_reads: int, word_size: int, num_writes: int = 1) -> int:
    """Length of the raw interface vector: R W + R + 3 K W + 3 K + R + R (1 + 2K)."""
    R, W, K = num_reads, word_size, num_writes
    return R * W + R + 3 * K * W + 3 * K + R + R * (1 + 2 * K)


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

    Args:
        xi: raw interface vectors, ``[..., interface_size]``.
        num_reads: R.
        word_size: W.
        num_writes: K.
        strength_activation: ``"oneplus"`` (the paper) or ``"softplus"``.

    Returns:
        The `Interface`, each part with the leading axes of ``xi``.
    """
    R, W, K = num_reads, word_size, num_writes
    expected = interface_size(R, W, K)
    if xi.shape[-1] != expected:
        raise ValueError(
            f"xi: expected last dimension {expected} (num_reads={R}, word_size={W}, "
            f"num_writes={K}), got shape {tuple(xi.shape)}"
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
    sizes = [R * W, R, K * W, K, K * W, K * W, R, K, K, R * (1 + 2 * K)]
    (read_keys, read_strengths, write_keys, write_strengths, erase, write_vectors,
     free_gates, allocation_gates, write_gates, read_modes) = torch.split(xi, sizes, dim=-1)
    return Interface(
        read_keys=read_keys.reshape(*lead, R, W),
        read_strengths=strength(read_strengths),
        write_keys=write_keys.reshape(*lead, K, W),
        write_strengths=strength(write_strengths),
        erase=torch.sigmoid(erase).reshape(*lead, K, W),
        write_vectors=write_vectors.reshape(*lead, K, W),
        free_gates=torch.sigmoid(free_gates),
        allocation_gates=torch.sigmoid(allocation_gates),
        write_gates=torch.sigmoid(write_gates),
        read_modes=torch.softmax(read_modes.reshape(*lead, R, 1 + 2 * K), dim=-1),
    )


class StepTrace(NamedTuple):
    """What one memory step computed besides its new state, for plots."""

    allocation: Tensor  # a_t per write head, [B, K, N]
    write_content_weights: Tensor  # c^w_t, [B, K, N]
    read_content_weights: Tensor  # c^r_t, [B, R, N]


def traced_memory_step(
    state: MemoryState, interface: Interface
) -> tuple[MemoryState, Tensor, StepTrace]:
    """`memory_step` that also returns the allocation and content weightings."""
    usage = addressing.usage_update(
        state.usage, state.write_weights, interface.free_gates, state.read_weights
    )
    allocation = addressing.allocation_weights(
        usage, interface.allocation_gates * interface.write_gates
    )
    write_content = addressing.content_weights(
        state.memory, interface.write_keys, interface.write_strengths
    )
    write_weights = addressing.write_weights(
        allocation, write_content, interface.allocation_gates, interface.write_gates
    )
    memory = addressing.erase_and_write(
        state.memory, write_weights, interface.erase, interface.write_vectors
    )
    link = addressing.link_update(state.link, state.precedence, write_weights)
    precedence = addressing.precedence_update(state.precedence, write_weights)
    read_content = addressing.content_weights(
        memory, interface.read_keys, interface.read_strengths
    )
    forward, backward = addressing.directional_weights(link, state.read_weights)
    read_weights = addressing.read_weights(
        read_content, forward, backward, interface.read_modes
    )
    read_vectors = addressing.read_vectors(memory, read_weights)
    new_state = MemoryState(memory, usage, link, precedence, read_weights, write_weights)
    return new_state, read_vectors, StepTrace(allocation, write_content, read_content)


def memory_step(state: MemoryState, interface: Interface) -> tuple[MemoryState, Tensor]:
    """One memory access, DESIGN.md section 3 steps 1-8 in order.

    Usage from the previous weights and the free gates; allocation (several
    write heads on a simulated usage); write weights from content on the OLD
    memory; erase then write; links from the PREVIOUS precedence, then the
    precedence; read content on the NEW memory; forward / backward from the
    NEW links and the PREVIOUS read weights; read weights and read vectors.

    Args:
        state: the `MemoryState` at t - 1.
        interface: the parsed `Interface` at t.

    Returns:
        (state at t, read vectors r_t ``[B, R, W]``).
    """
    new_state, read_vectors, _ = traced_memory_step(state, interface)
    return new_state, read_vectors


class MemoryAccess(nn.Module):
    """The DNC's memory with its interface layer.

    Maps the controller output h_t and the previous `MemoryState` to the read
    vectors r_t and the next `MemoryState`. Parameters: ``interface`` (one
    `nn.Linear`, h_t -> xi_t in the DESIGN.md layout).

    Args:
        input_size: size of the controller output h_t.
        memory_size: N.
        word_size: W.
        num_reads: R.
        num_writes: K.
        strength_activation: ``"oneplus"`` or ``"softplus"``.
    """

    def __init__(
        self,
        input_size: int,
        memory_size: int = 16,
        word_size: int = 16,
        num_reads: int = 4,
        num_writes: int = 1,
        strength_activation: str = "oneplus",
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
        self.interface = nn.Linear(input_size, interface_size(num_reads, word_size, num_writes))

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
        )

    def parse(self, controller_output: Tensor) -> Interface:
        """xi_t = W_xi h_t + b_xi, split and activated."""
        return parse_interface(
            self.interface(controller_output), self.num_reads, self.word_size,
            self.num_writes, self.strength_activation,
        )

    def forward(self, controller_output: Tensor, state: MemoryState) -> tuple[Tensor, MemoryState]:
        """(h_t ``[B, input_size]``, state at t-1) -> (r_t ``[B, R, W]``, state at t)."""
        new_state, read_vectors = memory_step(state, self.parse(controller_output))
        return read_vectors, new_state
