"""Values, gradients and op registration of the diagonal scan against its sequential twin."""

from __future__ import annotations

import pytest
import torch

from ssmcompile.errors import ShapeError
from ssmcompile.ops import diagonal_scan, diagonal_scan_real, diagonal_scan_reference
from ssmcompile.ops._chunked import SEQUENTIAL_MAX_LEN

OP = torch.ops.ssmcompile.diagonal_scan.default


def _lam(n, low=0.0, high=0.999, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    radius = low + (high - low) * torch.rand(n, generator=g, dtype=dtype)
    phase = 2 * torch.pi * torch.rand(n, generator=g, dtype=dtype)
    return torch.polar(radius, phase)


def _bu(batch, length, n, dtype=torch.complex128, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, n, generator=g, dtype=dtype)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "length", [0, 1, 2, 7, SEQUENTIAL_MAX_LEN, SEQUENTIAL_MAX_LEN + 1, 99, 1024]
)
def test_values_match_reference_float64(batch, length):
    lam, bu = _lam(6), _bu(batch, length, 6)
    x = diagonal_scan(lam, bu)
    assert x.shape == bu.shape and x.dtype == torch.complex128
    torch.testing.assert_close(x, diagonal_scan_reference(lam, bu), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "low,high", [(0.999, 0.999), (0.9999, 0.99999), (0.0, 1e-30), (0.0, 0.0), (0.0, 0.5)]
)
def test_extreme_radii(low, high):
    lam, bu = _lam(8, low, high), _bu(2, 500, 8)
    x = diagonal_scan(lam, bu)
    assert torch.isfinite(torch.view_as_real(x)).all()
    torch.testing.assert_close(x, diagonal_scan_reference(lam, bu), rtol=1e-10, atol=1e-10)


def test_float32_close_to_float64_reference():
    lam, bu = _lam(16, 0.9, 0.999), _bu(2, 300, 16)
    x32 = diagonal_scan(lam.to(torch.complex64), bu.to(torch.complex64))
    assert x32.dtype == torch.complex64
    ref = diagonal_scan_reference(lam, bu)
    torch.testing.assert_close(x32.to(torch.complex128), ref, rtol=1e-4, atol=1e-4)


def test_real_api_returns_fresh_contiguous_parts():
    lam, bu = _lam(4), _bu(1, 40, 4)
    x_re, x_im = diagonal_scan_real(lam.real, lam.imag, bu.real, bu.imag)
    assert x_re.is_contiguous() and x_im.is_contiguous()
    assert x_re.stride() == (160, 4, 1)
    torch.testing.assert_close(torch.complex(x_re, x_im), diagonal_scan_reference(lam, bu))


def test_gradients_match_reference():
    lam, bu = _lam(5, 0.5, 0.999), _bu(2, 70, 5)
    g = _bu(2, 70, 5, seed=7)

    def grads(fn):
        lam_, bu_ = lam.clone().requires_grad_(), bu.clone().requires_grad_()
        (fn(lam_, bu_) * g.conj()).real.sum().backward()
        return lam_.grad, bu_.grad

    for got, want in zip(grads(diagonal_scan), grads(diagonal_scan_reference), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", [3, SEQUENTIAL_MAX_LEN + 5])
def test_gradcheck_and_gradgradcheck(length):
    lam, bu = _lam(2, 0.3, 0.95), _bu(1, length, 2)
    args = [t.detach().requires_grad_() for t in (lam.real, lam.imag, bu.real, bu.imag)]
    assert torch.autograd.gradcheck(OP, args)
    assert torch.autograd.gradgradcheck(OP, args)


@pytest.mark.parametrize("length", [1, 40])
def test_opcheck(length):
    lam, bu = _lam(3), _bu(2, length, 3)
    args = [t.contiguous().requires_grad_() for t in (lam.real, lam.imag, bu.real, bu.imag)]
    torch.library.opcheck(OP, args)


@pytest.mark.parametrize(
    "shapes",
    [
        ((3,), (3,), (2, 5, 4), (2, 5, 4)),  # n mismatch
        ((3, 1), (3, 1), (2, 5, 3), (2, 5, 3)),  # lam not 1-D
        ((3,), (3,), (5, 3), (5, 3)),  # bu not 3-D
        ((3,), (3,), (2, 5, 3), (2, 6, 3)),  # re/im disagree
    ],
)
def test_bad_shapes_raise_one_line_shape_error(shapes):
    args = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    with pytest.raises(ShapeError) as err:
        diagonal_scan_real(*args)
    assert "\n" not in str(err.value)


def test_bad_dtypes_raise_shape_error():
    lam, bu = _lam(3), _bu(1, 4, 3)
    with pytest.raises(ShapeError):
        diagonal_scan_real(lam.real.float(), lam.imag, bu.real, bu.imag)
    with pytest.raises(ShapeError):
        diagonal_scan(lam.real, bu)
