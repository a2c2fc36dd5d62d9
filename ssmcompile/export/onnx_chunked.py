"""CHUNKED ONNX translations of the scan ops: one ``Scan`` over chunks of ``T`` steps, not steps.

onnxruntime spends a fixed ~3-20 µs per ``Scan`` iteration whatever the state size, so a body of
one time step makes a small (reduced) model about as slow as a large one. Here the length is
padded to a multiple of the constant chunk ``T`` and every chunk is solved as matrix work:

    x[c, t] = Σ_{s ≤ t} Λ^{t-s} u[c, s]  +  Λ^{t+1} h[c]        (t, s < T)

with ``h[c]`` the state entering chunk ``c``. The ``h`` obey a recurrence of their own,
h[c+1] = Λ^T h[c] + e[c], with e[c] the end state of chunk c solved from a zero start; ONE small
``Scan`` solves it in ceil(L / T) iterations. Both sums above are then ONE ``MatMul`` per layer
over every chunk of the whole batch, against an augmented Toeplitz matrix [Λ^{t-s} (t ≥ s) |
Λ^{t+1}] built in the graph from the powers Λ^0..Λ^T. The powers come from repeated squaring and
products only — never inverted: for a stable Λ they stay bounded, while Λ^{-k} would overflow.
Λ comes from initializers, so onnxruntime constant-folds the matrices at session creation.

- Diagonal (λ complex, as real/imag parts): per mode the real form of [K | P] (K_ts = λ^{t-s},
  P_t = λ^{t+1}), (2T+2 × T) for each of the real and imaginary outputs, applied to row vectors
  [u_re | u_im | h_re | h_im] laid out (n, batch·chunks, 2T+2).
- Dense (row-vector states, G = Aᵀ): one ((T+1)·n × T·n) block-Toeplitz matrix of G^k applied
  to (batch·chunks, (T+1)·n) = [u | h]; no transposes. Its size grows as (T·n)², so
  ``onnx_scan.layer_chunk`` bounds T·n.

Only the trip count of the Scan depends on the sequence length: the node count is fixed.
"""

from __future__ import annotations

import numpy as np

from .onnx_builder import BodyBuilder, OuterGraph, complex_mul


def _doublings(chunk: int) -> int:
    """How many doublings take the powers [Λ^0, Λ^1] to at least ``chunk + 1`` of them."""
    count, steps = 2, 0
    while count < chunk + 1:
        count, steps = 2 * count, steps + 1
    return steps


def _pad_to_chunks(g: OuterGraph, bu, chunk: int):
    """(B, L, n) → (max(B, 1), max(ceil(L/T), 1)·T, n), zeros appended.

    At least one batch row and one chunk: onnxruntime's Scan dies with SIGFPE on a scanned
    axis of size 0, and a Reshape with -1 next to a 0 is refused (``onnx_builder``'s
    ``at_least_one_step``). The callers crop the padding off their outputs.
    """
    t, one = g.ints(chunk), g.ints(1)
    batch, length = g.dims(bu, 0), g.dims(bu, 1)
    chunks = g("Max", g("Div", g("Add", length, g.ints(chunk - 1)), t), one)
    pad_batch = g("Sub", g("Max", batch, one), batch)
    pad_length = g("Sub", g("Mul", chunks, t), length)
    return g("Pad", bu, g.concat(g.ints(0, 0, 0), pad_batch, pad_length, g.ints(0)))


# ---------------------------------------------------------------------------------- diagonal


def diagonal_powers(g: OuterGraph, lam_re, lam_im, chunk: int):
    """λ^k for k = 0..T as real/imag parts, each (T+1, n)."""
    lr, li = g("Unsqueeze", lam_re, g.ints(0)), g("Unsqueeze", lam_im, g.ints(0))
    row = g("Shape", lr)
    p_re, p_im = g.concat(g.fill(row, 1.0), lr), g.concat(g.fill(row, 0.0), li)
    q_re, q_im = lr, li  # λ^{m/2} while (p_re, p_im) hold λ^0..λ^{m-1}
    for _ in range(_doublings(chunk)):
        q_re, q_im = complex_mul(g, q_re, q_im, q_re, q_im)
        n_re, n_im = complex_mul(g, p_re, p_im, q_re, q_im)
        p_re, p_im = g.concat(p_re, n_re), g.concat(p_im, n_im)
    keep = (g.ints(0), g.ints(chunk + 1), g.ints(0))
    return g("Slice", p_re, *keep), g("Slice", p_im, *keep)


