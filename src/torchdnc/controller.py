"""Controllers: the networks that read chi_t = [x_t; r_{t-1}] and emit h_t.

Each controller owns standard PyTorch parameters (`nn.LSTM`, `nn.LSTMCell`,
`nn.GRU` or `nn.Linear` layers) but is stepped one time step at a time by the
DNC, in two parts, so that the input's share of the gates is one matrix
product over the whole sequence instead of one per step:

    projected = controller.project_inputs(x)                       # [B, T, P]
    h_t, state = controller.step(projected[:, t], reads, state, clip)

``reads`` is r_{t-1} flattened head-major, ``[B, R * W]``; ``clip`` clips
every layer's output (and an LSTM's cell) to +-clip right after the layer
(0: no clipping). h_t has ``controller.output_size`` features (L * hidden for
the paper's deep LSTM, hidden otherwise). The state is a NamedTuple of
batch-first tensors.

Controllers by ``(controller, num_layers)``: ("lstm", 1) `LSTMController`;
("lstm", L > 1) `DeepLSTMController`, the paper's; ("gru", L) `GRUController`,
a plain stack; ("feedforward", L) `FeedForwardController`.
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

    @property
    def output_size(self) -> int:
        return self.hidden_size

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
    """A one-layer `nn.LSTM` (``self.rnn``) stepped by hand, PyTorch gate order i, f, g, o.

    Parameters are those of ``nn.LSTM(input_size + read_size, hidden_size)``:
    ``rnn.weight_ih_l0``, ``rnn.weight_hh_l0``, ``rnn.bias_ih_l0``,
    ``rnn.bias_hh_l0``. Its input is chi_t = [x_t; r_{t-1}]. For more than one
    layer see `DeepLSTMController` (the paper's deep LSTM).
    """

    def __init__(self, input_size: int, read_size: int, hidden_size: int, num_layers: int = 1,
                 forget_bias: float = 1.0) -> None:
        if num_layers != 1:
            raise ValueError(f"num_layers: LSTMController has one layer, got {num_layers} "
                             "(DeepLSTMController is the paper's deep LSTM)")
        super().__init__(input_size, read_size, hidden_size, num_layers)
        self.rnn = nn.LSTM(input_size + read_size, hidden_size, num_layers)
        # Initialise the forget gates open, as DeepMind's LSTM does (it adds 1 to
        # the forget gate's input): b_ih[f] = forget_bias, b_hh[f] = 0. Only the
        # initial values change; the equations are PyTorch's.
        _open_forget_gate(self.rnn.bias_ih_l0, self.rnn.bias_hh_l0, hidden_size, forget_bias)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> LSTMState:
        zeros = self._state_tensor(batch_size, device, dtype)
        return LSTMState(zeros, zeros.clone())

    def step(self, projected: Tensor, reads: Tensor, state: LSTMState,
             clip: float = 0.0) -> tuple[Tensor, LSTMState]:
        _, weight_hh, _, bias_hh = self._layer(0)
        gates = self._input_gates(0, projected, reads) + F.linear(state.hidden[:, 0], weight_hh, bias_hh)
        hidden, cell = lstm_cell(gates, state.cell[:, 0], clip)
        return hidden, LSTMState(hidden.unsqueeze(1), cell.unsqueeze(1))


class DeepLSTMController(nn.Module):
    """The paper's deep LSTM controller (Methods, "Controller network").

    With chi_t = [x_t; r_{t-1}], layer l's input is [chi_t; h_t^{l-1}] (layer 1
    sees chi_t alone) beside its own h_{t-1}^l, and the controller output is
    h_t = [h_t^1; ...; h_t^L] (layer order), ``[B, L * hidden]``. Each layer
    is an `nn.LSTMCell` (``self.cells[l]``, PyTorch gate order i, f, g, o, both
    biases). With ``clip`` each layer's h and c are clipped right after its
    cell, and the clipped h is what the layer above, the output and the next
    step see (as the one-layer controller).
    """

    def __init__(self, input_size: int, read_size: int, hidden_size: int, num_layers: int = 2,
                 forget_bias: float = 1.0) -> None:
        super().__init__()
        self.input_size = input_size
        self.read_size = read_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        chi = input_size + read_size
        self.cells = nn.ModuleList(
            nn.LSTMCell(chi + (hidden_size if layer else 0), hidden_size) for layer in range(num_layers))
        for cell in self.cells:
            _open_forget_gate(cell.bias_ih, cell.bias_hh, hidden_size, forget_bias)

    @property
    def output_size(self) -> int:
        return self.num_layers * self.hidden_size

    def initial_state(self, batch_size: int, device=None, dtype=None) -> LSTMState:
        weight = self.cells[0].weight_hh
        zeros = torch.zeros(batch_size, self.num_layers, self.hidden_size,
                            device=weight.device if device is None else device,
                            dtype=weight.dtype if dtype is None else dtype)
        return LSTMState(zeros, zeros.clone())

    def project_inputs(self, x: Tensor) -> Tensor:
        """The x_t part of every layer's input gates (plus b_ih), ``[B, T, L * 4H]``."""
        weight = torch.cat([cell.weight_ih[:, : self.input_size] for cell in self.cells])
        bias = torch.cat([cell.bias_ih for cell in self.cells])
        return F.linear(x, weight, bias)

    def step(self, projected: Tensor, reads: Tensor, state: LSTMState,
             clip: float = 0.0) -> tuple[Tensor, LSTMState]:
        I, R, G = self.input_size, self.read_size, 4 * self.hidden_size
        below = None
        hiddens, cells = [], []
        for layer, cell in enumerate(self.cells):
            gates = projected[:, layer * G : (layer + 1) * G] + F.linear(reads, cell.weight_ih[:, I : I + R])
            if below is not None:
                gates = gates + F.linear(below, cell.weight_ih[:, I + R :])
            gates = gates + F.linear(state.hidden[:, layer], cell.weight_hh, cell.bias_hh)
            below, new_cell = lstm_cell(gates, state.cell[:, layer], clip)
            hiddens.append(below)
            cells.append(new_cell)
        return torch.cat(hiddens, -1), LSTMState(torch.stack(hiddens, 1), torch.stack(cells, 1))


