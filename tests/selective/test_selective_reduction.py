"""Mamba adapters: the contract, full-rank exactness, held-out error, the core pipeline."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ssmcompile
from ssmcompile.adapters import adapter_for
from ssmcompile.errors import MatchError, ShapeError
from ssmcompile.numerics import gramians, truncate
from ssmcompile.selective import (
    LMConfig,
    Mamba1Adapter,
    Mamba1Block,
    Mamba1Config,
    Mamba2Adapter,
    Mamba2Block,
    Mamba2Config,
    SelectiveLM,
    index_importance,
    select_mamba1_states,
)
from ssmcompile.selective.calibration import scalar_decay_gramians

F64 = torch.float64


def _mamba1(N=12):
    torch.manual_seed(0)
    return Mamba1Block(Mamba1Config(8, d_state=N)).double()


def _mamba2(N=12, groups=2):
    torch.manual_seed(0)
    return Mamba2Block(Mamba2Config(8, d_state=N, head_dim=4, n_groups=groups)).double()


def _data(seed, batch=6, L=48):
    g = torch.Generator().manual_seed(seed)
    # A smooth random signal: consecutive inputs are correlated, as token embeddings are not.
    return torch.randn(batch, L, 8, generator=g, dtype=F64).cumsum(1) / 4


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


def test_adapters_are_registered_and_follow_the_contract():
    for block, kind in ((_mamba1(), "mamba1"), (_mamba2(), "mamba2")):
        adapter = adapter_for(block)
        assert adapter.kind == kind and adapter.certified is False
        assert adapter.state_dim(block) == 12
        with pytest.raises(MatchError, match="needs calibration data"):
            adapter.read(block)
        with pytest.raises(MatchError):
            adapter.rebuild(block, None)
    with pytest.raises(MatchError):
        Mamba1Adapter().state_dim(_mamba2())


def test_calibrate_returns_surrogate_with_the_estimated_gramians():
    block, u = _mamba2(), _data(0)
    system = Mamba2Adapter().calibrate(block, u)
    _, _, delta, A, B, C = block.ssm_inputs(u)
    P, Q = scalar_decay_gramians(delta, A, B, C)
    P2, Q2 = gramians(system.A, system.B, system.C)
    assert system.A.shape == (2, 12, 12) and system.B.dtype == F64
    torch.testing.assert_close(P2, P, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(Q2, Q, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("make, adapter", [(_mamba1, Mamba1Adapter()),
                                           (_mamba2, Mamba2Adapter())])
def test_full_rank_leaves_outputs_unchanged(make, adapter):
    block = make()
    original = copy.deepcopy(block.state_dict())
    result = truncate(adapter.calibrate(block, _data(0)), block.state_dim)
    new = adapter.rebuild_from_truncation(block, result)
    assert new is not block and type(new) is type(block) and new.state_dim == block.state_dim
    u = _data(1)
    tol = 0.0 if isinstance(block, Mamba1Block) else 1e-10  # Mamba-1: nothing is deleted
    torch.testing.assert_close(new(u), block(u), rtol=tol, atol=tol)
    for k, v in block.state_dict().items():  # the original is untouched
        assert torch.equal(v, original[k])


@pytest.mark.parametrize("make, adapter, r, bound", [(_mamba1, Mamba1Adapter(), 6, 0.05),
                                                     (_mamba2, Mamba2Adapter(), 6, 0.05)])
def test_reduced_block_stays_close_on_held_out_data(make, adapter, r, bound):
    """Calibrated on one batch, checked on another; better than a naive choice of states."""
    block = make()
    result = truncate(adapter.calibrate(block, _data(0)), r)
    new = adapter.rebuild_from_truncation(block, result)
    assert new.state_dim == r and new.training == block.training
    u = _data(7)
    err = _rel(new(u), block(u))
    if isinstance(block, Mamba1Block):
        # Differential: the complement (least important r), the slowest-decaying r and the
        # fastest-decaying r indices all do worse.
        weakest = index_importance(result).argsort()[:r].sort().values
        naive = min(_rel(select_mamba1_states(block, keep)(u), block(u))
                    for keep in (weakest, torch.arange(r), torch.arange(r, 2 * r)))
    else:
        # Differential: keeping the first r coordinates of B and C without balancing.
        eye = torch.eye(block.state_dim, r, dtype=F64).expand(2, -1, -1)
        naive_result = type(result)(result.system, result.hsv, r, result.tail, result.bound,
                                    eye, eye.mT)
        naive = _rel(adapter.rebuild_from_truncation(block, naive_result)(u), block(u))
    assert err < bound and err < 0.75 * naive, (err, naive)


def test_mamba2_fold_is_a_similarity_transform_at_full_rank():
    """At full rank the folded block equals the original for any invertible T (not only the
    balancing one): A_t = a_t·I commutes with it."""
    block = _mamba2(N=5)
    g = torch.Generator().manual_seed(3)
    T = torch.randn(2, 5, 5, generator=g, dtype=F64) + 3 * torch.eye(5, dtype=F64)
    result = truncate(Mamba2Adapter().calibrate(block, _data(0)), 5)
    fake = type(result)(result.system, result.hsv, 5, result.tail, result.bound, T,
                        torch.linalg.inv(T))
    u = _data(2)
    torch.testing.assert_close(Mamba2Adapter().rebuild_from_truncation(block, fake)(u), block(u),
                               rtol=1e-10, atol=1e-12)


def test_rebuild_rejects_foreign_results_and_draws_no_randomness():
    block = _mamba2()
    result = truncate(Mamba2Adapter().calibrate(block, _data(0)), 4)
    with pytest.raises(ShapeError):
        Mamba2Adapter().rebuild_from_truncation(_mamba2(N=10), result)
    state = torch.random.get_rng_state()
    Mamba2Adapter().rebuild_from_truncation(block, result)
    assert torch.equal(state, torch.random.get_rng_state())


class _TwoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first = Mamba2Block(Mamba2Config(8, d_state=12, head_dim=4))
        self.second = Mamba1Block(Mamba1Config(8, d_state=12))

    def forward(self, x):
        x = x + self.first(x)
        return x + self.second(x)


def test_core_pipeline_reduces_mamba_blocks_and_reports_measured_error():
    model = _TwoBlocks()
    x = _data(0).float()
    reduced, report, state = ssmcompile.run_pipeline(
        model, x, "hankel-analysis,balanced-truncation{rank=6},verify")
    assert (reduced.first.state_dim, reduced.second.state_dim) == (6, 6)
    assert (model.first.state_dim, model.second.state_dim) == (12, 12)  # caller's model kept
    assert {state.rewrites["first"].rank, state.rewrites["second"].rank} == {6}
    assert not state.rewrites["first"].T.is_complex()
    text = str(report)
    assert "mamba1" in text and "mamba2" in text
    y, y_r = model(_data(5).float()), reduced(_data(5).float())
    assert _rel(y_r, y) < 0.05


def test_core_pipeline_on_the_language_model():
    torch.manual_seed(0)
    lm = SelectiveLM(LMConfig(96, 16, 2, "mamba2", 16, head_dim=8))
    ids = torch.randint(0, 96, (4, 32))
    reduced, _, state = ssmcompile.run_pipeline(lm, ids, "balanced-truncation{rank=5}")
    assert reduced.state_dims == (5, 5) and lm.state_dims == (16, 16)
    assert set(state.rewrites) == {"layers.0.mixer", "layers.1.mixer"}
    held = torch.randint(0, 96, (4, 32))
    assert _rel(reduced(held), lm(held)) < 0.05
