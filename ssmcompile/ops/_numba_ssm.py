"""Numba CPU kernels of the fused diagonal SSM layer y_k = Re(C x_k), x_k = λ ⊙ x_{k-1} + B u_k.

Imported lazily by ``diagonal_ssm`` (numba is optional); lanes are batch rows, spread over
threads by ``_engine.parallel_for`` (GIL released). Why fused: with a narrow layer (H 8, n 256)
the unfused path materialises B·u, x and their gradients as (batch, L, n) tensors, and the
matmuls that make them were memory- and page-fault-bound (≈ 80 % of a training step); here
u, y and their gradients are the only streams besides the saved states x.

Every matrix-vector product is written as a sum of scaled rows (the inner loop runs along a
contiguous row, no reduction), so LLVM vectorises it with ``fastmath`` off and the summation
order is fixed: results are reproducible and do not depend on the thread count. Gradients of
the shared parameters are summed per lane in the input dtype for ``_FLUSH`` steps, then into
float64 partials that ``_numba_scan.sum_rows`` reduces over the batch in a fixed order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._numba_scan import _FLUSH, _OPTS

# Steps per block of the reductions over the state (y = Re(C x) forward, ∂u = Re(Bᴴ a) backward):
# the block's states are kept transposed, (n, T), so those products run along time.
_T = 64


@njit(inline="always", **_OPTS)
def _flush(total, run):
    """total += run (float64 += input dtype, element by element: no temporaries); run = 0."""
    for i in range(run.shape[0]):
        t, r = total[i], run[i]
        for j in range(r.shape[0]):
            t[j] += r[j]
            r[j] = 0.0


@njit(**_OPTS)
def ssm_fwd(lr, li, bTr, bTi, cr, ci, u, y, xr, xi, t0, t1):
    """Batch rows t0:t1. Shapes: λ (n,); bT = Bᵀ (H, n); c (P, n); u (B, L, H);
    y (B, L, P) written; x (B, L, n) written when it has rows, else (0, 0, 0) (no grad needed).
    """
    L, H = u.shape[1], u.shape[2]
    n, P = cr.shape[1], cr.shape[0]
    save = xr.shape[0] > 0
    dt = u.dtype
    for b in range(t0, t1):
        st = np.zeros((4, n), dt)  # state re/im, B·u_k re/im
        sr, si, qr, qi = st[0], st[1], st[2], st[3]
        xT = np.zeros((2, n, _T), dt)  # the block's states, transposed
        yT = np.zeros((P, _T), dt)
        for k0 in range(0, L, _T):
            m = min(_T, L - k0)
            for kk in range(m):
                uk = u[b, k0 + kk]
                qr[:] = 0.0
                qi[:] = 0.0
                for h in range(H):
                    w, rr, ri = uk[h], bTr[h], bTi[h]
                    for j in range(n):
                        qr[j] += w * rr[j]
                        qi[j] += w * ri[j]
                for j in range(n):
                    pr, pi = sr[j], si[j]
                    sr[j] = qr[j] + (lr[j] * pr - li[j] * pi)
                    si[j] = qi[j] + (lr[j] * pi + li[j] * pr)
                    xT[0, j, kk] = sr[j]
                    xT[1, j, kk] = si[j]
                if save:
                    xr[b, k0 + kk] = sr
                    xi[b, k0 + kk] = si
            yT[:] = 0.0
            for o in range(P):
                yo, rr, ri = yT[o], cr[o], ci[o]
                for j in range(n):
                    wr, wi, ar, ai = rr[j], ri[j], xT[0, j], xT[1, j]
                    for kk in range(m):
                        yo[kk] += wr * ar[kk] - wi * ai[kk]
            for kk in range(m):
                for o in range(P):
                    y[b, k0 + kk, o] = yT[o, kk]


@njit(**_OPTS)
def ssm_bwd(lr, li, br, bi, cr, ci, u, xr, xi, gy, du, dbr, dbi, dcr, dci, dlr, dli, t0, t1):
    """Batch rows t0:t1 of the adjoint a_k = Cᴴ g_k + conj(λ) a_{k+1}, with
    ∂u_k = Re(Bᴴ a_k) written and per-row float64 partials of ∂Bᵀ = u aᵀ, ∂C (from g and x),
    ∂λ = a_k conj(x_{k-1}). Shapes: λ (n,); b (n, H); c (P, n); u, ∂u (B, L, H);
    x (B, L, n); gy (B, L, P); partials ∂bᵀ (B, H, n), ∂c (B, P, n), ∂λ (B, n).
    """
    L, H = u.shape[1], u.shape[2]
    n, P = cr.shape[1], cr.shape[0]
    dt = u.dtype
    for b in range(t0, t1):
        st = np.zeros((6, n), dt)  # adjoint re/im, Cᴴ g re/im, ∂λ run re/im
        ar, ai, gxr, gxi, accr, acci = st[0], st[1], st[2], st[3], st[4], st[5]
        Db = np.zeros((2, H, n), dt)
        Dc = np.zeros((2, P, n), dt)
        aT = np.zeros((2, n, _T), dt)  # the block's adjoints, transposed
        duT = np.zeros((H, _T), dt)
        nblocks = (L + _T - 1) // _T
        steps = 0
        for blk in range(nblocks - 1, -1, -1):
            k0 = blk * _T
            m = min(_T, L - k0)
            for kk in range(m - 1, -1, -1):
                k = k0 + kk
                gk, uk, xrk, xik = gy[b, k], u[b, k], xr[b, k], xi[b, k]
                gxr[:] = 0.0
                gxi[:] = 0.0
                for o in range(P):
                    w, rr, ri = gk[o], cr[o], ci[o]
                    for j in range(n):
                        gxr[j] += w * rr[j]
                        gxi[j] -= w * ri[j]
                for j in range(n):
                    pr, pi = ar[j], ai[j]
                    ar[j] = gxr[j] + (lr[j] * pr + li[j] * pi)
                    ai[j] = gxi[j] + (lr[j] * pi - li[j] * pr)
                    aT[0, j, kk] = ar[j]
                    aT[1, j, kk] = ai[j]
                for h in range(H):
                    w, dr, di = uk[h], Db[0, h], Db[1, h]
                    for j in range(n):
                        dr[j] += w * ar[j]
                        di[j] += w * ai[j]
                # x streams in descending addresses: walk the state downwards too, else the
                # prefetchers lose the stream (see _numba_scan.diag_bwd); unsigned index so the
                # descending loop still vectorises.
                for o in range(P):
                    w, dr, di = gk[o], Dc[0, o], Dc[1, o]
                    for jr in range(n):
                        j = np.uintp(n - 1 - jr)
                        dr[j] += w * xrk[j]
                        di[j] -= w * xik[j]
                if k > 0:
                    xrp, xip = xr[b, k - 1], xi[b, k - 1]
                    for jr in range(n):
                        j = np.uintp(n - 1 - jr)
                        accr[j] += ar[j] * xrp[j] + ai[j] * xip[j]
                        acci[j] += ai[j] * xrp[j] - ar[j] * xip[j]
                steps += 1
                if steps % _FLUSH == 0 or k == 0:
                    _flush(dbr[b], Db[0])
                    _flush(dbi[b], Db[1])
                    _flush(dcr[b], Dc[0])
                    _flush(dci[b], Dc[1])
                    _flush(dlr[b : b + 1], st[4:5])
                    _flush(dli[b : b + 1], st[5:6])
            duT[:] = 0.0
            for h in range(H):
                dh = duT[h]
                for j in range(n):
                    wr, wi, pr_, pi_ = br[j, h], bi[j, h], aT[0, j], aT[1, j]
                    for kk in range(m):
                        dh[kk] += wr * pr_[kk] + wi * pi_[kk]
            for kk in range(m):
                for h in range(H):
                    du[b, k0 + kk, h] = duT[h, kk]
