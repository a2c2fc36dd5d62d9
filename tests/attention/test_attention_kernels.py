"""Linear-attention kernels and layers: chunked form == step form == the naive recurrence."""

from __future__ import annotations

import itertools

import pytest
import torch

from ssmcompile.attention import (
    KINDS,
    LinearAttention,
    LinearAttentionConfig,
    delta_rule_chunked,
    delta_rule_step,
    linear_attention_reference,
    scalar_decay_chunked,
    scalar_decay_step,
)
from ssmcompile.errors import ShapeError
from ssmcompile.layers.spec import SpecError

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _inputs(L, dtype, seed=0, bsz=2, H=3, dk=6, dv=5):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(bsz, H, L, dk, generator=g, dtype=dtype) for _ in range(2))
    k = k / k.norm(dim=-1, keepdim=True)  # the delta rule is a contraction for ‖k‖ = 1
    v = torch.randn(bsz, H, L, dv, generator=g, dtype=dtype)
    # Decays from fast (e^-2) to almost none: exercises the masked exponentials.
    logd = -2.0 * torch.rand(bsz, H, L, generator=g, dtype=dtype) ** 3
    beta = torch.rand(bsz, H, L, generator=g, dtype=dtype)
    S0 = torch.randn(bsz, H, dk, dv, generator=g, dtype=dtype)
    return q, k, v, logd, beta, S0


def _steps(step, q, k, v, g, beta, S):
    outs = []
    for t in range(q.shape[2]):
        args = (q[:, :, t], k[:, :, t], v[:, :, t], g[:, :, t])
        args += () if beta is None else (beta[:, :, t],)
        o, S = step(*args, S)
        outs.append(o)
    return torch.stack(outs, 2), S


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("L", [1, 15, 16, 37])
@pytest.mark.parametrize("delta", [False, True])
def test_chunked_and_step_forms_equal_the_reference(dtype, L, delta):
    q, k, v, g, beta, S0 = _inputs(L, dtype)
    beta = beta if delta else None
    ref_o, ref_S = linear_attention_reference(q, k, v, g, beta, S0)
    if delta:
        o, S = delta_rule_chunked(q, k, v, g, beta, 8, S0)
        so, sS = _steps(delta_rule_step, q, k, v, g, beta, S0)
    else:
        o, S = scalar_decay_chunked(q, k, v, g, 8, S0)
        so, sS = _steps(scalar_decay_step, q, k, v, g, None, S0)
    tol = TOL[dtype]
    for got, want in ((o, ref_o), (S, ref_S), (so, ref_o), (sS, ref_S)):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_chunk_size_does_not_change_the_result():
    q, k, v, g, beta, _ = _inputs(40, torch.float64)
    a = delta_rule_chunked(q, k, v, g, beta, 4)[0]
    for chunk in (1, 7, 64):
        torch.testing.assert_close(delta_rule_chunked(q, k, v, g, beta, chunk)[0], a,
                                   rtol=1e-12, atol=1e-12)


def test_the_delta_rule_differs_from_plain_decay():
    """Sanity of the reference itself: β = 0 leaves nothing written; β > 0 corrects."""
    q, k, v, g, beta, _ = _inputs(12, torch.float64)
    zero = linear_attention_reference(q, k, v, g, torch.zeros_like(beta))[0]
    assert float(zero.abs().max()) == 0.0
    plain = linear_attention_reference(q, k, v, g)[0]
    assert float((linear_attention_reference(q, k, v, g, beta)[0] - plain).abs().max()) > 0.1


def test_chunked_delta_rule_has_correct_gradients():
    q, k, v, g, beta, S0 = (t[:1, :1, :, :3] if t.ndim == 4 else t[:1, :1]
                            for t in _inputs(6, torch.float64))
    args = [t.clone().requires_grad_() for t in (q, k, v[..., :2], g, beta)]
    assert torch.autograd.gradcheck(lambda *a: delta_rule_chunked(*a, 4)[0], args)


def test_kernels_reject_mismatched_shapes():
    q, k, v, g, beta, _ = _inputs(8, torch.float64)
    with pytest.raises(ShapeError):
        scalar_decay_chunked(q, k[:, :, :4], v, g)
    with pytest.raises(ShapeError):
        delta_rule_chunked(q, k, v, g, beta[:, :, :3])


_LAYERS = list(itertools.product(KINDS, (0, 3), (False, True)))


@pytest.mark.parametrize("kind, conv, norm", _LAYERS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_step_equals_chunked_forward(kind, conv, norm, dtype):
    torch.manual_seed(0)
    cfg = LinearAttentionConfig(12, heads=2, key_dim=6, value_dim=4, kind=kind,
                                conv_size=conv, qk_norm=norm, chunk_size=8)
    layer = LinearAttention(cfg).to(dtype)
    x = torch.randn(2, 21, 12, dtype=dtype)
    y = layer(x)
    state = layer.initial_state(2)
    outs = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        outs.append(y_t)
    assert state[1].shape == (2, 2, 6, 4)
    torch.testing.assert_close(torch.stack(outs, 1), y, rtol=TOL[dtype], atol=TOL[dtype])


def test_config_defaults_and_validation():
    c = LinearAttentionConfig(8, key_dim=16, kind="gated_delta")
    assert c.qk_norm is True and c.scale == 0.25 and c.reduction_method == "select"
    assert LinearAttentionConfig(8, conv_size=0).reduction_method == "fold"
    assert LinearAttentionConfig(8, conv_size=0, kind="gated_delta").reduction_method == \
        "orthogonal"
    for bad in ({"kind": "mamba"}, {"key_dim": 0}, {"conv_size": 1}):
        with pytest.raises(SpecError):
            LinearAttentionConfig(8, **bad)
