"""Backprop through a memory that is updated in place, without copying it per step.

Rae et al. 2016 (supplementary, "efficient backpropagation through time"):
a dense memory-augmented network keeps a copy of the N x W memory for every
time step so that backward can see it; SAM instead modifies the memory in
place and keeps, per step, only the few rows the step touched.

Here every buffer that the sparse DNC changes in place (the memory M
``[B, N, W]``; in the SDNC also the link values ``[B, N, K_L]``) is a *store*
of a `Tape`, one tape per forward call. Two journaled operations touch it:

- ``gather(store, ids)`` returns the rows ``ids`` (a copy, ``[B, S, D]``).
  Ordinary autograd saves these small tensors where later ops need them;
  the gather itself keeps only the row ids.
- ``scatter(store, ids, rows)`` overwrites the rows ``ids`` in place and
  keeps only the row ids.

Backward never needs an old copy of the store: each gather's rows were
saved by whoever used them. The gradient dL/dM is accumulated in one table
over the rows the forward call touched (at most T times the rows touched per
step, never N): a gather's backward adds its row gradients there; a
scatter's backward hands the rows' gradient to the new rows it wrote and
clears them (the old values were overwritten, so they get their gradient
through whatever computed the new rows, typically a gather of the old rows).

Order. All journaled operations of a call form one chain through a scalar
"token" (each takes the latest token and returns a new one), so autograd
runs their backwards in exactly the reverse of their forward order. The
token's gradient marks where a backward pass starts: an operation that
receives no token gradient is the first of the chain to run in this pass
and clears the gradient tables, which makes repeated backward passes
(``retain_graph=True``, `torch.autograd.gradcheck`) independent.

Across calls. When a store enters a call as a tensor that requires grad
(a state from an earlier call that was not detached, or a memory the caller
differentiates), ``enter`` links it to the chain; its backward returns the
whole dense gradient for that tensor, once per call. When the call ends,
``leave`` returns the store as a tensor of the autograd graph whose incoming
dense gradient seeds the tables. Gradients therefore flow across chunks
exactly, at the price of one O(N D) pass per call boundary; inside a call
nothing is O(N).
"""

from __future__ import annotations

import torch
from torch import Tensor


class Tape:
    """The stores of one forward call and their gradient bookkeeping.

    Args:
        journal: record the operations for backward (``False`` under
            `torch.no_grad`: then gathers and scatters are plain indexing).
        dtype, device: of the token that orders the chain.
    """

    def __init__(self, journal: bool, dtype: torch.dtype, device: torch.device) -> None:
        self.journal = journal
        self.stores: list[Tensor] = []
        self.touched: list[list[Tensor]] = []
        self.tables: list[Tensor | None] = []
        self.grads: list[Tensor | None] = []
        self.tails: list[Tensor | None] = []
        self.dtype, self.device = dtype, device
        self.token = torch.zeros((), dtype=dtype, device=device)

    # -- registration ----------------------------------------------------

    def add(self, store: Tensor) -> int:
        """Register a ``[B, N, D]`` buffer; returns its handle.

        The buffer itself (its storage) is what later scatters modify. If
        ``store`` requires grad, its gradient is delivered when backward
        reaches the start of this call.
        """
        handle = len(self.stores)
        self.stores.append(store.detach())
        self.touched.append([])
        self.tables.append(None)
        self.grads.append(None)
        self.tails.append(None)
        if self.journal and store.requires_grad:
            self.token = _Enter.apply(self, handle, self.token, store)
        return handle

    def leave(self, handle: int) -> Tensor:
        """The store as it stands, connected to the graph when journaled."""
        if self.journal and self.token.requires_grad:
            store, self.token = _Leave.apply(self, handle, self.token)
            return store
        return self.stores[handle]

    # -- the two operations -----------------------------------------------

    def flat(self, handle: int, ids: Tensor) -> Tensor:
        """Row ids ``[B, S]`` as indices into the store viewed ``[B * N, D]``."""
        batch, rows = self.stores[handle].shape[:2]
        offsets = torch.arange(batch, device=ids.device).unsqueeze(1) * rows
        return (ids + offsets).reshape(-1)

    def gather(self, handle: int, ids: Tensor) -> Tensor:
        """Rows ``ids [B, S]`` of the store, ``[B, S, D]``."""
        store = self.stores[handle]
        flat = self.flat(handle, ids)
        if self.journal:
            self.touched[handle].append(flat)
            rows, self.token = _Gather.apply(self, handle, self.token, flat)
        else:
            rows = store.view(-1, store.shape[-1]).index_select(0, flat)
        return rows.view(*ids.shape, store.shape[-1])

    def scatter(self, handle: int, ids: Tensor, rows: Tensor) -> None:
        """Overwrite rows ``ids [B, S]`` with ``rows [B, S, D]`` in place.

        Repeated ids within one call must come with identical rows (they are
        computed from the same merged weights); only the first occurrence
        passes gradient back.
        """
        store = self.stores[handle]
        flat = self.flat(handle, ids)
        rows = rows.reshape(-1, store.shape[-1]).to(store.dtype)
        if self.journal:
            self.touched[handle].append(flat)
            first = _first_occurrence(ids).reshape(-1)
            self.token = _Scatter.apply(self, handle, self.token, flat, rows, first)
        else:
            store.view(-1, store.shape[-1]).index_copy_(0, flat, rows)

    # -- backward bookkeeping ----------------------------------------------

    def begin_pass(self) -> None:
        """Fresh gradient tables: a new backward pass reaches this call."""
        for handle, store in enumerate(self.stores):
            if self.tables[handle] is None:
                touched = self.touched[handle]
                self.tables[handle] = (torch.unique(torch.cat(touched)) if touched
                                       else torch.zeros(0, dtype=torch.long, device=store.device))
            self.grads[handle] = store.new_zeros(len(self.tables[handle]), store.shape[-1])
            self.tails[handle] = None

    def positions(self, handle: int, flat: Tensor) -> Tensor:
        return torch.searchsorted(self.tables[handle], flat)

    def marker(self) -> Tensor:
        return torch.ones((), dtype=self.dtype, device=self.device)


