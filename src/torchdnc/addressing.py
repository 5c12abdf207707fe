"""The DNC's memory-addressing equations, one pure function per equation group.

Graves, Wayne et al., "Hybrid computing using a neural network with dynamic
external memory", Nature 538 (2016), section Methods, with DeepMind's
multi-write-head extension. Notation:

    B batch, N memory slots, W word size, R read heads, K write heads,
    heads: any number of heads (R or K), where a function serves both.

Every tensor is batch-first and head axes are always present, also when R or
K is 1. Nothing here holds state; every function works in float32 and
float64 and is differentiable (``torch.autograd.gradcheck`` in the tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Keeps the cosine similarity finite at all-zero keys or memory rows:
# |x| = sqrt(sum x^2 + eps) and D = k.m / (|k| |m| + eps) (DeepMind uses 1e-6).
SIMILARITY_EPSILON = 1e-6

# Added to the directional weightings before they are sharpened (Csordás &
# Schmidhuber 2019, section 3.3): keeps d^s and its gradient finite where d = 0.
SHARPNESS_EPSILON = 1e-6

# Usage is mapped to eps + (1 - eps) u before allocation so that the
# exclusive cumulative product of usages never multiplies by an exact zero,
# which keeps the gradient through it defined (DeepMind uses 1e-6).
ALLOCATION_EPSILON = 1e-6


# Nonlinearities offered for the key strengths: the paper's oneplus, DeepMind's softplus.
STRENGTH_ACTIVATIONS = ("oneplus", "softplus")


def oneplus(x: Tensor) -> Tensor:
    """oneplus(x) = 1 + softplus(x) in [1, inf): the paper's key strengths."""
    return 1 + F.softplus(x)


def cosine_similarity(memory: Tensor, keys: Tensor, masks: Tensor | None = None) -> Tensor:
    """Cosine similarity D(k, M[i,.]) of every key with every memory row.

    Methods, "Content-based addressing": D(u, v) = u.v / (|u||v|), here with
    |x| = sqrt(sum x^2 + eps) and D = k.m / (|k||m| + eps).

    With ``masks`` (masked content addressing, Csordás & Schmidhuber 2019,
    section 3.1) each head compares only the masked parts: D(k * m, M[i,.] * m),
    the norms taken of the masked vectors too.

    Args:
        memory: M, ``[B, N, W]``.
        keys: k, ``[B, heads, W]``.
        masks: optional m in [0, 1], one per head, ``[B, heads, W]``.

    Returns:
        D, ``[B, heads, N]``.
    """
    if masks is not None:
        keys = keys * masks
        masked = memory.unsqueeze(1) * masks.unsqueeze(2)  # [B, heads, N, W]
        dot = (masked * keys.unsqueeze(2)).sum(-1)
        memory_norms = torch.sqrt((masked * masked).sum(-1) + SIMILARITY_EPSILON)
        key_norms = torch.sqrt((keys * keys).sum(-1) + SIMILARITY_EPSILON)
        return dot / (key_norms.unsqueeze(-1) * memory_norms + SIMILARITY_EPSILON)
    dot = torch.matmul(keys, memory.transpose(-1, -2))
    memory_norms = torch.sqrt((memory * memory).sum(-1) + SIMILARITY_EPSILON)
    key_norms = torch.sqrt((keys * keys).sum(-1) + SIMILARITY_EPSILON)
    norms = key_norms.unsqueeze(-1) * memory_norms.unsqueeze(-2)
    return dot / (norms + SIMILARITY_EPSILON)


def content_weights(memory: Tensor, keys: Tensor, strengths: Tensor,
                    masks: Tensor | None = None) -> Tensor:
    """Content-based weightings C(M, k, beta), Methods, "Content-based addressing".

    C(M, k, beta)[i] = softmax_i(beta * D(k, M[i,.])); with ``masks``,
    C(M, k, beta, m)[i] = softmax_i(beta * D(k * m, M[i,.] * m)) (masked
    content addressing, Csordás & Schmidhuber 2019).

    Args:
        memory: M, ``[B, N, W]``.
        keys: lookup keys k (read keys k^r or write keys k^w), ``[B, heads, W]``.
        strengths: key strengths beta in [1, inf), ``[B, heads]``.
        masks: optional m in [0, 1], ``[B, heads, W]``.

    Returns:
        c, ``[B, heads, N]``, each row a distribution over slots.
    """
    similarity = cosine_similarity(memory, keys, masks)
    return torch.softmax(strengths.unsqueeze(-1) * similarity, dim=-1)