def diagonal_kernel_index(chunk: int) -> np.ndarray:
    """(2T, 2T+2) rows into the table [P_re; 0; P_im; 0; -P_im; 0] (blocks of T+2 rows, P_k = λ^k).

    Row t is the real part of x_t, row T+t its imaginary part; column s multiplies u_re[s],
    T+s u_im[s], 2T h_re and 2T+1 h_im. Entries above the diagonal point at a zero row.
    """
    T, block = chunk, chunk + 2
    re, im, neg_im = 0, block, 2 * block
    index = np.full((2 * T, 2 * T + 2), T + 1, dtype=np.int64)  # T+1: the zero row
    for t in range(T):
        k = t - np.arange(t + 1)  # λ^{t-s} for s ≤ t
        index[t, : t + 1], index[t, T : T + t + 1] = re + k, neg_im + k
        index[T + t, : t + 1], index[T + t, T : T + t + 1] = im + k, re + k
        index[t, 2 * T :] = re + t + 1, neg_im + t + 1
        index[T + t, 2 * T :] = im + t + 1, re + t + 1
    return index


def _diagonal_matrices(g: OuterGraph, lam_re, lam_im, chunk: int):
    """Per-mode matrices for row vectors [u_re | u_im | h_re | h_im] (2T+2 entries):

    - ``kernel`` (n, 2, 2T+2, T): the chunk's states, real part [0] and imaginary part [1];
    - ``end_re``, ``end_im`` (n, T, 2): from u_re resp. u_im, the chunk's last state (real,
      imaginary) from a zero start;
    - ``decay`` (λ^T real, imaginary), each (1, n).
    """
    T = chunk
    p_re, p_im = diagonal_powers(g, lam_re, lam_im, T)
    zero = g.fill(g.concat(g.ints(1), g.dims(p_re, 1)), 0.0)
    table = g.concat(p_re, zero, p_im, zero, g("Neg", p_im), zero)  # (3(T+2), n)
    index = diagonal_kernel_index(T)

    def per_mode(rows: np.ndarray):  # table rows (..., r, c) → (n, ..., r, c) matrices
        picked = g("Gather", table, g.constant(rows), axis=0)
        return g("Transpose", picked, perm=[rows.ndim, *range(rows.ndim)])

    kernel = per_mode(index.T.reshape(2 * T + 2, 2, T).transpose(1, 0, 2))
    ends = index[[T - 1, 2 * T - 1]].T  # (2T+2, 2)
    decay = tuple(g("Gather", p, g.ints(T), axis=0) for p in (p_re, p_im))
    return kernel, per_mode(ends[:T]), per_mode(ends[T : 2 * T]), decay


def chunked_diagonal_scan(lam_re, lam_im, bu_re, bu_im, chunk: int, matmul_carry: bool):
    """x_k = λ ⊙ x_{k-1} + bu_k in chunks of ``chunk`` steps (module docstring).

    Shapes: ``lam_re``, ``lam_im`` (n,); ``bu_re``, ``bu_im`` (batch, length, n) → (x_re, x_im),
    each (batch, length, n). ``matmul_carry``: the Scan body multiplies by λ^T as one real
    (2n × 2n) MatMul (3 nodes, for small n) instead of elementwise (10 nodes).
    """
    g, T = OuterGraph(bu_re.dtype), chunk
    kernel, end_re, end_im, decay = _diagonal_matrices(g, lam_re, lam_im, T)
    padded_re, padded_im = _pad_to_chunks(g, bu_re, T), _pad_to_chunks(g, bu_im, T)
    n, batch = g.dims(bu_re, 2), g.dims(padded_re, 0)
    # Modes go first through a 2-D transpose: onnxruntime's N-D Transpose measured ~20x slower.
    rows, per_chunk = g.concat(g.ints(-1), n), g.ints(0, -1, T)

    def modes_first(x):  # (B, L, n) → (n, B·C, T)
        return g("Reshape", g("Transpose", g("Reshape", x, rows)), per_chunk)

    u_re, u_im = modes_first(padded_re), modes_first(padded_im)
    local_ends = g("Add", g("MatMul", u_re, end_re), g("MatMul", u_im, end_im))  # (n, B·C, 2)
    carry = _diagonal_carry_matmul if matmul_carry else _diagonal_carry_elementwise
    h = carry(g, decay, local_ends, n, batch, bu_re.dtype)  # (n, B·C, 2)
    u_aug = g.concat(u_re, u_im, h, axis=2)  # (n, B·C, 2T+2)
    # Real and imaginary parts on their own axis: no Split has to copy them apart.
    x = g("MatMul", g("Unsqueeze", u_aug, g.ints(1)), kernel)  # (n, 2, B·C, T)
    x = g("Transpose", g("Reshape", x, g.concat(n, g.ints(-1))))  # (2·B·C·T, n)
    x = g("Reshape", x, g.concat(g.ints(2), batch, g.ints(-1), n))  # (2, B, C·T, n)
    ends = g.dims(bu_re, 0, 1)
    parts = []
    for part in (0, 1):  # real, imaginary; padding dropped
        picked = g("Slice", x, g.ints(part, 0, 0), g.concat(g.ints(part + 1), ends),
                   g.ints(0, 1, 2))
        parts.append(g("Squeeze", picked, g.ints(0)))
    return parts[0], parts[1]


