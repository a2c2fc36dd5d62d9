"""LTI numerics: Gramians, Hankel singular values, balanced truncation, rank rules, H∞ checks.

Pure functions on torch tensors, float64/complex128 inside. Systems follow
``x_k = A x_{k-1} + B u_k, y_k = C x_k + D u_k`` with A (..., n) diagonal or (..., n, n) dense.
"""

from .era import EraResult, era, era_reference, markov_hankel
from .hankel import balancing_svd, hankel_singular_values, hankel_singular_values_reference
from .hinf import (
    difference_system,
    frequency_response,
    frequency_response_reference,
    hinf_error,
    hinf_norm,
)
from .lyapunov import gramian_factors, gramians, gramians_reference, psd_factor
from .rank import energy_curve, energy_kept, energy_rank, numerical_order, passes_gate
from .realify import complex_to_real
from .stability import check_stable, spectral_radius
from .system import LTISystem, TruncationResult
from .truncation import DEFAULT_MAX_COND, balanced_truncation, rediagonalise, truncate

__all__ = [
    "LTISystem",
    "TruncationResult",
    "era",
    "era_reference",
    "markov_hankel",
    "EraResult",
    "gramians",
    "gramian_factors",
    "gramians_reference",
    "psd_factor",
    "balancing_svd",
    "hankel_singular_values",
    "hankel_singular_values_reference",
    "balanced_truncation",
    "truncate",
    "rediagonalise",
    "DEFAULT_MAX_COND",
    "energy_rank",
    "energy_kept",
    "energy_curve",
    "passes_gate",
    "numerical_order",
    "hinf_norm",
    "hinf_error",
    "difference_system",
    "frequency_response",
    "frequency_response_reference",
    "complex_to_real",
    "check_stable",
    "spectral_radius",
]