def retention(free_gates: Tensor, read_weights: Tensor) -> Tensor:
    """Retention psi_t = prod_i (1 - f^i_t w^{r,i}_{t-1}), Methods, "Dynamic memory
    allocation": how much of each slot the free gates leave.

    Args:
        free_gates: f_t in [0, 1], ``[B, R]``.
        read_weights: w^r_{t-1}, ``[B, R, N]``.

    Returns:
        psi_t, ``[B, N]`` in [0, 1].
    """
    return torch.prod(1 - free_gates.unsqueeze(-1) * read_weights, dim=1)


def usage_update(
    usage: Tensor, write_weights: Tensor, free_gates: Tensor, read_weights: Tensor
) -> Tensor:
    """Memory usage u_t, Methods, "Dynamic memory allocation".

    psi_t = prod_i (1 - f^i_t w^{r,i}_{t-1})        (retention)
    w_hat = 1 - prod_k (1 - w^{w,k}_{t-1})            (aggregate write)
    u_t = (u_{t-1} + w_hat - u_{t-1} * w_hat) * psi_t

    The previous write weights enter without gradient, as in DeepMind's code.

    Args:
        usage: u_{t-1}, ``[B, N]``.
        write_weights: w^w_{t-1}, ``[B, K, N]``.
        free_gates: f_t in [0, 1], ``[B, R]``.
        read_weights: w^r_{t-1}, ``[B, R, N]``.

    Returns:
        u_t, ``[B, N]`` in [0, 1].
    """
    write_weights = write_weights.detach()
    aggregate_write = 1 - torch.prod(1 - write_weights, dim=1)
    kept = torch.prod(1 - free_gates.unsqueeze(-1) * read_weights, dim=1)
    return (usage + aggregate_write - usage * aggregate_write) * kept


def _single_allocation(usage: Tensor) -> Tensor:
    """a_t for one write head from usage ``[B, N]``; see `allocation_weights`."""
    usage = ALLOCATION_EPSILON + (1 - ALLOCATION_EPSILON) * usage
    # Free list phi: slots by ascending usage; the stable sort makes the lower
    # index the freer one on ties. Gradient flows through the sorted values,
    # not through the permutation.
    sorted_usage, free_list = torch.sort(usage, dim=-1, stable=True)
    ones = torch.ones_like(sorted_usage[..., :1])
    exclusive_product = torch.cumprod(
        torch.cat([ones, sorted_usage[..., :-1]], dim=-1), dim=-1
    )
    sorted_allocation = (1 - sorted_usage) * exclusive_product
    return torch.zeros_like(sorted_allocation).scatter(-1, free_list, sorted_allocation)


def allocation_weights(usage: Tensor, gates: Tensor | None = None) -> Tensor:
    """Allocation weightings a_t, Methods, "Dynamic memory allocation".

    Usage is first mapped to eps + (1 - eps) u. With phi the slots sorted by
    ascending usage (ties: the lower index is freer),
    a_t[phi_j] = (1 - u_t[phi_j]) prod_{i<j} u_t[phi_i].

    With ``gates`` (K write heads), head k is allocated on a simulated usage in
    which heads < k have already written:
    u <- u + (1 - u) * (g^a_k g^w_k) * a_k. The caller's usage is unchanged.

    Args:
        usage: u_t, ``[B, N]``.
        gates: optional g^a * g^w per write head, ``[B, K]``.

    Returns:
        a_t, ``[B, N]`` without ``gates``, ``[B, K, N]`` with them; each row
        is non-negative and sums to at most 1.
    """
    if gates is None:
        return _single_allocation(usage)
    return multi_head_allocation_weights(usage, gates)


