"""Sparse Access Memory equations, one pure function per equation group.

Rae, Hunt et al., "Scaling Memory-Augmented Neural Networks with Sparse
Reads and Writes", NeurIPS 2016 (SAM; the SDNC in its supplementary).
Notation as in `torchdnc.addressing`, plus

    K_R  sparse reads: non-zero read weights per head (the paper's K),
    S  write support: R K_R + 1 slots (the previous reads and the least
       recently accessed slot),
    K_L  link entries per row and per column (SDNC).

A sparse weighting is a pair (ids, values) of equal shape ``[..., C]``:
slot ids (int64) and their weights. Ids may repeat; `merge_duplicates`
sums repeated ids so that each slot counts once. Everything here is
differentiable in the values and runs in float32 and float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from torchdnc.addressing import SIMILARITY_EPSILON

USAGE_KINDS = ("last_access", "discounted")


def densify(ids: Tensor, values: Tensor, size: int) -> Tensor:
    """The dense weighting ``[..., size]`` of a sparse one (repeated ids add up).

    For plots and tests with small N.
    """
    dense = values.new_zeros(*values.shape[:-1], size)
    return dense.scatter_add(-1, ids.clamp_min(0), values * (ids >= 0).to(values.dtype))


def merge_duplicates(ids: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Sum the values of repeated ids along the last axis.

    Returns:
        (totals, first): ``totals[..., c]`` is the sum of all values whose id
        equals ``ids[..., c]``; ``first`` is true at the first occurrence of
        each id. ``totals * first`` is the sparse weighting with each slot
        once.
    """
    same = ids.unsqueeze(-1) == ids.unsqueeze(-2)
    # Position of each id's first occurrence (argmax returns the first true).
    leader = same.to(torch.uint8).argmax(-1)
    first = leader == torch.arange(ids.shape[-1], device=ids.device)
    sums = torch.zeros_like(values).scatter_add(-1, leader, values)
    return sums.gather(-1, leader), first


def lookup(ids: Tensor, values: Tensor, query: Tensor) -> Tensor:
    """w(query) for a sparse weighting (ids ``[B, C]``, values ``[B, C]``, each id
    once or with zero value on repeats after the first) at slots ``query [B, ...]``."""
    batch = ids.shape[0]
    flat = query.reshape(batch, -1, 1)
    same = flat == ids.unsqueeze(1)
    position = same.to(torch.uint8).argmax(-1)  # first match
    found = values.gather(1, position) * same.any(-1).to(values.dtype)
    return found.reshape(query.shape)


