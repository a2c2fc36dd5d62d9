"""Data-driven Gramians of the key axis of a linear-attention state.

Fix the calibration input; then per head and per value channel j the state's column
x_t = S_t[:, j] ∈ R^{d_k} is a linear time-varying system driven by the scalar v_t[j]:

    x_t = A_t x_{t−1} + b_t v_t[j],    o_t[j] = c_tᵀ x_t,    b_t = k_t (delta rule: β_t k_t),
    c_t = q_t,    A_t = α_t I (RetNet, GLA) or α_t (I − β_t k_t k_tᵀ) (gated delta rule).

All d_v columns share (A_t, b_t, c_t), so one pair of d_k × d_k Gramians describes the head.
As in ``ssmcompile.selective.calibration`` (the same estimator):

- reachability: P_t = A_t P_{t−1} A_tᵀ + ρ_t b_t b_tᵀ, P̄ = mean over time and batch;
- observability: Q_t = A_{t+1}ᵀ Q_{t+1} A_{t+1} + c_t c_tᵀ (Q after the end = 0), Q̄ = mean.

ρ_t is the input power: ‖v_t‖² / d_v with ``value_weighted`` (tokens whose values are small
write little into the state), else 1 (white unit-variance input, the Mamba path's assumption).
For a scalar decay the recurrences collapse to scalar time weights (P̄ = Σ_s ω_s ρ_s k_s k_sᵀ,
Q̄ = Σ_s ν_s q_s q_sᵀ, over batch·L), one GEMM per head. The delta rule's transition is not
scalar: its recurrences run step by step, O(batch·L·heads·d_k²), using
A P A = α²(P − β(k (Pk)ᵀ + (Pk) kᵀ) + β²(kᵀPk) k kᵀ) (A symmetric) instead of matrix products.

Ignored (what the estimate does not see): the output gate, o_proj and the downstream layers
(they weight the value side, not the key axis); P̄, Q̄ describe the calibration data only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ShapeError
from ..selective.calibration import time_weights
from .layer import Features

__all__ = ["key_gramians"]


def _sandwich(X: Tensor, k: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """A X A for A = α (I − β k kᵀ). X (..., d, d), k (..., d), alpha, beta (...,)."""
    Xk = (X @ k.unsqueeze(-1)).squeeze(-1)
    kXk = (Xk * k).sum(-1)
    b = beta[..., None, None]
    out = X - b * (k.unsqueeze(-1) * Xk.unsqueeze(-2) + Xk.unsqueeze(-1) * k.unsqueeze(-2))
    out = out + (b * b) * kXk[..., None, None] * (k.unsqueeze(-1) * k.unsqueeze(-2))
    return (alpha * alpha)[..., None, None] * out


def _delta_gramians(f: Features, rho: Tensor) -> tuple[Tensor, Tensor]:
    k, q, g, beta = f.k, f.q, f.g, f.beta
    bsz, H, L, d = k.shape
    alpha = g.exp()
    P = k.new_zeros(bsz, H, d, d)
    Q = torch.zeros_like(P)
    P_sum, Q_sum = torch.zeros_like(P), torch.zeros_like(P)
    for t in range(L):
        bk = (beta[:, :, t] * rho[:, :, t].sqrt()).unsqueeze(-1) * k[:, :, t]
        P = _sandwich(P, k[:, :, t], alpha[:, :, t], beta[:, :, t])
        P = P + bk.unsqueeze(-1) * bk.unsqueeze(-2)
        P_sum += P
    for t in reversed(range(L)):
        if t + 1 < L:
            Q = _sandwich(Q, k[:, :, t + 1], alpha[:, :, t + 1], beta[:, :, t + 1])
        Q = Q + q[:, :, t].unsqueeze(-1) * q[:, :, t].unsqueeze(-2)
        Q_sum += Q
    return P_sum.sum(0), Q_sum.sum(0)


def key_gramians(features: Features, *, value_weighted: bool = True) -> tuple[Tensor, Tensor]:
    """(P̄, Q̄) per head, float64, from a layer's :meth:`~LinearAttention.features`.

    Shapes: features q, k (batch, heads, L, d_k), v (batch, heads, L, d_v), g, beta
    (batch, heads, L) → P̄, Q̄ (heads, d_k, d_k), symmetric PSD, means over batch·L.
    """
    q, k, v, g, beta = (None if t is None else t.detach().to(torch.float64) for t in features)
    if q.ndim != 4 or k.shape != q.shape or g.shape != q.shape[:3]:
        raise ShapeError(f"key_gramians: q{tuple(q.shape)} k{tuple(k.shape)} g{tuple(g.shape)}")
    bsz, H, L, _ = q.shape
    rho = (v * v).mean(-1) if value_weighted else torch.ones_like(g)
    f = features._make((q, k, v, g, beta))
    if beta is not None:
        P, Q = _delta_gramians(f, rho)
    else:
        omega, nu = time_weights(g.transpose(1, 2))  # time-major helpers take (batch, L, H)
        w_P = (omega.transpose(1, 2) * rho).sqrt().unsqueeze(-1)
        w_Q = nu.transpose(1, 2).sqrt().unsqueeze(-1)
        P = torch.einsum("bhli,bhlj->hij", k * w_P, k * w_P)
        Q = torch.einsum("bhli,bhlj->hij", q * w_Q, q * w_Q)
    return P / (bsz * L), Q / (bsz * L)
