"""Property tests: linearity and invariance to where the chunk boundaries fall."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmcompile.ops import dense_scan, dense_scan_reference, diagonal_scan, diagonal_scan_reference
from ssmcompile.ops._chunked import chunk_size

# Lengths around the sequential cut-off and around chunk sizes T² ± 1 (T = 4..9).
_LENGTHS = st.sampled_from(sorted({t * t + d for t in range(4, 10) for d in (-1, 0, 1)}))


def _system(seed, batch, length, n):
    g = torch.Generator().manual_seed(seed)
    lam = torch.polar(
        torch.rand(n, generator=g, dtype=torch.float64),
        6.3 * torch.rand(n, generator=g, dtype=torch.float64),
    )
    bu = torch.randn(batch, length, n, generator=g, dtype=torch.complex128)
    return lam, bu


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), length=_LENGTHS, batch=st.integers(1, 3), n=st.integers(1, 5))
def test_diagonal_matches_reference_and_prefixes(seed, length, batch, n):
    lam, bu = _system(seed, batch, length, n)
    x = diagonal_scan(lam, bu)
    torch.testing.assert_close(x, diagonal_scan_reference(lam, bu), rtol=1e-11, atol=1e-11)
    # A prefix scanned alone uses other chunk boundaries but must give the same states.
    cut = max(1, length - chunk_size(length) - 1)
    torch.testing.assert_close(diagonal_scan(lam, bu[:, :cut]), x[:, :cut], rtol=1e-11, atol=1e-11)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), length=_LENGTHS, a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_diagonal_is_linear_in_the_input(seed, length, a, b):
    lam, u = _system(seed, 2, length, 3)
    v = _system(seed + 1, 2, length, 3)[1]
    lhs = diagonal_scan(lam, a * u + b * v)
    rhs = a * diagonal_scan(lam, u) + b * diagonal_scan(lam, v)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), length=_LENGTHS, n=st.integers(1, 5))
def test_dense_matches_reference(seed, length, n):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = A * (0.98 / torch.linalg.matrix_norm(A, 2))
    bu = torch.randn(2, length, n, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        dense_scan(A, bu), dense_scan_reference(A, bu), rtol=1e-11, atol=1e-11
    )
