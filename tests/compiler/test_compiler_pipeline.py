"""Differential tests of capture → match → analyse → rewrite → verify on every layer kind."""

from __future__ import annotations

import copy

import pytest
import torch
from compiler_models import KINDS, small_model, user_net

import ssmcompile
from ssmcompile.api import prepare, run_pipeline
from ssmcompile.compiler import META_KEY, BlockAnalysis, rewrite_block
from ssmcompile.errors import PassError, RankError


def _x(batch=3, length=17, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, d, generator=g, dtype=torch.float64)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_blocks_found_in_order_with_sizes(kind):
    model = small_model(kind)
    state = prepare(model, _x())
    assert state.capture.traced
    assert [(b.name, b.kind, b.rule) for b in state.blocks] == [
        ("blocks.0.ssm", kind, "registered-layer"), ("blocks.1.ssm", kind, "registered-layer")]
    assert [b.adapter.state_dim(model.get_submodule(b.name)) for b in state.blocks] == [12, 10]


@pytest.mark.parametrize("kind", KINDS)
def test_full_rank_rewrite_leaves_outputs_unchanged(kind):
    model = small_model(kind)
    x = _x()
    state = prepare(model, x)
    state.model = copy.deepcopy(model)
    for block in state.blocks:
        n = block.adapter.state_dim(model.get_submodule(block.name))
        rewrite_block(state, block, n)
    assert state.model is not model
    with torch.no_grad():
        assert torch.allclose(state.model(x), model(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_reduced_rank_within_bound_and_original_untouched(kind):
    model = small_model(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _x()
    reduced, report = ssmcompile.reduce(model, x, rank=4)
    assert report.modified
    assert reduced.state_dims == (4, 4) and model.state_dims == (12, 10)
    for row in report.blocks:
        assert (row.state_dim, row.rank, row.reduced) in {(12, 4, True), (10, 4, True)}
        assert row.measured_error <= row.bound * (1 + 1e-6) + 1e-8
        assert 0 < row.energy_kept <= 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert _params(reduced) < _params(model)


@pytest.mark.parametrize("kind", KINDS)
def test_reduced_model_trains(kind):
    model = small_model(kind).float().train()
    reduced, _ = ssmcompile.reduce(model, _x().float(), rank=3)
    opt = torch.optim.AdamW(reduced.parameters(), lr=1e-3)
    loss = torch.nn.functional.cross_entropy(reduced(_x().float()), torch.tensor([0, 1, 2]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in reduced.parameters())


def test_noop_pipelines_are_not_modified():
    model = small_model("lru")
    _, report, _ = run_pipeline(model, _x(), "hankel-analysis,verify")
    assert report.modified is False
    # a τ so small that every state is kept: the gate refuses, nothing changes
    out, report, _ = run_pipeline(model, _x(), "hankel-analysis,balanced-truncation{tau=1e-12}")
    assert report.modified is False and out is model
    assert all(not b.reduced for b in report.blocks)


def test_analysis_is_typed_and_stored_on_the_graph():
    model = small_model("s5")
    _, _, state = run_pipeline(model, _x(), "hankel-analysis")
    for block in state.blocks:
        meta = block.node.meta[META_KEY]
        assert isinstance(meta, BlockAnalysis) and meta is state.analyses[block.name]
        assert meta.hsv.dtype == torch.float64
        assert torch.all(meta.hsv[:-1] >= meta.hsv[1:])
        assert meta.energy[-1] == pytest.approx(1.0)


def test_s4d_block_reduces_every_channel_uniformly():
    model = small_model("s4d", dims=(8, 8))
    reduced, report = ssmcompile.reduce(model, _x(), rank=3)
    assert reduced.state_dims == (3, 3)
    for row in report.blocks:
        assert len(row.hsv) == 6 * 8  # the union of the per-channel spectra, H = 6 channels


def test_block_dependencies_follow_data_flow():
    model = small_model("lru")
    _, report, _ = run_pipeline(model, _x(), "hankel-analysis")
    feeds = {b.name: b.feeds for b in report.blocks}
    assert feeds == {"blocks.0.ssm": ("blocks.1.ssm",), "blocks.1.ssm": ()}


def test_pipeline_strings_parse_and_fail_clearly():
    model = small_model("lru")
    _, report, _ = run_pipeline(
        model, _x(), "hankel-analysis, balanced-truncation{rank=5 gate=0.9}, verify{hinf=true}")
    assert report.pipeline == (
        "hankel-analysis,balanced-truncation{rank=5 gate=0.9},verify{hinf=true}")
    assert all(r.hinf_error is not None and r.hinf_error <= r.bound * (1 + 1e-6) + 1e-8
               for r in report.blocks)
    with pytest.raises(PassError, match="unknown pass 'nope'"):
        run_pipeline(model, _x(), "hankel-analysis,nope")
    with pytest.raises(PassError, match="has no option 'rnak'"):
        run_pipeline(model, _x(), "balanced-truncation{rnak=3}")
    with pytest.raises(PassError, match="not a valid"):
        run_pipeline(model, _x(), "balanced-truncation{rank=three}")
    with pytest.raises(PassError, match="unbalanced"):
        run_pipeline(model, _x(), "balanced-truncation{rank=3")
    with pytest.raises(RankError, match="choose one of"):
        run_pipeline(model, _x(), "balanced-truncation{rank=3 tau=0.1}")


def test_registry_keys_equal_pass_names():
    import passes

    registry = passes.default_registry()
    assert {"hankel-analysis", "balanced-truncation", "verify"} <= set(registry.names())
    assert all(cls.name == key for key, cls in registry.classes.items())
    assert all(cls.in_place is False for cls in registry.classes.values())


def test_overrides_and_budget():
    model = small_model("lru", dims=(12, 10))
    reduced, report = ssmcompile.reduce(model, _x(), overrides={"blocks.1.ssm": 2})
    assert reduced.state_dims == (12, 2)
    reduced, report = ssmcompile.reduce(model, _x(), budget=0.5)
    assert sum(reduced.state_dims) == 11  # ⌈0.5 · 22⌉ states in all, by one global threshold
    with pytest.raises(RankError, match="no block named 'blocks.7.ssm'"):
        ssmcompile.reduce(model, _x(), overrides={"blocks.7.ssm": 2})


def test_user_defined_scan_module_is_found_probed_and_reduced():
    net = user_net()
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    state = prepare(net, x)
    assert [(b.name, b.kind, b.rule) for b in state.blocks] == [
        ("mixer", "user-scan", "scan-call")]
    system = state.blocks[0].adapter.read(net.mixer)
    assert system.state_dim == 16 and system.n_inputs == 5 and system.n_outputs == 5
    # full rank: outputs unchanged (the block is re-emitted as the canonical layer)
    state.model = copy.deepcopy(net)
    rewrite_block(state, state.blocks[0], 16)
    with torch.no_grad():
        assert torch.allclose(state.model(x), net(x), atol=1e-9, rtol=0)
    reduced, report = ssmcompile.reduce(net, x, rank=6)
    (row,) = report.blocks
    assert (row.state_dim, row.rank) == (16, 6)
    assert reduced.mixer.state_dim == 6
    assert row.measured_error <= row.bound * (1 + 1e-6) + 1e-8


def test_two_truncations_in_one_pipeline_compose_and_bounds_add():
    model = small_model("lru", dims=(12, 10))
    x = _x()
    out, report, state = run_pipeline(
        model, x, "balanced-truncation{rank=8},balanced-truncation{rank=5},verify{hinf=true}")
    assert out.state_dims == (5, 5)
    for row in report.blocks:
        assert row.rank == 5
        # the final model is compared with the caller's: errors add, so the bounds do too
        assert row.bound == pytest.approx(state.records[row.name].bound)
        assert row.measured_error <= row.bound * (1 + 1e-6) + 1e-8
        assert row.hinf_error <= row.bound * (1 + 1e-6) + 1e-8


def test_verify_probe_limits_the_sequences_checked():
    model = small_model("lru")
    x = _x(batch=6)
    # probe limits the model inputs: the default synthetic signal of LTI blocks uses none
    _, full, _ = run_pipeline(model, x, "balanced-truncation{rank=4},verify{signal=model}")
    _, part, _ = run_pipeline(model, x,
                              "balanced-truncation{rank=4},verify{probe=2 signal=model}")
    _, first2, _ = run_pipeline(model, x[:2], "balanced-truncation{rank=4},verify{signal=model}")
    for a, b, c in zip(full.blocks, part.blocks, first2.blocks, strict=True):
        assert b.measured_error == pytest.approx(c.measured_error, rel=1e-12)
        assert b.measured_error <= a.measured_error * (1 + 1e-12)  # a max over fewer sequences
    with pytest.raises(PassError, match="probe must be"):
        run_pipeline(model, x, "verify{probe=-1}")
