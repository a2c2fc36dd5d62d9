"""Square-root balanced truncation, with re-diagonalisation for diagonal (LRU/S4D-style) systems.

With P = L_P L_Pᴴ, Q = L_Q L_Qᴴ and L_Qᴴ L_P = U Σ Vᴴ, the leading r balanced states are

    T = L_P V_r Σ_r^{-1/2}   (n×r),      Tinv = Σ_r^{-1/2} U_rᴴ L_Qᴴ   (r×n),      Tinv T = I_r,

and the reduced system is (Tinv A T, Tinv B, C T, D), with ‖G − G_r‖∞ ≤ 2·Σ_{i>r} σ_i.

Diagonal inputs are returned diagonal again: the balanced A_r = W diag(μ) W⁻¹ is
eigendecomposed and W is folded into T/Tinv; then each mode is rescaled so that its B row and
C column have equal norms (the per-mode scaling is free: it leaves the transfer function alone).

Ranks above the numerical minimal order (σ_r ≤ n·eps·σ_1, SLICOT's rule) would divide by a
rounding-level σ in Σ_r^{-1/2}; they raise RankError naming that order, or, with
``clip=True``, are clipped to it (as SLICOT's ab09ad does) and the result reports the rank used.
"""

from __future__ import annotations

import torch

from ..errors import ConditioningError, RankError, UnstableSystemError
from .hankel import BalancingSVD, balancing_svd_of_prepared
from .rank import numerical_order
from .stability import check_stable, prepare
from .system import LTISystem, TruncationResult

__all__ = ["balanced_truncation", "truncate", "rediagonalise", "DEFAULT_MAX_COND"]

# Eigenvector matrices with unit columns and cond ≤ 1e8 leave ~1e-8 relative accuracy in float64
# for the diagonal reduced system; beyond that the modal form is not trustworthy.
DEFAULT_MAX_COND = 1e8


