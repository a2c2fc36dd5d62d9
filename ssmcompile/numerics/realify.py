"""The real 2n-state map of a complex system with real input and output y = Re(C x) + Re(D) u.

LRU-style layers run a complex state x = x_re + i·x_im but emit a real output. Splitting the
state gives an equivalent real system

    A → [[Re A, −Im A], [Im A, Re A]],   B → [[Re B], [Im B]],   C → [Re C, −Im C],   D → Re D.

Its Hankel singular values are those of the map the layer actually computes, and generally
differ from those of the complex n-state system (Λ, B, C) that the paper analyses (and that
every default in ssmcompile uses): the real map has 2n values, and a τ chosen on one spectrum
does not transfer to the other. Use this only to inspect the real map; the complex system's
bound 2·Σ tail already bounds the real output's error because |Re z| ≤ |z|.
"""

from __future__ import annotations

import torch

from .stability import prepare
from .system import LTISystem

__all__ = ["complex_to_real"]


def complex_to_real(system: LTISystem) -> LTISystem:
    """Real dense 2n-state system computing y = Re(C x) + Re(D) u for real input u.

    Shapes: ``system`` A (..., n) diagonal or (..., n, n) dense, B (..., n, m), C (..., p, n),
    D (..., p, m) or None → A (..., 2n, 2n), B (..., 2n, m), C (..., p, 2n), D (..., p, m) or
    None, all float64. A system that is already real is returned cast to float64 (dense).
    Raises UnstableSystemError for unstable or non-finite systems.
    """
    A, B, C, diagonal = prepare(system.A, system.B, system.C)
    if diagonal:
        A = torch.diag_embed(A)
    D = system.D
    if not A.is_complex():
        return LTISystem(A, B, C, None if D is None else D.to(torch.float64))
    A, B, C = A.to(torch.complex128), B.to(torch.complex128), C.to(torch.complex128)
    top = torch.cat([A.real, -A.imag], dim=-1)
    bottom = torch.cat([A.imag, A.real], dim=-1)
    A_real = torch.cat([top, bottom], dim=-2)
    B_real = torch.cat([B.real, B.imag], dim=-2)
    C_real = torch.cat([C.real, -C.imag], dim=-1)
    D_real = None if D is None else (D.real if D.is_complex() else D).to(torch.float64)
    return LTISystem(A_real, B_real, C_real, D_real)
