"""Repeat copy: store a sequence of bit vectors, then play it back several times.

As in DeepMind's DNC code: a start marker, the pattern, then the number of
repeats as a normalised input; the pattern is played back that many times,
followed by an end marker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from torchdnc.tasks.base import Batch, BitTask, check_positive, check_range, linear_levels
from torchdnc.tasks.copy import random_lengths, random_patterns


@dataclass
class RepeatCopyTask(BitTask):
    """Repeat copy (DeepMind's formulation).

    Input channels: ``num_bits`` data bits, a start marker and the number of
    repeats divided by ``norm_max``. Output channels: the bits and an end
    marker. Layout: start marker, L pattern steps, one step with the repeat
    count, then L * repeats output steps and one end-marker step (scored).
    """

    name: ClassVar[str] = "repeat_copy"
    summary: ClassVar[str] = "copy a bit pattern a given number of times (DeepMind)"

    num_bits: int = 8
    min_length: int = 1
    max_length: int = 10
    min_repeats: int = 1
    max_repeats: int = 5
    norm_max: int = 10
    curriculum_levels: int = 4

    def __post_init__(self) -> None:
        check_positive("repeat_copy", num_bits=self.num_bits, min_length=self.min_length,
                       max_length=self.max_length, min_repeats=self.min_repeats,
                       max_repeats=self.max_repeats, norm_max=self.norm_max,
                       curriculum_levels=self.curriculum_levels)
        check_range("repeat_copy", "min_length", self.min_length, "max_length", self.max_length)
        check_range("repeat_copy", "min_repeats", self.min_repeats, "max_repeats", self.max_repeats)

    @property
    def input_size(self) -> int:
        return self.num_bits + 2

    @property
    def output_size(self) -> int:
        return self.num_bits + 1

    def levels(self) -> list[dict[str, Any]]:
        count = self.curriculum_levels
        lengths = linear_levels(min(self.max_length, 2), self.max_length, count)
        repeats = linear_levels(min(self.max_repeats, 2), self.max_repeats, count)
        count = max(len(lengths), len(repeats))
        pick = lambda values, i: values[min(len(values) - 1, i * len(values) // count)]  # noqa: E731
        return [{"min_length": self.min_length, "max_length": pick(lengths, i),
                 "min_repeats": self.min_repeats, "max_repeats": pick(repeats, i)}
                for i in range(count)]

    def generalisation(self) -> dict[str, dict[str, Any]]:
        return {"length x2": {"min_length": 2 * self.max_length, "max_length": 2 * self.max_length,
                              "min_repeats": self.max_repeats, "max_repeats": self.max_repeats}}

    def sample(self, batch_size: int, generator: torch.Generator, min_length: int = 1,
               max_length: int = 10, min_repeats: int = 1, max_repeats: int = 5) -> Batch:
        lengths = random_lengths(generator, batch_size, min_length, max_length)
        repeats = random_lengths(generator, batch_size, min_repeats, max_repeats)
        data = random_patterns(generator, lengths, self.num_bits)
        longest = data.shape[1]
        ends = lengths + 2 + lengths * repeats  # the end-marker step
        steps = int(ends.max()) + 1
        inputs = torch.zeros(batch_size, steps, self.input_size)
        targets = torch.zeros(batch_size, steps, self.output_size)
        rows = torch.arange(batch_size)
        inputs[:, 0, self.num_bits] = 1.0  # start marker
        inputs[:, 1 : longest + 1, : self.num_bits] = data
        inputs[rows, lengths + 1, self.num_bits + 1] = repeats.float() / self.norm_max
        time = torch.arange(steps)[None, :]
        first = lengths[:, None] + 2
        offset = time - first
        in_copy = (offset >= 0) & (time < ends[:, None])
        source = torch.remainder(offset.clamp(min=0), lengths[:, None])
        gathered = data.gather(1, source.clamp(max=longest - 1).unsqueeze(-1).expand(-1, -1, self.num_bits))
        targets[..., : self.num_bits] = gathered * in_copy.unsqueeze(-1)
        targets[rows, ends, self.num_bits] = 1.0
        scored = (time >= first) & (time <= ends[:, None])
        return Batch(inputs, targets, scored.float(),
                     info={"lengths": lengths, "repeats": repeats})
