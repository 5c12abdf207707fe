"""Associative recall, as in the Neural Turing Machine paper (Graves et al. 2014)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from torchdnc.tasks.base import (Batch, BitTask, check_positive, check_range, linear_levels,
                                 randint, random_bits)


@dataclass
class AssociativeRecallTask(BitTask):
    """Associative recall (NTM): after a list of items and a query item, answer
    the item that followed the query in the list.

    Each item is ``item_length`` vectors of ``num_bits`` bits (NTM: three 6-bit
    vectors) and is preceded by a step on the item-delimiter channel. The query
    item sits between two steps on the query-delimiter channel; the answer
    occupies the next ``item_length`` steps (scored).
    """

    name: ClassVar[str] = "associative_recall"
    summary: ClassVar[str] = "recall the item that followed a query item (NTM)"

    num_bits: int = 6
    item_length: int = 3
    min_items: int = 2
    max_items: int = 6
    curriculum_levels: int = 5

    def __post_init__(self) -> None:
        check_positive("associative_recall", num_bits=self.num_bits, item_length=self.item_length,
                       max_items=self.max_items, curriculum_levels=self.curriculum_levels)
        if self.min_items < 2:
            raise ValueError(f"associative_recall.min_items: expected >= 2, got {self.min_items}")
        check_range("associative_recall", "min_items", self.min_items, "max_items", self.max_items)

    @property
    def input_size(self) -> int:
        return self.num_bits + 2

    @property
    def output_size(self) -> int:
        return self.num_bits

    def levels(self) -> list[dict[str, Any]]:
        return [{"min_items": self.min_items, "max_items": m}
                for m in linear_levels(self.min_items, self.max_items, self.curriculum_levels)]

    def generalisation(self) -> dict[str, dict[str, Any]]:
        more = 2 * self.max_items
        return {f"{more} items": {"min_items": more, "max_items": more}}

    def sample(self, batch_size: int, generator: torch.Generator, min_items: int = 2,
               max_items: int = 6) -> Batch:
        L, bits = self.item_length, self.num_bits
        counts = [randint(generator, min_items, max_items) for _ in range(batch_size)]
        steps = max(counts) * (L + 1) + (L + 2) + L
        inputs = torch.zeros(batch_size, steps, self.input_size)
        targets = torch.zeros(batch_size, steps, self.output_size)
        scored = torch.zeros(batch_size, steps)
        for b, count in enumerate(counts):
            items = random_bits(generator, count, L, bits)
            query = randint(generator, 0, count - 2)
            for i in range(count):
                start = i * (L + 1)
                inputs[b, start, bits] = 1.0
                inputs[b, start + 1 : start + 1 + L, :bits] = items[i]
            start = count * (L + 1)
            inputs[b, start, bits + 1] = 1.0
            inputs[b, start + 1 : start + 1 + L, :bits] = items[query]
            inputs[b, start + 1 + L, bits + 1] = 1.0
            answer = start + L + 2
            targets[b, answer : answer + L] = items[query + 1]
            scored[b, answer : answer + L] = 1.0
        return Batch(inputs, targets, scored, info={"items": torch.tensor(counts)})