def top_weights(ids: Tensor, values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries of a sparse weighting after merging repeats.

    Args:
        ids, values: ``[..., C]`` with C >= k.

    Returns:
        (ids, values), ``[..., k]``; the values are not renormalised.
    """
    totals, first = merge_duplicates(ids, values)
    ranked = torch.where(first, totals, torch.full_like(totals, -1.0))
    best = ranked.topk(k, dim=-1).indices
    return ids.gather(-1, best), totals.gather(-1, best) * first.gather(-1, best).to(totals.dtype)


def masked_softmax(logits: Tensor, valid: Tensor) -> Tensor:
    """softmax over the valid entries of the last axis; 0 elsewhere (and where none is)."""
    masked = logits.masked_fill(~valid, float("-inf"))
    top = masked.amax(-1, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    exponentials = torch.exp(masked - top)
    return exponentials / exponentials.sum(-1, keepdim=True).clamp_min(1.0)


def sparse_content_weights(rows: Tensor, keys: Tensor, strengths: Tensor,
                           valid: Tensor | None = None) -> Tensor:
    """K_R-sparse content weights, SAM section 3.1.

    The content softmax C(M, k, beta) of the DNC restricted to the K_R rows the
    nearest-neighbour search found: softmax over those K_R of
    beta * D(k, M[i]), with D the cosine similarity of
    `torchdnc.addressing.cosine_similarity` (same epsilons). With K_R = N this
    is exactly the dense `torchdnc.addressing.content_weights`.

    Args:
        rows: the found rows M[i], ``[B, heads, K_R, W]``.
        keys: k, ``[B, heads, W]``.
        strengths: beta, ``[B, heads]``.
        valid: ``[B, heads, K_R]``, false where the search found no row.

    Returns:
        Weights over the K_R found rows, ``[B, heads, K_R]``.
    """
    dot = (rows * keys.unsqueeze(-2)).sum(-1)
    row_norms = torch.sqrt((rows * rows).sum(-1) + SIMILARITY_EPSILON)
    key_norms = torch.sqrt((keys * keys).sum(-1) + SIMILARITY_EPSILON)
    similarity = dot / (key_norms.unsqueeze(-1) * row_norms + SIMILARITY_EPSILON)
    logits = strengths.unsqueeze(-1) * similarity
    if valid is None:
        valid = torch.ones_like(logits, dtype=torch.bool)
    return masked_softmax(logits, valid)


def write_weights(previous_read_ids: Tensor, previous_read_weights: Tensor, least_used: Tensor,
                  write_gate: Tensor, interpolation_gate: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sparse write weights, SAM section 3.2.

    w^W_t = alpha_t (gamma_t w^R_{t-1} + (1 - gamma_t) I^U_t): a write adds
    to the slots read at t - 1 or goes to the least recently accessed slot
    I^U_t. With R read heads, w^R_{t-1} is their mean (1/R) sum_i w^{R,i}_{t-1}
    (our choice; the paper writes one w^R_{t-1}), so the weights sum to at
    most alpha_t.

    Args:
        previous_read_ids, previous_read_weights: w^R_{t-1}, ``[B, R, K_R]``.
        least_used: I^U_t as a slot id, ``[B]``.
        write_gate: alpha_t in [0, 1], ``[B, 1]``.
        interpolation_gate: gamma_t in [0, 1], ``[B, 1]``.

    Returns:
        (ids ``[B, S]``, totals ``[B, S]``, first ``[B, S]``), S = R K_R + 1,
        as from `merge_duplicates`; the last id is I^U_t.
    """
    batch, heads = previous_read_ids.shape[:2]
    ids = torch.cat([previous_read_ids.reshape(batch, -1), least_used.unsqueeze(1)], dim=1)
    reads = interpolation_gate * previous_read_weights.reshape(batch, -1) / heads
    weights = write_gate * torch.cat([reads, 1 - interpolation_gate], dim=1)
    totals, first = merge_duplicates(ids, weights)
    return ids, totals, first


def erase_and_write(rows: Tensor, ids: Tensor, least_used: Tensor, weights: Tensor,
                    write_vector: Tensor) -> Tensor:
    """New content of the written rows, SAM section 3.2.

    M_t = (1 - R_t) * M_{t-1} + w^W_t a_t^T with R_t = I^U_t 1^T: the least
    recently accessed row is set to zero before it is written to; writes to
    the previously read rows are purely additive.

    Args:
        rows: M_{t-1} at ``ids``, ``[B, S, W]``.
        ids: written slots, ``[B, S]``.
        least_used: I^U_t, ``[B]``.
        weights: w^W_t at ``ids`` (repeats carry the same total), ``[B, S]``.
        write_vector: a_t, ``[B, 1, W]``.

    Returns:
        M_t at ``ids``, ``[B, S, W]``.
    """
    kept = (ids != least_used.unsqueeze(1)).to(rows.dtype).unsqueeze(-1)
    return rows * kept + weights.unsqueeze(-1) * write_vector


# -- usage: least recently accessed ----------------------------------------------


def block_size(memory_size: int) -> int:
    """Slots per block of the usage minima: ceil(sqrt(N))."""
    return math.isqrt(memory_size - 1) + 1 if memory_size > 1 else 1


def least_used(usage: Tensor, blocks: Tensor) -> Tensor:
    """I^U_t, the least recently accessed slot (ties: the lower index), ``[B]``.

    ``usage [B, N]`` holds one key per slot, smaller = less recently used
    (see `usage_keys`); ``blocks [B, ceil(N / b)]`` their minima over blocks
    of b = `block_size` slots, so that the search is O(sqrt N), not O(N).
    """
    size = usage.shape[1]
    width = block_size(size)
    block = blocks.argmin(dim=1)
    slots = block.unsqueeze(1) * width + torch.arange(width, device=usage.device)
    values = usage.gather(1, slots.clamp_max(size - 1))
    values = values.masked_fill(slots >= size, float("inf"))
    return slots.gather(1, values.argmin(dim=1, keepdim=True)).squeeze(1)


def usage_keys(previous: Tensor, access: Tensor, time: Tensor, kind: str, threshold: float,
               discount: float) -> Tensor:
    """New usage keys of the accessed slots, SAM section 3.3.

    ``"last_access"``: the key is the time of the last access whose weight
    exceeded delta (w^W_t(i) + sum_i w^R_t(i) > delta), so that the least
    recently accessed slot has the smallest key; -inf until first accessed.
    ``"discounted"``: U_t(i) = lambda U_{t-1}(i) + w^W_t(i) + sum_i w^R_t(i),
    stored as the time-independent key log U_t(i) - t log lambda (ordering
    equals that of U_t; only accessed slots change).

    Args:
        previous: the slots' keys before, ``[B, C]`` (float64).
        access: their access weight this step, ``[B, C]``.
        time: t, ``[B]``.
        kind, threshold (delta), discount (lambda): see above.
    """
    time = time.to(previous.dtype).unsqueeze(1)
    access = access.detach().to(previous.dtype)
    if kind == "last_access":
        return torch.where(access > threshold, time.expand_as(previous), previous)
    scale = -time * torch.log(torch.tensor(discount, dtype=previous.dtype))
    current = torch.exp(previous - scale)
    return torch.log(current + access) + scale


# -- temporal links (SDNC) ------------------------------------------------------------


def update_link_lines(lines: Tensor, entry_ids: Tensor, entry_values: Tensor, line_write: Tensor,
                      entry_write: Tensor, line_factor: Tensor, entry_factor: Tensor,
                      candidate_ids: Tensor, candidate_factor: Tensor, candidate_first: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """New entries of some lines (rows or columns) of the sparse link matrix.

    DNC Methods, "Temporal memory linkage", applied to the stored entries:
    L_t[i, j] = (1 - w[i] - w[j]) L_{t-1}[i, j] + w[i] p_{t-1}[j], zero
    diagonal, w = w^W_t. Each line keeps its K_L largest entries (SDNC: K_L
    per row and per column). Written generically for a line x with entries e:
    new = (1 - w[x] - w[e]) old + line_factor[x] * entry_factor[e], and new
    entries for the candidate ids c with value line_factor[x] * factor[c].
    Rows (x = i): line_factor = w[i], entry_factor = p[j], candidates S_p.
    Columns (x = j): line_factor = p[j], entry_factor = w[i], candidates S_w.
    Empty entries hold the line's own id and 0 (the diagonal, always 0).

    Args:
        lines: ``[B, T]`` line ids; entry_ids, entry_values: ``[B, T, K_L]``.
        line_write: w[x], ``[B, T]``; entry_write: w[e], ``[B, T, K_L]``.
        line_factor: ``[B, T]``; entry_factor: ``[B, T, K_L]``.
        candidate_ids, candidate_factor, candidate_first: ``[B, C]``.

    Returns:
        (ids, values), ``[B, T, K_L]``.
    """
    capacity = entry_ids.shape[-1]
    own = lines.unsqueeze(-1)
    values = ((1 - line_write.unsqueeze(-1) - entry_write) * entry_values
              + line_factor.unsqueeze(-1) * entry_factor)
    diagonal = entry_ids == own
    values = values.masked_fill(diagonal, 0.0)
    entry_ids = torch.where(diagonal, own.expand_as(entry_ids), entry_ids)

    candidates = candidate_ids.unsqueeze(1).expand(-1, lines.shape[1], -1)
    present = (candidates.unsqueeze(-1) == entry_ids.unsqueeze(-2)).any(-1)
    usable = candidate_first.unsqueeze(1) & ~present & (candidates != own)
    new_values = line_factor.unsqueeze(-1) * candidate_factor.unsqueeze(1)
    new_values = torch.where(usable, new_values, torch.full_like(new_values, -1.0))

    all_ids = torch.cat([entry_ids, candidates], dim=-1)
    all_values = torch.cat([values, new_values], dim=-1)
    best = all_values.topk(capacity, dim=-1).indices
    return all_ids.gather(-1, best), all_values.gather(-1, best)


def precedence_update(ids: Tensor, values: Tensor, write_ids: Tensor, write_values: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """Sparse precedence p_t = (1 - sum_i w^W_t[i]) p_{t-1} + w^W_t, top K_L kept.

    Args:
        ids, values: p_{t-1}, ``[B, K_L]`` (empty entries: id 0, value 0).
        write_ids, write_values: w^W_t, ``[B, S]`` (each slot once).

    Returns:
        p_t, (ids, values) ``[B, K_L]``.
    """
    kept = 1 - write_values.sum(-1, keepdim=True)
    all_ids = torch.cat([ids, write_ids], dim=-1)
    all_values = torch.cat([kept * values, write_values], dim=-1)
    new_ids, new_values = top_weights(all_ids, all_values, ids.shape[-1])
    return new_ids, new_values
