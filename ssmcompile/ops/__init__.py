"""Scan primitives (linear recurrences) registered as torch.library custom ops.

``torch.ops.ssmcompile.diagonal_scan(lam_re, lam_im, bu_re, bu_im) -> (x_re, x_im)`` and
``torch.ops.ssmcompile.dense_scan(A, bu) -> x`` are registered on import of this package.
"""

from .dense_scan import dense_scan
from .diagonal_scan import diagonal_scan, diagonal_scan_real
from .reference import dense_scan_reference, diagonal_scan_reference

__all__ = [
    "diagonal_scan",
    "diagonal_scan_real",
    "dense_scan",
    "diagonal_scan_reference",
    "dense_scan_reference",
]
