"""The numba engine of the scan ops: values, gradients, threads, layouts and the torch fallback."""

from __future__ import annotations

import sys
import threading
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssmcompile.ops
from ssmcompile.ops import (
    _engine,
    dense_scan,
    dense_scan_reference,
    diagonal_scan,
    diagonal_scan_reference,
)
from ssmcompile.ops.threads import ParallelGuard

pytest.importorskip("numba")

DIAG = torch.ops.ssmcompile.diagonal_scan.default
DIAG_BWD = torch.ops.ssmcompile.diagonal_scan_backward.default
DENSE = torch.ops.ssmcompile.dense_scan.default
DENSE_BWD = torch.ops.ssmcompile.dense_scan_backward.default
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture
def engine(monkeypatch):
    def use(name: str) -> None:
        monkeypatch.setenv(_engine.ENV, name)

    use("numba")
    return use


@pytest.fixture
def parallel(monkeypatch):
    """Every call goes through the thread pool with tiny chunks, on 2 threads."""
    monkeypatch.setattr(_engine, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(_engine, "CHUNK_WORK", 1)
    monkeypatch.setattr(_engine, "guard", ParallelGuard(enabled=False))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _system(batch, length, n, dtype=torch.float64, seed=0, radius=(0.5, 0.999)):
    g = torch.Generator().manual_seed(seed)
    r = radius[0] + (radius[1] - radius[0]) * torch.rand(n, generator=g, dtype=dtype)
    lam = torch.polar(r, 6.3 * torch.rand(n, generator=g, dtype=dtype))
    cdt = lam.dtype
    return lam, torch.randn(batch, length, n, generator=g, dtype=cdt)


def _A(n, dtype=torch.float64, seed=0, radius=0.95):
    A = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return A * (radius / torch.linalg.matrix_norm(A, 2))


def _diag_grads(fn, lam, bu, w):
    lam_, bu_ = lam.clone().requires_grad_(), bu.clone().requires_grad_()
    x = fn(lam_, bu_)
    (x * w.conj()).real.sum().backward()
    return x.detach(), lam_.grad, bu_.grad


def _dense_grads(fn, A, bu, w):
    A_, bu_ = A.clone().requires_grad_(), bu.clone().requires_grad_()
    x = fn(A_, bu_)
    (x * w).sum().backward()
    return x.detach(), A_.grad, bu_.grad


def _close(got, want, tol):
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 200, 7), (1, 33, 40), (5, 1, 3)])
def test_diagonal_values_and_grads_match_reference(engine, dtype, shape):
    lam, bu = _system(*shape, dtype=dtype)
    w = _system(*shape, dtype=dtype, seed=3)[1]
    got = _diag_grads(diagonal_scan, lam, bu, w)
    want = _diag_grads(
        diagonal_scan_reference,
        lam.to(torch.complex128),
        bu.to(torch.complex128),
        w.to(torch.complex128),
    )
    _close([t.to(torch.complex128) for t in got], want, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(6, 150, 5), (1, 40, 13), (4, 2, 4)])
def test_dense_values_and_grads_match_reference(engine, dtype, shape):
    A, bu = _A(shape[2], dtype), torch.randn(*shape, dtype=dtype)
    w = torch.randn(*shape, dtype=dtype)
    got = _dense_grads(dense_scan, A, bu, w)
    want = _dense_grads(dense_scan_reference, A.double(), bu.double(), w.double())
    _close([t.double() for t in got], want, TOL[dtype])


def test_numba_matches_torch_engine(engine):
    lam, bu = _system(4, 300, 9)
    w = _system(4, 300, 9, seed=5)[1]
    A, bd = _A(9), bu.real.contiguous()
    got = _diag_grads(diagonal_scan, lam, bu, w) + _dense_grads(dense_scan, A, bd, w.real)
    engine("torch")
    want = _diag_grads(diagonal_scan, lam, bu, w) + _dense_grads(dense_scan, A, bd, w.real)
    _close(got, want, 1e-12)


@pytest.mark.parametrize("length", [1, 5])
def test_gradcheck_and_gradgradcheck(engine, length):
    lam, bu = _system(2, length, 3, radius=(0.3, 0.9))
    args = [t.detach().clone().requires_grad_() for t in (lam.real, lam.imag, bu.real, bu.imag)]
    assert torch.autograd.gradcheck(DIAG, args)
    assert torch.autograd.gradgradcheck(DIAG, args)
    dense_args = [_A(3).requires_grad_(), bu.real.detach().clone().requires_grad_()]
    assert torch.autograd.gradcheck(DENSE, dense_args)
    assert torch.autograd.gradgradcheck(DENSE, dense_args)


