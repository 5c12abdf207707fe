"""Config dataclasses: validation of field values, with messages that name the
field, the expected range and the value given (``memory_size: expected an
integer >= 1, got 0``), and dict / JSON round trips.

Every config dataclass (`DNCConfig`, `SparseDNCConfig`, `TrainConfig`) checks
its fields with these, so that the rules and the wording are one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable


def integer(name: str, value: Any, minimum: int | None = None, maximum: int | None = None,
            note: str = "") -> None:
    """An int (not a bool) within [minimum, maximum]; ``note`` is added in brackets."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        raise ValueError(f"{name}: expected an integer {_range(minimum, maximum)}"
                         f"{f' ({note})' if note else ''}, got {value!r}")


def number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None, *,
           above: float | None = None, below: float | None = None, note: str = "") -> None:
    """A finite int or float (not a bool) with minimum <= value <= maximum,
    above < value < below (each bound optional); ``note`` is added in brackets."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    ok = ok and (above is None or value > above) and (below is None or value < below)
    if not ok:
        parts = []
        if minimum is not None or above is not None:
            parts.append(f">= {minimum}" if above is None else f"> {above}")
        if maximum is not None or below is not None:
            parts.append(f"<= {maximum}" if below is None else f"< {below}")
        words = " and ".join(parts)
        raise ValueError(f"{name}: expected a number{' ' + words if words else ''}"
                         f"{f' ({note})' if note else ''}, got {value!r}")


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")


def choice(name: str, value: Any, options: Iterable[Any]) -> None:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")


def _range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"in {minimum}..{maximum}"
    if minimum is not None:
        return f">= {minimum}"
    if maximum is not None:
        return f"<= {maximum}"
    return ""


def dataclass_from_dict(cls, values: dict[str, Any], what: str):
    """``cls(**values)``, refusing unknown keys with a message listing the valid ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {unknown}; valid fields: {names}")
    return cls(**values)


class ConfigIO:
    """Dict and JSON round trips for a config dataclass (unknown keys are an error)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Inverse of `to_dict`; unknown keys are an error that lists the valid ones."""
        return dataclass_from_dict(cls, values, cls.__name__)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))
