"""Readers for the data sets the tasks train on (bAbI); synthetic tasks need none."""
