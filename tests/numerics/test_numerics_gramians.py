"""Gramians against SciPy's solve_discrete_lyapunov and the in-package Kronecker twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numerics_systems import dense_system, lru_system, one_thread, scipy_gramians

from ssmcompile.errors import ShapeError, UnstableSystemError
from ssmcompile.numerics import gramian_factors, gramians, gramians_reference

SIZES = [(4, 1, 1), (16, 40, 3), (64, 8, 8), (256, 128, 128)]  # (16, 40, 3): m > n


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("n,m,p", SIZES)
def test_diagonal_matches_scipy(n, m, p):
    lam, B, C = lru_system(n, m, p, seed=n + m, rmin=0.9, rmax=0.999)
    P, Q = gramians(lam, B, C)
    Pr, Qr = scipy_gramians(lam, B, C)
    assert P.dtype == torch.complex128 and P.shape == (n, n)
    assert _rel(P, Pr) < 1e-11 and _rel(Q, Qr) < 1e-11


@pytest.mark.parametrize("n,m,p", SIZES)
def test_dense_real_matches_scipy(n, m, p):
    A, B, C = dense_system(n, m, p, seed=n + p, rho=0.98)
    P, Q = gramians(A, B, C)
    Pr, Qr = scipy_gramians(A, B, C)
    assert P.dtype == torch.float64
    assert _rel(P, Pr) < 1e-11 and _rel(Q, Qr) < 1e-11


def test_dense_complex_matches_scipy():
    A, B, C = dense_system(24, 3, 5, seed=3, rho=0.99, complex_=True)
    P, Q = gramians(A, B, C)
    Pr, Qr = scipy_gramians(A, B, C)
    assert _rel(P, Pr) < 1e-11 and _rel(Q, Qr) < 1e-11


@pytest.mark.parametrize("diagonal", [True, False])
def test_matches_kronecker_twin_batched(diagonal):
    if diagonal:
        A, B, C = lru_system(12, 2, 3, seed=5, batch=(2, 3))
    else:
        A, B, C = dense_system(12, 2, 3, seed=5, batch=(2, 3))
    P, Q = gramians(A, B, C)
    Pr, Qr = gramians_reference(A, B, C)
    assert P.shape == (2, 3, 12, 12)
    assert _rel(P, Pr) < 1e-12 and _rel(Q, Qr) < 1e-12


def test_factors_reproduce_gramians():
    for A, B, C in (lru_system(20, 3, 2, seed=1), dense_system(20, 30, 2, seed=1)):
        L_P, L_Q = gramian_factors(A, B, C)
        P, Q = gramians(A, B, C)
        assert L_P.shape[-2] == 20 and L_P.shape[-1] <= 20
        assert _rel(L_P @ L_P.mH, P) < 1e-13 and _rel(L_Q @ L_Q.mH, Q) < 1e-13


def test_gramians_satisfy_stein_residual():
    # Independent of any solver: P − A P Aᴴ = B Bᴴ.
    A, B, C = dense_system(50, 4, 4, seed=9, rho=0.999)
    P, Q = gramians(A, B, C)
    assert _rel(P - A @ P @ A.mT, B @ B.mT) < 1e-10
    assert _rel(Q - A.mT @ Q @ A, C.mT @ C) < 1e-10


@pytest.mark.parametrize("diagonal", [True, False])
def test_unstable_raises_one_line_naming_lambda(diagonal):
    if diagonal:
        A, B, C = lru_system(8, 1, 1)
        A = A.clone()
        A[3] = 1.02 * A[3] / A[3].abs()
    else:
        A, B, C = dense_system(8, 1, 1, rho=1.02)
    with pytest.raises(UnstableSystemError) as err:
        gramians(A, B, C)
    msg = str(err.value)
    assert "\n" not in msg and "1.02" in msg


def test_marginal_pole_is_unstable():
    lam, B, C = lru_system(4, 1, 1)
    lam = lam.clone()
    lam[0] = 1.0
    with pytest.raises(UnstableSystemError):
        gramians(lam, B, C)


@pytest.mark.parametrize("where", ["A", "B", "C"])
def test_nan_raises(where):
    A, B, C = dense_system(6, 2, 2)
    parts = {"A": A.clone(), "B": B.clone(), "C": C.clone()}
    parts[where][0, 0] = float("nan")
    with pytest.raises(UnstableSystemError) as err:
        gramians(parts["A"], parts["B"], parts["C"])
    assert "\n" not in str(err.value)


def test_bad_shapes_raise_shape_error():
    A, B, C = dense_system(6, 2, 2)
    with pytest.raises(ShapeError):
        gramians(A, B[:5], C)
