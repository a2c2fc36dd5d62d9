"""Models written the way other people write them: own names, dtype casts, complex parameters,
attributes set in ``forward``, dataclass outputs. Found, reduced, verified, left untouched."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import passes
import ssmcompile
from ssmcompile.api import prepare, run_pipeline
from ssmcompile.compiler import ModulePass, PassManager, RankPolicy, rewrite_block
from ssmcompile.errors import MatchError
from ssmcompile.numerics import hankel_singular_values
from ssmcompile.ops import diagonal_scan
from ssmcompile.train import ReductionScheduler


class CastingComplexSSM(nn.Module):
    """Complex64 parameters, ``u.to(torch.cfloat)`` (cannot run in float64), and the last state
    kept on ``self`` from inside ``forward``."""

    def __init__(self, width: int, n: int):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        radius = torch.linspace(0.3, 0.95, n)
        phase = torch.linspace(0.2, 2.9, n)
        self.poles = nn.Parameter(torch.polar(radius, phase))  # complex64
        self.w_in = nn.Parameter(torch.randn(n, width, dtype=torch.cfloat, generator=g) / 3)
        self.w_out = nn.Parameter(torch.randn(width, n, dtype=torch.cfloat, generator=g) / 3)
        self.skip = nn.Parameter(torch.randn(width, generator=g))
        self.last_state = None

    def forward(self, u):
        bu = u.to(torch.cfloat) @ self.w_in.T
        x = diagonal_scan(self.poles, bu)
        self.last_state = x[:, -1]
        return (x @ self.w_out.T).real + self.skip * u


@dataclass
class NetOutput:
    logits: torch.Tensor
    hidden: torch.Tensor


class HeldOutNet(nn.Module):
    def __init__(self, width: int = 4, n: int = 12):
        super().__init__()
        self.proj_in = nn.Linear(3, width)
        self.mixer = CastingComplexSSM(width, n)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        h = torch.tanh(self.proj_in(x))
        h = torch.relu(self.mixer(h)) + h
        return NetOutput(logits=self.head(h), hidden=h)


def _held_out() -> HeldOutNet:
    torch.manual_seed(0)
    return HeldOutNet().eval()


def _x(batch=3, length=20, d=3, seed=1):
    return torch.randn(batch, length, d, generator=torch.Generator().manual_seed(seed))


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_held_out_model_is_found_reduced_verified_and_left_untouched():
    net, x = _held_out(), _x()
    with torch.no_grad():
        before = net(x).logits.clone()
    weights = _snapshot(net)

    report = ssmcompile.analyze(net, x)
    (row,) = report.blocks
    assert (row.name, row.kind, row.rule, row.state_dim) == ("mixer", "user-scan", "scan-call",
                                                             12)
    reduced, report = ssmcompile.reduce(net, x, rank=5)
    (row,) = report.blocks
    assert (row.state_dim, row.rank, row.reduced) == (12, 5, True)
    assert reduced.mixer.state_dim == 5
    assert row.measured_error <= row.bound * (1 + 1e-6) + 1e-5
    assert row.measured_error > 0
    # the reduced model still returns the user's dataclass, now from a smaller block
    with torch.no_grad():
        out = reduced(x)
    assert isinstance(out, NetOutput) and out.logits.shape == before.shape

    # caller's model: bit-identical outputs and weights, and no fx Proxy left on its modules
    with torch.no_grad():
        assert torch.equal(net(x).logits, before)
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())
    assert not isinstance(net.mixer.last_state, torch.fx.Proxy)


def test_held_out_block_system_matches_its_parameters():
    """The probe (run at the module's own complex64 precision) reads the system that the
    parameters define: compare the HSVs with those computed from the parameters directly."""
    net = _held_out()
    state = prepare(net, _x())
    (block,) = state.blocks
    system = block.adapter.read(net.mixer)
    m = net.mixer
    lam = m.poles.detach().to(torch.complex128)
    B = m.w_in.detach().to(torch.complex128)
    C = m.w_out.detach().to(torch.complex128)
    want = hankel_singular_values(lam, B, C)
    got = hankel_singular_values(system.A, system.B, system.C)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


class Sets(nn.Module):
    """An LTI layer written as a Python loop that also caches its output on ``self``."""

    def __init__(self, width=3, n=5):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
        self.A = nn.Parameter(q * torch.linspace(0.2, 0.9, n))
        self.B = nn.Parameter(torch.randn(n, width, generator=g))
        self.C = nn.Parameter(torch.randn(width, n, generator=g))
        self.cache = None

    def forward(self, u):
        x = u.new_zeros(u.shape[0], self.A.shape[0])
        ys = []
        for t in range(u.shape[1]):
            x = x @ self.A.T + u[:, t] @ self.B.T
            ys.append(x @ self.C.T)
        self.cache = torch.stack(ys, 1)
        return self.cache


def test_analyze_and_reduce_leave_a_forward_setting_attributes_untouched():
    model = nn.Sequential(nn.Linear(3, 3), Sets()).double().eval()
    x = _x(length=9).double()
    with torch.no_grad():
        before = model(x).clone()
    cache_before = model[1].cache
    ssmcompile.analyze(model, x)
    ssmcompile.reduce(model, x, rank=3)
    assert model[1].cache is cache_before  # neither tracing nor probing wrote into it
    with torch.no_grad():
        assert torch.equal(model(x), before)


class Pointwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.A_log = nn.Parameter(torch.zeros(4))
        self.log_dt = nn.Parameter(torch.zeros(4))
        self.lin = nn.Linear(4, 4)

    def forward(self, u):
        return torch.tanh(self.lin(u)) * self.A_log.exp() + self.log_dt


def test_model_without_ssm_says_so_and_names_suspects():
    model = nn.Sequential(nn.Linear(3, 4), Pointwise()).eval()
    x = _x()
    report = ssmcompile.analyze(model, x)
    assert report.blocks == ()
    text = str(report) + "\n" + report.explain()
    assert "no state-space block found in Sequential" in text
    assert "1 (Pointwise: parameters A_log, log_dt)" in text
    assert "register_block" in text
    assert "every candidate matched" not in text
    with pytest.raises(MatchError, match="no state-space block found"):
        ssmcompile.reduce(model, x, rank=2)


class RaisesInForward(CastingComplexSSM):
    def forward(self, u):
        torch._assert(u.shape[1] >= 8, "only runs on my production shapes")
        return super().forward(u)


def test_exception_inside_a_user_module_while_probing_is_a_match_failure():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), RaisesInForward(4, 6)).eval()
    state = prepare(model, _x())
    assert state.blocks == []
    (failure,) = [f for f in state.failures if f.name == "1"]
    assert failure.rule == "scan-call"
    assert "AssertionError: only runs on my production shapes" in failure.reason


@dataclass(frozen=True)
class BuggyPass(ModulePass):
    """A third-party pass with a bug: raises a plain KeyError, not an SSMCompileError."""

    name = "buggy"

    def run(self, state):
        raise KeyError("missing thing")


def test_scheduler_survives_any_exception_when_not_strict():
    net, x = _held_out(), _x()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    weights = _snapshot(net)
    sched = ReductionScheduler([BuggyPass()], [1], x)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model, same_opt, event = sched.step(net, opt, 1)
    assert model is net and same_opt is opt and event is None
    assert sched.skipped == [(1, "KeyError: 'missing thing'")]
    assert any("reduction at step 1 skipped" in str(w.message) for w in seen)
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())
    strict = ReductionScheduler([BuggyPass()], [1], x, strict=True)
    with pytest.raises(KeyError):
        strict.step(net, opt, 1)


def test_two_truncations_sum_their_bounds_exactly():
    """The summed bound equals 2·Σtail(12→8) + 2·Σtail(8→5), computed here from the HSVs of
    the caller's block and of the intermediate block (not from the pipeline's record)."""
    net = _held_out()
    x = _x()
    _, report, state = run_pipeline(net, x, "balanced-truncation{rank=8},"
                                            "balanced-truncation{rank=5},verify")
    (row,) = report.blocks
    mid, _, _ = run_pipeline(net, x, "balanced-truncation{rank=8}")
    hsv_first = prepare(net, x).blocks[0].adapter.read(net.mixer)
    s1 = hankel_singular_values(hsv_first.A, hsv_first.B, hsv_first.C)
    mid_system = prepare(mid, x).blocks[0].adapter.read(mid.mixer)
    s2 = hankel_singular_values(mid_system.A, mid_system.B, mid_system.C)
    expected = 2 * float(s1[8:].sum()) + 2 * float(s2[5:].sum())
    assert row.bound == pytest.approx(expected, rel=1e-4)
    assert row.bound > 2 * float(s2[5:].sum()) * 1.01  # the first step's share is not lost
    assert (row.state_dim, row.rank) == (12, 5)
    assert [(s.n, s.r) for s in state.records["mixer"].steps] == [(12, 8), (8, 5)]
    assert row.measured_error <= row.bound * (1 + 1e-6) + 1e-5


def test_policy_object_and_keywords_are_one_definition():
    net, x = _held_out(), _x()
    a, ra = ssmcompile.reduce(net, x, RankPolicy(tau=0.2))
    b, rb = ssmcompile.reduce(net, x, tau=0.2)
    assert [r.rank for r in ra.blocks] == [r.rank for r in rb.blocks]
    assert ra.pipeline == rb.pipeline == (
        "hankel-analysis,balanced-truncation{tau=0.2},verify{output=true}")
    with pytest.raises(TypeError):
        ssmcompile.reduce(net, x, RankPolicy(tau=0.2), rank=3)


def test_complex_parameters_verify_in_complex128():
    """A model that *can* run in float64 but has complex64 parameters is checked in float64
    (``Module.double()`` alone leaves them complex64 and the check would crash)."""

    class Clean(CastingComplexSSM):
        def forward(self, u):
            bu = torch.complex(u, torch.zeros_like(u)) @ self.w_in.T
            return (diagonal_scan(self.poles, bu) @ self.w_out.T).real + self.skip * u

    model = nn.Sequential(nn.Linear(3, 4), Clean(4, 10)).eval()
    reduced, report = ssmcompile.reduce(model, _x(), rank=4)
    (row,) = report.blocks
    _, _, exact = run_pipeline(model, _x(),
                               "balanced-truncation{rank=4},verify{precision=float64}")
    assert exact.verifications["1"].precision == "float64"
    _, _, quick = run_pipeline(model, _x(), "balanced-truncation{rank=4},verify")
    # auto: a float32 block whose float32 error is far inside its bound is not re-run in float64
    assert quick.verifications["1"].precision == "float32"
    assert quick.verifications["1"].measured == pytest.approx(
        exact.verifications["1"].measured, rel=1e-4)
    assert row.measured_error <= row.bound * (1 + 1e-6) + 1e-8
    held = run_pipeline(_held_out(), _x(),
                        "balanced-truncation{rank=4},verify{precision=float64}")[2]
    assert held.verifications["mixer"].precision == "float32"  # cannot run in float64
    assert math.isfinite(report.output_error)
    assert reduced[1].state_dim == 4


def test_float32_block_at_full_rank_verifies_within_rounding():
    """Bound 0 (nothing discarded) on a float32 model: the float32 check is not enough, the
    float64 one sees only the float32 storage rounding, which is allowed and reported."""
    from ssmcompile.layers import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(layer="lru", d_model=4, state_dims=(6,), d_output=2,
                                  d_input=3)).eval()
    x = _x()
    _, _, state = run_pipeline(model, x, "balanced-truncation{rank=6 gate=1.0},verify")
    assert not state.records  # r = n keeps the block: nothing to verify
    state = prepare(model, x)
    state.model = copy.deepcopy(model)
    rewrite_block(state, state.blocks[0], 6)
    PassManager([passes.Verify()]).run(state)
    v = state.verifications["blocks.0.ssm"]
    assert v.ok and v.bound < 1e-9 and 0 < v.measured < 1e-5
    assert v.precision == "float64"  # the float32 check was above the bound: re-measured
