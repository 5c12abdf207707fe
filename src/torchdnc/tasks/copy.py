"""Copy: store a sequence of bit vectors, then play it back.

As in the Neural Turing Machine paper (Graves et al. 2014): random 8-bit
vectors, lengths 1-20 in training, a delimiter channel, the copy is produced
after the delimiter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from torchdnc.tasks.base import (Batch, BitTask, check_positive, check_range, linear_levels,
                                 random_bits)


def random_lengths(generator: torch.Generator, batch_size: int, low: int, high: int) -> Tensor:
    return torch.randint(low, high + 1, (batch_size,), generator=generator)


def random_patterns(generator: torch.Generator, lengths: Tensor, num_bits: int) -> Tensor:
    """Random bits ``[B, max(lengths), num_bits]``, zero past each length."""
    longest = int(lengths.max())
    bits = random_bits(generator, len(lengths), longest, num_bits)
    return bits * (torch.arange(longest) < lengths[:, None]).unsqueeze(-1)


@dataclass
class CopyTask(BitTask):
    """Copy: the sequence, a delimiter, then the same sequence as output.

    Input channels: ``num_bits`` data bits and a delimiter. Output: the bits.
    A sequence of length L takes 2 L + 1 steps; the last L are scored.
    """

    name: ClassVar[str] = "copy"
    summary: ClassVar[str] = "copy a sequence of random bit vectors (NTM)"

    num_bits: int = 8
    min_length: int = 1
    max_length: int = 20
    curriculum_start: int = 5  # maximum length at the first level
    curriculum_levels: int = 4

    def __post_init__(self) -> None:
        check_positive("copy", num_bits=self.num_bits, min_length=self.min_length,
                       max_length=self.max_length, curriculum_start=self.curriculum_start,
                       curriculum_levels=self.curriculum_levels)
        check_range("copy", "min_length", self.min_length, "max_length", self.max_length)

    @property
    def input_size(self) -> int:
        return self.num_bits + 1

    @property
    def output_size(self) -> int:
        return self.num_bits

    def levels(self) -> list[dict[str, Any]]:
        start = max(self.min_length, min(self.curriculum_start, self.max_length))
        return [{"min_length": self.min_length, "max_length": m}
                for m in linear_levels(start, self.max_length, self.curriculum_levels)]

    def generalisation(self) -> dict[str, dict[str, Any]]:
        return {f"length {k * self.max_length}": {"min_length": k * self.max_length,
                                                  "max_length": k * self.max_length}
                for k in (2, 4)}

    def sample(self, batch_size: int, generator: torch.Generator, min_length: int = 1,
               max_length: int = 20) -> Batch:
        lengths = random_lengths(generator, batch_size, min_length, max_length)
        data = random_patterns(generator, lengths, self.num_bits)
        longest = data.shape[1]
        steps = 2 * longest + 1
        inputs = torch.zeros(batch_size, steps, self.input_size)
        inputs[:, :longest, : self.num_bits] = data
        rows = torch.arange(batch_size)
        inputs[rows, lengths, self.num_bits] = 1.0
        # Output step t shows data step t - L - 1 where that lies in [0, L).
        source = torch.arange(steps)[None, :] - lengths[:, None] - 1
        scored = (source >= 0) & (source < lengths[:, None])
        gathered = data.gather(1, source.clamp(0, longest - 1).unsqueeze(-1).expand(-1, -1, self.num_bits))
        targets = gathered * scored.unsqueeze(-1)
        return Batch(inputs, targets, scored.float(), info={"lengths": lengths})