def _diagonal_carry_elementwise(g: OuterGraph, decay, local_ends, n, batch, dtype):
    """h[c], the state entering chunk c: h[0] = 0, h[c+1] = a ⊙ h[c] + e[c], a = λ^T.

    Shapes: ``decay`` (a_re, a_im) each (1, n); ``local_ends`` e (n, B·C, 2) → h (n, B·C, 2);
    ``n``, ``batch``: (1,) int64. The Scan runs over C with states (n, B).
    """
    a_re, a_im = (g("Transpose", a) for a in decay)  # (n, 1)
    per_batch = g.concat(g.ints(0), batch, g.ints(-1))
    e_re, e_im = (g("Reshape", e, per_batch) for e in g.split(local_ends, 2, 2))  # (n, B, C)
    body = BodyBuilder(dtype)
    s_re, s_im = body.input("h_re", [None, None]), body.input("h_im", [None, None])
    x_re, x_im = body.input("e_re", [None, None]), body.input("e_im", [None, None])
    m_re, m_im = complex_mul(body, s_re, s_im, a_re, a_im)
    new_re, new_im = body("Add", m_re, x_re), body("Add", m_im, x_im)
    outs = [new_re, new_im, body("Identity", s_re), body("Identity", s_im)]
    graph = body.graph([s_re, s_im, x_re, x_im], outs, "diagonal_chunks")
    zeros = g.fill(g.concat(n, batch), 0.0)
    scanned = g.outputs(
        "Scan", zeros, g("Identity", zeros), e_re, e_im, count=4, body=graph,
        num_scan_inputs=2, scan_input_axes=[2, 2], scan_output_axes=[2, 2],
    )  # fmt: skip
    column = g.ints(0, -1, 1)
    return g.concat(g("Reshape", scanned[2], column), g("Reshape", scanned[3], column), axis=2)


def _diagonal_carry_matmul(g: OuterGraph, decay, local_ends, n, batch, dtype):
    """As :func:`_diagonal_carry_elementwise`, with states [h_re; h_im] (2n, B) multiplied by the
    real matrix [[diag a_re, -diag a_im], [diag a_im, diag a_re]]: O(n²) work per iteration, but
    3 nodes instead of 10 (measured ~2x faster per iteration up to n = 64)."""
    a_re, a_im = decay
    eye = g("EyeLike", g("MatMul", g("Transpose", a_re), a_re))  # (n, n)
    d_re, d_im = g("Mul", eye, a_re), g("Mul", eye, a_im)
    step = g.concat(g.concat(d_re, g("Neg", d_im), axis=1), g.concat(d_im, d_re, axis=1))
    two_n = g("Mul", n, g.ints(2))
    e = g("Transpose", local_ends, perm=[2, 0, 1])  # (2, n, B·C)
    e = g("Reshape", e, g.concat(two_n, batch, g.ints(-1)))  # (2n, B, C)
    body = BodyBuilder(dtype)
    s, x = body.input("h", [None, None]), body.input("e", [None, None])
    new = body("Add", body("MatMul", step, s), x)
    graph = body.graph([s, x], [new, body("Identity", s)], "diagonal_chunks")
    zeros = g.fill(g.concat(two_n, batch), 0.0)
    scanned = g.outputs(
        "Scan", zeros, e, count=2, body=graph,
        num_scan_inputs=1, scan_input_axes=[2], scan_output_axes=[2],
    )  # fmt: skip
    h = g("Reshape", scanned[1], g.concat(g.ints(2), n, g.ints(-1)))  # (2, n, B·C)
    return g("Transpose", h, perm=[1, 2, 0])


