"""What the numerics accept: shape checks, working precision, finiteness and stability.

Every public numerics function funnels its (A, B, C) through :func:`prepare`, so the rules live
in one place: diagonal A is promoted to complex128, dense systems to float64 (or complex128 when
any of A, B, C is complex), batch dimensions are broadcast, and a system that is not finite or
has a pole with |λ| ≥ 1 raises :class:`~ssmcompile.errors.UnstableSystemError`.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError, UnstableSystemError
from .system import LTISystem

__all__ = ["prepare", "spectral_radius", "check_stable", "working_dtype"]


def working_dtype(*tensors: torch.Tensor, diagonal: bool = False) -> torch.dtype:
    """complex128 for diagonal systems or any complex input, float64 otherwise."""
    if diagonal or any(t.is_complex() for t in tensors):
        return torch.complex128
    return torch.float64


def eigenvalues(A: torch.Tensor, diagonal: bool) -> torch.Tensor:
    """Poles of A. Shapes: ``A`` (..., n) diagonal or (..., n, n) dense → (..., n) complex."""
    return A if diagonal else torch.linalg.eigvals(A)


def spectral_radius(A: torch.Tensor, diagonal: bool) -> torch.Tensor:
    """max |λ| per system. Shapes: ``A`` (..., n) or (..., n, n) → (...,) float64."""
    lam = eigenvalues(A, diagonal)
    if lam.shape[-1] == 0:
        return torch.zeros(lam.shape[:-1], dtype=torch.float64)
    return lam.abs().amax(dim=-1).to(torch.float64)


def check_stable(A: torch.Tensor, diagonal: bool, what: str = "system") -> None:
    """Raise UnstableSystemError naming the largest |λ| if any batch item has |λ| ≥ 1.

    Shapes: ``A`` (..., n) diagonal or (..., n, n) dense.
    """
    if not bool(torch.isfinite(A).all()):
        raise UnstableSystemError(f"{what} is not finite: A contains NaN or Inf")
    lam = eigenvalues(A, diagonal)
    mag = lam.abs()
    bad = mag >= 1.0
    if bool(bad.any()):
        worst = float(mag.max())
        count = int(bad.sum())
        raise UnstableSystemError(
            f"{what} is unstable: {count} pole(s) with |λ| ≥ 1 (largest |λ| = {worst:.12g})"
        )


def prepare(
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, *, check: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Validate a system and cast it to working precision with a common batch shape.

    Shapes: ``A`` (..., n) complex diagonal or (..., n, n) dense; ``B`` (..., n, m);
    ``C`` (..., p, n). Returns ``(A, B, C, diagonal)`` with broadcast batch dims ``...`` and dtype
    complex128 (diagonal or complex input) or float64. Inputs are detached: this is analysis,
    not a differentiable op (gradients through eig/SVD of near-degenerate spectra are unusable).
    """
    for name, t in (("A", A), ("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor):
            raise ShapeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    LTISystem(A, B, C)  # shape rules live there
    diagonal = A.ndim == B.ndim - 1
    dtype = working_dtype(A, B, C, diagonal=diagonal)
    n = B.shape[-2]
    a_core = 1 if diagonal else 2
    try:
        batch = torch.broadcast_shapes(A.shape[:-a_core], B.shape[:-2], C.shape[:-2])
    except RuntimeError as err:
        raise ShapeError(
            f"batch dims do not broadcast: A{tuple(A.shape)}, B{tuple(B.shape)}, C{tuple(C.shape)}"
        ) from err
    A, B, C = A.detach(), B.detach(), C.detach()
    A = A.to(dtype).expand(*batch, *A.shape[-a_core:])
    B = B.to(dtype).expand(*batch, n, B.shape[-1])
    C = C.to(dtype).expand(*batch, C.shape[-2], n)
    if check:
        if not (bool(torch.isfinite(B).all()) and bool(torch.isfinite(C).all())):
            raise UnstableSystemError("system is not finite: B or C contains NaN or Inf")
        check_stable(A, diagonal)
    return A, B, C, diagonal
