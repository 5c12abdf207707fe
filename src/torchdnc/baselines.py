"""Baselines trained by the same loop as the DNC, with the same call signature."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class LSTMBaselineState(NamedTuple):
    hidden: Tensor  # [B, layers, hidden]
    cell: Tensor  # [B, layers, hidden]

    def detach(self) -> "LSTMBaselineState":
        return LSTMBaselineState(self.hidden.detach(), self.cell.detach())


class LSTMBaseline(nn.Module):
    """A fused `nn.LSTM` and a linear read-out, called like `torchdnc.DNC`.

    ``y, state = model(x, state=None, mask=None)`` with batch-first tensors.
    Padding only at the end of a sequence (the usual case) runs the fused
    kernel; padding anywhere else steps the LSTM so that the state is carried
    through padded steps unchanged, as the DNC does.
    """

    def __init__(self, input_size: int, output_size: int, hidden_size: int, num_layers: int = 1,
                 clip: float = 0.0) -> None:
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.output = nn.Linear(hidden_size, output_size)
        self.clip = clip
        with torch.no_grad():  # forget gates start open, as in the DNC's controller
            for layer in range(num_layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[hidden_size : 2 * hidden_size] = 1.0
                getattr(self.rnn, f"bias_hh_l{layer}")[hidden_size : 2 * hidden_size] = 0.0

    def _torch_state(self, state: LSTMBaselineState | None):
        if state is None:
            return None
        return state.hidden.transpose(0, 1).contiguous(), state.cell.transpose(0, 1).contiguous()

    def forward(self, x: Tensor, state: LSTMBaselineState | None = None,
                mask: Tensor | None = None) -> tuple[Tensor, LSTMBaselineState]:
        if mask is None:
            hidden, (h, c) = self.rnn(x, self._torch_state(state))
            return self._read_out(hidden, None), LSTMBaselineState(h.transpose(0, 1), c.transpose(0, 1))
        keep = mask.to(torch.bool)
        lengths = keep.sum(1)
        prefix = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        if not torch.equal(prefix, keep) or int(lengths.min()) == 0:
            return self._stepped(x, state, keep)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        hidden, (h, c) = self.rnn(packed, self._torch_state(state))
        hidden, _ = nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True,
                                                     total_length=x.shape[1])
        return self._read_out(hidden, keep), LSTMBaselineState(h.transpose(0, 1), c.transpose(0, 1))

    def _read_out(self, hidden: Tensor, keep: Tensor | None) -> Tensor:
        y = self.output(hidden)
        if self.clip:
            y = y.clamp(-self.clip, self.clip)
        if keep is not None:
            y = y * keep.unsqueeze(-1).to(y.dtype)
        return y

    def _stepped(self, x: Tensor, state, keep: Tensor):
        if state is None:
            zeros = x.new_zeros(self.rnn.num_layers, x.shape[0], self.rnn.hidden_size)
            torch_state = (zeros, zeros)
        else:
            torch_state = self._torch_state(state)
        outputs = []
        for t in range(x.shape[1]):
            out, new = self.rnn(x[:, t : t + 1], torch_state)
            k = keep[:, t].view(1, -1, 1)
            torch_state = tuple(torch.where(k, n, o) for n, o in zip(new, torch_state))
            outputs.append(out[:, 0])
        h, c = torch_state
        y = self._read_out(torch.stack(outputs, 1), keep)
        return y, LSTMBaselineState(h.transpose(0, 1), c.transpose(0, 1))


def lstm_hidden_for_parameters(input_size: int, output_size: int, parameters: int,
                               num_layers: int = 1) -> int:
    """The LSTM hidden size whose baseline has about ``parameters`` parameters."""
    best, best_gap = 1, None
    for hidden in range(1, 4096):
        count = sum(p.numel() for p in _shapes(input_size, output_size, hidden, num_layers))
        gap = abs(count - parameters)
        if best_gap is None or gap < best_gap:
            best, best_gap = hidden, gap
        if count > parameters:
            break
    return best


def _shapes(input_size: int, output_size: int, hidden: int, num_layers: int):
    for layer in range(num_layers):
        inputs = input_size if layer == 0 else hidden
        yield torch.empty(4 * hidden, inputs, device="meta")
        yield torch.empty(4 * hidden, hidden, device="meta")
        yield torch.empty(8 * hidden, device="meta")
    yield torch.empty(output_size, hidden + 1, device="meta")
