"""The fused diagonal SSM layer op: values and gradients against the step-by-step reference,
autograd / opcheck, threads, when the front end fuses, and the layers that use it."""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssmcompile.ops
from ssmcompile.layers import LRU, S5
from ssmcompile.ops import _engine, diagonal_ssm, diagonal_ssm_reference
from ssmcompile.ops.threads import ParallelGuard

# the package's ``diagonal_ssm`` attribute is the function; the module is in sys.modules
ssm_module = sys.modules["ssmcompile.ops.diagonal_ssm"]

pytest.importorskip("numba")

OP = torch.ops.ssmcompile.diagonal_ssm.default
TOL = {torch.float32: 2e-5, torch.float64: 1e-11}


def _layer(batch, length, H, n, P, dtype=torch.float64, seed=0):
    """Real-part inputs of the op, and the complex system they describe."""
    g = torch.Generator().manual_seed(seed)
    r = 0.5 + 0.49 * torch.rand(n, generator=g, dtype=dtype)
    lam = torch.polar(r, 6.3 * torch.rand(n, generator=g, dtype=dtype))
    B = torch.randn(n, H, generator=g, dtype=lam.dtype)
    C = torch.randn(P, n, generator=g, dtype=lam.dtype)
    u = torch.randn(batch, length, H, generator=g, dtype=dtype)
    parts = [lam.real, lam.imag, B.real, B.imag, C.real, C.imag]
    return [p.contiguous() for p in parts] + [u], (lam, B, C, u)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 1, 2, 5, 3), (2, 150, 4, 9, 2), (1, 64, 1, 1, 1)])
def test_forward_matches_reference(shape, dtype):
    # length 150 crosses the kernel's 64-step blocks; 64 is exactly one block
    args, (lam, B, C, u) = _layer(*shape, dtype=dtype)
    y, x_re, x_im = OP(*args, True)
    ref = diagonal_ssm_reference(lam, B, C, u)
    assert _rel(y, ref) < TOL[dtype]
    # the saved states are the states (zero-padded to a multiple of 8 modes)
    n = lam.shape[0]
    assert x_re.shape[-1] == ssm_module.padded_width(n) and x_re.shape[-1] % 8 == 0
    assert not x_re[..., n:].any() and not x_im[..., n:].any()
    x = torch.complex(x_re[..., :n], x_im[..., :n])
    assert _rel(((x @ C.T).real), ref) < TOL[dtype]
    y2, xr2, _ = OP(*args, False)
    assert torch.equal(y, y2) and xr2.numel() == 0


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3), length=st.integers(1, 140), H=st.integers(1, 6),
    n=st.integers(1, 10), P=st.integers(1, 5), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_gradients_match_autograd_of_reference(batch, length, H, n, P, seed):
    args, _ = _layer(batch, length, H, n, P, seed=seed)
    leaves = [a.clone().requires_grad_() for a in args]
    g = torch.randn(batch, length, P, dtype=torch.float64)
    got = torch.autograd.grad(OP(*leaves, True)[0], leaves, g)
    ref_leaves = [a.clone().requires_grad_() for a in args]
    lr, li, br, bi, cr, ci, u = ref_leaves
    ref_y = diagonal_ssm_reference(
        torch.complex(lr, li), torch.complex(br, bi), torch.complex(cr, ci), u
    )
    want = torch.autograd.grad(ref_y, ref_leaves, g)
    for name, a, b in zip(("λre", "λim", "Bre", "Bim", "Cre", "Cim", "u"), got, want, strict=True):
        assert _rel(a, b) < 1e-10, name


def test_gradcheck_gradgradcheck_and_opcheck():
    args, _ = _layer(2, 70, 3, 4, 2)
    leaves = [a.requires_grad_() for a in args]

    def f(*xs):
        return OP(*xs, True)[0]

    assert torch.autograd.gradcheck(f, leaves)
    assert torch.autograd.gradgradcheck(f, leaves)
    torch.library.opcheck(OP, [*leaves, True])
    torch.library.opcheck(OP, [*(a.detach() for a in leaves), False])


def test_backward_without_saved_states_is_refused():
    args, _ = _layer(1, 5, 2, 3, 2)
    leaves = [a.requires_grad_() for a in args]
    y = OP(*leaves, False)[0]
    with pytest.raises(RuntimeError, match="save_states=False"):
        y.sum().backward()


def test_result_does_not_depend_on_threads(monkeypatch):
    args, _ = _layer(7, 90, 3, 6, 2, dtype=torch.float32)
    leaves = [a.requires_grad_() for a in args]
    g = torch.randn(7, 90, 2)

    def run():
        y = OP(*leaves, True)[0]
        return (y, *torch.autograd.grad(y, leaves, g))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        monkeypatch.setattr(_engine, "PARALLEL_MIN_WORK", 0)
        monkeypatch.setattr(_engine, "CHUNK_WORK", 1)
        monkeypatch.setattr(_engine, "guard", ParallelGuard(enabled=False))
        torch.set_num_threads(2)
        two = run()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


def test_front_end_fuses_only_where_it_pays(monkeypatch):
    calls = []
    real = ssm_module._unfused
    monkeypatch.setattr(ssm_module, "_unfused", lambda *a: calls.append(1) or real(*a))
    narrow, _ = _layer(2, 20, 4, 6, 4, dtype=torch.float32)
    diagonal_ssm(*narrow)
    assert calls == []  # fused: the op's numba body, not the composition
    wide, _ = _layer(1, 4, ssm_module.FUSED_MAX_WIDTH + 1, 3, 2, dtype=torch.float32)
    diagonal_ssm(*wide)
    assert calls == [1]
    monkeypatch.setenv(_engine.ENV, "torch")
    diagonal_ssm(*narrow)
    assert calls == [1, 1]


def test_export_sees_the_unfused_ops():
    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lru = LRU(4, 6)

        def forward(self, u):
            return self.lru(u)

    ep = torch.export.export(Layer(), (torch.randn(2, 10, 4),))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "ssmcompile.diagonal_scan.default" in targets
    assert not any("diagonal_ssm" in t for t in targets)


@pytest.mark.parametrize("cls", [LRU, S5])
def test_layers_equal_with_and_without_fusion(cls, monkeypatch):
    torch.manual_seed(0)
    layer = cls(5, 12)
    u = torch.randn(3, 80, 5, requires_grad=True)
    fused = layer(u)
    g_fused = torch.autograd.grad(fused.square().sum(), [u, *layer.parameters()])
    monkeypatch.setattr(ssm_module, "FUSED_MAX_WIDTH", 0)
    plain = layer(u)
    g_plain = torch.autograd.grad(plain.square().sum(), [u, *layer.parameters()])
    assert _rel(fused, plain) < 1e-5
    for a, b in zip(g_fused, g_plain, strict=True):
        assert _rel(a, b) < 1e-4


def test_op_is_registered_on_import():
    assert hasattr(torch.ops.ssmcompile, "diagonal_ssm")
    assert ssmcompile.ops.diagonal_ssm is diagonal_ssm
