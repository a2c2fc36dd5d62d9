"""Rank rules on Hankel singular values: the paper's energy rule, the 95 % gate, numerical order.

The paper keeps the smallest r with Σ_{i≤r} σ_i / Σ_i σ_i ≥ 1 − τ — a sum of σ, not of σ² (the
two keep very different counts; σ² is offered as an option). All functions are pure and take
``hsv`` as a descending float tensor (..., n) as returned by ``hankel_singular_values``.
"""

from __future__ import annotations

import math

import torch

from ..errors import RankError, ShapeError

__all__ = ["energy_rank", "energy_kept", "energy_curve", "passes_gate", "numerical_order"]


def _check_hsv(hsv: torch.Tensor) -> torch.Tensor:
    if not isinstance(hsv, torch.Tensor) or hsv.ndim < 1 or hsv.shape[-1] == 0:
        raise ShapeError("hsv must be a tensor of shape (..., n) with n ≥ 1")
    if hsv.is_complex() or not bool(torch.isfinite(hsv).all()) or bool((hsv < 0).any()):
        raise RankError("hsv must be finite, real and non-negative")
    return hsv.to(torch.float64)


def energy_curve(hsv: torch.Tensor, *, squared: bool = False) -> torch.Tensor:
    """Fraction of the total kept by each rank: curve[..., r-1] = Σ_{i≤r} σ_i / Σ σ.

    Shapes: ``hsv`` (..., n) → (..., n) float64, non-decreasing, last entry 1. A zero system
    (Σ σ = 0) has curve ≡ 1. ``squared=True`` uses σ² instead of σ.
    """
    s = _check_hsv(hsv)
    if squared:
        s = s * s
    total = s.sum(dim=-1, keepdim=True)
    curve = s.cumsum(dim=-1) / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, curve, torch.ones_like(curve))


def energy_kept(hsv: torch.Tensor, r: int, *, squared: bool = False) -> torch.Tensor:
    """Fraction Σ_{i≤r} σ_i / Σ σ kept by rank ``r`` (0 ≤ r ≤ n).

    Shapes: ``hsv`` (..., n) → (...,) float64.
    """
    n = hsv.shape[-1]
    if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= n:
        raise RankError(f"rank must be an integer in 0..{n}, got {r!r}")
    if r == 0:
        return torch.zeros(hsv.shape[:-1], dtype=torch.float64)
    return energy_curve(hsv, squared=squared)[..., r - 1]


def energy_rank(hsv: torch.Tensor, tau: float, *, squared: bool = False) -> int:
    """The paper's rule: smallest r with Σ_{i≤r} σ_i / Σ σ ≥ 1 − τ.

    Shapes: ``hsv`` (..., n) descending. For a batch (e.g. S4D channels sharing one state size)
    the result is the max over the batch, so every item keeps at least its own energy share.
    Returns an int in 1..n. ``tau`` must be in (0, 1), else RankError. ``squared=True`` applies the
    rule to σ² instead.
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < float(tau) < 1.0:
        raise RankError(f"tau must be a number in (0, 1), got {tau!r}")
    curve = energy_curve(hsv, squared=squared).reshape(-1, hsv.shape[-1])
    # A relative slack of a few ulps keeps exact-order systems (tail exactly 0) from being pushed
    # one state up by rounding in the cumulative sum.
    target = (1.0 - float(tau)) * (1.0 - 8 * torch.finfo(torch.float64).eps)
    meets = curve >= target
    first = meets.to(torch.int64).argmax(dim=-1) + 1  # the last entry is 1, so some r meets it
    return int(first.max())


def passes_gate(new_rank: int, n: int, gate: float = 0.95) -> bool:
    """Whether a reduction n → new_rank is worth doing: new_rank < gate · n (paper: gate 0.95)."""
    if not 0.0 < gate <= 1.0 or math.isnan(gate):
        raise RankError(f"gate must be in (0, 1], got {gate!r}")
    if n < 1 or not 0 <= new_rank <= n:
        raise RankError(f"need 0 ≤ new_rank ≤ n and n ≥ 1, got new_rank={new_rank}, n={n}")
    return new_rank < gate * n


def numerical_order(hsv: torch.Tensor, rtol: float | None = None) -> int:
    """Number of σ_i > rtol·σ_1 (default rtol = n·eps, SLICOT's minimal-order rule).

    Shapes: ``hsv`` (..., n) descending → int, the min over the batch (the largest rank that is
    numerically meaningful for every item). A zero system has order 0.
    """
    s = _check_hsv(hsv)
    n = s.shape[-1]
    if rtol is None:
        rtol = n * torch.finfo(torch.float64).eps
    if not rtol >= 0.0:
        raise RankError(f"rtol must be ≥ 0, got {rtol!r}")
    s = s.reshape(-1, n)
    return int((s > rtol * s[:, :1]).sum(dim=-1).min())
