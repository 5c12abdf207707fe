"""A deliberately plain NumPy reference of the DNC, written from the paper.

Explicit loops over batch, heads and slots, float64, no vectorisation tricks,
so that it shares as little as possible with `torchdnc.addressing`. One batch
element at a time: shapes below omit the batch axis.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softplus(x):
    return np.log1p(np.exp(x))


def softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def cosine(key, row):
    key_norm = np.sqrt(sum(k * k for k in key) + EPS)
    row_norm = np.sqrt(sum(m * m for m in row) + EPS)
    return float(np.dot(key, row)) / (key_norm * row_norm + EPS)


def content(memory, key, strength, mask=None):
    """C(M, k, beta): [N]; with a mask (Csordás & Schmidhuber 2019, section 3.1)
    C(M, k, beta, m)[i] = softmax(beta D(k * m, M[i] * m))."""
    if mask is not None:
        key = [k * m for k, m in zip(key, mask)]
    scores = []
    for i in range(memory.shape[0]):
        row = memory[i] if mask is None else [v * m for v, m in zip(memory[i], mask)]
        scores.append(strength * cosine(key, row))
    return softmax(np.array(scores))


def sharpen(d, s):
    """Csordás & Schmidhuber 2019, section 3.3: ((d + eps) / max(d + eps))^s, normalised."""
    shifted = [v + EPS for v in d]
    top = max(shifted)
    powered = [(v / top) ** s for v in shifted]
    total = sum(powered)
    return np.array([v / total for v in powered])


def allocation(usage):
    """a: [N] from usage [N] (epsilon mapping, stable ascending free list)."""
    usage = EPS + (1 - EPS) * np.asarray(usage, dtype=np.float64)
    order = sorted(range(len(usage)), key=lambda i: (usage[i], i))
    result = np.zeros(len(usage))
    product = 1.0
    for slot in order:
        result[slot] = (1 - usage[slot]) * product
        product *= usage[slot]
    return result


def multi_allocation(usage, gates):
    """[K, N]: head k on a usage that heads < k have written."""
    usage = np.array(usage, dtype=np.float64)
    out = []
    for gate in gates:
        a = allocation(usage)
        out.append(a)
        usage = usage + (1 - usage) * gate * a
    return np.array(out)


def parse(xi, R, W, K, strength="oneplus", masking=False, sharpness=False, temporal_links=True):
    """The interface; the successors' parts follow the DNC's (docs/semantics.md):
    read modes only with temporal links; then read masks [R, W] and write masks
    [K, W] (sigmoid); then forward and backward exponents [R] each (oneplus)."""
    act = (lambda v: 1 + softplus(v)) if strength == "oneplus" else softplus
    pos = 0

    def take(n):
        nonlocal pos
        part = xi[pos : pos + n]
        pos += n
        return part

    parts = dict(
        read_keys=take(R * W).reshape(R, W),
        read_strengths=act(take(R)),
        write_keys=take(K * W).reshape(K, W),
        write_strengths=act(take(K)),
        erase=sigmoid(take(K * W)).reshape(K, W),
        write_vectors=take(K * W).reshape(K, W),
        free_gates=sigmoid(take(R)),
        allocation_gates=sigmoid(take(K)),
        write_gates=sigmoid(take(K)),
    )
    if temporal_links:
        modes = take(R * (1 + 2 * K)).reshape(R, 1 + 2 * K)
        parts["read_modes"] = np.array([softmax(m) for m in modes])
    if masking:
        parts["read_masks"] = sigmoid(take(R * W)).reshape(R, W)
        parts["write_masks"] = sigmoid(take(K * W)).reshape(K, W)
    if sharpness:
        parts["forward_sharpness"] = 1 + softplus(take(R))
        parts["backward_sharpness"] = 1 + softplus(take(R))
    assert pos == len(xi)
    return parts


def zero_state(N, W, R, K, temporal_links=True):
    L = N if temporal_links else 0
    return dict(memory=np.zeros((N, W)), usage=np.zeros(N), link=np.zeros((K, L, L)),
                precedence=np.zeros((K, L)), read_weights=np.zeros((R, N)),
                write_weights=np.zeros((K, N)))


def memory_step(state, p, deallocation=False):
    """One access step for one batch element; returns (new state, reads [R, W]).

    The successors (Csordás & Schmidhuber 2019; Franke et al. 2018) follow from
    ``p``: masks and sharpness exponents where it has them, content-only reads
    where it has no read modes; ``deallocation`` erases by the retention psi."""
    M = state["memory"]
    N, W = M.shape
    K, R = state["write_weights"].shape[0], state["read_weights"].shape[0]
    # 1. usage
    usage = np.zeros(N)
    for i in range(N):
        written = 1.0
        for k in range(K):
            written *= 1 - state["write_weights"][k, i]
        written = 1 - written
        psi = 1.0
        for r in range(R):
            psi *= 1 - p["free_gates"][r] * state["read_weights"][r, i]
        u = state["usage"][i]
        usage[i] = (u + written - u * written) * psi
    # 2-3. allocation and write weights on the old memory
    gates = [p["allocation_gates"][k] * p["write_gates"][k] for k in range(K)]
    alloc = multi_allocation(usage, gates)
    ww = np.zeros((K, N))
    for k in range(K):
        cw = content(M, p["write_keys"][k], p["write_strengths"][k],
                     p["write_masks"][k] if "write_masks" in p else None)
        ga, gw = p["allocation_gates"][k], p["write_gates"][k]
        ww[k] = gw * (ga * alloc[k] + (1 - ga) * cw)
    # 4. erase then write (de-allocation: M_{t-1} * psi 1^T * (E - w e^T) + w v^T)
    psi = np.ones(N)
    if deallocation:
        for i in range(N):
            for r in range(R):
                psi[i] *= 1 - p["free_gates"][r] * state["read_weights"][r, i]
    new_M = np.zeros_like(M)
    for i in range(N):
        for j in range(W):
            keep = psi[i]
            add = 0.0
            for k in range(K):
                keep *= 1 - ww[k, i] * p["erase"][k, j]
                add += ww[k, i] * p["write_vectors"][k, j]
            new_M[i, j] = M[i, j] * keep + add
    # 5. links from the previous precedence, then precedence
    links = "read_modes" in p
    link = np.zeros_like(state["link"])
    prec = np.zeros_like(state["precedence"])
    for k in range(K if links else 0):
        for i in range(N):
            for j in range(N):
                if i != j:
                    link[k, i, j] = ((1 - ww[k, i] - ww[k, j]) * state["link"][k, i, j]
                                     + ww[k, i] * state["precedence"][k, j])
        prec[k] = (1 - ww[k].sum()) * state["precedence"][k] + ww[k]
    # 6-8. reads on the new memory
    rw = np.zeros((R, N))
    for r in range(R):
        c = content(new_M, p["read_keys"][r], p["read_strengths"][r],
                    p["read_masks"][r] if "read_masks" in p else None)
        if not links:  # the content-based memory unit
            rw[r] = c
            continue
        modes = p["read_modes"][r]
        total = modes[K] * c
        for k in range(K):
            fwd = link[k] @ state["read_weights"][r]
            bwd = link[k].T @ state["read_weights"][r]
            if "forward_sharpness" in p:
                fwd = sharpen(fwd, p["forward_sharpness"][r])
                bwd = sharpen(bwd, p["backward_sharpness"][r])
            total = total + modes[k] * bwd + modes[K + 1 + k] * fwd
        rw[r] = total
    reads = rw @ new_M
    new_state = dict(memory=new_M, usage=usage, link=link, precedence=prec,
                     read_weights=rw, write_weights=ww)
    return new_state, reads


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    gates = w_ih @ x + b_ih + w_hh @ h + b_hh
    H = h.shape[0]
    i, f, g, o = (gates[n * H : (n + 1) * H] for n in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    H = h.shape[0]
    gi = w_ih @ x + b_ih
    gh = w_hh @ h + b_hh
    r = sigmoid(gi[:H] + gh[:H])
    z = sigmoid(gi[H : 2 * H] + gh[H : 2 * H])
    n = np.tanh(gi[2 * H :] + r * gh[2 * H :])
    return (1 - z) * n + z * h


def layer_norm(v, gain, bias, eps=1e-6):
    mean = sum(v) / len(v)
    variance = sum((a - mean) ** 2 for a in v) / len(v)
    return np.array([(a - mean) / np.sqrt(variance + eps) * g + b for a, g, b in zip(v, gain, bias)])


def backward_lstm(x, layer):
    """h^bw_t of an LSTM run over x from the last step to the first."""
    H = layer["w_hh"].shape[1]
    h, c, out = np.zeros(H), np.zeros(H), [None] * len(x)
    for t in reversed(range(len(x))):
        h, c = lstm_cell(x[t], h, c, layer["w_ih"], layer["w_hh"], layer["b_ih"], layer["b_hh"])
        out[t] = h
    return out


def dnc_run(x, params, N, W, R, K, clip, controller="lstm", options=None):
    """Whole DNC over x [T, I] for one batch element.

    ``params``: w_xi, b_xi, w_y, b_y and either w_ih, w_hh, b_ih, b_hh (a
    one-layer LSTM) or ``layers``, a list of such dicts for the paper's deep
    LSTM (Methods, "Controller network"): with chi = [x_t; r_{t-1}], layer l
    reads [chi; h^{l-1}_t] (layer 1 chi alone) and its own h^l_{t-1}; the
    interface and output layers see [h^1_t; ...; h^L_t]. Every layer's h and c
    are clipped right after the cell; the clipped h is what goes on.
    ``controller="gru"``: ``layers`` is a plain GRU stack (layer l reads h^{l-1},
    layer 1 chi) whose top h is the output.

    ``options`` (the successors): masking, sharpness, deallocation,
    temporal_links (False: content reads only) as `memory_step`; layer_norm
    (``params["ln_gain"]``, ``params["ln_bias"]`` on the raw xi); bidirectional
    (``params["backward"]``, an LSTM over the whole input read backwards, whose
    h^bw_t joins h_t in the memory's and the output's input). Bypass dropout
    is off at evaluation and has no part here.
    """
    options = options or {}
    layers = params.get("layers") or [{k: params[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")}]
    H = layers[0]["w_hh"].shape[1]
    h = [np.zeros(H) for _ in layers]
    c = [np.zeros(H) for _ in layers]
    reads = np.zeros(R * W)
    links = options.get("temporal_links", True)
    state = zero_state(N, W, R, K, links)
    context = backward_lstm(x, params["backward"]) if options.get("bidirectional") else None
    ys = []

    def clipped(v):
        return np.clip(v, -clip, clip) if clip else v

    for x_t in x:
        chi = np.concatenate([x_t, reads])
        for l, layer in enumerate(layers):
            weights = (layer["w_ih"], layer["w_hh"], layer["b_ih"], layer["b_hh"])
            if controller == "gru":
                h[l] = clipped(gru_cell(chi if l == 0 else h[l - 1], h[l], *weights))
                continue
            inp = chi if l == 0 else np.concatenate([chi, h[l - 1]])
            h[l], c[l] = lstm_cell(inp, h[l], c[l], *weights)
            h[l], c[l] = clipped(h[l]), clipped(c[l])
        hidden = h[-1] if controller == "gru" else np.concatenate(h)
        if context is not None:
            hidden = np.concatenate([hidden, context[len(ys)]])
        xi = params["w_xi"] @ hidden + params["b_xi"]
        if options.get("layer_norm"):
            xi = layer_norm(xi, params["ln_gain"], params["ln_bias"])
        parts = parse(xi, R, W, K, masking=options.get("masking", False),
                      sharpness=options.get("sharpness", False), temporal_links=links)
        state, r = memory_step(state, parts, options.get("deallocation", False))
        reads = r.reshape(-1)
        ys.append(clipped(params["w_y"] @ np.concatenate([hidden, reads]) + params["b_y"]))
    return np.array(ys)
