"""Numba CPU kernels of the selective scan and its backward; nothing of size (batch, L, D, N).

Imported lazily by ``scan`` (numba is optional). A *lane* is ``wr`` channels of one group of one
batch row; every lane runs the recurrence sequentially over time with its state h (N, wr) in a
local array, and a call spreads lanes over ``ops.threads.scan_threads()`` threads with the GIL
released through ``ssmcompile.ops._engine.parallel_for`` (threads take chunks of lanes in turn,
which keeps a busy core from stalling the call: see there). The inner loops run over contiguous
channels, so LLVM vectorises them with no reduction under strict IEEE semantics (fastmath off,
no FMA contraction). Channels past a group's end are padded with Δ = 0 (an identity step).

Measured choices (float32, 1 thread, batch 8, L 128, D 64, N 128 / 12, A (D, 1) unless said):
- ``wr`` is a runtime argument: with a compile-time width LLVM unrolled the loop fully and then
  could not vectorise it (it cannot prove the local arrays distinct): 2x slower forward. Wide
  lanes (64) beat 16/32: forward 0.15 vs 0.30 ns per (t, d, n), and the ∂B/∂C sums over the
  lane's channels cost less per channel.
- exp is a polynomial (≤ 2 ulp in float64, vectorised; libm's exp is a scalar call LLVM does not
  vectorise: 6.5 vs 1.2 ns per exp), needed for Mamba-1's exp per state.
- Backward: the lane's states and decays are stored for the whole sequence when they fit
  ``BUFFER_BUDGET`` (7.3 ms at N 128; recomputing them per chunk of ≈√L steps from checkpoints,
  10.1 ms, is kept for longer sequences); one reverse pass then runs the adjoint
  λ_t = g_t C_t + exp(Δ_{t+1} A) λ_{t+1}. Mamba-1 and Mamba-2 have separate reverse-step loops
  (one loop with a branch on the decay's shape ran 2x slower); a state update never works in
  place (the alias check then fails at run time and the scalar loop runs).
- ∂B and ∂C sum over a group's channels: each lane sums its own in a fixed tree and writes its
  own slice; slices (and ∂A's per-batch partials) are added in index order afterwards, so every
  result is the same for any thread count.
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic
from torch import Tensor

from ..ops import _buffers
from ..ops._engine import parallel_for
from ._kernel import chunk_size

LANE = 64  # widest lane (channels, 16·2^k); narrower when a group has fewer channels
BUFFER_BUDGET = 2**23  # bytes per lane up to which the backward stores all states and decays
_LOG2E, _LN2_HI, _LN2_LO = 1.4426950408889634, 6.93147180369123816490e-01, 1.9082149292705877e-10
_OPTS = dict(cache=True, nogil=True, boundscheck=False, fastmath=False, error_model="numpy")
_X_MIN, _X_MAX = -708.0, 709.782712893384


@intrinsic
def _f64_from_bits(typingctx, bits):
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(inline="always", **_OPTS)
def _exp(x):
    """exp(x) in float64: Cody-Waite reduction x = k ln2 + r, Taylor to r^13, times 2^k; 0 below
    _X_MIN (subnormal results), inf above _X_MAX."""
    # No min/max, coefficient loop or shift: each left a branch or switch that kept LLVM from
    # vectorising the calling loop.
    xf = np.float64(x)
    xc = _X_MIN if xf < _X_MIN else xf
    xc = _X_MAX if xc > _X_MAX else xc
    k = np.floor(xc * _LOG2E + 0.5)
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    # Estrin's scheme: Horner's chain of 26 dependent operations was latency-bound (1.7 vs 1.2 ns).
    r2 = r * r
    r4 = r2 * r2
    s0 = (1.0 + r) + (1.0 / 2.0 + r * (1.0 / 6.0)) * r2
    s1 = (1.0 / 24.0 + r * (1.0 / 120.0)) + (1.0 / 720.0 + r * (1.0 / 5040.0)) * r2
    s2 = ((1.0 / 40320.0 + r * (1.0 / 362880.0))
          + (1.0 / 3628800.0 + r * (1.0 / 39916800.0)) * r2)
    s3 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0)
    p = (s0 + s1 * r4) + (s2 + s3 * r4) * (r4 * r4)
    # 2^(k-1) then ×2 keeps the exponent field in range at both ends.
    res = (p * 2.0) * _f64_from_bits((np.int64(k) + 1022) * 4503599627370496)
    res = 0.0 if xf < _X_MIN else res
    res = np.inf if xf > _X_MAX else res
    return xf if xf != xf else res


@njit(inline="always", **_OPTS)  # inlined: per-step call overhead ~ the work at small N
def _lane(item, G, Dg, nblk, wr):
    """(batch, group, block, first channel, channels in use) of a work item."""
    j = item % nblk
    g = (item // nblk) % G
    return item // (nblk * G), g, j, g * Dg + j * wr, min(wr, Dg - j * wr)


@njit(inline="always", **_OPTS)
def _discretise(u, dt, At, b, t, d0, wn, wr, a, dtw, du):
    """Fill a (NA, wr) = exp(Δ A), dtw (wr,) = Δ and du (wr,) = Δ u of one lane at step t."""
    for w in range(wr):
        dtw[w] = dt[b, t, d0 + w] if w < wn else 0.0
        du[w] = dtw[w] * u[b, t, d0 + w] if w < wn else 0.0
    for k in range(At.shape[0]):
        for w in range(wr):
            a[k, w] = _exp(dtw[w] * At[k, d0 + w])


@njit(inline="always", **_OPTS)
def _advance(h_in, h_out, a, du, Bt, scalar, wr):
    """h_out = a ⊙ h_in + du ⊗ B_t for one lane (h (N, wr), B_t (N,))."""
    for n in range(h_in.shape[0]):
        k = 0 if scalar else n
        bn = Bt[n]
        for w in range(wr):
            h_out[n, w] = a[k, w] * h_in[n, w] + du[w] * bn


@njit(inline="always", **_OPTS)
def _run_chunk(u, dt, At, B, b, g, lo, hi, d0, wn, wr, hs, dec, dts, dus):
    """States hs[1 + k] = h_{lo+k} from hs[0] = h_{lo-1}, keeping each step's decays, Δ and Δu
    at k. Never in place: LLVM's alias check then fails at run time and takes the scalar loop."""
    for t in range(lo, hi):
        k = t - lo
        _discretise(u, dt, At, b, t, d0, wn, wr, dec[k], dts[k], dus[k])
        _advance(hs[k], hs[k + 1], dec[k], dus[k], B[b, t, g], At.shape[0] == 1, wr)


