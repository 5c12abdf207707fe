"""The package version (one place: the package, the wheel and saved models read it)."""

__version__ = "0.2.0"
