"""Nearest-neighbour search over memory rows for the sparse content read.

Rae et al. 2016, section 3.1: the K_R-sparse read keeps the K_R largest entries
of the content softmax, i.e. the K_R rows nearest to the key in cosine
similarity; an approximate nearest-neighbour (ANN) index finds them in
sub-linear time. Two backends with one interface:

- `ExactIndex` (``"exact"``, the default): `torch.topk` over the cosine
  similarity of the key with every non-zero row, pure PyTorch, O(N W) per key,
  in chunks of rows so that no ``[B, R, N]`` temporary larger than a chunk is
  made.
- `FaissIndex` (``"faiss"``): an inverted-file index (faiss ``IndexIVFFlat``,
  inner product on rows scaled to unit length) per batch element, imported
  lazily (``pip install torchdnc[ann]``, i.e. ``faiss-cpu``). It lives in host
  memory: with CUDA tensors, keys and written rows go through the host every
  step. Accuracy and cost are set by ``lists`` and ``probes``: the lists
  probed per key hold about probes / lists of the indexed rows.

Keeping the approximate index in step with the memory: the coarse quantizer
is fixed at construction (``lists`` random unit vectors, seeded, independent
of the data), so the index never needs training or rebuilding; after every
write the written rows are removed from their inverted lists and re-added
with their new content (``remove_ids`` / ``add_with_ids`` through a hash-table
direct map: O(rows written), not O(N)).

Both backends skip rows that are zero (never written, or erased and not
rewritten): such a row holds nothing to find, its cosine with any key is
exactly 0 (so it would outrank every stored row on the key's negative side),
and rows written from it by the next step would be indistinguishable copies.
Leaving them out also keeps the lists of a fresh million-slot memory empty.
When fewer than K_R rows can be returned, the missing results are reported as
-1 and the read gives them no weight.

An index is a cache of a function of the memory: it is keyed by the memory's
storage (address and shape) and checked against the tensor's in-place
version counter (`prepare`, once per forward call), so a memory changed
behind its back is re-indexed rather than searched stale. The few most
recently used memories keep their indexes (`FaissIndex.cache_size`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from torchdnc.addressing import cosine_similarity

INDEXES = ("exact", "faiss")

# Rows whose squared norm is at most this are treated as zero by the
# approximate index (not indexed; their cosine with any key is ~0).
ZERO_ROW_NORM = 1e-12

# Rows per chunk of the exact search: bounds the temporary [B, R, chunk].
EXACT_CHUNK = 1 << 16


class ExactIndex:
    """Exact K_R nearest rows by cosine similarity (`torch.topk`)."""

    name = "exact"

    def prepare(self, memory: Tensor) -> None:
        """Nothing to keep in step: the exact search reads the memory itself."""

    def register_empty(self, memory: Tensor) -> None:
        """Nothing to do."""

    def search(self, memory: Tensor, keys: Tensor, k: int) -> Tensor:
        """Ids of the ``k`` rows of largest cosine similarity with each key.

        Args:
            memory: M, ``[B, N, W]``.
            keys: ``[B, R, W]``.
            k: K_R <= N.

        Returns:
            Row ids, ``[B, R, k]`` (int64), no gradient.
        """
        with torch.no_grad():
            memory, keys = memory.detach(), keys.detach()
            rows = memory.shape[1]
            if rows <= EXACT_CHUNK:
                top = _scores(memory, keys).topk(k, dim=-1)
                return top.indices.masked_fill(top.values == -math.inf, -1)
            scores, ids = [], []
            for start in range(0, rows, EXACT_CHUNK):
                chunk = memory[:, start : start + EXACT_CHUNK]
                top = _scores(chunk, keys).topk(min(k, chunk.shape[1]), dim=-1)
                scores.append(top.values)
                ids.append(top.indices + start)
            best = torch.cat(scores, -1).topk(k, dim=-1)
            found = torch.cat(ids, -1).gather(-1, best.indices)
            return found.masked_fill(best.values == -math.inf, -1)

    def update(self, memory: Tensor, ids: Tensor, rows: Tensor) -> None:
        """Nothing to update."""


def _scores(memory: Tensor, keys: Tensor) -> Tensor:
    """Cosine similarity ``[B, R, rows]``, -inf for zero rows (they hold nothing)."""
    empty = (memory * memory).sum(-1) <= ZERO_ROW_NORM  # [B, rows]
    return cosine_similarity(memory, keys).masked_fill(empty.unsqueeze(1), -math.inf)


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "index='faiss' needs the faiss library: pip install 'torchdnc[ann]' "
            "(or pip install faiss-cpu); index='exact' needs nothing"
        ) from error
    return faiss


class _Entry:
    """The faiss indexes of one memory (one per batch element)."""

    def __init__(self, memory: Tensor, indexes: list) -> None:
        self.version = memory._version
        self.indexes = indexes


def _memory_key(memory: Tensor) -> tuple:
    return (memory.data_ptr(), tuple(memory.shape), memory.dtype)


class FaissIndex:
    """Approximate K_R nearest rows: one faiss IVF index per batch element.

    Args:
        word_size: W.
        memory_size: N (sets the default number of lists).
        lists: inverted lists per index; 0 chooses ``round(sqrt(N))``,
            at least 1.
        probes: lists searched per key (faiss ``nprobe``).
        seed: of the fixed random coarse quantizer.
    """

    name = "faiss"
    cache_size = 4  # memories whose indexes are kept

    def __init__(self, word_size: int, memory_size: int, lists: int = 0, probes: int = 8,
                 seed: int = 0) -> None:
        self._arguments = (word_size, memory_size, lists, probes, seed)
        self.faiss = _import_faiss()
        self.word_size = word_size
        self.lists = lists or max(1, round(math.sqrt(memory_size)))
        self.probes = max(1, min(probes, self.lists))
        generator = torch.Generator().manual_seed(seed)
        centroids = torch.randn(self.lists, word_size, generator=generator)
        self.quantizer = self.faiss.IndexFlatIP(word_size)  # read-only, shared by all indexes
        self.quantizer.add((centroids / centroids.norm(dim=1, keepdim=True)).numpy())
        self._cache: OrderedDict[tuple, _Entry] = OrderedDict()

    def __getstate__(self) -> tuple:
        """Pickle (and `copy.deepcopy`) the settings only; the indexes are a cache."""
        return self._arguments

    def __setstate__(self, arguments: tuple) -> None:
        self.__init__(*arguments)

    # -- index lifetime ----------------------------------------------------

    def _new_index(self):
        faiss = self.faiss
        index = faiss.IndexIVFFlat(self.quantizer, self.word_size, self.lists,
                                   faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        index.nprobe = self.probes
        return index

    def _remember(self, memory: Tensor, indexes: list) -> None:
        self._cache[_memory_key(memory)] = _Entry(memory, indexes)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def register_empty(self, memory: Tensor) -> None:
        """Record that ``memory`` is all zeros (a fresh state): empty indexes, O(1)."""
        self._remember(memory, [self._new_index() for _ in range(memory.shape[0])])

    def _entry(self, memory: Tensor) -> _Entry | None:
        key = _memory_key(memory)
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
        return entry

    def prepare(self, memory: Tensor) -> None:
        """Index ``memory`` unless an up-to-date index of it exists.

        Called once at the start of every forward call: O(1) when the memory
        is the one this index has followed (or a fresh one from
        `register_empty`), O(N W) (all non-zero rows) for a memory it has not
        seen or that changed outside the model.
        """
        entry = self._entry(memory)
        if entry is not None and entry.version == memory._version:
            return
        rows = memory.detach().to("cpu", torch.float32)
        indexes = []
        for b in range(rows.shape[0]):
            index = self._new_index()
            vectors, ids = _unit_rows(rows[b])
            if len(ids):
                index.add_with_ids(vectors.numpy(), ids.numpy())
            indexes.append(index)
        self._remember(memory, indexes)

    def search(self, memory: Tensor, keys: Tensor, k: int) -> Tensor:
        """Approximate ids of the ``k`` rows nearest to each key, ``[B, R, k]``; -1 where
        the probed lists held fewer than ``k`` rows."""
        entry = self._entry(memory)
        if entry is None:
            self.prepare(memory)
            entry = self._entry(memory)
        queries = keys.detach().to("cpu", torch.float32)
        queries = queries / queries.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        found = []
        for b, index in enumerate(entry.indexes):
            _, ids = index.search(queries[b].contiguous().numpy(), k)
            found.append(torch.from_numpy(ids))
        return torch.stack(found).to(keys.device)

    def update(self, memory: Tensor, ids: Tensor, rows: Tensor) -> None:
        """Re-index the rows ``ids [B, S]`` that now hold ``rows [B, S, W]``."""
        entry = self._entry(memory)
        if entry is None:
            self.prepare(memory)
            return
        faiss = self.faiss
        ids = ids.detach().cpu()
        rows = rows.detach().to("cpu", torch.float32)
        for b, index in enumerate(entry.indexes):
            unique, position = _first_positions(ids[b])
            remove = unique.numpy()
            index.remove_ids(faiss.IDSelectorArray(len(remove), faiss.swig_ptr(remove)))
            vectors, kept = _unit_rows(rows[b, position])
            if len(kept):
                index.add_with_ids(vectors.numpy(), unique[kept].numpy())
        entry.version = memory._version


def _unit_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """(non-zero rows scaled to unit length, their positions) of ``rows [S, W]``."""
    squared = (rows * rows).sum(-1)
    kept = torch.nonzero(squared > ZERO_ROW_NORM).squeeze(-1)
    vectors = rows[kept] / squared[kept].sqrt().unsqueeze(-1)
    return vectors.contiguous(), kept


def _first_positions(ids: Tensor) -> tuple[Tensor, Tensor]:
    """(unique ids, position of each one's first occurrence) of ``ids [S]``."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    position = torch.full((len(unique),), len(ids), dtype=torch.long)
    position.scatter_reduce_(0, inverse, torch.arange(len(ids)), reduce="amin")
    return unique.contiguous(), position


def make_index(name: str, word_size: int, memory_size: int, **options: Any):
    """The search backend called ``name`` (one of `INDEXES`)."""
    if name == "exact":
        return ExactIndex()
    if name == "faiss":
        return FaissIndex(word_size, memory_size, **options)
    raise ValueError(f"index: expected one of {INDEXES}, got {name!r}")
