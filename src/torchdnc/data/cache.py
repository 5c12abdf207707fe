"""Where downloaded data lives: a per-user cache, ``$TORCHDNC_DATA`` overriding
the platform's (``$XDG_CACHE_HOME/torchdnc`` or ``~/.cache/torchdnc``;
``~/Library/Caches/torchdnc`` on macOS; ``%LOCALAPPDATA%/torchdnc`` on Windows)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Written into a data folder once it is complete and checked.
MARKER = ".torchdnc-complete"


def cache_dir() -> Path:
    if os.environ.get("TORCHDNC_DATA"):
        return Path(os.environ["TORCHDNC_DATA"]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "torchdnc"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "torchdnc"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torchdnc"


def babi_cache() -> Path:
    return cache_dir() / "babi"


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished, checked download."""
    return (folder / MARKER).is_file()
