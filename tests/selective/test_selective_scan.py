"""The selective-scan op against its sequential twin: values, gradients, op registration."""

from __future__ import annotations

import pytest
import torch

import ssmcompile.selective.scan as scan_mod
from ssmcompile.errors import ShapeError
from ssmcompile.selective import selective_scan, selective_scan_reference
from ssmcompile.selective._fused import fused_backward, fused_forward
from ssmcompile.selective._kernel import (
    chunk_size,
    recurrence_time_major,
    selective_backward,
    selective_forward,
)
from ssmcompile.selective._streaming import streaming_backward, streaming_forward

F64 = torch.float64


def _inputs(batch, L, D, G, N, scalar_decay, dtype=F64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, L, D, generator=g, dtype=dtype)
    delta = torch.rand(batch, L, D, generator=g, dtype=dtype) * 0.5 + 0.02
    A = -(torch.rand(D, 1 if scalar_decay else N, generator=g, dtype=dtype) * 2 + 0.1)
    B = torch.randn(batch, L, G, N, generator=g, dtype=dtype)
    C = torch.randn(batch, L, G, N, generator=g, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (u, delta, A, B, C)]


# (batch, L, D, G, N, scalar decay): L = 1, ≤ 16 (sequential), 37 (prime: padded chunks),
# 100 (divisor chunks); shared and grouped B/C; Mamba-1 and Mamba-2 decays.
CASES = [
    (2, 1, 4, 1, 3, False),
    (2, 5, 6, 3, 4, True),
    (1, 17, 4, 2, 3, False),
    (2, 37, 6, 1, 5, False),
    (2, 37, 6, 3, 4, True),
    (1, 100, 4, 1, 3, False),
]
KERNELS = [(selective_forward, selective_backward), (fused_forward, fused_backward),
           (streaming_forward, streaming_backward)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kernel", KERNELS, ids=["chunked", "fused", "streaming"])
def test_kernels_match_reference_values_and_gradients(case, kernel):
    forward, backward = kernel
    x = _inputs(*case, requires_grad=True)
    y_ref = selective_scan_reference(*x)
    y = forward(*[t.detach() for t in x])
    torch.testing.assert_close(y, y_ref.detach(), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    expected = torch.autograd.grad((y_ref * g).sum(), x)
    got = backward(g, *[t.detach() for t in x])
    for name, a, b in zip("u delta A B C".split(), got, expected, strict=True):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("L", [3, 16, 17, 49, 101])
def test_recurrence_matches_loop(reverse, L):
    g = torch.Generator().manual_seed(L)
    a = torch.rand(L, 2, 3, 1, generator=g, dtype=F64)  # broadcast over the last dim
    b = torch.randn(L, 2, 3, 4, generator=g, dtype=F64)
    h = torch.zeros(2, 3, 4, dtype=F64)
    out = torch.empty_like(b)
    order = range(L - 1, -1, -1) if reverse else range(L)
    for t in order:
        step = a[t + 1] if reverse and t + 1 < L else (a[t] if not reverse else 0.0)
        h = step * h + b[t]
        out[t] = h
    torch.testing.assert_close(recurrence_time_major(a, b, reverse), out, rtol=1e-12, atol=1e-12)


def test_chunk_size_prefers_divisors():
    assert chunk_size(128) in (8, 16) and 128 % chunk_size(128) == 0
    assert chunk_size(100) == 10
    assert chunk_size(37) == 6  # prime: √L, padded


def _force(monkeypatch, kernel):
    """Make the op pick ``kernel`` whatever the size."""
    small = {"chunked": 10**12, "fused": 0, "streaming": 0}[kernel]
    monkeypatch.setattr(scan_mod, "CHUNKED_MAX_NUMEL", small)
    monkeypatch.setattr(scan_mod, "STREAM_MIN_SLAB", 0 if kernel == "streaming" else 10**12)


@pytest.mark.parametrize("kernel", ["chunked", "fused", "streaming"])
def test_op_dispatch_matches_reference(monkeypatch, kernel):
    _force(monkeypatch, kernel)
    x = _inputs(2, 23, 4, 2, 3, False, requires_grad=True)
    picked = scan_mod._kernels(x[0], x[3])[0].__name__
    assert picked == {"chunked": "selective_forward", "fused": "fused_forward",
                      "streaming": "streaming_forward"}[kernel]
    torch.testing.assert_close(selective_scan(*x), selective_scan_reference(*x), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("kernel", ["chunked", "fused", "streaming"])
@pytest.mark.parametrize("scalar_decay", [False, True])
def test_gradcheck_float64(monkeypatch, kernel, scalar_decay):
    _force(monkeypatch, kernel)
    x = _inputs(1, 19, 2, 1, 2, scalar_decay, requires_grad=True)
    assert torch.autograd.gradcheck(selective_scan, x, eps=1e-6, atol=1e-7)


def test_default_dispatch_by_size():
    def pick(batch, L, D, N):
        u, B = torch.empty(batch, L, D), torch.empty(batch, L, 1, N)
        return scan_mod._kernels(u, B)[0].__name__

    assert pick(2, 64, 8, 16) == "selective_forward"
    assert pick(8, 128, 64, 128) == "streaming_forward"
    assert pick(8, 128, 64, 12) == "fused_forward"


def test_opcheck_and_float32():
    x = _inputs(2, 20, 4, 2, 3, False, dtype=torch.float32, requires_grad=True)
    torch.library.opcheck(torch.ops.ssmcompile.selective_scan.default, x)
    y = selective_scan(*x)
    ref = selective_scan_reference(*[t.double() for t in x])
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-5)


def test_bad_shapes_raise_shape_error():
    u, delta, A, B, C = _inputs(2, 5, 4, 1, 3, False)
    with pytest.raises(ShapeError, match="A must be"):
        selective_scan(u, delta, A[:3], B, C)
    with pytest.raises(ShapeError, match="G | D"):
        selective_scan(u, delta, A, B.expand(2, 5, 3, 3), C.expand(2, 5, 3, 3))
    with pytest.raises(ShapeError, match="share float32 or float64"):
        selective_scan(u.float(), delta, A, B, C)


def test_export_is_one_node_at_any_length():
    from ssmcompile.selective import Mamba2Block, Mamba2Config

    torch.manual_seed(0)
    block = Mamba2Block(Mamba2Config(8, d_state=6, head_dim=4))
    L = torch.export.Dim("L", min=2, max=4096)
    ep = torch.export.export(block, (torch.randn(2, 20, 8),), dynamic_shapes={"u": {1: L}})
    scans = [n for n in ep.graph.nodes if "selective_scan" in str(n.target)]
    assert len(scans) == 1
    u = torch.randn(2, 57, 8)
    torch.testing.assert_close(ep.module()(u), block(u))
