"""The zero-order-hold map S5 and S4D share, and its inverse, in complex128.

Discretising x' = Λx + B_c u with step Δ gives λ = exp(ΛΔ) and B = (λ − 1)/Λ · B_c; rebuilding
inverts it exactly with Λ = log(λ)/Δ and B_c = Λ/(λ − 1) · B. Shapes broadcast: Λ and Δ (..., n)
(S5: (n,); S4D: (H, N) with Δ (H, 1)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import f64


def discretise(module: nn.Module, step: Tensor) -> tuple[Tensor, Tensor]:
    """(λ, B-scale) of a layer storing ``lam_log_neg_re`` / ``lam_im``; ``step`` is Δ, float64."""
    Lam = torch.complex(-torch.exp(f64(module.lam_log_neg_re)), f64(module.lam_im))
    lam = torch.exp(Lam * step)
    return lam, (lam - 1) / Lam


def continuous_parameters(lam: Tensor, step: Tensor, B: Tensor, C: Tensor) -> dict[str, Tensor]:
    """Parameter values (lam_log_neg_re, lam_im, B_re/B_im, C_re/C_im) realising the discrete
    modes ``lam`` (..., n) with Δ = ``step``; ``B`` is (..., n) or (n, H) scaled per mode."""
    Lam = torch.log(lam) / step
    scale = Lam / (lam - 1)
    B_c = B * (scale.unsqueeze(-1) if B.ndim > lam.ndim else scale)
    return {
        "lam_log_neg_re": torch.log(-Lam.real),
        "lam_im": Lam.imag,
        "B_re": B_c.real,
        "B_im": B_c.imag,
        "C_re": C.real,
        "C_im": C.imag,
    }
