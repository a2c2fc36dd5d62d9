"""Key-dimension reduction: Gramians, balancing, exactness at full rank, error in r, the core."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssmcompile
from ssmcompile.adapters import adapter_for
from ssmcompile.attention import (
    KINDS,
    AttentionLMConfig,
    KeyMaps,
    KeyReductionOptions,
    LinearAttention,
    LinearAttentionAdapter,
    LinearAttentionConfig,
    LinearAttentionLM,
    apply_key_maps,
    key_gramians,
    key_maps,
    reduce_key_dim,
    round_rank,
)
from ssmcompile.errors import MatchError, RankError, ShapeError
from ssmcompile.numerics import truncate
from ssmcompile.selective.calibration import surrogate_system

F64 = torch.float64


def _layer(kind="gla", conv=0, norm=None, dk=8, seed=0, skew=False):
    torch.manual_seed(seed)
    cfg = LinearAttentionConfig(16, heads=2, key_dim=dk, value_dim=4, kind=kind,
                                conv_size=conv, qk_norm=norm, chunk_size=8)
    layer = LinearAttention(cfg).double()
    if skew:
        # A layer with structure to find: q/k rows live mostly in a random 3-dim subspace of
        # the key axis (what training tends to produce), hidden by a random rotation.
        with torch.no_grad():
            Rq = torch.linalg.qr(torch.randn(2, dk, dk, dtype=F64))[0]
            scale = torch.tensor([1.0, 0.8, 0.6] + [0.02] * (dk - 3), dtype=F64)
            for proj in (layer.q_proj, layer.k_proj):
                W = proj.weight.reshape(2, dk, -1)
                proj.weight.copy_((Rq @ (scale[:, None] * W)).reshape(2 * dk, -1))
    return layer


def _x(seed, bsz=4, L=40):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(bsz, L, 16, generator=g, dtype=F64).cumsum(1) / 4


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


def _ltv_gramians(f, rho):
    """Readable twin of key_gramians: P_t = A_t P A_tᵀ + ρ b bᵀ, Q_t = A_{t+1}ᵀ Q A_{t+1} + c cᵀ
    with explicit d_k × d_k transitions, averaged over time and batch."""
    q, k, _, g, beta = f
    bsz, H, L, d = k.shape
    eye = torch.eye(d, dtype=F64)
    kk = k[..., :, None] * k[..., None, :]
    A = g.exp()[..., None, None] * (eye if beta is None else eye - beta[..., None, None] * kk)
    b = k if beta is None else beta[..., None] * k
    P, Q = torch.zeros(bsz, H, d, d, dtype=F64), torch.zeros(bsz, H, d, d, dtype=F64)
    Pm, Qm = torch.zeros_like(P), torch.zeros_like(Q)
    for t in range(L):
        P = A[:, :, t] @ P @ A[:, :, t].mT + rho[:, :, t, None, None] * (
            b[:, :, t, :, None] * b[:, :, t, None, :])
        Pm += P
    for t in reversed(range(L)):
        if t + 1 < L:
            Q = A[:, :, t + 1].mT @ Q @ A[:, :, t + 1]
        Q = Q + q[:, :, t, :, None] * q[:, :, t, None, :]
        Qm += Q
    return Pm.sum(0) / (bsz * L), Qm.sum(0) / (bsz * L)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_key_gramians_equal_the_explicit_recurrences(kind, weighted):
    layer = _layer(kind, conv=3)
    with torch.no_grad():
        f = layer.features(_x(0, bsz=2, L=17))
    rho = (f.v**2).mean(-1) if weighted else torch.ones_like(f.g)
    P, Q = key_gramians(f, value_weighted=weighted)
    P_ref, Q_ref = _ltv_gramians(f, rho)
    assert P.shape == (2, 8, 8) and P.dtype == F64
    torch.testing.assert_close(P, P_ref, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(Q, Q_ref, rtol=1e-10, atol=1e-13)


_COMBOS = [(k, c, n) for k, c, n in itertools.product(KINDS, (0, 3), (False, True))
           if not (k == "gated_delta" and not n)]


@pytest.mark.parametrize("kind, conv, norm", _COMBOS)
def test_full_rank_reduction_leaves_outputs_unchanged(kind, conv, norm):
    layer = _layer(kind, conv, norm)
    before = copy.deepcopy(layer.state_dict())
    new, result = reduce_key_dim(layer, _x(0), rank=layer.state_dim)
    assert new is not layer and new.state_dim == result.rank == 8
    x = _x(1)  # held out
    torch.testing.assert_close(new(x), layer(x), rtol=1e-10, atol=1e-10)
    for name, t in layer.state_dict().items():
        assert torch.equal(t, before[name])
    method = LinearAttentionAdapter().method(layer)
    assert method == ("select" if conv else "fold" if kind != "gated_delta" and not norm
                      else "orthogonal")


def test_fold_is_exact_for_any_invertible_transform():
    """At full rank a scalar-decay layer computes the same function for ANY T, not only the
    balancing one (the decay commutes with it): checks the fold, not the Gramians."""
    layer = _layer("retnet")
    g = torch.Generator().manual_seed(3)
    T = torch.randn(2, 8, 8, generator=g, dtype=F64) + 3 * torch.eye(8, dtype=F64)
    new = apply_key_maps(layer, KeyMaps("fold", torch.linalg.inv(T), T.mT))
    torch.testing.assert_close(new(_x(2)), layer(_x(2)), rtol=1e-10, atol=1e-10)
    with pytest.raises(ShapeError, match="not exact"):  # a conv layer cannot hold a fold
        apply_key_maps(_layer("retnet", conv=3), KeyMaps("fold", T, T))


@pytest.mark.parametrize("kind, conv", [("gla", 0), ("retnet", 0), ("gated_delta", 0),
                                        ("gla", 3), ("gated_delta", 3)])
def test_reduced_error_falls_with_rank_and_beats_naive_truncation(kind, conv):
    layer = _layer(kind, conv, skew=True)
    x = _x(5)
    y = layer(x)
    errs = [_rel(reduce_key_dim(layer, _x(0), rank=r)[0](x), y) for r in (2, 3, 4, 6)]
    assert all(b <= a * 1.05 for a, b in itertools.pairwise(errs)), errs
    # Differential: keeping the first r channels of each head (what an uninformed cut does).
    eye = torch.eye(8, dtype=F64)[:3].expand(2, 3, 8)
    method = LinearAttentionAdapter().method(layer)
    naive = KeyMaps(method, eye, eye, torch.arange(3).expand(2, 3) if conv else None)
    naive_err = _rel(apply_key_maps(layer, naive)(x), y)
    assert errs[1] < 0.5 * naive_err, (errs, naive_err)


def test_orthogonal_maps_are_orthonormal():
    layer = _layer("gated_delta")
    result = truncate(LinearAttentionAdapter().calibrate(layer, _x(0)), 5)
    maps = key_maps(result, "orthogonal")
    assert maps.M_k.shape == (2, 5, 8) and torch.equal(maps.M_k, maps.M_q)
    torch.testing.assert_close(maps.M_k @ maps.M_k.mT, torch.eye(5, dtype=F64).expand(2, 5, 5))


def test_rank_rounding_to_a_multiple():
    assert [round_rank(r, 64, 8) for r in (1, 8, 9, 60, 64)] == [8, 8, 16, 64, 64]
    assert round_rank(5, 6, 4) == 6 and round_rank(3, 10) == 3
    for bad in ((0, 8, 1), (9, 8, 1), (3, 8, 0)):
        with pytest.raises(RankError):
            round_rank(*bad)
    layer = _layer("gla", dk=16)
    new, result = reduce_key_dim(layer, _x(0), rank=5, options=KeyReductionOptions(multiple=4))
    assert new.state_dim == result.rank == 8
    assert new.config.scale == layer.config.scale  # the query scale is not recomputed
    new, _ = reduce_key_dim(layer, _x(0), tau=0.3, options=KeyReductionOptions(multiple=4))
    assert new.state_dim % 4 == 0
    with pytest.raises(RankError):
        reduce_key_dim(layer, _x(0))


def _psd(data, n):
    entries = st.floats(-2.0, 2.0, allow_nan=False)
    M = torch.tensor(data.draw(st.lists(entries, min_size=n * n, max_size=n * n)), dtype=F64)
    return M.reshape(n, n) @ M.reshape(n, n).mT + 0.05 * torch.eye(n, dtype=F64)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 6))
def test_balancing_diagonalises_both_gramians(data, n):
    """Tinv P Tinvᵀ = Tᵀ Q T = Σ = diag(√eig(PQ)) and Tinv T = I for the surrogate's T."""
    P, Q = _psd(data, n), _psd(data, n)
    result = truncate(surrogate_system(P[None], Q[None]), n)
    T, Tinv, sigma = result.T[0], result.Tinv[0], result.hsv[0]
    S = torch.diag(sigma)
    scale = float(sigma[0])
    torch.testing.assert_close(Tinv @ P @ Tinv.mT, S, rtol=0, atol=1e-8 * scale)
    torch.testing.assert_close(T.mT @ Q @ T, S, rtol=0, atol=1e-8 * scale)
    torch.testing.assert_close(Tinv @ T, torch.eye(n, dtype=F64), rtol=0, atol=1e-8)
    eig = torch.linalg.eigvals(P @ Q).real.clamp_min(0).sqrt().sort(descending=True).values
    torch.testing.assert_close(sigma, eig, rtol=1e-6, atol=1e-8 * scale)


