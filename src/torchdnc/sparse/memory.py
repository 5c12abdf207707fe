"""The sparse memory: its state, its interface vector and one access step.

One step (Rae et al. 2016, section 3; the SDNC of the supplementary when
``link_entries`` K_L > 0), in order:

1. I^U_t, the least recently accessed slot, from the usage at t - 1.
2. Write weights w^W_t = alpha (gamma w^R_{t-1} + (1 - gamma) I^U_t) (with
   ``write_read_gradient=False``, not the paper's, no gradient reaches w^R_{t-1}
   this way: it closes a read -> write -> read loop whose gradient explodes).
3. Erase the row I^U_t, add w^W_t a_t^T (in place, journaled).
4. SDNC: sparse link matrix L_t from w^W_t and the PREVIOUS precedence,
   then the precedence p_t (both pruned to K_L entries per row / column).
5. Content read on the NEW memory: the K_R nearest rows of each read key
   (exact or approximate search), softmax over those K_R.
6. SDNC: forward f = L_t w^R_{t-1} and backward b = L_t^T w^R_{t-1}; read
   weights pi_b b + pi_c c + pi_f f, pruned to their K_R largest entries.
7. Read vectors r_t = sum_i w^R_t[i] M_t[i].
8. Usage: slots accessed at t (w^W_t + sum over heads of w^R_t) get new keys.

Only rows named by the sparse weights are read or written, so a step costs
O(K_R W + K_L^2 K_R) plus the search, whatever N is; the least recently accessed
slot is found in O(sqrt N) (usage minima per block of sqrt N slots).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from torchdnc import addressing as dense_addressing
from torchdnc.sparse import addressing
from torchdnc.sparse.journal import Tape

READ_MODES = 3  # backward, content, forward (the dense DNC's layout for one write head)


class SparseMemoryState(NamedTuple):
    """The sparse memory at one time step.

    ``memory``, ``usage``, ``usage_blocks`` and the four link tables are
    updated IN PLACE by the next step (that is what makes a million-slot
    memory affordable): a state passed to the model is consumed. Keep a copy
    with `clone` to run two continuations from the same state.

    Attributes:
        memory: M, ``[B, N, W]``.
        usage: one key per slot, smaller = less recently accessed (see
            `torchdnc.sparse.addressing.usage_keys`), ``[B, N]`` float64.
        usage_blocks: minima of ``usage`` over blocks of ceil(sqrt N)
            slots, ``[B, ceil(N / ceil(sqrt N))]`` float64.
        time: steps taken, t, ``[B]`` int64.
        read_ids, read_weights: w^R_t as K_R slots per head, ``[B, R, K_R]``.
        link_row_ids, link_row_values: L_t by rows: row i keeps K_L entries
            (j, L[i, j]) ("i was written after j"), ``[B, N, K_L]``.
        link_column_ids, link_column_values: L_t by columns: column j keeps
            K_L entries (i, L[i, j]), ``[B, N, K_L]``. K_L = 0 without links (SAM).
        precedence_ids, precedence_values: p_t, K_L entries, ``[B, K_L]``.
    """

    memory: Tensor
    usage: Tensor
    usage_blocks: Tensor
    time: Tensor
    read_ids: Tensor
    read_weights: Tensor
    link_row_ids: Tensor
    link_row_values: Tensor
    link_column_ids: Tensor
    link_column_values: Tensor
    precedence_ids: Tensor
    precedence_values: Tensor

    @classmethod
    def zeros(cls, batch_size: int, memory_size: int, word_size: int, num_reads: int,
              sparse_reads: int, link_entries: int = 0, device=None, dtype=None
              ) -> "SparseMemoryState":
        """The initial state: empty memory, no slot ever accessed, no links."""
        B, N, W, R, KR, E = batch_size, memory_size, word_size, num_reads, sparse_reads, link_entries
        blocks = -(-N // addressing.block_size(N))
        never = float("-inf")
        own = torch.arange(N, device=device).view(1, N, 1).expand(B, N, E).contiguous()
        return cls(
            memory=torch.zeros(B, N, W, device=device, dtype=dtype),
            usage=torch.full((B, N), never, device=device, dtype=torch.float64),
            usage_blocks=torch.full((B, blocks), never, device=device, dtype=torch.float64),
            time=torch.zeros(B, device=device, dtype=torch.long),
            read_ids=torch.zeros(B, R, KR, device=device, dtype=torch.long),
            read_weights=torch.zeros(B, R, KR, device=device, dtype=dtype),
            link_row_ids=own,
            link_row_values=torch.zeros(B, N, E, device=device, dtype=dtype),
            link_column_ids=own.clone(),
            link_column_values=torch.zeros(B, N, E, device=device, dtype=dtype),
            precedence_ids=torch.zeros(B, E, device=device, dtype=torch.long),
            precedence_values=torch.zeros(B, E, device=device, dtype=dtype),
        )

    def detach(self) -> "SparseMemoryState":
        """The same state cut from the autograd graph (shares the buffers)."""
        return SparseMemoryState(*(t.detach() for t in self))

    def clone(self) -> "SparseMemoryState":
        """An independent copy (O(N W)): the next step will not change it."""
        return SparseMemoryState(*(t.detach().clone() for t in self))


class SparseInterface(NamedTuple):
    """The sparse interface vector after its nonlinearities.

    Attributes:
        read_keys: k^r, ``[B, R, W]``.
        read_strengths: beta^r, ``[B, R]``.
        write_vector: a_t, ``[B, 1, W]``.
        write_gate: alpha_t in [0, 1], ``[B, 1]``.
        interpolation_gate: gamma_t in [0, 1], ``[B, 1]``; 1 writes to the
            previously read slots, 0 to the least recently accessed one.
        read_modes: pi, ``[B, R, 3]`` over (backward, content, forward);
            (0, 1, 0) without links (SAM reads by content only).
    """

    read_keys: Tensor
    read_strengths: Tensor
    write_vector: Tensor
    write_gate: Tensor
    interpolation_gate: Tensor
    read_modes: Tensor


def sparse_interface_size(num_reads: int, word_size: int, links: bool) -> int:
    """R W + R + W + 2, plus 3 R read modes with links."""
    return num_reads * word_size + num_reads + word_size + 2 + (READ_MODES * num_reads if links else 0)


def parse_sparse_interface(xi: Tensor, num_reads: int, word_size: int, links: bool,
                           strength_activation: str = "oneplus") -> SparseInterface:
    """Split xi_t ``[B, size]`` in the order read keys [R, W], read strengths [R],
    write vector [W], write gate, interpolation gate, read modes [R, 3] (links
    only); strengths through oneplus (or softplus), gates sigmoid, modes softmax."""
    R, W = num_reads, word_size
    expected = sparse_interface_size(R, W, links)
    if xi.shape[-1] != expected:
        raise ValueError(f"xi: expected last dimension {expected} (num_reads={R}, word_size={W}, "
                         f"links={links}), got shape {tuple(xi.shape)}")
    strength = dense_addressing.oneplus if strength_activation == "oneplus" else F.softplus
    batch = xi.shape[0]
    sizes = [R * W, R, W, 1, 1] + ([READ_MODES * R] if links else [])
    parts = torch.split(xi, sizes, dim=-1)
    if links:
        modes = torch.softmax(parts[5].reshape(batch, R, READ_MODES), dim=-1)
    else:
        modes = xi.new_tensor([0.0, 1.0, 0.0]).expand(batch, R, READ_MODES)
    return SparseInterface(
        read_keys=parts[0].reshape(batch, R, W),
        read_strengths=strength(parts[1]),
        write_vector=parts[2].reshape(batch, 1, W),
        write_gate=torch.sigmoid(parts[3]),
        interpolation_gate=torch.sigmoid(parts[4]),
        read_modes=modes,
    )


class SparseStepTrace(NamedTuple):
    """What one sparse step did besides its new state, for plots."""

    write_ids: Tensor  # [B, 1, S], S = R K_R + 1
    write_weights: Tensor  # w^W_t at write_ids (each slot once), [B, 1, S]
    least_used: Tensor  # I^U_t, the erased slot, [B]
    read_content_ids: Tensor  # [B, R, K_R]
    read_content_weights: Tensor  # c^r_t, [B, R, K_R]


class SparseSession:
    """The memory side of one forward call: owns its `Tape` and the search index.

    ``session = SparseSession(state, index, ...)``, ``state = session.buffers(state)``;
    then ``state, reads, parts = session.step(state, interface, keep)`` per step and
    ``state = session.finish(state)`` at the end (connects the in-place
    buffers to the autograd graph for the next call).
    """

    def __init__(self, state: SparseMemoryState, index, sparse_reads: int, usage: str,
                 usage_threshold: float, usage_discount: float,
                 write_read_gradient: bool = True) -> None:
        self.index = index
        self.write_read_gradient = write_read_gradient
        self.sparse_reads = sparse_reads
        self.usage = usage
        self.usage_threshold = usage_threshold
        self.usage_discount = usage_discount
        self.links = state.link_row_ids.shape[-1] > 0
        memory = state.memory
        self.tape = Tape(torch.is_grad_enabled(), memory.dtype, memory.device)
        self.memory = self.tape.add(memory)
        if self.links:
            self.rows = self.tape.add(state.link_row_values)
            self.columns = self.tape.add(state.link_column_values)
        index.prepare(self.tape.stores[self.memory])

    def buffers(self, state: SparseMemoryState) -> SparseMemoryState:
        """``state`` with its in-place tensors replaced by this call's buffers."""
        stores = self.tape.stores
        state = state._replace(memory=stores[self.memory])
        if self.links:
            state = state._replace(link_row_values=stores[self.rows],
                                   link_column_values=stores[self.columns])
        return state

    def finish(self, state: SparseMemoryState) -> SparseMemoryState:
        state = state._replace(memory=self.tape.leave(self.memory))
        if self.links:
            state = state._replace(link_row_values=self.tape.leave(self.rows),
                                   link_column_values=self.tape.leave(self.columns))
        self.tape.token = None  # the graph refers to the tape; no cycle back to it
        return state

    def step(self, state: SparseMemoryState, interface: SparseInterface, keep: Tensor | None
             ) -> tuple[SparseMemoryState, Tensor, SparseStepTrace]:
        """One access, steps 1-8 of the module docstring; ``keep [B]`` false on padding
        (nothing changes for that sequence)."""
        tape, memory = self.tape, self.memory
        batch, heads, k = state.read_ids.shape
        on = None if keep is None else keep.to(state.read_weights.dtype)

        least_used = addressing.least_used(state.usage, state.usage_blocks)
        previous = state.read_weights if self.write_read_gradient else state.read_weights.detach()
        write_ids, write_totals, write_first = addressing.write_weights(
            state.read_ids, previous, least_used, interface.write_gate,
            interface.interpolation_gate)
        old = tape.gather(memory, write_ids)
        new = addressing.erase_and_write(old, write_ids, least_used, write_totals,
                                         interface.write_vector)
        if keep is not None:
            new = torch.where(keep.view(-1, 1, 1), new, old)
        tape.scatter(memory, write_ids, new)
        self.index.update(tape.stores[memory], write_ids, new)
        write_values = write_totals * write_first.to(write_totals.dtype)
        if on is not None:
            write_values = write_values * on.unsqueeze(1)

        if self.links:
            state = self._update_links(state, write_ids, write_values, write_first, keep)

        content_ids = self.index.search(tape.stores[memory], interface.read_keys, k)
        valid = content_ids >= 0
        content_ids = content_ids.clamp_min(0)
        content_rows = tape.gather(memory, content_ids.reshape(batch, -1)).view(batch, heads, k, -1)
        content_weights = addressing.sparse_content_weights(
            content_rows, interface.read_keys, interface.read_strengths, valid)
        if self.links:
            read_ids, read_weights = self._mix(state, interface.read_modes, content_ids,
                                               content_weights)
            rows = tape.gather(memory, read_ids.reshape(batch, -1)).view(batch, heads, k, -1)
        else:
            read_ids, read_weights, rows = content_ids, content_weights, content_rows
        reads = (read_weights.unsqueeze(-1) * rows).sum(-2)

        access_ids = torch.cat([write_ids, read_ids.reshape(batch, -1)], dim=1)
        read_access = read_weights.reshape(batch, -1)
        if on is not None:
            read_access = read_access * on.unsqueeze(1)
        self._update_usage(state, access_ids, torch.cat([write_values, read_access], dim=1), keep)

        time = state.time + (1 if keep is None else keep.long())
        if keep is not None:
            read_ids = torch.where(keep.view(-1, 1, 1), read_ids, state.read_ids)
            read_weights = torch.where(keep.view(-1, 1, 1), read_weights, state.read_weights)
        new_state = state._replace(time=time, read_ids=read_ids, read_weights=read_weights)
        trace = SparseStepTrace(write_ids.unsqueeze(1), write_values.unsqueeze(1), least_used,
                                content_ids, content_weights * valid.to(content_weights.dtype))
        return new_state, reads, trace

    # -- usage -------------------------------------------------------------

    def _update_usage(self, state: SparseMemoryState, ids: Tensor, weights: Tensor,
                      keep: Tensor | None) -> None:
        totals, _ = addressing.merge_duplicates(ids, weights)
        usage, blocks = state.usage, state.usage_blocks
        previous = usage.gather(1, ids)
        keys = addressing.usage_keys(previous, totals, state.time, self.usage,
                                     self.usage_threshold, self.usage_discount)
        if keep is not None:
            keys = torch.where(keep.unsqueeze(1), keys, previous)
        usage.scatter_(1, ids, keys)
        size = usage.shape[1]
        width = addressing.block_size(size)
        block = ids // width
        slots = block.unsqueeze(-1) * width + torch.arange(width, device=ids.device)
        values = usage.gather(1, slots.clamp_max(size - 1).flatten(1)).view(slots.shape)
        values = values.masked_fill(slots >= size, float("inf"))
        blocks.scatter_(1, block, values.amin(-1))

    # -- links (SDNC) ------------------------------------------------------------

    def _update_links(self, state: SparseMemoryState, write_ids: Tensor, write_values: Tensor,
                      write_first: Tensor, keep: Tensor | None) -> SparseMemoryState:
        """L_t by rows and by columns, then p_t (module docstring, step 4).

        The lines that change are the rows and columns of the written slots,
        the columns of the precedence's slots, and the lines that hold an
        entry in a written row or column; they are found through the other
        table (columns through the rows and vice versa), both as they were
        at t - 1. An entry that one table kept and the other pruned is
        updated only where it is found: the two tables are separate
        K_L-sparse approximations of one L, exact transposes of each other
        while no line overflows.
        """
        tape = self.tape
        entries = state.link_row_ids.shape[-1]
        row_ids, column_ids = state.link_row_ids, state.link_column_ids
        prec_ids, prec_values = state.precedence_ids, state.precedence_values
        _, prec_first = addressing.merge_duplicates(prec_ids, prec_values)
        prec_values_once = prec_values * prec_first.to(prec_values.dtype)

        def lines_of(table: Tensor, lines: Tensor) -> Tensor:
            return table.gather(1, lines.unsqueeze(-1).expand(-1, -1, entries))

        rows = torch.cat([write_ids, lines_of(column_ids, write_ids).flatten(1)], dim=1)
        columns = torch.cat([write_ids, prec_ids, lines_of(row_ids, write_ids).flatten(1)], dim=1)
        old_row_ids, old_column_ids = lines_of(row_ids, rows), lines_of(column_ids, columns)
        old_row_values = tape.gather(self.rows, rows)
        old_column_values = tape.gather(self.columns, columns)

        def write_at(query: Tensor) -> Tensor:
            return addressing.lookup(write_ids, write_values, query)

        def precedence_at(query: Tensor) -> Tensor:
            return addressing.lookup(prec_ids, prec_values_once, query)

        row_write = write_at(rows)
        new_row_ids, new_row_values = addressing.update_link_lines(
            rows, old_row_ids, old_row_values, row_write, write_at(old_row_ids), row_write,
            precedence_at(old_row_ids), prec_ids, prec_values_once, prec_first)
        column_entry_write = write_at(old_column_ids)
        new_column_ids, new_column_values = addressing.update_link_lines(
            columns, old_column_ids, old_column_values, write_at(columns), column_entry_write,
            precedence_at(columns), column_entry_write, write_ids, write_values, write_first)
        new_prec_ids, new_prec_values = addressing.precedence_update(
            prec_ids, prec_values, write_ids, write_values)

        if keep is not None:
            line = keep.view(-1, 1, 1)
            new_row_ids = torch.where(line, new_row_ids, old_row_ids)
            new_row_values = torch.where(line, new_row_values, old_row_values)
            new_column_ids = torch.where(line, new_column_ids, old_column_ids)
            new_column_values = torch.where(line, new_column_values, old_column_values)
            new_prec_ids = torch.where(keep.view(-1, 1), new_prec_ids, prec_ids)
            new_prec_values = torch.where(keep.view(-1, 1), new_prec_values, prec_values)
        tape.scatter(self.rows, rows, new_row_values)
        tape.scatter(self.columns, columns, new_column_values)
        row_ids.scatter_(1, rows.unsqueeze(-1).expand(-1, -1, entries), new_row_ids)
        column_ids.scatter_(1, columns.unsqueeze(-1).expand(-1, -1, entries), new_column_ids)
        return state._replace(precedence_ids=new_prec_ids, precedence_values=new_prec_values)

    def _mix(self, state: SparseMemoryState, modes: Tensor, content_ids: Tensor,
             content_weights: Tensor) -> tuple[Tensor, Tensor]:
        """w^R_t = pi_b b + pi_c c + pi_f f over the union of their slots, K_R largest kept."""
        tape = self.tape
        batch, heads, k = content_ids.shape
        entries = state.link_row_ids.shape[-1]
        previous = state.read_ids.reshape(batch, -1)
        weight = state.read_weights.unsqueeze(-1)

        def follow(table: Tensor, store: int) -> tuple[Tensor, Tensor]:
            ids = table.gather(1, previous.unsqueeze(-1).expand(-1, -1, entries))
            values = tape.gather(store, previous).view(batch, heads, k, entries) * weight
            return ids.view(batch, heads, k * entries), values.view(batch, heads, k * entries)

        forward_ids, forward_values = follow(state.link_column_ids, self.columns)
        backward_ids, backward_values = follow(state.link_row_ids, self.rows)
        ids = torch.cat([backward_ids, content_ids, forward_ids], dim=-1)
        values = torch.cat([modes[..., :1] * backward_values, modes[..., 1:2] * content_weights,
                            modes[..., 2:] * forward_values], dim=-1)
        return addressing.top_weights(ids, values, k)
