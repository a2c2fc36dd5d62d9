"""Hankel singular values by the square-root method.

σ_i(G) = √λ_i(PQ). Forming PQ and taking eigenvalues is accurate only for the leading values
(the small ones drown in the rounding of P and Q), so the fast path works with factors instead:
P = L_P L_Pᴴ, Q = L_Q L_Qᴴ and σ = svd(L_Qᴴ L_P). The same SVD drives balanced truncation, so it
is exposed here as :func:`balancing_svd`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .lyapunov import factors_of_prepared, gramian_factors, gramians_reference
from .stability import prepare

__all__ = [
    "BalancingSVD",
    "balancing_svd",
    "balancing_svd_of_prepared",
    "hankel_singular_values",
    "hankel_singular_values_reference",
]


def _pad(sigma: torch.Tensor, n: int) -> torch.Tensor:
    # Factors with k < n columns have only k singular values; the rest are exactly zero.
    missing = n - sigma.shape[-1]
    if missing <= 0:
        return sigma
    return torch.cat([sigma, sigma.new_zeros(*sigma.shape[:-1], missing)], dim=-1)


@dataclass(frozen=True)
class BalancingSVD:
    """The pieces of the square-root balancing of a prepared system.

    Shapes: ``L_P`` (..., n, k_P), ``L_Q`` (..., n, k_Q), ``U`` (..., k_Q, k), ``sigma``
    (..., n) descending float64 (zero-padded from k = min(k_P, k_Q) to n), ``Vh`` (..., k, k_P);
    L_Qᴴ L_P = U diag(σ[:k]) Vh.
    """

    L_P: torch.Tensor
    L_Q: torch.Tensor
    U: torch.Tensor
    sigma: torch.Tensor
    Vh: torch.Tensor


def balancing_svd(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> BalancingSVD:
    """Gramian factors and the SVD of L_Qᴴ L_P (see :class:`BalancingSVD` for shapes).

    Raises UnstableSystemError for non-finite input or any |λ| ≥ 1.
    """
    return balancing_svd_of_prepared(*prepare(A, B, C))


def balancing_svd_of_prepared(
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, diagonal: bool
) -> BalancingSVD:
    """:func:`balancing_svd` for a system already passed through ``stability.prepare``."""
    L_P, L_Q = factors_of_prepared(A, B, C, diagonal)
    U, s, Vh = torch.linalg.svd(L_Q.mH @ L_P, full_matrices=False)
    return BalancingSVD(L_P, L_Q, U, _pad(s.to(torch.float64), B.shape[-2]), Vh)


def hankel_singular_values(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Hankel singular values of a stable discrete system, descending.

    Shapes: ``A`` (..., n) complex diagonal or (..., n, n) dense, ``B`` (..., n, m), ``C``
    (..., p, n) → σ (..., n) float64, σ_1 ≥ … ≥ σ_n ≥ 0. Uncontrollable or unobservable states
    give σ ≈ 0 (at the rounding level of the factors), never NaN.

    Raises UnstableSystemError for non-finite input or any |λ| ≥ 1.
    """
    L_P, L_Q = gramian_factors(A, B, C)
    s = torch.linalg.svdvals(L_Q.mH @ L_P)
    return _pad(s.to(torch.float64), B.shape[-2])


def hankel_singular_values_reference(
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """Readable twin: √|eig(PQ)| from the Kronecker Gramians, sorted descending.

    Same shapes as :func:`hankel_singular_values`. Only the values well above
    ~√(eps)·σ_1 are meaningful; for tests with n ≲ 40.
    """
    P, Q = gramians_reference(A, B, C)
    ev = torch.linalg.eigvals(P @ Q).abs().sqrt()
    return ev.sort(dim=-1, descending=True).values.to(torch.float64)
