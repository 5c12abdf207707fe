"""Every model path on the device under test equals the CPU plain path.

The device is ``TORCHDNC_TEST_DEVICE`` (default ``cpu``). On a machine with a
GPU, ``benchmarks/gpu_check.sh`` runs this file with ``TORCHDNC_TEST_DEVICE=cuda``;
CI runs it on the CPU (also through ``gpu_check.sh --dry-run``), so the same
assertions hold wherever the suite runs.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from torchdnc import DNC
from torchdnc.sparse import SparseDNC
from torchdnc.training.config import VARIANTS

DEVICE = torch.device(os.environ.get("TORCHDNC_TEST_DEVICE", "cpu"))
BASE = dict(input_size=5, output_size=4, hidden_size=12, memory_size=9, word_size=4)
# float64 paths agree to rounding; float32 to its precision over a short sequence.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
INDEXES = ["exact"] + (["faiss"] if importlib.util.find_spec("faiss") else [])


def _on_device_matches_cpu(make, dtype, mask=True, steps=6, batch=3):
    """Outputs, final state and every gradient of a model on DEVICE against the
    same weights on the CPU with the plain path."""
    torch.manual_seed(0)
    reference = make("plain").to(dtype)
    model = make(None).to(dtype)
    model.load_state_dict(reference.state_dict())
    model.to(DEVICE)
    x = torch.randn(batch, steps, BASE["input_size"], dtype=dtype)
    keep = (torch.rand(batch, steps) > 0.25) if mask else None
    outputs = []
    for m, device in ((reference, torch.device("cpu")), (model, DEVICE)):
        xd = x.to(device).requires_grad_()
        y, state = m(xd, mask=None if keep is None else keep.to(device))
        (y.square().sum() + sum(t.double().sum() for t in _tensors(state)).to(y.dtype)).backward()
        grads = [xd.grad] + [p.grad for p in m.parameters()]
        outputs.append([y, *_tensors(state), *grads])
    tol = TOLERANCE[dtype]
    for a, b in zip(*outputs, strict=True):
        assert b.device.type == DEVICE.type
        torch.testing.assert_close(b.cpu(), a, rtol=tol, atol=tol)


def _tensors(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for part in state for t in _tensors(part)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("implementation", ["auto", "plain"])
def test_dense_dnc_on_the_device_equals_the_cpu(implementation, dtype):
    def make(kind):
        return DNC(**BASE, num_reads=2, num_writes=2, clip=5.0,
                   implementation=kind or implementation)

    _on_device_matches_cpu(make, dtype)


def test_compiled_dnc_on_the_device_equals_the_cpu():
    def make(kind):
        return DNC(**BASE, num_reads=2, num_writes=1, implementation=kind or "compile")

    _on_device_matches_cpu(make, torch.float32, mask=False, steps=3)


@pytest.mark.parametrize("variant", ["dnc-mds", "rsdnc"])
def test_variants_on_the_device_equal_the_cpu(variant):
    options = {k: v for k, v in VARIANTS[variant].items() if k != "bypass_dropout"}

    def make(kind):
        return DNC(**BASE, num_reads=2, **options, implementation=kind or "auto")

    _on_device_matches_cpu(make, torch.float64)


@pytest.mark.parametrize("index", INDEXES)
@pytest.mark.parametrize("link_entries", [0, 3])
def test_sparse_dnc_on_the_device_equals_the_cpu(index, link_entries):
    def make(kind):
        # Exact arithmetic does not depend on the implementation; the CPU copy
        # is the reference either way.
        return SparseDNC(**BASE, num_reads=2, sparse_reads=3, link_entries=link_entries,
                         index=index, index_lists=2, index_probes=2)

    _on_device_matches_cpu(make, torch.float64, mask=False)


def test_training_steps_on_the_device(tmp_path):
    from torchdnc.cli import main

    code = main(["train", "copy", "--preset", "quick", "--iterations=3", "--eval_interval=3",
                 "--eval_batches=1", "--solved_threshold=0", f"--device={DEVICE.type}",
                 "--progress=false", "--out", str(tmp_path / "run")])
    assert code == 0
    assert (tmp_path / "run" / "checkpoint.safetensors").exists()
