"""Chunked linear-recurrence kernels in plain eager torch (the bodies of the custom ops).

Both kernels work **time-major**, ``b`` of shape (length, M, n), so that the slice of one time
step is a contiguous slab; the ops transpose in and out. The recurrence x_t = A x_{t-1} + b_t is
split into C chunks of T steps:

1. a local scan inside every chunk from a zero state, one Python step per in-chunk position but
   vectorised across all chunks (T steps, each touching C·M·n numbers);
2. the chunk-end states form a recurrence of their own with transition A^T (length C), solved by
   the same kernel recursively;
3. a fix-up adds A^{t+1}·carry_{c-1} to position t of chunk c.

With T ≈ √L that is ~2√L Python steps instead of L. Powers are only ever raised, never inverted:
for a stable system A^k is bounded while A^{-k} overflows, which is what breaks the cumulative-sum
closed forms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Below this length the chunk bookkeeping costs more than the plain loop it replaces.
SEQUENTIAL_MAX_LEN = 16


def chunk_size(length: int) -> int:
    """Chunk length T for a scan of ``length`` steps (≈ √L balances steps 1 and 2)."""
    return max(2, math.isqrt(length))


def time_major(b: torch.Tensor) -> torch.Tensor:
    """(batch, length, n) → a fresh contiguous (length, batch, n) copy."""
    # copy_ into a new buffer measured ~4x faster than .contiguous() on a transposed view here.
    return b.new_empty((b.shape[1], b.shape[0], *b.shape[2:])).copy_(b.transpose(0, 1))


def _pad_time(b: torch.Tensor, total: int) -> torch.Tensor:
    pad = total - b.shape[0]
    if pad == 0:
        return b
    return F.pad(b, (0, 0) * (b.dim() - 1) + (0, pad))


def _complex_powers(lr: torch.Tensor, li: torch.Tensor, count: int):
    """λ^1..λ^count as real/imag (count, n); cumprod keeps |λ^k| ≤ 1 for a stable λ."""
    p = torch.complex(lr, li).unsqueeze(0).expand(count, -1).cumprod(0)
    return p.real.contiguous(), p.imag.contiguous()


def _diag_sequential(lr, li, br, bi, xr, xi, dim: int, init=None) -> None:
    """Write x_t = λ x_{t-1} + b_t along ``dim`` into (xr, xi); x_{-1} = ``init`` or 0."""
    for t in range(br.shape[dim]):
        bt_r, bt_i = br.select(dim, t), bi.select(dim, t)
        out_r, out_i = xr.select(dim, t), xi.select(dim, t)
        if t == 0 and init is None:
            out_r.copy_(bt_r)
            out_i.copy_(bt_i)
            continue
        pr, pi = (xr.select(dim, t - 1), xi.select(dim, t - 1)) if t else init
        # Complex multiply-add in real arithmetic: eager complex kernels are ~10x slower here.
        torch.addcmul(bt_r, lr, pr, out=out_r).addcmul_(li, pi, value=-1)
        torch.addcmul(bt_i, lr, pi, out=out_i).addcmul_(li, pr)


def diagonal_scan_time_major(lr, li, br, bi):
    """Diagonal complex scan on real/imag parts.

    Shapes: ``lr``, ``li`` (n,); ``br``, ``bi`` (length, M, n) → (xr, xi) (length, M, n).
    """
    length = br.shape[0]
    if length <= SEQUENTIAL_MAX_LEN:
        xr, xi = torch.empty_like(br), torch.empty_like(bi)
        _diag_sequential(lr, li, br, bi, xr, xi, 0)
        return xr, xi
    T = chunk_size(length)
    C = -(-length // T)
    br, bi = _pad_time(br, C * T), _pad_time(bi, C * T)
    tail = br.shape[1:]
    vr, vi = br.view(C, T, *tail), bi.view(C, T, *tail)
    yr, yi = torch.empty_like(vr), torch.empty_like(vi)
    _diag_sequential(lr, li, vr, vi, yr, yi, 1)
    pr, pi = _complex_powers(lr, li, T)
    hr, hi = diagonal_scan_time_major(pr[-1], pi[-1], yr[:, -1], yi[:, -1])
    # Chunk c (c ≥ 1) starts from the true state at the end of chunk c-1.
    hr, hi = hr[:-1, None], hi[:-1, None]
    pr, pi = pr[:, None], pi[:, None]
    yr[1:].addcmul_(pr, hr).addcmul_(pi, hi, value=-1)
    yi[1:].addcmul_(pr, hi).addcmul_(pi, hr)
    return yr.view(C * T, *tail)[:length], yi.view(C * T, *tail)[:length]


def _dense_sequential(At, b, x, dim: int) -> None:
    """Write x_t = x_{t-1} Aᵀ + b_t along ``dim`` into x (row-vector convention, x_{-1} = 0)."""
    for t in range(b.shape[dim]):
        if t == 0:
            x.select(dim, 0).copy_(b.select(dim, 0))
        else:
            x.select(dim, t).copy_(torch.matmul(x.select(dim, t - 1), At).add_(b.select(dim, t)))


def dense_scan_time_major(A, b):
    """Dense real scan x_t = A x_{t-1} + b_t.

    Shapes: ``A`` (n, n); ``b`` (length, M, n) → x (length, M, n).
    """
    length, n = b.shape[0], b.shape[-1]
    if length <= SEQUENTIAL_MAX_LEN:
        x = torch.empty_like(b)
        _dense_sequential(A.t(), b, x, 0)
        return x
    T = chunk_size(length)
    C = -(-length // T)
    b = _pad_time(b, C * T)
    tail = b.shape[1:]
    v = b.view(C, T, *tail)
    y = torch.empty_like(v)
    _dense_sequential(A.t(), v, y, 1)
    # powers[t] = A^{t+1}, t < T; each is one product away from the last, never an inverse.
    powers = [A]
    for _ in range(T - 1):
        powers.append(powers[-1] @ A)
    h = dense_scan_time_major(powers[-1], y[:, -1])[:-1]  # (C-1, M, n): state before chunk c
    # fix[c, t, m, i] = Σ_j A^{t+1}[i, j] h[c, m, j], as one GEMM (C-1)·M × n × T·n.
    stacked = torch.stack(powers)  # (T, n, n)
    fix = h.reshape(-1, n) @ stacked.permute(2, 0, 1).reshape(n, T * n)
    y[1:] += fix.view(C - 1, *tail[:-1], T, n).movedim(-2, 1)
    return y.view(C * T, *tail)[:length]
