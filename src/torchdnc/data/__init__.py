"""Readers and loaders for the fixed data sets some tasks use (bAbI, London Underground)."""
