"""Scan primitives (linear recurrences) registered as torch.library custom ops.

``torch.ops.ssmcompile.diagonal_scan(lam_re, lam_im, bu_re, bu_im) -> (x_re, x_im)`` and
``torch.ops.ssmcompile.dense_scan(A, bu) -> x`` and the fused layer
``torch.ops.ssmcompile.diagonal_ssm`` (see ``diagonal_ssm``) are registered on import.
"""

from .dense_scan import dense_scan
from .diagonal_scan import diagonal_scan, diagonal_scan_real
from .diagonal_ssm import diagonal_ssm
from .reference import dense_scan_reference, diagonal_scan_reference, diagonal_ssm_reference

# The custom ops that run a recurrence (what capture and matching look for), by op name.
SCAN_OPS = ("diagonal_scan", "dense_scan", "diagonal_ssm")

__all__ = [
    "SCAN_OPS",
    "diagonal_scan",
    "diagonal_scan_real",
    "dense_scan",
    "diagonal_ssm",
    "diagonal_ssm_reference",
    "diagonal_scan_reference",
    "dense_scan_reference",
]
