"""The verify pass at an event: checks from the systems and the blocks alone, no whole-model
forward unless asked, and still catching a wrong truncation or a wrong rebuild."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import passes
from ssmcompile.api import run_pipeline
from ssmcompile.compiler import PassManager, RankPolicy, block_inputs, l2_gain_error, prepare
from ssmcompile.errors import VerificationError
from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.numerics import LTISystem


def _model(seed: int = 0, blocks: int = 2, n: int = 24) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec(layer="lru", d_model=6, state_dims=(n,) * blocks,
                                 d_output=3, d_input=2, norm="layer")).double().eval()


def _x(batch: int = 4, length: int = 40) -> torch.Tensor:
    return torch.randn(batch, length, 2, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)


def _truncated(model: nn.Module, x: torch.Tensor, rank: int = 6):
    """The state after analysis and truncation, ready for a verify pass."""
    pipeline = passes.default_pipeline(RankPolicy(rank=rank), verify=False)
    return PassManager(pipeline).run(prepare(model, x)).state


class _Counting(nn.Module):
    """Counts whole-model forwards, copies included (the passes run copies)."""

    calls = 0

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        type(self).calls += 1
        return self.inner(x)


def test_default_verify_runs_no_whole_model_forward():
    state = _truncated(_Counting(_model()), _x())
    calls = _Counting.calls
    PassManager([passes.Verify()]).run(state)
    assert _Counting.calls == calls  # blocks and systems only
    v = state.verifications["inner.blocks.0.ssm"]
    assert v.ok and v.hinf is not None and 0 < v.measured <= v.bound
    PassManager([passes.Verify(signal="model")]).run(state)
    assert _Counting.calls == calls + 1  # the block inputs come from one forward
    PassManager([passes.Verify(output=True)]).run(state)
    assert _Counting.calls == calls + 3  # asked for: one forward of each model


def test_system_check_catches_a_wrong_truncation_result():
    state = _truncated(_model(), _x(), rank=20)
    name = "blocks.0.ssm"
    good = state.rewrites[name]
    s, bound = good.system, state.records[name].bound
    # A feedthrough off by 3·bound puts ‖G − G_r‖∞ ≥ 2·bound at every frequency.
    wrong = LTISystem(s.A, s.B, s.C, s.D + 3 * bound * torch.eye(s.D.shape[-1]))
    state.rewrites[name] = dataclasses.replace(good, system=wrong)  # the module stays right
    with pytest.raises(VerificationError, match="blocks.0.ssm"):
        PassManager([passes.Verify()]).run(state)
    v = state.verifications[name]
    assert not v.ok and v.hinf > v.bound and v.measured <= v.bound  # only the system check saw it


def test_signal_check_catches_a_wrong_rebuild():
    state = _truncated(_model(), _x(), rank=20)
    name = "blocks.1.ssm"
    broken = copy.deepcopy(state.model)
    with torch.no_grad():  # the truncation result stays right
        broken.get_submodule(name).D.add_(3 * state.records[name].bound)
    state.model = broken
    with pytest.raises(VerificationError, match="blocks.1.ssm"):
        PassManager([passes.Verify()]).run(state)
    v = state.verifications[name]
    assert not v.ok and v.measured > v.bound and v.hinf <= v.bound


def test_cheap_estimate_is_below_and_near_the_refined_one():
    model, x = _model(seed=3, blocks=1, n=32), _x()
    cheap = run_pipeline(model, x, "balanced-truncation{rank=8},verify")[2]
    thorough = run_pipeline(model, x, "balanced-truncation{rank=8},verify{hinf=true}")[2]
    a, b = cheap.verifications["blocks.0.ssm"], thorough.verifications["blocks.0.ssm"]
    assert a.hinf <= b.hinf * (1 + 1e-9)
    assert a.hinf >= 0.8 * b.hinf
    assert a.measured == b.measured  # same signal check


def test_model_signal_is_the_blocks_input_in_the_callers_model():
    model, x = _model(), _x()
    state = run_pipeline(model, x, "balanced-truncation{rank=6},verify{signal=model}")[2]
    name = "blocks.1.ssm"
    u = block_inputs(model, [name], (x,))[name]
    expected = l2_gain_error(model.get_submodule(name), state.model.get_submodule(name), u)
    assert state.verifications[name].measured == pytest.approx(expected.error, rel=1e-12)
    synthetic = run_pipeline(model, x, "balanced-truncation{rank=6},verify")[2]
    assert synthetic.verifications[name].measured != pytest.approx(expected.error, rel=1e-6)


def test_black_box_signal_stays_inside_the_identified_horizon():
    state = _truncated(_model(), _x(length=300))
    block = state.initial_block("blocks.0.ssm")
    assert block.in_shape == (2, 300, 6)  # the observed run saw two sequences
    state.initial_blocks = tuple(dataclasses.replace(b, adapter=_WithHorizon(b.adapter, 50))
                                 for b in state.initial_blocks)
    seen = []
    verify = passes.Verify()
    original = verify._measure

    def spy(a, b, u, limit):
        seen.append(tuple(u.shape))
        return original(a, b, u, limit)

    object.__setattr__(verify, "_measure", spy)
    PassManager([verify]).run(state)
    assert seen and all(shape == (2, 50, 6) for shape in seen)


class _WithHorizon:
    def __init__(self, adapter, horizon: int):
        self._adapter, self.horizon = adapter, horizon

    def __getattr__(self, name):
        return getattr(self._adapter, name)
