"""Eager bodies of the selective-scan ops: a chunked time-varying recurrence and its adjoint.

Everything here works **time-major** (length first) so that one time step is a contiguous slab.
The core is the elementwise recurrence h_t = a_t ⊙ h_{t-1} + b_t with a time-varying a_t, split
into C chunks of T ≈ √L steps as in ``ssmcompile.ops._chunked``:

1. a local scan inside every chunk from a zero state (T Python steps, vectorised over chunks);
2. the chunk-end states obey a recurrence of their own whose transition is the product of the
   chunk's a_t (a running product, never a division: the decays are ≤ 1 and their inverses
   overflow); it is solved by the same function recursively;
3. a fix-up adds (Π_{k≤t} a_k)·carry_{c-1} to position t of chunk c.

The same function runs the recurrence backwards in time (the adjoint) without flipping copies.

The selective scan on top (shapes in :func:`selective_forward`) discretises per step,
dA_t = exp(Δ_t A) and b_t = Δ_t u_t B_t, scans, and reads out y_t = C_t · h_t. The backward
recomputes the states instead of saving them from the forward: they are (L, batch, D, N), the
largest tensor of the whole model at d_state 128.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Below this length the chunk bookkeeping costs more than the plain loop it replaces.
SEQUENTIAL_MAX_LEN = 16


def chunk_size(length: int) -> int:
    """Chunk length T ≈ √L for a scan of ``length`` steps; a divisor of L near √L when there is
    one (padding would copy every full-size input once more)."""
    root = max(2, math.isqrt(length))
    near = [d for d in range(max(2, root // 2), 2 * root + 1) if length % d == 0]
    return min(near, key=lambda d: abs(d - root)) if near else root


def _pad_time(x: Tensor, total: int, value: float) -> Tensor:
    pad = total - x.shape[0]
    return x if pad == 0 else F.pad(x, (0, 0) * (x.dim() - 1) + (0, pad), value=value)


def _sequential(a: Tensor, b: Tensor, h: Tensor, dim: int, reverse: bool) -> None:
    """Write the recurrence along ``dim`` into h, from a zero state: forward
    h_t = a_t ⊙ h_{t-1} + b_t; reverse h_t = a_{t+1} ⊙ h_{t+1} + b_t."""
    n = b.shape[dim]
    first, steps, src = (n - 1, range(n - 2, -1, -1), 1) if reverse else (0, range(1, n), -1)
    h.select(dim, first).copy_(b.select(dim, first))
    for t in steps:
        a_t = a.select(dim, t + 1 if reverse else t)
        torch.addcmul(b.select(dim, t), a_t, h.select(dim, t + src), out=h.select(dim, t))


def recurrence_time_major(a: Tensor, b: Tensor, reverse: bool = False) -> Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t (h_{-1} = 0), or with ``reverse`` h_t = a_{t+1} ⊙ h_{t+1} + b_t
    (h_L = 0; a_0 is unused): each transition is stored at the step it leaves from.

    Shapes: ``b`` (L, ...); ``a`` (L, ...) broadcastable to ``b`` (e.g. a trailing 1 for a decay
    shared by all states) → h like ``b``.
    """
    length = b.shape[0]
    if length <= SEQUENTIAL_MAX_LEN:
        h = torch.empty_like(b)
        _sequential(a, b, h, 0, reverse)
        return h
    T = chunk_size(length)
    C = -(-length // T)
    a, b = _pad_time(a, C * T, 1.0), _pad_time(b, C * T, 0.0)
    va, vb = a.reshape(C, T, *a.shape[1:]), b.reshape(C, T, *b.shape[1:])
    y = torch.empty_like(vb)
    _sequential(va, vb, y, 1, reverse)
    # decay[c, t]: the product of the transitions between position t and the chunk's open end
    # (forward: Π_{k≤t} a[c, k]; reverse: Π_{k>t} a[c, k]), a running product, never a division.
    decay = torch.empty_like(va)
    if reverse:
        decay[:, -1] = 1.0
        for t in range(T - 2, -1, -1):
            torch.mul(decay[:, t + 1], va[:, t + 1], out=decay[:, t])
        # Chunk-start states H_c = y[c, 0] + decay[c, 0]·a[c+1, 0]·H_{c+1}.
        link = decay[:-1, 0] * va[1:, 0]
        H = recurrence_time_major(torch.cat([link[:1], link]), y[:, 0].contiguous(), True)
        y[:-1].addcmul_(decay[:-1], (va[1:, 0] * H[1:]).unsqueeze(1))
    else:
        decay[:, 0] = va[:, 0]
        for t in range(1, T):
            torch.mul(decay[:, t - 1], va[:, t], out=decay[:, t])
        carry = recurrence_time_major(decay[:, -1], y[:, -1].contiguous())
        y[1:].addcmul_(decay[1:], carry[:-1].unsqueeze(1))
    return y.reshape(C * T, *b.shape[1:])[:length]


def discretise(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor) -> tuple[Tensor, Tensor]:
    """Per-step transition and input of the selective SSM, time-major.

    Shapes: ``u``, ``delta`` (batch, L, D); ``A`` (D, N) or (D, 1); ``Bm`` (batch, L, G, N) →
    ``dA`` (L, batch, D, N or 1) = exp(Δ A), ``bu`` (L, batch, D, N) = Δ u B (channel d uses
    group d // (D/G)).
    """
    batch, length, D = u.shape
    G, N = Bm.shape[-2:]
    # Time-major copies of the small inputs first: elementwise ops keep their inputs' strides,
    # and a permuted layout would make every full-size (L, batch, D, N) result permuted too.
    dt = delta.transpose(0, 1).contiguous()
    dA = (dt.unsqueeze(-1) * A).exp_()
    du = (dt * u.transpose(0, 1).contiguous()).reshape(length, batch, G, D // G, 1)
    bu = du * Bm.transpose(0, 1).contiguous().unsqueeze(3)
    return dA, bu.reshape(length, batch, D, N)


def _readout(h: Tensor, Cm: Tensor) -> Tensor:
    """y_t[d] = Σ_n C_t[g(d), n] h_t[d, n]. Shapes: h (L, batch, D, N), Cm (batch, L, G, N) →
    (batch, L, D)."""
    L, batch, D, N = h.shape
    G = Cm.shape[-2]
    Ct = Cm.transpose(0, 1).contiguous().unsqueeze(-1)  # (L, batch, G, N, 1)
    y = h.reshape(L, batch, G, D // G, N) @ Ct
    return y.reshape(L, batch, D).transpose(0, 1)


def selective_states(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor) -> Tensor:
    """All states h_t, time-major (L, batch, D, N); shapes of the inputs as in
    :func:`discretise`."""
    return recurrence_time_major(*discretise(u, delta, A, Bm))


def selective_forward(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor) -> Tensor:
    """y of the selective scan (no D skip, no gate).

    Shapes: ``u``, ``delta`` (batch, L, D); ``A`` (D, N) (Mamba-1: a decay per channel and
    state) or (D, 1) (Mamba-2: one decay per channel, shared by its states); ``Bm``, ``Cm``
    (batch, L, G, N) with G dividing D → y (batch, L, D).
    """
    return _readout(selective_states(u, delta, A, Bm), Cm)


def selective_backward(
    g: Tensor, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (∂u, ∂Δ, ∂A, ∂B, ∂C) of ⟨g, y⟩ for y = :func:`selective_forward` (same shapes
    as the inputs; ``g`` like y).

    Adjoint: λ_t = ∂y_t/∂h_t + dA_{t+1} ⊙ λ_{t+1} (the recurrence run backwards);
    ∂b_t = λ_t, ∂dA_t = λ_t ⊙ h_{t-1}, then the chain rule through exp(Δ A) and Δ u B.
    """
    batch, L, D = u.shape
    G, N = Bm.shape[-2:]
    Dg = D // G
    dA, bu = discretise(u, delta, A, Bm)
    h = recurrence_time_major(dA, bu)
    del bu
    dt, ut = delta.transpose(0, 1).contiguous(), u.transpose(0, 1).contiguous()
    Bt, Ct = Bm.transpose(0, 1).contiguous(), Cm.transpose(0, 1).contiguous()
    gt = g.transpose(0, 1).contiguous().reshape(L, batch, G, Dg, 1)
    hg = h.reshape(L, batch, G, Dg, N)
    g_C = (gt.transpose(-1, -2) @ hg).squeeze(-2)  # Σ_{d∈g} g_t[d] h_t[d, n]: (L, batch, G, N)
    g_h = (gt * Ct.unsqueeze(3)).reshape(L, batch, D, N)
    lam = recurrence_time_major(dA, g_h, reverse=True)
    del g_h
    lam_g = lam.reshape(L, batch, G, Dg, N)
    g_du = (lam_g @ Bt.unsqueeze(-1)).reshape(L, batch, D)  # Σ_n λ B
    du = dt * ut
    g_B = (du.reshape(L, batch, G, 1, Dg) @ lam_g).squeeze(-2)  # Σ_{d∈g} λ Δ u
    # s_t = ∂(Δ_t A) = λ_t ⊙ dA_t ⊙ h_{t-1}, zero at t = 0 where h_{-1} = 0 (λ is reused).
    s = lam[1:].mul_(dA[1:]).mul_(h[:-1])
    del h, lam, lam_g
    if A.shape[-1] == 1:
        s = s.sum(-1, keepdim=True)
    g_dt = torch.zeros_like(dt)
    g_dt[1:] = (s * A).sum(-1)
    g_A = (s * dt[1:].unsqueeze(-1)).sum((0, 1))
    del s
    g_dt = g_dt + g_du * ut
    g_u = g_du * dt
    return (
        g_u.transpose(0, 1).contiguous(),
        g_dt.transpose(0, 1).contiguous(),
        g_A,
        g_B.transpose(0, 1).contiguous(),
        g_C.transpose(0, 1).contiguous(),
    )
