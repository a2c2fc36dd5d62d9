"""The real 2n-state map reproduces Re(y) of the complex system; its HSVs are a different set."""

from __future__ import annotations

import pytest
import torch
from numerics_systems import lru_system, one_thread, simulate

from ssmcompile.numerics import (
    LTISystem,
    balanced_truncation,
    complex_to_real,
    hankel_singular_values,
    hinf_error,
)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def test_real_map_simulates_real_part():
    lam, B, C = lru_system(8, 3, 2, seed=1, batch=(2,))
    D = torch.randn(2, 2, 3, dtype=torch.float64)
    real = complex_to_real(LTISystem(lam, B, C, D))
    assert real.A.shape == (2, 16, 16) and real.A.dtype == torch.float64
    for i in range(2):
        u = torch.randn(3, 40, 3, dtype=torch.float64)
        y = simulate(lam[i], B[i], C[i], None, u).real + u @ D[i].mT
        y_real = simulate(real.A[i], real.B[i], real.C[i], real.D[i], u)
        assert torch.allclose(y, y_real, atol=1e-12)


def test_hsv_of_real_map_differ_and_complex_bound_covers_real_error():
    lam, B, C = lru_system(10, 2, 2, seed=3)
    s_c = hankel_singular_values(lam, B, C)
    real = complex_to_real(LTISystem(lam, B, C))
    s_r = hankel_singular_values(real.A, real.B, real.C)
    assert s_r.shape == (20,) and not torch.allclose(s_r[:10], s_c, rtol=1e-3)
    res = balanced_truncation(lam, B, C, None, 4)
    # |Re z| ≤ |z|: the complex system's bound also bounds the real output's error.
    err_real = hinf_error(real, complex_to_real(res.system))
    assert err_real <= float(res.bound) * (1 + 1e-8)


def test_real_system_passes_through():
    A = torch.diag(torch.tensor([0.5, -0.3], dtype=torch.float64))
    s = complex_to_real(LTISystem(A, torch.ones(2, 1), torch.ones(1, 2)))
    assert s.A.shape == (2, 2) and s.B.dtype == torch.float64
