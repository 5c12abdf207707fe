"""Controllers: the networks that read [x_t; r_{t-1}] and emit h_t.

Each controller owns standard PyTorch parameters (an `nn.LSTM`, an `nn.GRU`
or `nn.Linear` layers) but is stepped one time step at a time by the DNC, in
two parts, so that the input's share of the first layer is one matrix product
over the whole sequence instead of one per step:

    projected = controller.project_inputs(x)                 # [B, T, P]
    h_t, state = controller.step(projected[:, t], reads, state)

``reads`` is r_{t-1} flattened head-major, ``[B, R * W]``. The state is a
NamedTuple of batch-first tensors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONTROLLERS = ("lstm", "gru", "feedforward")


class LSTMState(NamedTuple):
    """LSTM controller state: hidden h and cell c, each ``[B, layers, hidden]``."""

    hidden: Tensor
    cell: Tensor


class GRUState(NamedTuple):
    """GRU controller state: hidden h, ``[B, layers, hidden]``."""

    hidden: Tensor


class FeedForwardState(NamedTuple):
    """A feed-forward controller carries nothing."""


class _RecurrentController(nn.Module):
    """Shared plumbing of the LSTM and GRU controllers (``self.rnn``)."""

    rnn: nn.LSTM | nn.GRU
    gates: int

    def __init__(self, input_size: int, read_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.read_size = read_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers

    def _state_tensor(self, batch_size: int, device, dtype) -> Tensor:
        weight = self.rnn.weight_hh_l0
        return torch.zeros(
            batch_size, self.num_layers, self.hidden_size,
            device=weight.device if device is None else device,
            dtype=weight.dtype if dtype is None else dtype,
        )

    def _layer(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        rnn = self.rnn
        return (getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}"),
                getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}"))

    def project_inputs(self, x: Tensor) -> Tensor:
        """The x_t part of the first layer's input gates, for every step."""
        weight_ih, _, bias_ih, _ = self._layer(0)
        return F.linear(x, weight_ih[:, : self.input_size], bias_ih)

    def _input_gates(self, layer: int, projected: Tensor, below: Tensor) -> Tensor:
        """W_ih [x; r] + b_ih for layer 0 (x part precomputed), W_ih h + b_ih above."""
        weight_ih, _, bias_ih, _ = self._layer(layer)
        if layer == 0:
            return projected + F.linear(below, weight_ih[:, self.input_size :])
        return F.linear(below, weight_ih, bias_ih)


class LSTMController(_RecurrentController):
    """An `nn.LSTM` (``self.rnn``) stepped by hand, PyTorch gate order i, f, g, o.

    Parameters are those of ``nn.LSTM(input_size + read_size, hidden_size,
    num_layers)``: ``rnn.weight_ih_l{k}``, ``rnn.weight_hh_l{k}``,
    ``rnn.bias_ih_l{k}``, ``rnn.bias_hh_l{k}``. Layer 0 sees [x_t; r_{t-1}];
    the output h_t is the top layer's hidden state.
    """

    def __init__(self, input_size: int, read_size: int, hidden_size: int, num_layers: int = 1,
                 forget_bias: float = 1.0) -> None:
        super().__init__(input_size, read_size, hidden_size, num_layers)
        self.rnn = nn.LSTM(input_size + read_size, hidden_size, num_layers)
        # Initialise the forget gates open, as DeepMind's LSTM does (it adds 1 to
        # the forget gate's input): b_ih[f] = forget_bias, b_hh[f] = 0. Only the
        # initial values change; the equations are PyTorch's.
        with torch.no_grad():
            for layer in range(num_layers):
                _, _, bias_ih, bias_hh = self._layer(layer)
                bias_ih[hidden_size : 2 * hidden_size] = forget_bias
                bias_hh[hidden_size : 2 * hidden_size] = 0.0

    def initial_state(self, batch_size: int, device=None, dtype=None) -> LSTMState:
        zeros = self._state_tensor(batch_size, device, dtype)
        return LSTMState(zeros, zeros.clone())

    def step(self, projected: Tensor, reads: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        below = reads
        hiddens, cells = [], []
        for layer in range(self.num_layers):
            _, weight_hh, _, bias_hh = self._layer(layer)
            gates = self._input_gates(layer, projected, below) + F.linear(
                state.hidden[:, layer], weight_hh, bias_hh
            )
            input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=-1)
            cell = (torch.sigmoid(forget_gate) * state.cell[:, layer]
                    + torch.sigmoid(input_gate) * torch.tanh(candidate))
            below = torch.sigmoid(output_gate) * torch.tanh(cell)
            hiddens.append(below)
            cells.append(cell)
        return below, LSTMState(torch.stack(hiddens, 1), torch.stack(cells, 1))


class GRUController(_RecurrentController):
    """An `nn.GRU` (``self.rnn``) stepped by hand, PyTorch gate order r, z, n.

    h' = (1 - z) n + z h with n = tanh(W_in x + b_in + r (W_hn h + b_hn)).
    """

    def __init__(self, input_size: int, read_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__(input_size, read_size, hidden_size, num_layers)
        self.rnn = nn.GRU(input_size + read_size, hidden_size, num_layers)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> GRUState:
        return GRUState(self._state_tensor(batch_size, device, dtype))

    def step(self, projected: Tensor, reads: Tensor, state: GRUState) -> tuple[Tensor, GRUState]:
        below = reads
        hiddens = []
        for layer in range(self.num_layers):
            _, weight_hh, _, bias_hh = self._layer(layer)
            hidden = state.hidden[:, layer]
            input_r, input_z, input_n = self._input_gates(layer, projected, below).chunk(3, -1)
            hidden_r, hidden_z, hidden_n = F.linear(hidden, weight_hh, bias_hh).chunk(3, -1)
            reset = torch.sigmoid(input_r + hidden_r)
            update = torch.sigmoid(input_z + hidden_z)
            candidate = torch.tanh(input_n + reset * hidden_n)
            below = (1 - update) * candidate + update * hidden
            hiddens.append(below)
        return below, GRUState(torch.stack(hiddens, 1))


class FeedForwardController(nn.Module):
    """``num_layers`` tanh layers (``self.layers``, `nn.Linear`) on [x_t; r_{t-1}]."""

    def __init__(self, input_size: int, read_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        self.input_size = input_size
        self.read_size = read_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        sizes = [input_size + read_size] + [hidden_size] * num_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def initial_state(self, batch_size: int, device=None, dtype=None) -> FeedForwardState:
        return FeedForwardState()

    def project_inputs(self, x: Tensor) -> Tensor:
        first = self.layers[0]
        return F.linear(x, first.weight[:, : self.input_size], first.bias)

    def step(self, projected: Tensor, reads: Tensor, state: FeedForwardState) -> tuple[Tensor, FeedForwardState]:
        first = self.layers[0]
        hidden = torch.tanh(projected + F.linear(reads, first.weight[:, self.input_size :]))
        for layer in self.layers[1:]:
            hidden = torch.tanh(layer(hidden))
        return hidden, state


def make_controller(name: str, input_size: int, read_size: int, hidden_size: int, num_layers: int) -> nn.Module:
    """Build the controller called ``name`` (one of `CONTROLLERS`)."""
    classes = {"lstm": LSTMController, "gru": GRUController, "feedforward": FeedForwardController}
    if name not in classes:
        raise ValueError(f"controller: expected one of {CONTROLLERS}, got {name!r}")
    return classes[name](input_size, read_size, hidden_size, num_layers)
