"""Data-driven Gramian estimates of selective (time-varying) SSMs, and their LTI surrogates.

A selective SSM is linear time-varying once its input is fixed: per channel d,

    h_t = Ā_t h_{t-1} + b_t w_t,    y_t = c_tᵀ h_t,    Ā_t = diag(exp(Δ_t[d]·A[d])),
    b_t = Δ_t[d]·B_t,    c_t = C_t,

where Δ_t, B_t, C_t are what the block computes from the calibration input. There is no single
transfer function, so no exact Hankel singular values and no H∞ bound. The estimator:

- **Controllability**: the reachability Gramian of the LTV system at time t,
  P_t = Ā_t P_{t-1} Ā_tᵀ + b_t b_tᵀ (P_{-1} = 0), i.e. the state covariance when every channel
  is driven by unit-variance white noise w; estimate P̄ = mean over time, batch and the channels
  of a group.
- **Observability**: Q_t = Ā_{t+1}ᵀ Q_{t+1} Ā_{t+1} + c_t c_tᵀ (Q_{L} = 0), the output energy
  from time t on of a state placed at t; Q̄ = the same mean.

Assumptions (what the estimate ignores): the data enter only through Δ_t, B_t, C_t — the
input *amplitude* x_t, the gate SiLU(z_t), out_proj and the D skip do not weight channels;
channels in a group are pooled with equal weight (average Gramians, as used for reducing a family
of systems with one projection); P̄, Q̄ describe the calibration distribution only. Both are
averages of exact finite-horizon Gramians, so for an LTI special case (Δ, B, C input
independent) they equal the exact Gramians of ``ssmcompile.numerics.gramians`` up to the
start-up/horizon transient: entry (i, j) is scaled by 1 − x(1 − x^L)/(L(1 − x)) with
x = a_i a_j, so the relative error is ≤ 1/(L(1 − ρ²)) for ρ = the largest |a_i|.

Costs: Mamba-2 structure (one decay per head) reduces to scalar recurrences (weights ω_s, ν_s
below) and one GEMM, O(batch·L·(heads + G·N²)). Mamba-1 structure (a decay per state) needs the
full N × N recurrence per channel, O(batch·L·D·N²), streamed over time in float64.

:func:`surrogate_system` turns (P̄, Q̄) into the LTI system the core analyses: A = 0 (dense, real,
(..., N, N)), B = a factor of P̄, C = a factor of Q̄ᵀ, whose exact Gramians are (BBᵀ, CᵀC) =
(P̄, Q̄). A dense real A keeps ``truncate`` from re-diagonalising, so T / Tinv come back real.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ShapeError
from ..numerics.lyapunov import psd_factor
from ..numerics.system import LTISystem
from ._kernel import recurrence_time_major

__all__ = ["scalar_decay_gramians", "diagonal_decay_gramians", "surrogate_system", "time_weights"]

# Largest (sequences × D × N × N) state the Mamba-1 estimator holds at once (float64, ~64 MB).
_MAX_STATE_NUMEL = 8 * 1024 * 1024


def time_weights(log_decay: Tensor) -> tuple[Tensor, Tensor]:
    """ω_s = Σ_{t≥s} Π_{s<k≤t} a_k² and ν_s = Σ_{t≤s} Π_{t<k≤s} a_k² for log a = ``log_decay``.

    Shapes: (batch, L, H) → two (batch, L, H). ω weights b_s b_sᵀ in mean_t P_t, ν weights
    c_s c_sᵀ in mean_t Q_t."""
    a2 = torch.exp(2.0 * log_decay).transpose(0, 1)  # (L, batch, H)
    ones = torch.ones_like(a2)
    nu = recurrence_time_major(a2, ones)  # ν_s = 1 + a_s² ν_{s-1}
    omega = recurrence_time_major(a2, ones, reverse=True)  # ω_s = 1 + a_{s+1}² ω_{s+1}
    return omega.transpose(0, 1), nu.transpose(0, 1)


def scalar_decay_gramians(delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor
                          ) -> tuple[Tensor, Tensor]:
    """(P̄, Q̄) per group for one decay per head (Mamba-2 structure), float64.

    Shapes: ``delta`` (batch, L, H) (positive), ``A`` (H,) (negative), ``Bm``, ``Cm``
    (batch, L, G, N) with G | H, heads h·G/H … read group h // (H/G) → P̄, Q̄ (G, N, N).
    P̄_g = mean over (batch, t, heads of g) of P_t = (1/(batch·L·H/G)) Σ ω Δ² B Bᵀ.
    """
    batch, L, H = delta.shape
    G, N = Bm.shape[-2:]
    if A.shape != (H,) or Bm.shape != (batch, L, G, N) or Cm.shape != Bm.shape or H % G:
        raise ShapeError(f"scalar_decay_gramians: delta{tuple(delta.shape)}, A{tuple(A.shape)}, "
                         f"B{tuple(Bm.shape)}, C{tuple(Cm.shape)} do not fit")
    delta, A, Bm, Cm = (t.detach().to(torch.float64) for t in (delta, A, Bm, Cm))
    omega, nu = time_weights(delta * A)
    count = batch * L * (H // G)
    w_P = (omega * delta**2).reshape(batch, L, G, H // G).sum(-1) / count  # (batch, L, G)
    w_Q = nu.reshape(batch, L, G, H // G).sum(-1) / count
    Bw, Cw = Bm * w_P.sqrt().unsqueeze(-1), Cm * w_Q.sqrt().unsqueeze(-1)
    P = torch.einsum("blgi,blgj->gij", Bw, Bw)
    Q = torch.einsum("blgi,blgj->gij", Cw, Cw)
    return P, Q


def _diagonal_pass(a: Tensor, v: Tensor, reverse: bool) -> Tensor:
    """Σ_t X_t for X_t = (a_t a_tᵀ) ⊙ X_{t-1} + v_t v_tᵀ (forward) or
    X_t = (a_{t+1} a_{t+1}ᵀ) ⊙ X_{t+1} + v_t v_tᵀ (reverse), summed over the batch.

    Shapes: ``a`` (batch, L, D, N), ``v`` (batch, L, D, N) → (D, N, N)."""
    batch, L, D, N = v.shape
    total = v.new_zeros(D, N, N)
    step = max(1, _MAX_STATE_NUMEL // max(1, D * N * N))
    for lo in range(0, batch, step):
        av, vv = a[lo:lo + step], v[lo:lo + step]
        X = v.new_zeros(av.shape[0], D, N, N)
        acc = torch.zeros_like(X)
        for t in (reversed(range(L)) if reverse else range(L)):
            # The first step multiplies a zero X, so clamping s at the edge changes nothing.
            a_s, v_t = av[:, min(t + 1, L - 1) if reverse else t], vv[:, t]
            X.mul_(a_s[..., :, None]).mul_(a_s[..., None, :])  # in place: X is the big one
            X.addcmul_(v_t[..., :, None], v_t[..., None, :])
            acc.add_(X)
        total += acc.sum(0)
    return total


def diagonal_decay_gramians(delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, groups: int = 1
                            ) -> tuple[Tensor, Tensor]:
    """(P̄, Q̄) per channel group for a decay per channel and state (Mamba-1 structure), float64.

    Shapes: ``delta`` (batch, L, D) (positive), ``A`` (D, N) (negative), ``Bm``, ``Cm``
    (batch, L, N) shared by all channels; ``groups`` divides D (channel d is in group
    d // (D/groups)) → P̄, Q̄ (groups, N, N), the means over (batch, t, channels of the group).
    """
    batch, L, D = delta.shape
    N = Bm.shape[-1]
    if A.shape != (D, N) or Bm.shape != (batch, L, N) or Cm.shape != Bm.shape:
        raise ShapeError(f"diagonal_decay_gramians: delta{tuple(delta.shape)}, A{tuple(A.shape)}, "
                         f"B{tuple(Bm.shape)}, C{tuple(Cm.shape)} do not fit")
    if groups < 1 or D % groups:
        raise ShapeError(f"groups must divide the {D} channels, got {groups}")
    delta, A, Bm, Cm = (t.detach().to(torch.float64) for t in (delta, A, Bm, Cm))
    a = torch.exp(delta.unsqueeze(-1) * A)  # (batch, L, D, N)
    b = delta.unsqueeze(-1) * Bm.unsqueeze(2)  # Δ_t[d] B_t
    c = Cm.unsqueeze(2).expand(batch, L, D, N)
    count = batch * L * (D // groups)
    P = _diagonal_pass(a, b, reverse=False).reshape(groups, D // groups, N, N).sum(1) / count
    Q = _diagonal_pass(a, c, reverse=True).reshape(groups, D // groups, N, N).sum(1) / count
    return P, Q


def surrogate_system(P: Tensor, Q: Tensor) -> LTISystem:
    """The LTI system (A = 0 dense real, B = L_P, C = L_Qᵀ) whose exact Gramians are (P, Q).

    Shapes: ``P``, ``Q`` (..., N, N) symmetric PSD → A (..., N, N), B (..., N, N),
    C (..., N, N), float64, D = None."""
    if P.shape != Q.shape or P.ndim < 2 or P.shape[-1] != P.shape[-2]:
        raise ShapeError(f"P{tuple(P.shape)} and Q{tuple(Q.shape)} must be equal (..., N, N)")
    P, Q = (t.detach().to(torch.float64) for t in (P, Q))
    P, Q = (P + P.mT) / 2, (Q + Q.mT) / 2
    return LTISystem(torch.zeros_like(P), psd_factor(P), psd_factor(Q).mT)