def test_opcheck_forward_and_backward_ops(engine):
    lam, bu = _system(2, 9, 3)
    parts = [t.contiguous() for t in (lam.real, lam.imag, bu.real, bu.imag)]
    torch.library.opcheck(DIAG, [t.clone().requires_grad_() for t in parts])
    x_re, x_im = DIAG(*parts)
    torch.library.opcheck(DIAG_BWD, [*parts[:2], x_re, x_im, parts[2], parts[3]])
    A, b = _A(3), parts[2]
    torch.library.opcheck(DENSE, [A.clone().requires_grad_(), b.clone().requires_grad_()])
    torch.library.opcheck(DENSE_BWD, [A, DENSE(A, b), parts[3]])


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (0, 0, 3)])
def test_empty_batch_or_length(engine, shape):
    lam, bu = _system(*shape)
    x, g_lam, g_bu = _diag_grads(diagonal_scan, lam, bu, bu)
    assert x.shape == bu.shape and g_bu.shape == bu.shape
    assert torch.equal(g_lam, torch.zeros_like(g_lam))
    x, g_A, g_bu = _dense_grads(dense_scan, _A(3), bu.real.contiguous(), bu.real)
    assert x.shape == g_bu.shape == shape and not g_A.any()


def test_non_contiguous_and_expanded_inputs(engine):
    lam, bu = _system(3, 50, 6)
    big = torch.randn(50, 3, 12, dtype=torch.float64)
    bu_re = big.transpose(0, 1)[..., ::2]  # strided in every dimension
    bu_im = torch.randn(3, 1, 6, dtype=torch.float64).expand(3, 50, 6)
    lam_re = torch.stack([lam.real, lam.real]).t().reshape(-1)[::2]
    x_re, x_im = DIAG(lam_re, lam.imag, bu_re, bu_im)
    assert x_re.is_contiguous() and x_re.stride() == (300, 6, 1)
    want = diagonal_scan_reference(torch.complex(lam_re, lam.imag), torch.complex(bu_re, bu_im))
    torch.testing.assert_close(torch.complex(x_re, x_im), want)
    # A transposed view and the expanded gradient of .sum()
    A = _A(6).t()
    b = bu_re.clone().requires_grad_()
    dense_scan(A, b).sum().backward()
    ref = b.detach().clone().requires_grad_()
    dense_scan_reference(A, ref).sum().backward()
    torch.testing.assert_close(b.grad, ref.grad)


def test_threads_and_state_blocks_give_identical_bits(engine, parallel):
    for shape in [(5, 120, 40), (1, 80, 64)]:  # batch 1 < threads: rows split in state blocks
        lam, bu = _system(*shape, dtype=torch.float32)
        w = _system(*shape, dtype=torch.float32, seed=2)[1]
        A = _A(shape[2], torch.float32)
        two = _diag_grads(diagonal_scan, lam, bu, w) + _dense_grads(dense_scan, A, bu.imag, w.real)
        torch.set_num_threads(1)
        one = _diag_grads(diagonal_scan, lam, bu, w) + _dense_grads(dense_scan, A, bu.imag, w.real)
        torch.set_num_threads(2)
        for a, b in zip(two, one, strict=True):
            assert torch.equal(a, b)


def test_concurrent_python_threads(engine, parallel):
    lam, bu = _system(4, 100, 20)
    want = diagonal_scan_reference(lam, bu)
    errors = []

    def work():
        for _ in range(5):
            errors.append((diagonal_scan(lam, bu) - want).abs().max().item())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 15 and max(errors) < 1e-12


def test_forced_torch_engine_never_touches_numba(engine, monkeypatch):
    engine("torch")
    monkeypatch.setattr(_engine, "_load", lambda: pytest.fail("numba engine used"))
    lam, bu = _system(2, 40, 4)
    got = _diag_grads(diagonal_scan, lam, bu, bu)
    _close(got, _diag_grads(diagonal_scan_reference, lam, bu, bu), 1e-12)
    A, b = _A(4), bu.real.contiguous()
    _close(_dense_grads(dense_scan, A, b, b), _dense_grads(dense_scan_reference, A, b, b), 1e-12)


def test_missing_numba_falls_back_to_torch_with_one_warning(engine, monkeypatch):
    monkeypatch.setattr(_engine, "_kernels", None)
    monkeypatch.setitem(sys.modules, "ssmcompile.ops._numba_scan", None)
    monkeypatch.delattr(ssmcompile.ops, "_numba_scan", raising=False)
    lam, bu = _system(2, 30, 4)
    with pytest.warns(RuntimeWarning, match="numba scan kernels unavailable"):
        x = diagonal_scan(lam, bu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(diagonal_scan(lam, bu), x)
    torch.testing.assert_close(x, diagonal_scan_reference(lam, bu))


def test_bad_engine_name_raises(engine):
    engine("cuda-magic")
    lam, bu = _system(1, 3, 2)
    with pytest.raises(ValueError, match="SSMCOMPILE_SCAN_ENGINE"):
        diagonal_scan(lam, bu)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 9),
    length=st.integers(1, 70),
    n=st.integers(1, 37),
)
def test_property_numba_equals_torch_engine(seed, batch, length, n):
    lam, bu = _system(batch, length, n, seed=seed)
    w = _system(batch, length, n, seed=seed + 1)[1]
    A = _A(n, seed=seed)
    results = []
    for name in ("numba", "torch"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(_engine.ENV, name)
            results.append(
                _diag_grads(diagonal_scan, lam, bu, w)
                + _dense_grads(dense_scan, A, bu.real.contiguous(), w.imag)
            )
    _close(results[0], results[1], 1e-11)