@njit(inline="always", **_OPTS)
def _hsum(x, wr):
    """Σ x[:wr] (wr = 16·2^k) in a fixed order: halves added until 16 are left (a loop LLVM
    vectorises, unlike a fold written with a constant width), then a pairwise tree. Overwrites x.
    """
    h = wr // 2
    while h >= 16:
        for i in range(h):
            x[i] += x[h + i]
        h //= 2
    return ((((x[0] + x[8]) + (x[4] + x[12])) + ((x[2] + x[10]) + (x[6] + x[14])))
            + (((x[1] + x[9]) + (x[5] + x[13])) + ((x[3] + x[11]) + (x[7] + x[15]))))


@njit(inline="always", **_OPTS)
def _adjoint_scalar(lam, gw, du, a, hn, hp, bt, ct, gdu, sacc, tb, tc, gBt, gCt, wr):
    """One reverse step of a lane with one decay per channel (Mamba-2). lam (N, wr) holds
    exp(Δ_{t+1} A) λ_{t+1} on entry and exp(Δ_t A) λ_t on exit; accumulates ∂(Δu) into gdu and
    Σ_n ∂(Δ_t A) into sacc; writes this step's ∂B, ∂C rows (N,). The Mamba-1 twin is
    ``_adjoint_full``: one loop body with a branch on the decay shape ran 2× slower."""
    for n in range(lam.shape[0]):
        bn, cn = bt[n], ct[n]
        for w in range(wr):
            lv = lam[n, w] + gw[w] * cn
            gdu[w] += lv * bn
            tb[w] = du[w] * lv
            tc[w] = gw[w] * hn[n, w]
            cv = lv * a[0, w]
            lam[n, w] = cv
            sacc[w] += cv * hp[n, w]
        gBt[n] = _hsum(tb, wr)
        gCt[n] = _hsum(tc, wr)


@njit(inline="always", **_OPTS)
def _adjoint_full(lam, gw, du, a, hn, hp, bt, ct, gdu, sacc, tb, tc, gBt, gCt, At, dts, gAl, wr):
    """``_adjoint_scalar`` for a decay per channel and state (Mamba-1): sacc gets Σ_n ∂(Δ_t A)·A
    (= ∂Δ_t through the decay) and gAl (N, wr) accumulates ∂A."""
    for n in range(lam.shape[0]):
        bn, cn = bt[n], ct[n]
        for w in range(wr):
            lv = lam[n, w] + gw[w] * cn
            gdu[w] += lv * bn
            tb[w] = du[w] * lv
            tc[w] = gw[w] * hn[n, w]
            cv = lv * a[n, w]
            lam[n, w] = cv
            sv = cv * hp[n, w]
            sacc[w] += sv * At[n, w]
            gAl[n, w] += sv * dts[w]
        gBt[n] = _hsum(tb, wr)
        gCt[n] = _hsum(tc, wr)


