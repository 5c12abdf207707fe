"""The README's code runs as printed (docs that stay true)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_lstm_style_example_runs():
    namespace: dict = {}
    exec(python_blocks()[0], namespace)
    assert namespace["y"].shape == (32, 20, 8) and namespace["y_t"].shape == (32, 8)
    assert namespace["trace"] is not None


def test_readme_sparse_example_runs():
    (block,) = [b for b in python_blocks() if "SparseDNC" in b]
    # A thousand slots instead of a million keeps the test small; nothing else changes.
    namespace: dict = {"x": torch.randn(2, 3, 8)}
    exec(block.replace("1_000_000", "1_000"), namespace)
    assert namespace["y"].shape == (2, 3, 8)
    assert namespace["big"].config.memory_size == 1_000
