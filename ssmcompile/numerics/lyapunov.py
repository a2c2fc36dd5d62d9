"""Gramians of stable discrete systems and their square-root factors.

For x_k = A x_{k-1} + B u_k, y_k = C x_k the Gramians solve the Stein (discrete Lyapunov)
equations

    P = A P Aᴴ + B Bᴴ,        Q = Aᴴ Q A + Cᴴ C.

Diagonal A = diag(λ): closed form, P_ij = (BBᴴ)_ij / (1 − λ_i λ̄_j), Q_ij = (CᴴC)_ij / (1 − λ̄_i λ_j).
Dense A: a *factored* squared-Smith (doubling) iteration, S ← [S, A_k S], A_k ← A_k², with the
factor re-compressed by a QR whenever it grows past n columns. Keeping the factor instead of P
itself means the Hankel singular values later come from an SVD of exact-to-rounding factors (as
SLICOT's Hammarling solver gives), not from a Cholesky of a rounded, nearly singular P.
"""

from __future__ import annotations

import torch

from ..errors import ConditioningError
from .stability import prepare

__all__ = [
    "gramians",
    "gramian_factors",
    "factors_of_prepared",
    "psd_factor",
    "gramians_reference",
]

_MAX_DOUBLINGS = 64  # ρ^(2^64) underflows for every ρ < 1 representable in float64


def _diagonal_gramians(
    lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    denom = 1.0 - lam[..., :, None] * lam.conj()[..., None, :]
    P = (B @ B.mH) / denom
    Q = (C.mH @ C) / denom.conj()
    return P, Q


def _compress(S: torch.Tensor, n: int) -> torch.Tensor:
    """A factor with at most n columns and the same S Sᴴ (QR of Sᴴ: Sᴴ = Q R ⇒ S Sᴴ = Rᴴ R)."""
    if S.shape[-1] <= n:
        return S
    R = torch.linalg.qr(S.mH, mode="r")[1]
    return R.mH


def _doubling_factor(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """S with S Sᴴ = Σ_k A^k B Bᴴ A^kᴴ. Shapes: A (..., n, n), B (..., n, m) → S (..., n, ≤n)."""
    n = A.shape[-1]
    eps = torch.finfo(torch.float64).eps
    S = _compress(B, n)
    Ak = A
    for _ in range(_MAX_DOUBLINGS):
        AS = Ak @ S
        s_norm = torch.linalg.matrix_norm(S)
        added = torch.linalg.matrix_norm(AS)
        # The next terms are A_k (A_k S), ..., so once ||A_k|| ≤ 1 and A_k S is at rounding level
        # of S, nothing further changes S Sᴴ.
        done = (added <= eps * s_norm) & (torch.linalg.matrix_norm(Ak) <= 1.0)
        if bool(done.all()):
            if not bool(torch.isfinite(S).all()):
                raise ConditioningError("Lyapunov doubling overflowed (A is far from normal)")
            return S
        S = _compress(torch.cat([S, AS], dim=-1), n)
        Ak = Ak @ Ak
    raise ConditioningError(
        f"Lyapunov doubling did not converge in {_MAX_DOUBLINGS} steps (poles too close to |λ| = 1)"
    )


def psd_factor(P: torch.Tensor) -> torch.Tensor:
    """L with L Lᴴ = P for a Hermitian positive semidefinite P.

    Shapes: ``P`` (..., n, n) → ``L`` (..., n, n). Cholesky where it succeeds; batch items where it
    fails (P singular to working precision) use ``V·diag(√w⁺)`` from ``eigh`` instead, where
    eigenvalues below n·eps·max(w) (negative ones included) are set to 0: they are rounding noise,
    and their square roots (~√eps) would otherwise pollute the small Hankel singular values.
    Rank-deficient Gramians thus give zero columns, never NaN.
    """
    L, info = torch.linalg.cholesky_ex(P)
    failed = info != 0
    if bool(failed.any()):
        w, V = torch.linalg.eigh(P)
        floor = P.shape[-1] * torch.finfo(w.dtype).eps * w.amax(dim=-1, keepdim=True).clamp_min(0)
        w = torch.where(w > floor, w, torch.zeros_like(w))
        L_eig = V * w.sqrt().to(V.dtype)[..., None, :]
        L = torch.where(failed[..., None, None], L_eig, L)
    return L


def gramian_factors(
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square-root factors ``L_P``, ``L_Q`` with P = L_P L_Pᴴ and Q = L_Q L_Qᴴ.

    Shapes: ``A`` (..., n) complex diagonal or (..., n, n) dense, ``B`` (..., n, m), ``C``
    (..., p, n) → ``L_P`` (..., n, k_P), ``L_Q`` (..., n, k_Q) with k ≤ n (fewer columns when
    m < n or p < n for dense systems). float64 or complex128.

    Raises UnstableSystemError for non-finite input or any |λ| ≥ 1.
    """
    return factors_of_prepared(*prepare(A, B, C))


def factors_of_prepared(
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, diagonal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gramian_factors` for a system already passed through ``stability.prepare``."""
    if diagonal:
        P, Q = _diagonal_gramians(A, B, C)
        return psd_factor(P), psd_factor(Q)
    return _doubling_factor(A, B), _doubling_factor(A.mH, C.mH)


def gramians(
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Controllability and observability Gramians ``(P, Q)`` of a stable discrete system.

    Shapes: ``A`` (..., n) complex diagonal or (..., n, n) dense, ``B`` (..., n, m), ``C``
    (..., p, n) → ``P``, ``Q`` (..., n, n), complex128 (diagonal or complex input) or float64.

    Raises UnstableSystemError for non-finite input or any |λ| ≥ 1 (the message names the
    largest |λ|), ConditioningError if the dense doubling iteration fails to converge.
    """
    A, B, C, diagonal = prepare(A, B, C)
    if diagonal:
        return _diagonal_gramians(A, B, C)
    S_P = _doubling_factor(A, B)
    S_Q = _doubling_factor(A.mH, C.mH)
    return S_P @ S_P.mH, S_Q @ S_Q.mH


def _stein_kron(A: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    # Row-major vec: vec(A X Aᴴ) = (A ⊗ Ā) vec(X).
    n = A.shape[-1]
    K = torch.eye(n * n, dtype=A.dtype) - torch.kron(A, A.conj())
    return torch.linalg.solve(K, W.reshape(n * n)).reshape(n, n)


def gramians_reference(
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Readable twin of :func:`gramians`: solves the n²×n² Kronecker system item by item.

    Same shapes and dtypes as :func:`gramians`; O(n⁶), meant for tests with n ≲ 40.
    """
    A, B, C, diagonal = prepare(A, B, C)
    if diagonal:
        A = torch.diag_embed(A)
    batch = B.shape[:-2]
    n = B.shape[-2]
    Af, Bf, Cf = A.reshape(-1, n, n), B.reshape(-1, n, B.shape[-1]), C.reshape(-1, C.shape[-2], n)
    Ps = [_stein_kron(a, b @ b.mH) for a, b in zip(Af, Bf, strict=True)]
    Qs = [_stein_kron(a.mH, c.mH @ c) for a, c in zip(Af, Cf, strict=True)]
    shape = (*batch, n, n)
    P = torch.stack(Ps).reshape(shape) if Ps else torch.zeros(shape, dtype=A.dtype)
    Q = torch.stack(Qs).reshape(shape) if Qs else torch.zeros(shape, dtype=A.dtype)
    return P, Q