# ---------------------------------------------------------------------------------- dense


def dense_powers(g: OuterGraph, gt, chunk: int):
    """G^k for k = 0..T as (T+1, n, n)."""
    p = g.concat(g("Unsqueeze", g("EyeLike", gt), g.ints(0)), g("Unsqueeze", gt, g.ints(0)))
    q = gt  # G^{m/2} while p holds G^0..G^{m-1}
    for _ in range(_doublings(chunk)):
        q = g("MatMul", q, q)
        p = g.concat(p, g("MatMul", p, q))
    return g("Slice", p, g.ints(0), g.ints(chunk + 1), g.ints(0))


def dense_kernel_index(chunk: int) -> np.ndarray:
    """(T+1, T) indices into [G^0 .. G^T; 0]: block (s, t) maps u[s] (s < T), or the entering
    state h (s = T), to x[t]; T+1 (the zero block) above the diagonal."""
    T = chunk
    index = np.full((T + 1, T), T + 1, dtype=np.int64)
    for t in range(T):
        index[: t + 1, t] = t - np.arange(t + 1)
        index[T, t] = t + 1
    return index


def chunked_dense_scan(A, bu, chunk: int):
    """x_k = A x_{k-1} + bu_k in chunks of ``chunk`` steps (module docstring).

    Shapes: ``A`` (n, n), ``bu`` (batch, length, n) → x (batch, length, n).
    """
    g, T = OuterGraph(bu.dtype), chunk
    gt = g("Transpose", A, perm=[1, 0])  # row-vector states: x_k = x_{k-1} Aᵀ + bu_k
    powers = dense_powers(g, gt, T)
    zero = g.fill(g.concat(g.ints(1), g("Shape", gt)), 0.0)
    table = g.concat(powers, zero)  # (T+2, n, n)
    n = g.dims(A, 0)
    tn = g("Mul", n, g.ints(T))
    index = dense_kernel_index(T)
    blocks = g("Transpose", g("Gather", table, g.constant(index), axis=0), perm=[0, 2, 1, 3])
    kernel = g("Reshape", blocks, g.concat(g.ints(-1), tn))  # ((T+1)·n, T·n)
    last = g("Reshape", g("Gather", table, g.constant(index[:T, T - 1]), axis=0), g.concat(tn, n))
    decay = g("Squeeze", g("Gather", powers, g.ints(T), axis=0), g.ints(0))  # G^T (n, n)

    padded = _pad_to_chunks(g, bu, T)
    per_batch = g.concat(g.dims(padded, 0), g.ints(-1), n)  # (B, ·, n)
    u = g("Reshape", padded, g.concat(g.ints(-1), tn))  # (B·C, T·n)
    ends = g("Reshape", g("MatMul", u, last), per_batch)  # (B, C, n)
    h = _dense_carry_scan(g, decay, ends, bu.dtype)
    u_aug = g.concat(u, g("Reshape", h, g.concat(g.ints(-1), n)), axis=1)  # (B·C, (T+1)·n)
    x = g("Reshape", g("MatMul", u_aug, kernel), per_batch)
    return g("Slice", x, g.ints(0, 0), g.dims(bu, 0, 1), g.ints(0, 1))  # padding dropped


def _dense_carry_scan(g: OuterGraph, decay, ends, dtype):
    """h[c] for h[0] = 0, h[c+1] = h[c] G^T + e[c] (row vectors).

    Shapes: ``decay`` (n, n); ``ends`` (batch, C, n) → h (batch, C, n); scans axis 1.
    """
    body = BodyBuilder(dtype)
    s, e = body.input("h", [None, None]), body.input("e", [None, None])
    new = body("Add", body("MatMul", s, decay), e)
    graph = body.graph([s, e], [new, body("Identity", s)], "dense_chunks")
    zeros = g.fill(g.dims(ends, 0, 2), 0.0)
    scanned = g.outputs(
        "Scan", zeros, ends, count=2, body=graph,
        num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1],
    )  # fmt: skip
    return scanned[1]
