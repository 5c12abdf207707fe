"""Copy: store a sequence of bit vectors, then play it back.

As in the Neural Turing Machine paper (Graves et al. 2014): random 8-bit
vectors, lengths 1-20 in training, a delimiter channel, the copy is produced
after the delimiter.

Two options make harder copies (both off by default, when a sequence is one
copy exactly as above): ``blocks`` copies one after another in one sequence
(each input, delimiter, output; Csordás & Schmidhuber's "repeated copy", and
the Nature paper's Extended Data Fig. 1: 10 blocks of 5 vectors through a
memory of 10 slots must free and reuse slots), and a ``delay`` of blank steps
between each delimiter and its output (what is stored must last that long).
With a delay that varies, nothing tells the model when to start answering;
``recall_cue`` sets the delimiter channel again on the last blank step, so that
every answer starts the step after a delimiter flag.
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
    curriculum_start: int = 5  # maximum length (or blocks) at the first level
    curriculum_levels: int = 4
    min_blocks: int = 1  # copies in one sequence
    max_blocks: int = 1
    min_delay: int = 0  # blank steps between a delimiter and its output
    max_delay: int = 0
    recall_cue: bool = False  # delimiter flag again on the last blank step of a delay
    curriculum_by: str = "length"  # what the levels raise: "length" or "blocks"

    def __post_init__(self) -> None:
        check_positive("copy", num_bits=self.num_bits, min_length=self.min_length,
                       max_length=self.max_length, curriculum_start=self.curriculum_start,
                       curriculum_levels=self.curriculum_levels, min_blocks=self.min_blocks,
                       max_blocks=self.max_blocks)
        check_range("copy", "min_length", self.min_length, "max_length", self.max_length)
        check_range("copy", "min_blocks", self.min_blocks, "max_blocks", self.max_blocks)
        if isinstance(self.min_delay, bool) or not isinstance(self.min_delay, int) or self.min_delay < 0:
            raise ValueError(f"copy.min_delay: expected an integer >= 0, got {self.min_delay!r}")
        check_range("copy", "min_delay", self.min_delay, "max_delay", self.max_delay)
        if not isinstance(self.recall_cue, bool):
            raise ValueError(f"copy.recall_cue: expected true or false, got {self.recall_cue!r}")
        if self.curriculum_by not in ("length", "blocks"):
            raise ValueError(f"copy.curriculum_by: expected 'length' or 'blocks', "
                             f"got {self.curriculum_by!r}")

    @property
    def input_size(self) -> int:
        return self.num_bits + 1

    @property
    def output_size(self) -> int:
        return self.num_bits

    def levels(self) -> list[dict[str, Any]]:
        if self.curriculum_by == "blocks":
            start = max(self.min_blocks, min(self.curriculum_start, self.max_blocks))
            return [{"min_length": self.min_length, "max_length": self.max_length,
                     "min_blocks": self.min_blocks, "max_blocks": m}
                    for m in linear_levels(start, self.max_blocks, self.curriculum_levels)]
        start = max(self.min_length, min(self.curriculum_start, self.max_length))
        return [{"min_length": self.min_length, "max_length": m}
                for m in linear_levels(start, self.max_length, self.curriculum_levels)]

    def generalisation(self) -> dict[str, dict[str, Any]]:
        return {f"length {k * self.max_length}": {"min_length": k * self.max_length,
                                                  "max_length": k * self.max_length}
                for k in (2, 4)}

    def sample(self, batch_size: int, generator: torch.Generator, min_length: int = 1,
               max_length: int = 20, min_blocks: int | None = None, max_blocks: int | None = None,
               min_delay: int | None = None, max_delay: int | None = None) -> Batch:
        blocks = (self.min_blocks if min_blocks is None else min_blocks,
                  self.max_blocks if max_blocks is None else max_blocks)
        delay = (self.min_delay if min_delay is None else min_delay,
                 self.max_delay if max_delay is None else max_delay)
        if blocks != (1, 1) or delay != (0, 0):
            return self._blocks(batch_size, generator, (min_length, max_length), blocks, delay)
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
        return Batch(inputs, targets, scored.float(),
                     info={"lengths": lengths, "item_index": torch.where(scored, source, -1)})

    def _blocks(self, batch_size: int, generator: torch.Generator, length: tuple[int, int],
                blocks: tuple[int, int], delay: tuple[int, int]) -> Batch:
        """Sequences of several copies, each: L vectors, delimiter, D blanks, L outputs.

        ``Batch.info``: ``lengths`` (total vectors to copy per sequence),
        ``blocks`` ``[B]`` and ``item_index`` ``[B, T]`` (on a scored step, the
        position in its block of the vector being recalled; -1 elsewhere).
        """
        counts = random_lengths(generator, batch_size, *blocks)
        delays = random_lengths(generator, batch_size, *delay)
        sizes = [random_lengths(generator, int(n), *length) for n in counts]
        patterns = [random_bits(generator, int(size.sum()), self.num_bits) for size in sizes]
        steps = [int((2 * size + 1 + d).sum()) for size, d in zip(sizes, delays)]
        T = max(steps)
        inputs = torch.zeros(batch_size, T, self.input_size)
        targets = torch.zeros(batch_size, T, self.num_bits)
        scored = torch.zeros(batch_size, T)
        index = torch.full((batch_size, T), -1, dtype=torch.long)
        for b, (size, bits, d) in enumerate(zip(sizes, patterns, delays.tolist())):
            t, used = 0, 0
            for n in size.tolist():
                block = bits[used : used + n]
                inputs[b, t : t + n, : self.num_bits] = block
                inputs[b, t + n, self.num_bits] = 1.0
                out = t + n + 1 + d
                if self.recall_cue and d:
                    inputs[b, out - 1, self.num_bits] = 1.0
                targets[b, out : out + n] = block
                scored[b, out : out + n] = 1.0
                index[b, out : out + n] = torch.arange(n)
                t, used = out + n, used + n
        return Batch(inputs, targets, scored,
                     info={"lengths": torch.tensor([int(s.sum()) for s in sizes]),
                           "blocks": counts, "item_index": index})
