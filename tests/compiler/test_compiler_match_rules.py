"""Match rules: failures say why, untraceable models fall back, third-party adapters plug in."""

from __future__ import annotations

import re

import torch
from compiler_models import UserDiagonalSSM, small_model
from torch import nn

import ssmcompile
from ssmcompile.adapters.base import _REGISTRY
from ssmcompile.api import prepare
from ssmcompile.numerics.system import LTISystem
from ssmcompile.ops import diagonal_scan_real


class NonlinearInside(UserDiagonalSSM):
    def forward(self, u):
        return torch.tanh(super().forward(u))


class Selective(nn.Module):
    """λ depends on the input (Mamba-like): not an LTI block."""

    def __init__(self, width=4, n=6):
        super().__init__()
        self.gate = nn.Linear(width, n)
        self.B = nn.Parameter(torch.randn(n, width))
        self.C = nn.Parameter(torch.randn(width, n))

    def forward(self, u):
        lam = torch.sigmoid(self.gate(u)).mean(dim=(0, 1))
        x_re, _ = diagonal_scan_real(lam, torch.zeros_like(lam), u @ self.B.T, u @ self.B.T * 0)
        return x_re @ self.C.T


class Wrap(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_failed_matches_record_why():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 4, dtype=torch.float64)
    state = prepare(Wrap(NonlinearInside(4, 6)).double(), x)
    assert state.blocks == []
    (failure,) = state.failures
    assert failure.name == "inner" and failure.rule == "scan-call"
    assert "not a linear map" in failure.reason
    state = prepare(Wrap(Selective()).double(), x)
    (failure,) = state.failures
    assert "depends on the input" in failure.reason
    report = ssmcompile.analyze(Wrap(Selective()).double(), x)
    assert "inner: [scan-call]" in report.explain()


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = small_model("lru")

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            return self.body(x)
        return self.body(-x)


def test_untraceable_model_falls_back_to_module_matching():
    model = Untraceable().double()
    x = torch.randn(2, 9, 2, dtype=torch.float64)
    state = prepare(model, x)
    assert not state.capture.traced
    assert "could not trace" in state.capture.note
    assert [b.name for b in state.blocks] == ["body.blocks.0.ssm", "body.blocks.1.ssm"]
    assert all(b.node is None for b in state.blocks)
    reduced, report = ssmcompile.reduce(model, x, rank=5)
    assert reduced.body.state_dims == (5, 5)
    assert "could not trace" in str(report)


class LoopSSM(nn.Module):
    """A third-party real diagonal SSM written with a Python loop (no scan op to find)."""

    def __init__(self, width=3, n=8):
        super().__init__()
        self.a = nn.Parameter(torch.linspace(0.2, 0.9, n))
        self.b = nn.Parameter(torch.randn(n, width))
        # C = Bᵀ makes the system symmetric, so balanced truncation keeps its poles real
        self.c = nn.Parameter(self.b.detach().T.clone())

    def forward(self, u):
        x = u.new_zeros(u.shape[0], self.a.shape[0])
        ys = []
        for k in range(u.shape[1]):
            x = self.a * x + u[:, k] @ self.b.T
            ys.append(x @ self.c.T)
        return torch.stack(ys, 1)


class LoopAdapter:
    kind = "loop-ssm"

    def read(self, m):
        a = m.a.detach().double()
        return LTISystem(torch.complex(a, torch.zeros_like(a)), m.b.detach().double().to(
            torch.complex128), m.c.detach().double().to(torch.complex128))

    def state_dim(self, m):
        return m.a.shape[0]

    def rebuild(self, m, system):
        new = LoopSSM(m.b.shape[1], system.state_dim).to(m.a.dtype)
        if system.A.imag.abs().max() > 1e-9:
            raise ssmcompile.errors.ShapeError("LoopSSM holds real modes only")
        with torch.no_grad():
            new.a.copy_(system.A.real)
            # real modes: undo the arbitrary complex phase of each eigenvector
            phase = system.B[:, :1] / system.B[:, :1].abs()
            new.b.copy_((system.B / phase).real)
            new.c.copy_((system.C * phase.T).real)
        return new


