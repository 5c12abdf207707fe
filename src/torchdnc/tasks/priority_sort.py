"""Priority sort, as in the Neural Turing Machine paper (Graves et al. 2014)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from torchdnc.tasks.base import (Batch, BitTask, check_positive, check_range, linear_levels,
                                 random_bits)


@dataclass
class PrioritySortTask(BitTask):
    """Priority sort (NTM): ``num_inputs`` random vectors, each with a scalar
    priority drawn uniformly from [-1, 1]; after a delimiter, output the
    ``num_outputs`` vectors of highest priority, highest first (scored).

    Input channels: the bits, the priority and the delimiter.
    """

    name: ClassVar[str] = "priority_sort"
    summary: ClassVar[str] = "output the highest-priority vectors in order (NTM)"

    num_bits: int = 8
    num_inputs: int = 20
    num_outputs: int = 16
    curriculum_levels: int = 4

    def __post_init__(self) -> None:
        check_positive("priority_sort", num_bits=self.num_bits, num_inputs=self.num_inputs,
                       num_outputs=self.num_outputs, curriculum_levels=self.curriculum_levels)
        check_range("priority_sort", "num_outputs", self.num_outputs, "num_inputs", self.num_inputs)

    @property
    def input_size(self) -> int:
        return self.num_bits + 2

    @property
    def output_size(self) -> int:
        return self.num_bits

    def levels(self) -> list[dict[str, Any]]:
        inputs = linear_levels(min(5, self.num_inputs), self.num_inputs, self.curriculum_levels)
        return [{"num_inputs": n, "num_outputs": max(1, round(n * self.num_outputs / self.num_inputs))}
                for n in inputs]

    def sample(self, batch_size: int, generator: torch.Generator, num_inputs: int = 20,
               num_outputs: int = 16) -> Batch:
        n, m, bits = num_inputs, num_outputs, self.num_bits
        vectors = random_bits(generator, batch_size, n, bits)
        priorities = torch.rand(batch_size, n, generator=generator) * 2 - 1
        steps = n + 1 + m
        inputs = torch.zeros(batch_size, steps, self.input_size)
        inputs[:, :n, :bits] = vectors
        inputs[:, :n, bits] = priorities
        inputs[:, n, bits + 1] = 1.0
        order = priorities.argsort(dim=1, descending=True)[:, :m]
        targets = torch.zeros(batch_size, steps, self.output_size)
        targets[:, n + 1 :] = vectors.gather(1, order.unsqueeze(-1).expand(-1, -1, bits))
        scored = torch.zeros(batch_size, steps)
        scored[:, n + 1 :] = 1.0
        return Batch(inputs, targets, scored)
