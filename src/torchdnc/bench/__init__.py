"""Benchmarks, all in one place; each prints its numbers (and can write JSON):

- `speed` (``torchdnc bench``): time and peak memory of a training step, a
  forward and an inference pass per configuration and implementation, beside
  baselines (an LSTMCell loop, nn.LSTM, the PyPI ``dnc`` package);
- `inference_memory` (``python -m torchdnc.bench.inference_memory``): peak
  memory of a forward pass against the sequence length;
- `sparse_scaling` (``python -m torchdnc.bench.sparse_scaling``): the dense and
  sparse DNC's time and memory per step as the memory grows to 10^6 slots;
- `sparse_learning_check` (``python -m torchdnc.bench.sparse_learning_check``):
  dense against sparse on the quick copy preset, seed by seed;
- `contention` (``python -m torchdnc.bench.contention``): one training alone,
  then several started together on the same cores.
"""
