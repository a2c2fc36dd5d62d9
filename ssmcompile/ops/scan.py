"""PLACEHOLDER until the custom ops land: calls the sequential references.

Public contract (the ops engineer replaces the bodies, keeps the signatures):

- ``diagonal_scan(lam, bu)``: lam (n,) complex, bu (batch, length, n) complex → x complex.
- ``diagonal_scan_real(lam_re, lam_im, bu_re, bu_im)`` → (x_re, x_im), all real,
  lam_* (n,), bu_* (batch, length, n). This is what layers call (real arithmetic throughout).
- ``dense_scan(A, bu)``: A (n, n) real, bu (batch, length, n) real → x.
"""

from __future__ import annotations

import torch

from .reference import dense_scan_reference, diagonal_scan_reference


def diagonal_scan_real(lam_re, lam_im, bu_re, bu_im):
    x = diagonal_scan_reference(torch.complex(lam_re, lam_im), torch.complex(bu_re, bu_im))
    return x.real.contiguous(), x.imag.contiguous()


def diagonal_scan(lam: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    x_re, x_im = diagonal_scan_real(lam.real, lam.imag, bu.real, bu.imag)
    return torch.complex(x_re, x_im)


def dense_scan(A: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    return dense_scan_reference(A, bu)
