"""Figures of what a DNC's memory did, from Python or the command line.

    import torchdnc.viz as viz

    figure = viz.model_figure(dnc, x)             # run dnc on x, draw its memory
    figure = viz.memory_figure(trace, inputs=x[0])  # from a trace you already have
    viz.save_figure(figure, "memory.png")
    viz.plot_run("runs/copy-quick")               # what `torchdnc plot` writes

Every ``*_figure`` function returns a matplotlib Figure; ``plot_*`` functions
write PNGs. Needs matplotlib (``pip install 'torchdnc[plot]'``).
"""

from torchdnc.viz.memory import (comparison_figure, memory_figure, model_figure, plot_memory,
                                 plot_training, training_figure)
from torchdnc.viz.run import plot_run
from torchdnc.viz.style import save_figure

__all__ = ["comparison_figure", "memory_figure", "model_figure", "plot_memory", "plot_run",
           "plot_training", "save_figure", "training_figure"]
