"""Typed containers for linear time-invariant systems and truncation results.

Convention (the paper's LRU convention; the current input is already in the state):

    x_k = A x_{k-1} + B u_k,        y_k = C x_k + D u_k,        x_{-1} = 0.

Its transfer function is G(z) = z·C (zI − A)^{-1} B + D; on the unit circle |z| = 1, so Gramians,
Hankel singular values and H∞ errors are those of the usual (A, B, C, D) realisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ShapeError


@dataclass(frozen=True)
class LTISystem:
    """A (possibly batched) discrete LTI system.

    Shapes (``...`` is an optional batch of independent systems, e.g. S4D's channels):

    - ``A``: ``(..., n)`` complex — a diagonal system (the eigenvalues), or
      ``(..., n, n)`` real/complex — a dense system.
      The rule is ``A.ndim == B.ndim - 1`` ⇔ diagonal.
    - ``B``: ``(..., n, m)``
    - ``C``: ``(..., p, n)``
    - ``D``: ``(..., p, m)`` or ``None`` (feedthrough never changes under truncation).
    """

    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor | None = None

    def __post_init__(self) -> None:
        A, B, C = self.A, self.B, self.C
        if B.ndim < 2 or C.ndim < 2:
            raise ShapeError(
                f"B and C must be at least 2-D, got B{tuple(B.shape)}, C{tuple(C.shape)}")
        if A.ndim not in (B.ndim - 1, B.ndim):
            raise ShapeError(
                f"A{tuple(A.shape)} must be (..., n) diagonal or (..., n, n) dense "
                f"for B{tuple(B.shape)}"
            )
        n = B.shape[-2]
        if A.shape[-1] != n or C.shape[-1] != n or (A.ndim == B.ndim and A.shape[-2] != n):
            raise ShapeError(
                f"state dims disagree: A{tuple(A.shape)}, B{tuple(B.shape)}, C{tuple(C.shape)}"
            )

    @property
    def is_diagonal(self) -> bool:
        return self.A.ndim == self.B.ndim - 1

    @property
    def state_dim(self) -> int:
        return int(self.B.shape[-2])

    @property
    def batch_shape(self) -> torch.Size:
        return self.B.shape[:-2]

    @property
    def n_inputs(self) -> int:
        return int(self.B.shape[-1])

    @property
    def n_outputs(self) -> int:
        return int(self.C.shape[-2])


@dataclass(frozen=True)
class TruncationResult:
    """The outcome of balanced truncation of a system to rank ``r``.

    - ``system``: the reduced system; diagonal (re-diagonalised) when the input was diagonal.
    - ``hsv``: ``(..., n)`` all Hankel singular values of the input, descending, float64.
    - ``rank``: ``r``.
    - ``tail``: ``(..., n - r)`` the discarded σ_{r+1..n}.
    - ``bound``: ``(...,)`` the certified H∞ error bound 2·Σ tail.
    - ``T``: ``(..., n, r)`` and ``Tinv``: ``(..., r, n)``: the state maps, ``x ≈ T x_r`` and
      ``x_r = Tinv x``, so ``A_r = Tinv A T``, ``B_r = Tinv B``, ``C_r = C T`` (for diagonal inputs
      the re-diagonalisation is folded in, so ``Tinv A T`` is diagonal).
    """

    system: LTISystem
    hsv: torch.Tensor
    rank: int
    tail: torch.Tensor
    bound: torch.Tensor
    T: torch.Tensor
    Tinv: torch.Tensor
