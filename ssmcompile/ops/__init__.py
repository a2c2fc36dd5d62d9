"""Scan primitives (linear recurrences) registered as torch.library custom ops."""

from .reference import dense_scan_reference, diagonal_scan_reference
from .scan import dense_scan, diagonal_scan, diagonal_scan_real

__all__ = [
    "diagonal_scan",
    "diagonal_scan_real",
    "dense_scan",
    "diagonal_scan_reference",
    "dense_scan_reference",
]