def test_register_block_plugs_in_a_third_party_layer():
    ssmcompile.register_block(LoopSSM, LoopAdapter())
    try:
        torch.manual_seed(3)
        model = Wrap(LoopSSM()).double()
        x = torch.randn(2, 12, 3, dtype=torch.float64)
        state = prepare(model, x)
        assert [(b.name, b.kind, b.rule) for b in state.blocks] == [
            ("inner", "loop-ssm", "registered-layer")]
        reduced, report = ssmcompile.reduce(model, x, rank=8 - 3)
        assert reduced.inner.a.shape == (5,)
        (row,) = report.blocks
        assert row.measured_error <= row.bound * (1 + 1e-6) + 1e-8
    finally:
        _REGISTRY.pop(LoopSSM, None)


def _normalise(text: str) -> str:
    text = re.sub(r"\d+\.\d+e[+-]\d+", "<x>", text)
    text = re.sub(r"\d+\.\d+%", "<p>", text)
    return re.sub(r"-+", "-", re.sub(r" +", " ", text))  # column widths follow the numbers


GOLDEN_REPORT = """\
pipeline: hankel-analysis,balanced-truncation{rank=4},verify{output=true} modified: True
capture: traced with torch.fx
block kind n → r energy kept bound measured note
- - - - - - -
blocks.0.ssm lru 12 → 4 <p> <x> <x>
blocks.1.ssm lru 10 → 4 <p> <x> <x>
model output max abs error: <x>"""


def test_golden_report_text_and_json_shape():
    model = small_model("lru")
    x = torch.randn(2, 9, 2, dtype=torch.float64)
    _, report = ssmcompile.reduce(model, x, rank=4)
    assert _normalise(str(report)) == GOLDEN_REPORT
    data = report.to_dict()
    assert [b["name"] for b in data["blocks"]] == ["blocks.0.ssm", "blocks.1.ssm"]
    assert {"name", "kind", "state_dim", "rank", "hsv", "bound", "measured_error"} <= set(
        data["blocks"][0])
    assert data["blocks"][0]["hsv"] == sorted(data["blocks"][0]["hsv"], reverse=True)
    assert report.to_json()


GOLDEN_GRAPH = """\
placeholder u
call_module encoder
call_module blocks.0.norm
call_module blocks.0.ssm
call_function gelu
call_module blocks.0.drop
call_module blocks.0.glu_w1
call_module blocks.0.glu_w2
call_method sigmoid
call_function mul
call_module blocks.0.drop
call_function add"""


def test_golden_graph_keeps_layers_as_leaves():
    model = small_model("lru")
    state = prepare(model, torch.randn(1, 4, 2, dtype=torch.float64))
    lines = []
    for node in state.capture.graph_module.graph.nodes:
        target = node.target if isinstance(node.target, str) else node.target.__name__
        lines.append(f"{node.op} {target}")
    assert "\n".join(lines[:12]) == GOLDEN_GRAPH


def test_analysis_report_shows_spectrum_and_suggested_ranks():
    model = small_model("s4d", dims=(8, 8))
    report = ssmcompile.analyze(model, torch.randn(2, 9, 2, dtype=torch.float64))
    lines = _normalise(str(report)).splitlines()
    assert lines[2] == "block kind n σ_1 σ_n r(τ=0.01) r(τ=0.02) r(τ=0.05) r(τ=0.1)"
    for row, line in zip(report.blocks, lines[4:], strict=True):
        ranks = [r for _, r in row.suggested]
        assert ranks == sorted(ranks, reverse=True) and all(1 <= r <= 8 for r in ranks)
        assert line == f"{row.name} s4d 8 <x> <x> " + " ".join(map(str, ranks))