def _first_occurrence(ids: Tensor) -> Tensor:
    """True where an id appears for the first time along the last axis."""
    same = ids.unsqueeze(-1) == ids.unsqueeze(-2)
    earlier = torch.ones(same.shape[-2:], dtype=torch.bool, device=ids.device).tril(-1)
    return ~(same & earlier).any(-1)


class _Enter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tape, handle, token, store):
        ctx.set_materialize_grads(False)
        ctx.tape, ctx.handle = tape, handle
        return token.new_zeros(())

    @staticmethod
    def backward(ctx, grad_token):
        tape, handle = ctx.tape, ctx.handle
        if grad_token is None:
            tape.begin_pass()
        store = tape.stores[handle]
        tail = tape.tails[handle]
        dense = tail.clone() if tail is not None else torch.zeros_like(store)
        dense.view(-1, store.shape[-1]).index_copy_(0, tape.tables[handle], tape.grads[handle])
        return None, None, tape.marker(), dense


class _Leave(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tape, handle, token):
        ctx.set_materialize_grads(False)
        ctx.tape, ctx.handle = tape, handle
        return tape.stores[handle].detach(), token.new_zeros(())

    @staticmethod
    def backward(ctx, grad_store, grad_token):
        tape, handle = ctx.tape, ctx.handle
        if grad_token is None:
            tape.begin_pass()
        if grad_store is not None:
            tape.tails[handle] = grad_store
            width = grad_store.shape[-1]
            tape.grads[handle] += grad_store.reshape(-1, width).index_select(0, tape.tables[handle])
        return None, None, tape.marker()


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tape, handle, token, flat):
        ctx.set_materialize_grads(False)
        ctx.tape, ctx.handle, ctx.flat = tape, handle, flat
        store = tape.stores[handle]
        return store.view(-1, store.shape[-1]).index_select(0, flat), token.new_zeros(())

    @staticmethod
    def backward(ctx, grad_rows, grad_token):
        tape, handle = ctx.tape, ctx.handle
        if grad_token is None:
            tape.begin_pass()
        if grad_rows is not None:
            tape.grads[handle].index_add_(0, tape.positions(handle, ctx.flat), grad_rows)
        return None, None, tape.marker(), None


class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tape, handle, token, flat, rows, first):
        ctx.set_materialize_grads(False)
        ctx.tape, ctx.handle, ctx.flat, ctx.first = tape, handle, flat, first
        store = tape.stores[handle]
        store.view(-1, store.shape[-1]).index_copy_(0, flat, rows)
        return token.new_zeros(())

    @staticmethod
    def backward(ctx, grad_token):
        tape, handle = ctx.tape, ctx.handle
        if grad_token is None:
            tape.begin_pass()
        positions = tape.positions(handle, ctx.flat)
        grads = tape.grads[handle]
        grad_rows = grads.index_select(0, positions) * ctx.first.unsqueeze(-1).to(grads.dtype)
        grads.index_fill_(0, positions, 0)
        return None, None, tape.marker(), None, grad_rows, None