def rediagonalise(
    A_r: torch.Tensor, B_r: torch.Tensor, C_r: torch.Tensor, *, max_cond: float = DEFAULT_MAX_COND
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diagonalise a dense stable system and balance each mode's B row / C column norms.

    Shapes: ``A_r`` (..., r, r), ``B_r`` (..., r, m), ``C_r`` (..., p, r) complex →
    ``(mu (..., r), B_d (..., r, m), C_d (..., p, r), X (..., r, r), Xinv (..., r, r))`` with
    A_r = X diag(μ) Xinv, B_d = Xinv B_r, C_d = C_r X, ‖B_d[i, :]‖ = ‖C_d[:, i]‖. Modes are ordered
    by decreasing ‖b_i‖‖c_i‖ / (1 − |μ_i|), a crude share of the H∞ norm.

    Raises ConditioningError if cond₂(W) > ``max_cond`` for the unit-column eigenvector matrix W,
    UnstableSystemError if some |μ| ≥ 1.
    """
    A_r = A_r.to(torch.complex128)
    mu, W = torch.linalg.eig(A_r)
    cond = torch.linalg.cond(W)
    if not bool(torch.isfinite(cond).all()) or bool((cond > max_cond).any()):
        raise ConditioningError(
            f"eigenvector matrix of the reduced A has cond {float(cond.max()):.3g} > "
            f"{max_cond:.3g}; the diagonal form is untrustworthy at this rank"
        )
    check_stable(mu, diagonal=True, what="reduced system")
    Winv = torch.linalg.inv(W)
    B_d = Winv @ B_r.to(torch.complex128)
    C_d = C_r.to(torch.complex128) @ W
    b = torch.linalg.vector_norm(B_d, dim=-1)
    c = torch.linalg.vector_norm(C_d, dim=-2)
    ok = (b > 0) & (c > 0)
    s = torch.where(ok, (c / torch.where(ok, b, 1.0)).sqrt(), torch.ones_like(b))
    order = (b * c / (1.0 - mu.abs())).argsort(dim=-1, descending=True)
    s = s.gather(-1, order)
    mu = mu.gather(-1, order)
    X = W.gather(-1, order[..., None, :].expand_as(W)) / s[..., None, :]
    Xinv = Winv.gather(-2, order[..., :, None].expand_as(Winv)) * s[..., :, None]
    B_d = B_d.gather(-2, order[..., :, None].expand_as(B_d)) * s[..., :, None]
    C_d = C_d.gather(-1, order[..., None, :].expand_as(C_d)) / s[..., None, :]
    return mu, B_d, C_d, X, Xinv


def _check_rank(rank: int, n: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= n:
        raise RankError(f"rank must be an integer in 1..{n}, got {rank!r}")


def balanced_truncation(
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    rank: int,
    *,
    clip: bool = False,
    max_cond: float = DEFAULT_MAX_COND,
    balancing: BalancingSVD | None = None,
) -> TruncationResult:
    """Reduce a stable discrete system to ``rank`` states by square-root balanced truncation.

    Shapes: ``A`` (..., n) complex diagonal or (..., n, n) dense, ``B`` (..., n, m), ``C``
    (..., p, n), ``D`` (..., p, m) or None (passed through unchanged, same object). The result
    (see :class:`TruncationResult`) holds the reduced system — diagonal complex128 for diagonal
    input, dense float64/complex128 otherwise — all σ (..., n), the tail (..., n − r), the
    bound 2·Σ tail (...,), and T (..., n, r), Tinv (..., r, n). One rank for the whole batch.

    ``clip``: clip a rank above the numerical minimal order (σ_r ≤ n·eps·σ_1 for some batch
    item) to that order instead of raising RankError. ``max_cond``: largest accepted condition
    number of the re-diagonalising eigenvector matrix (diagonal input only). ``balancing``:
    :func:`~ssmcompile.numerics.hankel.balancing_svd` of this same (A, B, C), when the caller
    already has it (an analysis that computed the HSVs), so the SVD is not done twice.

    Raises RankError (rank outside 1..n, or above the numerical order without ``clip``),
    UnstableSystemError (unstable or non-finite input, or a reduced pole with |λ| ≥ 1),
    ConditioningError (re-diagonalisation too ill-conditioned).
    """
    A, B, C, diagonal = prepare(A, B, C)
    n = B.shape[-2]
    _check_rank(rank, n)
    bal = balancing if balancing is not None else balancing_svd_of_prepared(A, B, C, diagonal)
    order = numerical_order(bal.sigma)
    if rank > order:
        if order == 0:
            raise RankError("system has numerical order 0 (its transfer function is zero)")
        if not clip:
            raise RankError(
                f"rank {rank} exceeds the numerical minimal order {order} "
                f"(σ_{order + 1} ≤ n·eps·σ_1); use rank ≤ {order} or clip=True"
            )
        rank = order
    inv_sqrt = bal.sigma[..., :rank].rsqrt().to(A.dtype)
    T = (bal.L_P @ bal.Vh[..., :rank, :].mH) * inv_sqrt[..., None, :]
    Tinv = inv_sqrt[..., :, None] * (bal.U[..., :, :rank].mH @ bal.L_Q.mH)
    A_r = Tinv @ (A[..., :, None] * T) if diagonal else Tinv @ A @ T
    B_r, C_r = Tinv @ B, C @ T
    if diagonal:
        mu, B_r, C_r, X, Xinv = rediagonalise(A_r, B_r, C_r, max_cond=max_cond)
        A_r, T, Tinv = mu, T @ X, Xinv @ Tinv
    else:
        try:
            check_stable(A_r, diagonal=False, what="reduced system")
        except UnstableSystemError as err:
            raise UnstableSystemError(f"{err} (σ_{rank} ≈ σ_{rank + 1}?)") from None
    tail = bal.sigma[..., rank:]
    return TruncationResult(
        system=LTISystem(A_r, B_r, C_r, D),
        hsv=bal.sigma,
        rank=rank,
        tail=tail,
        bound=2.0 * tail.sum(dim=-1),
        T=T,
        Tinv=Tinv,
    )


def truncate(
    system: LTISystem,
    rank: int,
    *,
    clip: bool = False,
    max_cond: float = DEFAULT_MAX_COND,
    balancing: BalancingSVD | None = None,
) -> TruncationResult:
    """:func:`balanced_truncation` for an :class:`LTISystem` (same shapes, options and errors)."""
    return balanced_truncation(
        system.A, system.B, system.C, system.D, rank, clip=clip, max_cond=max_cond,
        balancing=balancing,
    )
