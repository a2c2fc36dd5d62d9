"""Compatibility re-exports: the scan ops live in ``diagonal_scan`` and ``dense_scan``."""

from .dense_scan import dense_scan
from .diagonal_scan import diagonal_scan, diagonal_scan_real

__all__ = ["diagonal_scan", "diagonal_scan_real", "dense_scan"]