@njit(**_OPTS)
def forward_lanes(u, dt, At, B, C, wr, y, i0, i1):
    """y (batch, L, D) of the scan for lanes i0..i1-1. u, dt (batch, L, D); At (NA, D + wr) =
    Aᵀ zero-padded; B, C (batch, L, G, N); wr: lane width (multiple of 16)."""
    L, D = u.shape[1], u.shape[2]
    G, N = B.shape[2], B.shape[3]
    Dg = D // G
    nblk = -(-Dg // wr)
    scalar = At.shape[0] == 1
    h = np.empty((N, wr), u.dtype)
    a = np.empty((At.shape[0], wr), u.dtype)
    dtw, du, acc = np.empty(wr, u.dtype), np.empty(wr, u.dtype), np.empty(wr, u.dtype)
    for item in range(i0, i1):
        b, g, _, d0, wn = _lane(item, G, Dg, nblk, wr)
        h[:] = 0.0
        for t in range(L):
            _discretise(u, dt, At, b, t, d0, wn, wr, a, dtw, du)
            acc[:] = 0.0
            for n in range(N):
                k = 0 if scalar else n
                bn, cn = B[b, t, g, n], C[b, t, g, n]
                for w in range(wr):
                    hv = a[k, w] * h[n, w] + du[w] * bn
                    h[n, w] = hv
                    acc[w] += cn * hv
            for w in range(wn):
                y[b, t, d0 + w] = acc[w]


@njit(**_OPTS)
def backward_lanes(grad, u, dt, At, B, C, wr, T, gu, gdt, gA, gB, gC, i0, i1):
    """Gradients of ⟨grad, y⟩ for lanes i0..i1-1; inputs as in ``forward_lanes``, T the chunk
    length. Outputs: gu, gdt (batch, L, D); gA (batch, NA, D) per-batch ∂Aᵀ; gB, gC
    (nblk, batch, L, G, N) one slice per lane block (nblk = ⌈(D/G)/wr⌉)."""
    L, D = u.shape[1], u.shape[2]
    G, N = B.shape[2], B.shape[3]
    NA = At.shape[0]
    Dg = D // G
    nblk = -(-Dg // wr)
    scalar = NA == 1
    nck = -(-L // T)
    ck = np.empty((nck, N, wr), u.dtype)  # ck[c] = the state before chunk c
    hs = np.empty((T + 1, N, wr), u.dtype)  # hs[k] = h_{lo+k-1} inside a chunk
    dec = np.empty((T, NA, wr), u.dtype)  # exp(Δ A) of the chunk's steps
    dts, dus = np.empty((T, wr), u.dtype), np.empty((T, wr), u.dtype)
    lam, gAl = np.empty((N, wr), u.dtype), np.empty((NA, wr), u.dtype)
    gw, gdu, sacc = np.empty(wr, u.dtype), np.empty(wr, u.dtype), np.empty(wr, u.dtype)
    tb, tc = np.empty(wr, u.dtype), np.empty(wr, u.dtype)
    for item in range(i0, i1):
        b, g, j, d0, wn = _lane(item, G, Dg, nblk, wr)
        ck[0] = 0.0
        lam[:] = 0.0
        gAl[:] = 0.0
        for c in range(nck - 1):  # checkpoint pass (none when T = L)
            hs[0] = ck[c]
            _run_chunk(u, dt, At, B, b, g, c * T, c * T + T, d0, wn, wr, hs, dec, dts, dus)
            ck[c + 1] = hs[T]
        for c in range(nck - 1, -1, -1):
            lo, hi = c * T, min(c * T + T, L)
            hs[0] = ck[c]
            _run_chunk(u, dt, At, B, b, g, lo, hi, d0, wn, wr, hs, dec, dts, dus)
            for t in range(hi - 1, lo - 1, -1):
                k = t - lo
                for w in range(wr):
                    gw[w] = grad[b, t, d0 + w] if w < wn else 0.0
                gdu[:] = 0.0
                sacc[:] = 0.0
                bt, ct = B[b, t, g], C[b, t, g]
                if scalar:
                    _adjoint_scalar(lam, gw, dus[k], dec[k], hs[k + 1], hs[k], bt, ct, gdu,
                                    sacc, tb, tc, gB[j, b, t, g], gC[j, b, t, g], wr)
                else:
                    _adjoint_full(lam, gw, dus[k], dec[k], hs[k + 1], hs[k], bt, ct, gdu, sacc,
                                  tb, tc, gB[j, b, t, g], gC[j, b, t, g], At[:, d0:], dts[k],
                                  gAl, wr)
                for w in range(wn):
                    sa = sacc[w] * At[0, d0 + w] if scalar else sacc[w]
                    gdt[b, t, d0 + w] = sa + gdu[w] * u[b, t, d0 + w]
                    gu[b, t, d0 + w] = gdu[w] * dts[k, w]
                    if scalar:
                        gAl[0, w] += sacc[w] * dts[k, w]
        for q in range(NA):
            for w in range(wn):
                gA[b, q, d0 + w] = gAl[q, w]


def lane_width(Dg: int) -> int:
    """Channels per lane: 16·2^k, the smallest that holds the group's Dg channels, at most
    LANE."""
    wr = 16
    while wr < min(Dg, LANE):
        wr *= 2
    return wr


def chunk_len(L: int, N: int, NA: int, wr: int, itemsize: int) -> int:
    """Backward chunk T: the whole sequence when a lane's states and decays fit BUFFER_BUDGET
    bytes, else ≈ √L (checkpoints)."""
    return L if (L + 1) * (N + NA) * wr * itemsize <= BUFFER_BUDGET else chunk_size(L)


def _arrays(*tensors: Tensor) -> list[np.ndarray]:
    return [t.detach().resolve_neg().contiguous().numpy() for t in tensors]


def _sum_slices(part: np.ndarray) -> np.ndarray:
    """Σ over the leading axis in index order (not torch's or numpy's own order, which may
    change with the thread count or vector width)."""
    out = part[0].copy()
    for p in part[1:]:
        out += p
    return out


def _prepare(u: Tensor, A: Tensor, Bm: Tensor) -> tuple[np.ndarray, int, int]:
    """(Aᵀ zero-padded to (NA, D + wr) so a padded lane reads in bounds, wr, number of lanes)."""
    batch, _, D = u.shape
    G = Bm.shape[2]
    wr = lane_width(D // G)
    a = A.detach().resolve_neg().t().numpy()
    At = np.zeros((a.shape[0], a.shape[1] + wr), a.dtype)
    At[:, : a.shape[1]] = a
    return At, wr, batch * G * -(-(D // G) // wr)


def numba_forward(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor) -> Tensor:
    """Same contract and shapes as ``_kernel.selective_forward`` (CPU tensors)."""
    At, wr, lanes = _prepare(u, A, Bm)
    un, dn, Bn, Cn = _arrays(u, delta, Bm, Cm)
    y = _buffers.empty(un.shape, un.dtype)
    parallel_for(lambda i0, i1: forward_lanes(un, dn, At, Bn, Cn, wr, y, i0, i1), lanes,
                 un.size * Bn.shape[3])
    return torch.from_numpy(y)


def numba_backward(
    g: Tensor, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Same contract and shapes as ``_kernel.selective_backward`` (CPU tensors)."""
    At, wr, lanes = _prepare(u, A, Bm)
    gn, un, dn, Bn, Cn = _arrays(g, u, delta, Bm, Cm)
    batch, L, D = un.shape
    nblk = lanes // (batch * Bn.shape[2])
    T = chunk_len(L, Bn.shape[3], At.shape[0], wr, un.itemsize)
    gu, gdt = _buffers.empty(un.shape, un.dtype), _buffers.empty(un.shape, un.dtype)
    gA = np.empty((batch, At.shape[0], D), un.dtype)
    gB, gC = np.empty((nblk,) + Bn.shape, un.dtype), np.empty((nblk,) + Bn.shape, un.dtype)

    def run(i0: int, i1: int) -> None:
        backward_lanes(gn, un, dn, At, Bn, Cn, wr, T, gu, gdt, gA, gB, gC, i0, i1)

    parallel_for(run, lanes, 3 * un.size * Bn.shape[3])
    gA_sum = torch.from_numpy(_sum_slices(gA)).t().contiguous()
    return (torch.from_numpy(gu), torch.from_numpy(gdt), gA_sum,
            torch.from_numpy(_sum_slices(gB)), torch.from_numpy(_sum_slices(gC)))
