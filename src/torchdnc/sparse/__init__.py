"""Sparse Access Memory and the Sparse DNC (Rae et al., NeurIPS 2016).

    from torchdnc.sparse import SparseDNC

    model = SparseDNC(input_size=8, output_size=8, memory_size=64,
                      sparse_reads=4, link_entries=8)     # link_entries=0: SAM
    y, state = model(x)                                   # like torchdnc.DNC
    big = model.with_memory_size(1_000_000)               # same weights, 10^6 slots

Reads and writes touch K_R rows per head instead of N; the memory is updated
in place and backward keeps only the touched rows (`torchdnc.sparse.journal`),
so time and memory per step do not grow with N apart from the memory matrix
itself and the nearest-neighbour search (`torchdnc.sparse.index`: exact
`torch.topk`, or faiss when installed).
"""

from torchdnc.sparse.addressing import densify
from torchdnc.sparse.index import INDEXES, ExactIndex, FaissIndex, make_index
from torchdnc.sparse.memory import (SparseSession, SparseInterface, SparseMemoryState,
                                    parse_sparse_interface, sparse_interface_size)
from torchdnc.sparse.model import SparseDNC, SparseDNCConfig, SparseDNCState, SparseDNCTrace

__all__ = [
    "INDEXES",
    "ExactIndex",
    "FaissIndex",
        "SparseDNC",
    "SparseDNCConfig",
    "SparseDNCState",
    "SparseDNCTrace",
    "SparseInterface",
    "SparseSession",
    "SparseMemoryState",
    "densify",
    "make_index",
    "parse_sparse_interface",
    "sparse_interface_size",
]
