"""Numba CPU kernels of the scans, in the natural (batch, length, n) layout.

Imported lazily by ``_engine`` (numba is optional). Every kernel is sequential over time and
independent across *lanes* (batch rows, or blocks of the state of one row when the batch is
smaller than the thread count); a call handles a range of lanes, with the GIL released, so
``_engine`` spreads lanes over threads itself (see there for why not numba's ``prange``). Inputs
are read in place, never transposed or flipped; outputs are written into fresh arrays.

Measured choices (``tools/bench_limits.py``; batch 50, L 784, n 256, float32, 1 thread):
- The backward walks time *and* state in descending address order: with time descending but
  state ascending the hardware prefetchers lose the streams (29 ms vs 10 ms for the same work).
  Its state index is unsigned, else numba's negative-index test stops LLVM vectorising the
  descending loop (scalar code, 4x slower).
- ∂λ sums a_k·conj(x_{k-1}) in the input dtype per lane for ``_FLUSH`` steps, then into float64
  partials (converting every step costs ~25 %); partials are reduced over the batch in a fixed
  order, so the result does not depend on the thread count or lane split.
- A lane is a whole batch row when possible: a row is n contiguous numbers per step, and rows
  split into state blocks ran several times slower.
- ``fastmath`` is off (no reassociation, no FMA contraction): results are reproducible.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = dict(cache=True, nogil=True, boundscheck=False, fastmath=False, error_model="numpy")
_FLUSH = 32  # float32 partial-sum run length of ∂λ before it is added into float64

# --------------------------------------------------------------------------------------------
# Diagonal scan. Lane t of B·nblk = batch row t // nblk, state block t % nblk of nblk. Each
# kernel is one function (lane loop inside): a lane helper called from a driver got optimised
# twice by LLVM and doubled the cold compile.


@njit(**_OPTS)
def diag_fwd(lr, li, br, bi, xr, xi, t0, t1, nblk):
    """x_k = λ x_{k-1} + bu_k for lanes t0:t1. Shapes: λ (n,); bu, x (B, L, n)."""
    L, n = br.shape[1], br.shape[2]
    for t in range(t0, t1):
        b, c = t // nblk, t % nblk
        j0, j1 = c * n // nblk, (c + 1) * n // nblk
        m = j1 - j0
        st = np.zeros((2, m), br.dtype)  # state re/im: one private array, few alias checks
        sr, si = st[0], st[1]
        cr, ci = lr[j0:j1].copy(), li[j0:j1].copy()
        for k in range(L):
            brk, bik = br[b, k, j0:j1], bi[b, k, j0:j1]
            xrk, xik = xr[b, k, j0:j1], xi[b, k, j0:j1]
            for j in range(m):
                pr, pi = sr[j], si[j]
                nr = brk[j] + cr[j] * pr - ci[j] * pi
                ni = bik[j] + cr[j] * pi + ci[j] * pr
                sr[j], si[j] = nr, ni
                xrk[j], xik[j] = nr, ni


@njit(**_OPTS)
def diag_bwd(lr, li, xr, xi, gr, gi, ar, ai, pr, pi, t0, t1, nblk):
    """a_k = g_k + conj(λ) a_{k+1} for lanes t0:t1, and per batch row b the ∂λ partials
    pr[b] + i·pi[b] = Σ_{k≥1} a_k conj(x_{k-1}). Shapes: λ (n,); x, g, a (B, L, n); p (B, n).
    """
    L, n = gr.shape[1], gr.shape[2]
    for t in range(t0, t1):
        b, c = t // nblk, t % nblk
        j0, j1 = c * n // nblk, (c + 1) * n // nblk
        m = j1 - j0
        st = np.zeros((4, m), gr.dtype)  # state re/im, ∂λ run re/im
        sr, si, accr, acci = st[0], st[1], st[2], st[3]
        tot = np.zeros((2, m), np.float64)
        cr, ci = lr[j0:j1].copy(), li[j0:j1].copy()
        for k in range(L - 1, -1, -1):
            grk, gik = gr[b, k, j0:j1], gi[b, k, j0:j1]
            ark, aik = ar[b, k, j0:j1], ai[b, k, j0:j1]
            for jr in range(m):
                j = np.uintp(m - 1 - jr)  # unsigned: no wraparound test, so it vectorises
                pr_, pi_ = sr[j], si[j]
                nr = grk[j] + cr[j] * pr_ + ci[j] * pi_
                ni = gik[j] + cr[j] * pi_ - ci[j] * pr_
                sr[j], si[j] = nr, ni
                ark[j], aik[j] = nr, ni
            if k > 0:
                xrk, xik = xr[b, k - 1, j0:j1], xi[b, k - 1, j0:j1]
                for jr in range(m):
                    j = np.uintp(m - 1 - jr)
                    accr[j] += sr[j] * xrk[j] + si[j] * xik[j]
                    acci[j] += si[j] * xrk[j] - sr[j] * xik[j]
            if k % _FLUSH == 0:
                for j in range(m):
                    tot[0, j] += accr[j]
                    tot[1, j] += acci[j]
                    accr[j] = 0.0
                    acci[j] = 0.0
        pr[b, j0:j1] = tot[0]
        pi[b, j0:j1] = tot[1]


@njit(**_OPTS)
def sum_rows(part):
    """Σ over the leading axis in a fixed order: the same result whatever the thread count."""
    out = np.zeros(part.shape[1:], np.float64)
    for b in range(part.shape[0]):
        out += part[b]
    return out


# --------------------------------------------------------------------------------------------
# Dense scan: out_k = src_k + Σ_j s[j]·R[j, :] with (R, s) = (Aᵀ, out_{k-1}) forward and
# (A, out_{k+1}) for the adjoint. A lane is a group of GROUP batch rows sharing every load of R,
# and j is unrolled by 4, so one accumulator load/store serves 16 products (the loop is
# load/store-bound otherwise: 2.3x slower at n = 256, 1.6x at n = 47). Products of a step are
# summed in the fixed order (a + b) + (c + d), so results are reproducible but not bit-equal to a
# torch matmul. Measured 1 thread, batch 48, L 784: n 12: 0.9 ms (per-step torch GEMMs 10 ms);
# n 93: 19 ms (20); n 256: 75 ms (91); the chunked torch kernel: 3.5, 60 and 420 ms.

GROUP = 4


@njit(inline="always", **_OPTS)  # a call per step costs ~the work at small n
def _step4(R, p0, p1, p2, p3, a0, a1, a2, a3):
    """a_q += Σ_j p_q[j]·R[j, :] for four lanes q."""
    n = R.shape[0]
    n4 = n - n % 4
    for j in range(0, n4, 4):
        r0, r1, r2, r3 = R[j], R[j + 1], R[j + 2], R[j + 3]
        c00, c01, c02, c03 = p0[j], p0[j + 1], p0[j + 2], p0[j + 3]
        c10, c11, c12, c13 = p1[j], p1[j + 1], p1[j + 2], p1[j + 3]
        c20, c21, c22, c23 = p2[j], p2[j + 1], p2[j + 2], p2[j + 3]
        c30, c31, c32, c33 = p3[j], p3[j + 1], p3[j + 2], p3[j + 3]
        for i in range(n):
            x0, x1, x2, x3 = r0[i], r1[i], r2[i], r3[i]
            a0[i] += (c00 * x0 + c01 * x1) + (c02 * x2 + c03 * x3)
            a1[i] += (c10 * x0 + c11 * x1) + (c12 * x2 + c13 * x3)
            a2[i] += (c20 * x0 + c21 * x1) + (c22 * x2 + c23 * x3)
            a3[i] += (c30 * x0 + c31 * x1) + (c32 * x2 + c33 * x3)
    for j in range(n4, n):
        r, c0, c1, c2, c3 = R[j], p0[j], p1[j], p2[j], p3[j]
        for i in range(n):
            a0[i] += c0 * r[i]
            a1[i] += c1 * r[i]
            a2[i] += c2 * r[i]
            a3[i] += c3 * r[i]


@njit(inline="always", **_OPTS)
def _outer4(D, a0, a1, a2, a3, x0, x1, x2, x3):
    """D[i, :] += Σ_q a_q[i]·x_q[:] (a rank-4 update, the same pairing as ``_step4``)."""
    for i in range(D.shape[0]):
        c0, c1, c2, c3, d = a0[i], a1[i], a2[i], a3[i], D[i]
        for j in range(D.shape[1]):
            d[j] += (c0 * x0[j] + c1 * x1[j]) + (c2 * x2[j] + c3 * x3[j])


@njit(**_OPTS)
def dense(R, src, out, xs, dA, g0, g1, reverse):
    """Groups g0:g1 of GROUP batch rows (the last one padded with zero lanes).

    Forward (``reverse`` False): out_k = src_k + Σ_j out_{k-1}[j]·R[j, :]. Adjoint: the same
    backwards in time, and, if ``xs`` has rows, ∂A partials dA[g] += Σ_{k≥1} out_k xs_{k-1}ᵀ.
    Shapes: R (n, n); src, out, xs (B, L, n) (xs may be (0, 0, 0)); dA (groups, n, n) float64.
    """
    B, L, n = src.shape
    grad = xs.shape[0] > 0
    acc = np.zeros((GROUP, n), src.dtype)  # private accumulators: fewer alias checks
    zero = np.zeros(n, src.dtype)  # the rows of padding lanes
    D = np.zeros((n, n) if grad else (0, 0), src.dtype)
    for g in range(g0, g1):
        b0 = g * GROUP
        m = min(B, b0 + GROUP) - b0
        for step in range(L):
            k = L - 1 - step if reverse else step
            for q in range(GROUP):
                acc[q] = src[b0 + q, k] if q < m else zero
            if step:
                kp = k + 1 if reverse else k - 1
                p0 = out[b0, kp]
                p1 = out[b0 + 1, kp] if m > 1 else zero
                p2 = out[b0 + 2, kp] if m > 2 else zero
                p3 = out[b0 + 3, kp] if m > 3 else zero
                _step4(R, p0, p1, p2, p3, acc[0], acc[1], acc[2], acc[3])
            for q in range(m):
                out[b0 + q, k] = acc[q]
            if grad and k > 0:
                x0 = xs[b0, k - 1]
                x1 = xs[b0 + 1, k - 1] if m > 1 else zero
                x2 = xs[b0 + 2, k - 1] if m > 2 else zero
                x3 = xs[b0 + 3, k - 1] if m > 3 else zero
                _outer4(D, acc[0], acc[1], acc[2], acc[3], x0, x1, x2, x3)
            if grad and (step % _FLUSH == _FLUSH - 1 or step == L - 1):
                dA[g] += D
                D[:] = 0.0