def multi_head_allocation_weights(usage: Tensor, gates: Tensor) -> Tensor:
    """Allocation weightings for K write heads, ``[B, K, N]``.

    See `allocation_weights`; ``gates`` is g^a * g^w, ``[B, K]``.
    """
    allocations = []
    for head in range(gates.shape[1]):
        allocation = _single_allocation(usage)
        allocations.append(allocation)
        if head + 1 < gates.shape[1]:
            usage = usage + (1 - usage) * gates[:, head : head + 1] * allocation
    return torch.stack(allocations, dim=1)


def write_weights(
    allocation: Tensor,
    write_content_weights: Tensor,
    allocation_gates: Tensor,
    write_gates: Tensor,
) -> Tensor:
    """Write weightings w^w_t, Methods, "Write weighting".

    w^w_t = g^w_t (g^a_t a_t + (1 - g^a_t) c^w_t), per write head.

    Args:
        allocation: a_t, ``[B, K, N]``.
        write_content_weights: c^w_t, content weights on M_{t-1}, ``[B, K, N]``.
        allocation_gates: g^a_t in [0, 1], ``[B, K]``.
        write_gates: g^w_t in [0, 1], ``[B, K]``.

    Returns:
        w^w_t, ``[B, K, N]``.
    """
    allocation_gates = allocation_gates.unsqueeze(-1)
    mixed = allocation_gates * allocation + (1 - allocation_gates) * write_content_weights
    return write_gates.unsqueeze(-1) * mixed


def erase_and_write(
    memory: Tensor, write_weights: Tensor, erase: Tensor, write_vectors: Tensor,
    retention: Tensor | None = None,
) -> Tensor:
    """New memory M_t, Methods, "Reading and writing to memory".

    M_t = M_{t-1} * prod_k (E - w^{w,k}_t e_k^T) + sum_k w^{w,k}_t v_k^T.

    With ``retention`` psi_t (de-allocation, Csordás & Schmidhuber 2019,
    section 3.2, eq. 1) freed slots are erased as well, in the same update:
    M_t = M_{t-1} * (psi_t 1^T) * prod_k (E - w^{w,k}_t e_k^T) + sum_k w^{w,k}_t v_k^T.

    Args:
        memory: M_{t-1}, ``[B, N, W]``.
        write_weights: w^w_t, ``[B, K, N]``.
        erase: erase vectors e_t in [0, 1], ``[B, K, W]``.
        write_vectors: v_t, ``[B, K, W]``.
        retention: optional psi_t, ``[B, N]``.

    Returns:
        M_t, ``[B, N, W]``.
    """
    keep = torch.prod(1 - write_weights.unsqueeze(-1) * erase.unsqueeze(-2), dim=1)
    if retention is not None:
        keep = retention.unsqueeze(-1) * keep
    return memory * keep + torch.matmul(write_weights.transpose(1, 2), write_vectors)


def precedence_update(precedence: Tensor, write_weights: Tensor) -> Tensor:
    """Precedence p_t, Methods, "Temporal memory linkage".

    p_t = (1 - sum_i w^w_t[i]) p_{t-1} + w^w_t, per write head.

    Args:
        precedence: p_{t-1}, ``[B, K, N]``.
        write_weights: w^w_t, ``[B, K, N]``.

    Returns:
        p_t, ``[B, K, N]``.
    """
    write_sum = write_weights.sum(-1, keepdim=True)
    return (1 - write_sum) * precedence + write_weights


