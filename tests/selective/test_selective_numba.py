"""The numba selective-scan kernels against the sequential twin; engine choice and fallbacks."""

from __future__ import annotations

import pytest
import torch

import ssmcompile.selective.scan as scan_mod
from ssmcompile.selective import selective_scan, selective_scan_reference

nb = pytest.importorskip("ssmcompile.selective._numba_selective")

F64 = torch.float64
ENV = "SSMCOMPILE_SCAN_ENGINE"


def _inputs(batch, L, D, G, N, scalar_decay, dtype=F64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, L, D, generator=g, dtype=F64)
    delta = torch.rand(batch, L, D, generator=g, dtype=F64) * 0.5 + 0.02
    A = -(torch.rand(D, 1 if scalar_decay else N, generator=g, dtype=F64) * 2 + 0.1)
    B = torch.randn(batch, L, G, N, generator=g, dtype=F64)
    C = torch.randn(batch, L, G, N, generator=g, dtype=F64)
    return [t.to(dtype).requires_grad_(requires_grad) for t in (u, delta, A, B, C)]


def _expected(x, g):
    """y and (∂u, ∂Δ, ∂A, ∂B, ∂C) of ⟨g, y⟩ from the reference, in float64."""
    x64 = [t.detach().double().requires_grad_(True) for t in x]
    y = selective_scan_reference(*x64)
    return y.detach(), torch.autograd.grad((y * g.double()).sum(), x64)


# (batch, L, D, G, N, scalar decay): Mamba-1 (A (D, N)) and Mamba-2 (A (D, 1)); G = 1, heads,
# per channel; a group of 6 (one padded lane of 16), 40 (32 wide, padded), 64 (64 wide),
# 100 (two lanes: ∂B/∂C slices added); L = 1 and a prime L.
CASES = [
    (2, 1, 4, 1, 3, False),
    (2, 23, 6, 3, 4, True),
    (2, 37, 6, 1, 5, False),
    (1, 19, 40, 1, 16, True),
    (2, 17, 64, 1, 12, True),
    (1, 13, 64, 4, 16, False),
    (1, 11, 100, 1, 6, False),
    (2, 9, 8, 8, 3, True),
]


@pytest.mark.parametrize("checkpoints", [False, True], ids=["stored", "checkpointed"])
@pytest.mark.parametrize("case", CASES)
def test_numba_matches_reference_float64(monkeypatch, case, checkpoints):
    if checkpoints:  # recompute every chunk from checkpoints instead of storing the sequence
        monkeypatch.setattr(nb, "BUFFER_BUDGET", 0)
    x = _inputs(*case)
    g = torch.randn(x[0].shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    y_ref, expected = _expected(x, g)
    torch.testing.assert_close(nb.numba_forward(*x), y_ref, rtol=1e-12, atol=1e-12)
    got = nb.numba_backward(g, *x)
    for name, a, b in zip("u delta A B C".split(), got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == F64, name
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("case", [(2, 40, 16, 1, 16, False), (2, 40, 64, 1, 12, True),
                                  (2, 33, 32, 4, 8, True)])
def test_numba_float32_within_1e5(case):
    x = _inputs(*case, dtype=torch.float32)
    g = torch.randn(x[0].shape, generator=torch.Generator().manual_seed(1))
    y_ref, expected = _expected(x, g)
    y = nb.numba_forward(*x)
    assert y.dtype == torch.float32
    assert (y.double() - y_ref).abs().max() <= 1e-5 * max(1.0, y_ref.abs().max())
    for name, a, b in zip("u delta A B C".split(), nb.numba_backward(g, *x), expected,
                          strict=True):
        assert a.dtype == torch.float32, name
        assert (a.double() - b).abs().max() <= 1e-5 * max(1.0, b.abs().max()), name


def test_numba_results_do_not_depend_on_threads():
    x = _inputs(4, 64, 100, 2, 16, False, dtype=torch.float32)  # large enough to run parallel
    g = torch.randn(x[0].shape, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append((nb.numba_forward(*x), *nb.numba_backward(g, *x)))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert torch.equal(a, b)


def test_op_uses_numba_on_cpu_by_default(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    x = _inputs(1, 5, 4, 1, 3, True)
    assert scan_mod._eager(x[0], x[3])[0] is nb.numba_forward


@pytest.mark.parametrize("scalar_decay", [False, True])
def test_gradcheck_and_opcheck_through_numba(monkeypatch, scalar_decay):
    monkeypatch.setenv(ENV, "numba")
    x = _inputs(1, 19, 3, 1, 2, scalar_decay, requires_grad=True)
    assert torch.autograd.gradcheck(selective_scan, x, eps=1e-6, atol=1e-7)
    torch.library.opcheck(torch.ops.ssmcompile.selective_scan.default, x)


def test_forced_torch_engine_and_missing_numba_fall_back(monkeypatch):
    x = _inputs(2, 23, 4, 2, 3, False, requires_grad=True)
    ref = selective_scan_reference(*x)
    g_ref = torch.autograd.grad(ref.sum(), x)
    monkeypatch.setenv(ENV, "torch")
    assert scan_mod._eager(x[0], x[3]) == scan_mod._kernels(x[0], x[3])
    monkeypatch.setenv(ENV, "numba")
    monkeypatch.setattr(scan_mod, "_numba_kernels", lambda: None)  # as if numba were missing
    assert scan_mod._eager(x[0], x[3]) == scan_mod._kernels(x[0], x[3])
    y = selective_scan(*x)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(y.sum(), x), g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_unknown_engine_raises(monkeypatch):
    monkeypatch.setenv(ENV, "cuda-graphs")
    x = _inputs(1, 3, 2, 1, 2, True)
    with pytest.raises(ValueError, match=ENV):
        selective_scan(*x)