def test_adapter_contract_and_registration():
    layer = _layer("gla", conv=3)
    adapter = adapter_for(layer)
    assert isinstance(adapter, LinearAttentionAdapter) and adapter.certified is False
    assert adapter.state_dim(layer) == 8 and "'select'" in adapter.caveat(layer)
    with pytest.raises(MatchError, match="calibration"):
        adapter.read(layer)
    with pytest.raises(MatchError):
        adapter.rebuild(layer, None)
    result = truncate(adapter.calibrate(layer, _x(0)), 4)
    with pytest.raises(ShapeError):
        adapter.rebuild_from_truncation(_layer("gla", conv=3, dk=6), result)
    state = torch.random.get_rng_state()
    adapter.rebuild_from_truncation(layer, result)
    assert torch.equal(state, torch.random.get_rng_state())  # mid-training safe


def test_core_pipeline_reduces_the_language_model():
    torch.manual_seed(0)
    attn = LinearAttentionConfig(16, heads=2, key_dim=8, value_dim=4, kind="gated_delta",
                                 chunk_size=8)
    lm = LinearAttentionLM(AttentionLMConfig(40, attn, n_layers=2))
    ids = torch.randint(0, 40, (3, 24))
    reduced, report, state = ssmcompile.run_pipeline(
        lm, ids, "hankel-analysis,balanced-truncation{rank=4},verify")
    assert reduced.key_dims == (4, 4) and lm.key_dims == (8, 8)
    assert set(state.rewrites) == {"layers.0.attn", "layers.1.attn"}
    assert any("'select'" in note for note in state.notes)
    assert "linear-attention" in str(report)
    # The reduced LM still streams: its step state has the reduced key dimension.
    s = reduced.initial_state(3)
    assert s[0][1].shape == (3, 2, 4, 4)
    logits, _ = reduced.step(ids[:, 0], s)
    torch.testing.assert_close(logits, reduced(ids[:, :1])[:, 0], rtol=1e-5, atol=1e-5)


