"""What a DNC's memory does, in a few lines: an untrained DNC on random input,
then the copy model that comes with torchdnc on one copy sequence.

    python examples/memory_figure.py      # writes memory-untrained.png, memory-copy.png
"""

import torch

import torchdnc
import torchdnc.viz as viz
from torchdnc.tasks import CopyTask

# Any DNC and any input: the figure of its memory in two lines.
dnc = torchdnc.DNC(input_size=6, output_size=6, memory_size=16, word_size=8, num_reads=2)
figure = viz.model_figure(dnc, torch.randn(1, 20, 6), title="an untrained DNC")
viz.save_figure(figure, "memory-untrained.png")

# The shipped copy model on a copy sequence of 12 vectors: it writes one slot per
# vector, then reads them back in order along the temporal links.
model = torchdnc.pretrained("copy")
batch = CopyTask().sample(1, torch.Generator().manual_seed(0), min_length=12, max_length=12)
figure = viz.model_figure(model, batch.inputs, targets=batch.targets, title="the pretrained copy model")
viz.save_figure(figure, "memory-copy.png")
print("written: memory-untrained.png, memory-copy.png")
