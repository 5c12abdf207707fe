"""The one interface every task follows, and the shared bit-vector task logic.

A task is a dataclass of its options (sizes, lengths, ...). It samples
`Batch`es at a difficulty given as a dict of parameters, computes its loss
and metrics from the model's raw outputs, and describes its curriculum: a list
of levels, each a dict of those parameters, easiest first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Batch:
    """One batch of a task, batch-first.

    Attributes:
        inputs: ``[B, T, input_size]``.
        targets: ``[B, T, output_size]``.
        loss_mask: ``[B, T]``, 1 on the steps where the output is scored.
        mask: optional padding mask ``[B, T]`` for the model (state frozen and
            output zero where false), for tasks whose padding is not only at
            the end of a sequence.
        info: anything task-specific the metrics need (e.g. task ids).
    """

    inputs: Tensor
    targets: Tensor
    loss_mask: Tensor
    mask: Tensor | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: t.to(device) if isinstance(t, Tensor) else t  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), move(self.loss_mask),
                     move(self.mask), {k: move(v) for k, v in self.info.items()})

    def __getitem__(self, index: slice) -> "Batch":
        """The sequences ``index`` of the batch (used to split it across ranks)."""
        part = lambda t: t[index] if isinstance(t, Tensor) else t  # noqa: E731
        return Batch(part(self.inputs), part(self.targets), part(self.loss_mask),
                     part(self.mask), {k: part(v) for k, v in self.info.items()})


class Task:
    """Interface of a task; subclasses are dataclasses of their options."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # Name of the metric the curriculum and "solved" refer to (lower is better).
    primary_metric: ClassVar[str]
    # Further metrics worth a column in evaluation tables.
    report_metrics: ClassVar[tuple[str, ...]] = ()
    # Whether the data are episodes the model plays (`training_batch`), not `sample`s.
    plays_episodes: ClassVar[bool] = False
    input_size: int
    output_size: int

    def levels(self) -> list[dict[str, Any]]:
        """The curriculum: difficulty parameters per level, easiest first."""
        raise NotImplementedError

    def sample(self, batch_size: int, generator: torch.Generator, **params: Any) -> Batch:
        """A batch at the difficulty ``params`` (one of `levels`, or harder)."""
        raise NotImplementedError

    def training_batch(self, model: nn.Module, batch_size: int, generator: torch.Generator,
                       **params: Any) -> Batch:
        """What the training loop trains on next. A batch of `sample` for most tasks;
        a reinforcement-learning task plays episodes with ``model`` (without
        gradient) and returns them, to be replayed with gradient."""
        return self.sample(batch_size, generator, **params)

    def validation_batches(self, batch_size: int, generator: torch.Generator, batches: int,
                           **params: Any) -> Iterator[Batch]:
        """Held-out batches for an evaluation at ``params``.

        Synthetic tasks draw ``batches`` fresh batches; tasks with a fixed data
        set override this to walk their validation or test split.
        """
        for _ in range(batches):
            yield self.sample(batch_size, generator, **params)

    def evaluation_batches(self, model: nn.Module, batch_size: int, generator: torch.Generator,
                           batches: int, **params: Any) -> Iterator[Batch]:
        """`validation_batches`, or, for a task whose data depend on the model
        (episodes it plays), ``batches`` of those played by ``model``."""
        return self.validation_batches(batch_size, generator, batches, **params)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Scalar training loss: summed over steps and features, mean over sequences."""
        raise NotImplementedError

    def metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        """Metrics of one batch as sums over its sequences plus ``"sequences"``.

        Summing these dicts over batches and dividing by ``sequences`` gives
        per-sequence means (see `average_metrics`).
        """
        raise NotImplementedError

    def output_probabilities(self, outputs: Tensor) -> Tensor:
        """The model's raw outputs as probabilities, for figures."""
        return torch.softmax(outputs, dim=-1)

    def finalize_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Turn per-sequence means into the task's reported metrics (e.g. rates
        per question rather than per sequence); identity by default."""
        return metrics

    def generalisation(self) -> dict[str, dict[str, Any]]:
        """Named harder settings to evaluate beyond training (may be empty)."""
        return {}

    def describe_curriculum(self) -> str:
        return "; ".join(f"{i}: {_params_text(p)}" for i, p in enumerate(self.levels()))

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def average_metrics(totals: dict[str, float]) -> dict[str, float]:
    """Per-sequence means from summed metrics (``sequences`` is the count)."""
    count = max(totals.get("sequences", 0), 1)
    return {k: (v if k == "sequences" else v / count) for k, v in totals.items()}


class BitTask(Task):
    """Tasks whose outputs are independent bits, scored by a sigmoid per bit.

    Loss: binary cross-entropy on the scored steps, summed over steps and bits,
    averaged over sequences. Metrics: ``bits_per_sequence`` (wrong bits per
    sequence after thresholding at 0.5, the NTM/DNC papers' measure; the
    primary metric) and ``bit_error`` (fraction of scored bits wrong).
    """

    primary_metric: ClassVar[str] = "bits_per_sequence"
    report_metrics: ClassVar[tuple[str, ...]] = ("bit_error",)

    def output_probabilities(self, outputs: Tensor) -> Tensor:
        return torch.sigmoid(outputs)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        per_bit = F.binary_cross_entropy_with_logits(outputs, batch.targets, reduction="none")
        return (per_bit * batch.loss_mask.unsqueeze(-1)).sum() / outputs.shape[0]

    def metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        wrong = ((outputs > 0).to(batch.targets.dtype) != batch.targets).to(outputs.dtype)
        wrong = (wrong * batch.loss_mask.unsqueeze(-1)).sum(dim=(1, 2))
        scored = batch.loss_mask.sum(1) * outputs.shape[-1]
        return {
            "sequences": float(outputs.shape[0]),
            "bits_per_sequence": float(wrong.sum()),
            "bit_error": float((wrong / scored.clamp(min=1)).sum()),
        }


def random_bits(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.randint(0, 2, shape, generator=generator).float()


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """A uniform integer in [low, high], inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def linear_levels(start: int, end: int, count: int) -> list[int]:
    """``count`` integers from ``start`` to ``end``, evenly spaced, no repeats."""
    if count <= 1 or start >= end:
        return [end]
    values = [round(start + (end - start) * i / (count - 1)) for i in range(count)]
    return sorted(set(values))


def check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}.{name}: expected an integer >= 1, got {value!r}")


def check_range(owner: str, low_name: str, low: int, high_name: str, high: int) -> None:
    if low > high:
        raise ValueError(f"{owner}: expected {low_name} <= {high_name}, got {low} > {high}")


@torch.no_grad()
def evaluate(model: nn.Module, task: "Task", params: dict[str, Any], batches: int, batch_size: int,
             generator: torch.Generator, device: torch.device) -> dict[str, float]:
    """Per-sequence means of the task metrics over ``batches`` fresh batches (in eval mode)."""
    training = model.training
    model.eval()
    try:
        return _evaluate(model, task, params, batches, batch_size, generator, device)
    finally:
        model.train(training)


def _evaluate(model, task, params, batches, batch_size, generator, device) -> dict[str, float]:
    totals: dict[str, float] = {}
    for batch in task.evaluation_batches(model, batch_size, generator, batches, **params):
        batch = batch.to(device)
        outputs, _ = model(batch.inputs, mask=batch.mask)
        metrics = task.metrics(outputs, batch)
        metrics["loss"] = float(task.loss(outputs, batch)) * outputs.shape[0]
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value
    return task.finalize_metrics(average_metrics(totals))