def test_balancing_beats_one_sided_cuts_when_keys_and_queries_disagree():
    """Keys are large on axes 0-2, queries on 3-7; q·k lives on 3-4 (large × medium). Balanced
    truncation at r = 2 finds those; a PCA of the keys (reachability alone) or of the queries
    (observability alone) does not. All hidden by one random rotation of the key axis."""
    layer = _layer("gla")
    sk = torch.tensor([1.0] * 3 + [0.3] * 2 + [0.01] * 3, dtype=F64)
    sq = torch.tensor([0.01] * 3 + [1.0] * 5, dtype=F64)
    g = torch.Generator().manual_seed(1)
    R = torch.linalg.qr(torch.randn(8, 8, dtype=F64, generator=g))[0]
    with torch.no_grad():
        for proj, s in ((layer.k_proj, sk), (layer.q_proj, sq)):
            W = proj.weight.reshape(2, 8, -1)
            proj.weight.copy_((R @ (s[:, None] * W)).reshape(16, -1))
    x = _x(5)
    y = layer(x)
    new, result = reduce_key_dim(layer, _x(0), rank=2)
    balanced = _rel(new(x), y)
    P, Q = key_gramians(layer.features(_x(0)))
    one_sided = []
    for G in (P, Q):
        U = torch.linalg.eigh(G)[1][..., -2:]  # two leading eigenvectors per head
        one_sided.append(_rel(apply_key_maps(layer, KeyMaps("fold", U.mT, U.mT))(x), y))
    assert balanced < 0.5 * min(one_sided), (balanced, one_sided)


def test_pipeline_rounds_ranks_to_the_adapters_multiple():
    from ssmcompile.attention import register_attention_adapter

    torch.manual_seed(0)
    attn = LinearAttentionConfig(16, heads=2, key_dim=16, value_dim=4, kind="gla", chunk_size=8)
    lm = LinearAttentionLM(AttentionLMConfig(40, attn, n_layers=1))
    ids = torch.randint(0, 40, (3, 24))
    try:
        register_attention_adapter(KeyReductionOptions(multiple=4))
        reduced, _, state = ssmcompile.run_pipeline(lm, ids, "hankel-analysis,"
                                                    "balanced-truncation{rank=5}")
        assert reduced.key_dims == (8,)
        assert "rounded up to 8" in state.decisions["layers.0.attn"].reason
        register_attention_adapter(KeyReductionOptions(multiple=16))  # 5 → 16 = n: no cut
        same, _, state = ssmcompile.run_pipeline(lm, ids, "hankel-analysis,"
                                                 "balanced-truncation{rank=5}")
        assert same.key_dims == (16,) and not state.decisions["layers.0.attn"].reduce
    finally:
        register_attention_adapter()