def link_update(link: Tensor, precedence: Tensor, write_weights: Tensor) -> Tensor:
    """Temporal link matrix L_t, Methods, "Temporal memory linkage".

    L_t[i, j] = (1 - w[i] - w[j]) L_{t-1}[i, j] + w[i] p_{t-1}[j], then
    L_t[i, i] = 0, per write head with w = w^w_t. Uses the PREVIOUS precedence.

    Args:
        link: L_{t-1}, ``[B, K, N, N]``.
        precedence: p_{t-1}, ``[B, K, N]``.
        write_weights: w^w_t, ``[B, K, N]``.

    Returns:
        L_t, ``[B, K, N, N]``, entries in [0, 1], zero diagonal.
    """
    write_i = write_weights.unsqueeze(-1)
    write_j = write_weights.unsqueeze(-2)
    new_link = (1 - write_i - write_j) * link + write_i * precedence.unsqueeze(-2)
    return new_link.diagonal_scatter(
        torch.zeros_like(write_weights), dim1=-2, dim2=-1
    )


def directional_weights(link: Tensor, read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Forward and backward weightings, Methods, "Temporal memory linkage".

    f^i_t = L_t w^{r,i}_{t-1} and b^i_t = L_t^T w^{r,i}_{t-1}, for every read
    head i and every write head's link matrix.

    Args:
        link: L_t, ``[B, K, N, N]``.
        read_weights: w^r_{t-1}, ``[B, R, N]``.

    Returns:
        (forward f_t, backward b_t), each ``[B, R, K, N]``.
    """
    # [B, 1, R, N] @ [B, K, N, N] -> [B, K, R, N]; row-vector products:
    # (w L^T)[i] = (L w)[i] is forward, (w L)[j] = (L^T w)[j] is backward.
    weights = read_weights.unsqueeze(1)
    forward = torch.matmul(weights, link.transpose(-1, -2))
    backward = torch.matmul(weights, link)
    return forward.transpose(1, 2), backward.transpose(1, 2)


def sharpen(weights: Tensor, exponents: Tensor) -> Tensor:
    """Sharpened directional weightings, Csordás & Schmidhuber 2019, section 3.3.

    S(d, s)[j] = ((d[j] + eps) / max(d + eps))^s / sum_k ((d[k] + eps) / max(d + eps))^s,
    eps = 1e-6, over the slots j; s >= 1 (oneplus of the interface).

    Args:
        weights: d, forward or backward weightings, ``[B, R, K, N]``.
        exponents: s per read head, ``[B, R]`` (shared by the K write heads' links).

    Returns:
        ``[B, R, K, N]``, each row a distribution over slots.
    """
    shifted = weights + SHARPNESS_EPSILON
    scaled = (shifted / shifted.amax(-1, keepdim=True)) ** exponents[..., None, None]
    return scaled / scaled.sum(-1, keepdim=True)


def read_weights(
    read_content_weights: Tensor, forward: Tensor, backward: Tensor, read_modes: Tensor
) -> Tensor:
    """Read weightings w^r_t, Methods, "Read weighting".

    w^{r,i}_t = sum_k pi^i_t[b_k] b^{i,k}_t + pi^i_t[c] c^{r,i}_t
                + sum_k pi^i_t[f_k] f^{i,k}_t.

    Args:
        read_content_weights: c^r_t, content weights on M_t, ``[B, R, N]``.
        forward: f_t, ``[B, R, K, N]``.
        backward: b_t, ``[B, R, K, N]``.
        read_modes: pi_t, ``[B, R, 1 + 2K]`` laid out
            ``[backward_1..K, content, forward_1..K]``.

    Returns:
        w^r_t, ``[B, R, N]``.
    """
    num_writes = forward.shape[2]
    backward_modes = read_modes[..., :num_writes].unsqueeze(-1)
    content_mode = read_modes[..., num_writes : num_writes + 1]
    forward_modes = read_modes[..., num_writes + 1 :].unsqueeze(-1)
    return (
        (backward_modes * backward).sum(2)
        + content_mode * read_content_weights
        + (forward_modes * forward).sum(2)
    )


def read_vectors(memory: Tensor, read_weights: Tensor) -> Tensor:
    """Read vectors r_t = M_t^T w^r_t, Methods, "Reading and writing to memory".

    Args:
        memory: M_t, ``[B, N, W]``.
        read_weights: w^r_t, ``[B, R, N]``.

    Returns:
        r_t, ``[B, R, W]``.
    """
    return torch.matmul(read_weights, memory)
