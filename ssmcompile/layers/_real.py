"""Real-arithmetic helpers shared by the diagonal layers.

Complex numbers travel as (real, imaginary) pairs of real tensors so that every layer exports to
ONNX and compiles with inductor, neither of which handles complex tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

Pair = tuple[Tensor, Tensor]


def cmul(a_re: Tensor, a_im: Tensor, b_re: Tensor, b_im: Tensor) -> tuple[Tensor, Tensor]:
    """(a_re + i a_im)(b_re + i b_im), broadcasting like ``*``."""
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


def zoh(lam_re: Tensor, lam_im: Tensor, step: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Zero-order hold of continuous diagonal modes Λ = lam_re + i lam_im with step Δ.

    Returns ``(ld_re, ld_im, f_re, f_im)``: λ_d = exp(ΛΔ) and the input factor
    f = (λ_d − 1)/Λ, so that B_d = f ⊙ B_c. All arguments broadcast together.
    Λ must have lam_re < 0 (the layers guarantee it), so |Λ| > 0 and the division is safe.
    """
    mag = torch.exp(lam_re * step)
    ld_re, ld_im = mag * torch.cos(lam_im * step), mag * torch.sin(lam_im * step)
    den = lam_re * lam_re + lam_im * lam_im
    num_re, num_im = ld_re - 1.0, ld_im
    # (num_re + i num_im) / (lam_re + i lam_im)
    f_re = (num_re * lam_re + num_im * lam_im) / den
    f_im = (num_im * lam_re - num_re * lam_im) / den
    return ld_re, ld_im, f_re, f_im


def factory(device: torch.device | str | None, dtype: torch.dtype | None) -> dict:
    """The ``device``/``dtype`` keyword pair for tensor constructors (defaults when None)."""
    return {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
