"""Recycled kernel outputs: memory is handed out again only once no tensor uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmcompile.ops import _buffers, diagonal_scan, diagonal_scan_reference

pytest.importorskip("numba")


@pytest.fixture(autouse=True)
def fresh_pool():
    _buffers.empty_cache()
    yield
    _buffers.empty_cache()


def _addr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_memory_in_use_is_never_handed_out():
    t = torch.from_numpy(_buffers.empty((4, 5), np.float32))
    view = t[1:]  # a view keeps the storage, and so the array, alive
    saved = t.clone()
    del t
    other = _buffers.empty((4, 5), np.float32)
    assert other.ctypes.data != _addr(view)
    addr = _addr(view)
    del view
    again = _buffers.empty((4, 5), np.float32)
    assert again.ctypes.data == addr  # free now: recycled
    assert saved.shape == (4, 5)


def test_shape_and_dtype_must_match():
    a = _buffers.empty((3, 3), np.float32)
    addr = a.ctypes.data
    del a
    assert _buffers.empty((3, 3), np.float64).ctypes.data != addr
    assert _buffers.empty((9,), np.float32).ctypes.data != addr


def test_free_bytes_are_capped(monkeypatch):
    monkeypatch.setattr(_buffers, "POOL_BYTES", 1000)
    arrays = [_buffers.empty((100,), np.float32) for _ in range(5)]  # 400 B each
    del arrays
    keep = _buffers.empty((7,), np.float32)  # an allocation trims the free ones past the cap
    used, free = _buffers.pooled_bytes()
    assert 0 < free <= 1000 and used == keep.nbytes == 28
    _buffers.empty_cache()
    assert _buffers.pooled_bytes()[1] == 0


def test_scan_outputs_recycled_across_calls_stay_correct():
    g = torch.Generator().manual_seed(0)
    lam = torch.polar(torch.full((6,), 0.9, dtype=torch.float64), torch.rand(6, generator=g,
                      dtype=torch.float64))  # fmt: skip
    bu1 = torch.randn(3, 40, 6, generator=g, dtype=lam.dtype)
    bu2 = torch.randn(3, 40, 6, generator=g, dtype=lam.dtype)
    x1 = diagonal_scan(lam, bu1)
    kept = x1.clone()
    x2 = diagonal_scan(lam, bu2)  # x1 alive: x2 must not share its memory
    torch.testing.assert_close(x1, kept, rtol=0, atol=0)
    torch.testing.assert_close(x2, diagonal_scan_reference(lam, bu2))
    del x1
    x3 = diagonal_scan(lam, bu1)  # may reuse x1's memory
    torch.testing.assert_close(x3, kept, rtol=0, atol=0)
    torch.testing.assert_close(x2, diagonal_scan_reference(lam, bu2))
