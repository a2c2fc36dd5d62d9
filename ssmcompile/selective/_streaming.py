"""Streaming selective scan: one time step at a time, nothing of size (L, batch, D, N) stored.

The chunked kernel in ``_kernel`` materialises exp(Δ A), Δ u B and all states as
(L, batch, D, N) tensors, and ``_fused`` still stores the states for its backward. Once one time
step's slab (batch·D·N numbers) is large, those passes over memory dominate and a plain loop
over time whose slab stays in cache is faster (``tools/bench_mamba.py --scan-only`` times the
kernels). This is that loop, with in-place per-step ops; the backward keeps only the states at
chunk starts (every T ≈ √L steps) and recomputes one chunk at a time, so its memory is
O((L/T + T)·batch·D·N) instead of O(L·batch·D·N).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._kernel import chunk_size


def _views(u, delta, A, Bm):
    batch, _, D = u.shape
    G, N = Bm.shape[-2:]
    Dg = D // G
    return batch, G, Dg, N, A.reshape(G, Dg, A.shape[-1]), delta * u


def streaming_forward(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor) -> Tensor:
    """Same contract and shapes as ``_kernel.selective_forward``."""
    batch, G, Dg, N, A_g, du = _views(u, delta, A, Bm)
    L = u.shape[1]
    h = u.new_zeros(batch, G, Dg, N)
    y = u.new_empty(L, batch, G, Dg, 1)
    for t in range(L):
        h.mul_(torch.exp(delta[:, t].view(batch, G, Dg, 1) * A_g))
        h.addcmul_(du[:, t].view(batch, G, Dg, 1), Bm[:, t].view(batch, G, 1, N))
        torch.matmul(h, Cm[:, t].view(batch, G, N, 1), out=y[t])
    return y.reshape(L, batch, G * Dg).transpose(0, 1).contiguous()


def _advance(h, t, delta, du, A_g, Bm, shape):
    batch, G, Dg, N = shape
    h = h * torch.exp(delta[:, t].view(batch, G, Dg, 1) * A_g)
    return h.addcmul_(du[:, t].view(batch, G, Dg, 1), Bm[:, t].view(batch, G, 1, N))


def streaming_backward(
    g: Tensor, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Same contract and shapes as ``_kernel.selective_backward``."""
    batch, G, Dg, N, A_g, du = _views(u, delta, A, Bm)
    shape = (batch, G, Dg, N)
    L = u.shape[1]
    T = chunk_size(L)
    starts = list(range(0, L, T))
    # checkpoints[i] = the state just before chunk i starts (h_{-1} = 0 for the first).
    checkpoints = [u.new_zeros(shape)]
    h = checkpoints[0]
    for t in range(L):
        h = _advance(h, t, delta, du, A_g, Bm, shape)
        if t + 1 in starts:
            checkpoints.append(h)
    g_du = u.new_empty(batch, L, G, Dg)
    g_dt = u.new_empty(batch, L, G, Dg)
    g_B = Bm.new_empty(Bm.shape)
    g_C = Cm.new_empty(Cm.shape)
    g_A = u.new_zeros(shape if A_g.shape[-1] > 1 else (batch, G, Dg, 1))  # summed over batch last
    carry = u.new_zeros(shape)  # dA_{t+1} ⊙ λ_{t+1}
    gv = g.view(batch, L, G, Dg)
    for i in reversed(range(len(starts))):
        lo, hi = starts[i], min(starts[i] + T, L)
        states = [checkpoints[i]]  # states[k] = h_{lo+k-1}
        decays = []  # decays[k] = exp(Δ_{lo+k} A), kept for the reverse sweep
        for t in range(lo, hi):
            decays.append(torch.exp(delta[:, t].view(batch, G, Dg, 1) * A_g))
            h = states[-1] * decays[-1]
            states.append(h.addcmul_(du[:, t].view(batch, G, Dg, 1), Bm[:, t].view(batch, G, 1, N)))
        for t in reversed(range(lo, hi)):
            h_t, h_prev = states[t - lo + 1], states[t - lo]
            g_t = gv[:, t].unsqueeze(-1)  # (batch, G, Dg, 1)
            lam = torch.addcmul(carry, g_t, Cm[:, t].view(batch, G, 1, N))
            g_C[:, t] = (g_t.transpose(-1, -2) @ h_t).squeeze(-2)
            g_du[:, t] = (lam @ Bm[:, t].view(batch, G, N, 1)).squeeze(-1)
            g_B[:, t] = (du[:, t].view(batch, G, 1, Dg) @ lam).squeeze(-2)
            carry = lam.mul_(decays[t - lo])
            s = carry * h_prev  # ∂(Δ_t A) = λ_t ⊙ dA_t ⊙ h_{t-1}
            if A_g.shape[-1] == 1:
                s = s.sum(-1, keepdim=True)
            g_dt[:, t] = (s * A_g).sum(-1)
            g_A.addcmul_(s, delta[:, t].view(batch, G, Dg, 1))
    g_du = g_du.reshape(u.shape)
    g_dt = g_dt.reshape(u.shape) + g_du * u
    return g_du * delta, g_dt, g_A.sum(0).reshape(A.shape), g_B, g_C