def _open_forget_gate(bias_ih: Tensor, bias_hh: Tensor, hidden_size: int, forget_bias: float) -> None:
    with torch.no_grad():
        bias_ih[hidden_size : 2 * hidden_size] = forget_bias
        bias_hh[hidden_size : 2 * hidden_size] = 0.0


def lstm_cell(gates: Tensor, cell: Tensor, clip: float) -> tuple[Tensor, Tensor]:
    """h, c from the summed gate inputs (order i, f, g, o) and c_{t-1}.

    h is computed from the unclipped c; then both are clipped to +-clip (0: no clip).
    """
    input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=-1)
    cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
    hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
    if clip:
        hidden, cell = hidden.clamp(-clip, clip), cell.clamp(-clip, clip)
    return hidden, cell


class GRUController(_RecurrentController):
    """An `nn.GRU` (``self.rnn``) stepped by hand, PyTorch gate order r, z, n.

    h' = (1 - z) n + z h with n = tanh(W_in x + b_in + r (W_hn h + b_hn)).
    Layers are stacked as in `nn.GRU` (layer 0 sees [x_t; r_{t-1}], the output
    is the top layer's h).
    """

    def __init__(self, input_size: int, read_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__(input_size, read_size, hidden_size, num_layers)
        self.rnn = nn.GRU(input_size + read_size, hidden_size, num_layers)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> GRUState:
        return GRUState(self._state_tensor(batch_size, device, dtype))

    def step(self, projected: Tensor, reads: Tensor, state: GRUState,
             clip: float = 0.0) -> tuple[Tensor, GRUState]:
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
            if clip:
                below = below.clamp(-clip, clip)
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

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def initial_state(self, batch_size: int, device=None, dtype=None) -> FeedForwardState:
        return FeedForwardState()

    def project_inputs(self, x: Tensor) -> Tensor:
        first = self.layers[0]
        return F.linear(x, first.weight[:, : self.input_size], first.bias)

    def step(self, projected: Tensor, reads: Tensor, state: FeedForwardState,
             clip: float = 0.0) -> tuple[Tensor, FeedForwardState]:
        first = self.layers[0]
        hidden = torch.tanh(projected + F.linear(reads, first.weight[:, self.input_size :]))
        for layer in self.layers[1:]:
            hidden = torch.tanh(layer(hidden))
        if clip:
            hidden = hidden.clamp(-clip, clip)
        return hidden, state


def make_controller(name: str, input_size: int, read_size: int, hidden_size: int,
                    num_layers: int) -> nn.Module:
    """Build the controller called ``name`` (one of `CONTROLLERS`) with ``num_layers`` layers."""
    if name == "lstm":
        cls = LSTMController if num_layers == 1 else DeepLSTMController
    elif name == "gru":
        cls = GRUController
    elif name == "feedforward":
        cls = FeedForwardController
    else:
        raise ValueError(f"controller: expected one of {CONTROLLERS}, got {name!r}")
    return cls(input_size, read_size, hidden_size, num_layers)
