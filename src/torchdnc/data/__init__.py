"""Loaders for the fixed data sets that tasks test on (see each module)."""
