"""Step mode equals sequence mode, for every layer and for the deep model (classify and lm)."""

from __future__ import annotations

import pytest
import torch

from ssmcompile.layers import LRU, S4D, S5, DenseLTI, ModelSpec, build_model

LAYERS = [LRU, S5, S4D, DenseLTI]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def run_steps(module, u, batch):
    state = module.initial_state(batch)
    ys = []
    for k in range(u.shape[1]):
        y, state = module.step(u[:, k], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch,length", [(1, 1), (3, 7), (1, 9)])
@pytest.mark.parametrize("cls", LAYERS)
def test_layer_step_matches_sequence(cls, dtype, batch, length):
    torch.manual_seed(1)
    H, n = 5, 6
    layer = cls(H, n, dtype=dtype)
    u = torch.randn(batch, length, H, dtype=dtype)
    with torch.no_grad():
        y = layer(u)
    assert y.shape == (batch, length, H) and y.dtype == dtype
    with torch.no_grad():
        ys, state = run_steps(layer, u, batch)
    assert all(s.dtype == dtype and not s.is_complex() for s in state)
    scale = max(1.0, float(y.abs().max()))
    assert float((ys - y).abs().max()) <= TOL[dtype] * scale


@pytest.mark.parametrize("cls", LAYERS)
def test_layer_state_and_parameters_are_real(cls):
    layer = cls(3, 4, dtype=torch.float64)
    assert layer.state_dim == 4
    assert all(not p.is_complex() for p in layer.parameters())
    state = layer.initial_state(2)
    assert isinstance(state, tuple) and all(float(s.abs().sum()) == 0 for s in state)
    assert all(s.shape[0] == 2 and s.dtype == torch.float64 for s in state)


@pytest.mark.parametrize("cls", LAYERS)
def test_layer_is_causal_and_depends_on_input(cls):
    torch.manual_seed(2)
    layer = cls(3, 4, dtype=torch.float64)
    u = torch.randn(2, 8, 3, dtype=torch.float64)
    v = u.clone()
    v[:, 5:] += 1.0
    with torch.no_grad():
        y, w = layer(u), layer(v)
    assert torch.equal(y[:, :5], w[:, :5])
    assert float((y[:, 5:] - w[:, 5:]).abs().max()) > 1e-3


def model_inputs(spec, batch, length, dtype):
    if spec.vocab_size is not None:
        return torch.randint(0, spec.vocab_size, (batch, length))
    return torch.randn(batch, length, spec.d_input, dtype=dtype)


CONFIGS = [
    ("classify", "batch", False),
    ("classify", "layer", True),
    ("lm", "layer", True),
    ("lm", "layer", False),
]
F64, F32 = torch.float64, torch.float32
MODEL_CASES = (
    # every task/norm/input configuration, with the paper's LRU, both dtypes, short and odd L
    [
        ("lru", *c, b, length, dt)
        for c in CONFIGS
        for (b, length) in [(1, 1), (3, 7)]
        for dt in (F64, F32)
    ]
    # every other layer kind in both tasks
    + [(k, *CONFIGS[0], 3, 7, F64) for k in ("s5", "s4d", "dense")]
    + [(k, *CONFIGS[2], 1, 5, F32) for k in ("s5", "s4d", "dense")]
)


@pytest.mark.parametrize("layer,task,norm,tokens,batch,length,dtype", MODEL_CASES)
def test_model_step_matches_sequence(layer, task, norm, tokens, batch, length, dtype):
    torch.manual_seed(3)
    inputs = {"vocab_size": 11} if tokens else {"d_input": 3}
    spec = ModelSpec(
        layer=layer,
        d_model=6,
        state_dims=(4, 3),
        d_output=5,
        task=task,
        norm=norm,
        dropout=0.2,
        **inputs,
    )
    model = build_model(spec).to(dtype)
    # Non-trivial BatchNorm running statistics, so the step path must really use them.
    model.train()
    with torch.no_grad():
        model(model_inputs(spec, 4, 9, dtype))
    model.eval()
    u = model_inputs(spec, batch, length, dtype)
    with torch.no_grad():
        y = model(u)
        ys, _ = run_steps(model, u, batch)
    if task == "classify":
        assert y.shape == (batch, 5)
        assert ys.shape == (batch, length, 5)
        got = ys[:, -1]
    else:
        assert y.shape == (batch, length, 5)
        got = ys
    assert y.dtype == dtype
    scale = max(1.0, float(y.abs().max()))
    assert float((got - y).abs().max()) <= TOL[dtype] * scale


def test_classify_step_is_running_mean_prefix():
    torch.manual_seed(4)
    spec = ModelSpec(layer="lru", d_model=6, state_dims=(4,), d_output=2, d_input=3)
    model = build_model(spec).double().eval()
    u = torch.randn(2, 6, 3, dtype=torch.float64)
    ys, _ = run_steps(model, u, 2)
    for k in (1, 3):
        assert torch.allclose(ys[:, k - 1], model(u[:, :k]), atol=1e-12)
