"""Values, gradients and op registration of the dense scan against its sequential twin."""

from __future__ import annotations

import pytest
import torch

from ssmcompile.errors import ShapeError
from ssmcompile.ops import dense_scan, dense_scan_reference
from ssmcompile.ops._chunked import SEQUENTIAL_MAX_LEN

OP = torch.ops.ssmcompile.dense_scan.default


def _A(n, radius=0.95, dtype=torch.float64, seed=0):
    """A stable, non-normal matrix with spectral norm ``radius``."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=dtype)
    return A * (radius / torch.linalg.matrix_norm(A, 2))


def _bu(batch, length, n, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, n, generator=g, dtype=dtype)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "length", [0, 1, 2, 7, SEQUENTIAL_MAX_LEN, SEQUENTIAL_MAX_LEN + 1, 99, 1024]
)
def test_values_match_reference_float64(batch, length):
    A, bu = _A(6), _bu(batch, length, 6)
    x = dense_scan(A, bu)
    assert x.shape == bu.shape and x.is_contiguous()
    torch.testing.assert_close(x, dense_scan_reference(A, bu), rtol=1e-12, atol=1e-12)


def test_near_unit_and_zero_matrices():
    bu = _bu(2, 400, 5)
    for A in (_A(5, 0.999), torch.zeros(5, 5, dtype=torch.float64), torch.eye(5).double() * 1e-30):
        torch.testing.assert_close(dense_scan(A, bu), dense_scan_reference(A, bu))


def test_float32_close_to_float64_reference():
    A, bu = _A(8, 0.99), _bu(2, 300, 8)
    x32 = dense_scan(A.float(), bu.float())
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32.double(), dense_scan_reference(A, bu), rtol=1e-4, atol=1e-4)


def test_gradients_match_reference():
    A, bu, g = _A(4), _bu(2, 60, 4), _bu(2, 60, 4, seed=5)

    def grads(fn):
        A_, bu_ = A.clone().requires_grad_(), bu.clone().requires_grad_()
        (fn(A_, bu_) * g).sum().backward()
        return A_.grad, bu_.grad

    for got, want in zip(grads(dense_scan), grads(dense_scan_reference), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", [3, SEQUENTIAL_MAX_LEN + 5])
def test_gradcheck_and_gradgradcheck(length):
    args = [_A(2).requires_grad_(), _bu(1, length, 2).requires_grad_()]
    assert torch.autograd.gradcheck(OP, args)
    assert torch.autograd.gradgradcheck(OP, args)


@pytest.mark.parametrize("length", [1, 40])
def test_opcheck(length):
    torch.library.opcheck(OP, [_A(3).requires_grad_(), _bu(2, length, 3).requires_grad_()])


@pytest.mark.parametrize(
    "a_shape,bu_shape", [((3, 4), (1, 2, 3)), ((3, 3), (1, 2, 4)), ((3, 3), (2, 3))]
)
def test_bad_shapes_raise_one_line_shape_error(a_shape, bu_shape):
    with pytest.raises(ShapeError) as err:
        dense_scan(torch.zeros(a_shape), torch.zeros(bu_shape))
    assert "\n" not in str(err.value)


def test_bad_dtypes_raise_shape_error():
    with pytest.raises(ShapeError):
        dense_scan(torch.zeros(3, 3, dtype=torch.float64), torch.zeros(1, 2, 3))
    with pytest.raises(ShapeError):
        dense_scan(torch.zeros(3, 3, dtype=torch.int64), torch.zeros(1, 2, 3, dtype=torch.int64))
