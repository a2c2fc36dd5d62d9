"""The scan ops stay one opaque node under fx, torch.export and dynamo (aot_eager)."""

from __future__ import annotations

import torch
from torch import nn

from ssmcompile.ops import (
    dense_scan,
    dense_scan_reference,
    diagonal_scan,
    diagonal_scan_real,
    diagonal_scan_reference,
)

DIAG = torch.ops.ssmcompile.diagonal_scan
DENSE = torch.ops.ssmcompile.dense_scan


class _DiagReal(nn.Module):
    def __init__(self, n=4):
        super().__init__()
        lam = torch.polar(
            torch.linspace(0.5, 0.99, n).double(), torch.linspace(0.1, 3.0, n).double()
        )
        self.lam_re = nn.Parameter(lam.real.clone())
        self.lam_im = nn.Parameter(lam.imag.clone())

    def forward(self, bu_re, bu_im):
        x_re, x_im = diagonal_scan_real(self.lam_re, self.lam_im, bu_re, bu_im)
        return x_re * 2.0 + x_im

    def reference(self, bu_re, bu_im):
        x = diagonal_scan_reference(
            torch.complex(self.lam_re, self.lam_im), torch.complex(bu_re, bu_im)
        )
        return x.real * 2.0 + x.imag


class _DiagComplex(nn.Module):
    def forward(self, lam, bu):
        return diagonal_scan(lam, bu)


class _Dense(nn.Module):
    def __init__(self, n=4):
        super().__init__()
        self.A = nn.Parameter(0.2 * torch.randn(n, n, dtype=torch.float64))

    def forward(self, bu):
        return torch.tanh(dense_scan(self.A, bu))


def _op_nodes(graph, packet):
    targets = {packet, *(getattr(packet, name) for name in packet.overloads())}
    return [n for n in graph.nodes if n.op == "call_function" and n.target in targets]


def _bu(batch, length, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, n, generator=g, dtype=torch.float64)


def test_symbolic_trace_real_api_is_one_node():
    gm = torch.fx.symbolic_trace(_DiagReal())
    calls = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert len(_op_nodes(gm.graph, DIAG)) == 1
    # Besides the op: two getitems to unpack its tuple and the two arithmetic ops of forward.
    assert len(calls) == 5
    bu_re, bu_im = _bu(2, 33), _bu(2, 33, seed=1)
    torch.testing.assert_close(gm(bu_re, bu_im), _DiagReal()(bu_re, bu_im))


def test_symbolic_trace_complex_api_keeps_one_op_node():
    gm = torch.fx.symbolic_trace(_DiagComplex())
    assert len(_op_nodes(gm.graph, DIAG)) == 1
    lam = torch.polar(torch.full((4,), 0.9, dtype=torch.float64), torch.ones(4).double())
    bu = torch.complex(_bu(2, 20), _bu(2, 20, seed=1))
    torch.testing.assert_close(gm(lam, bu), diagonal_scan_reference(lam, bu))


def test_symbolic_trace_dense_is_one_node():
    gm = torch.fx.symbolic_trace(_Dense())
    assert len(_op_nodes(gm.graph, DENSE)) == 1


def test_export_diagonal_with_dynamic_length_runs_at_other_lengths():
    model = _DiagReal()
    length = torch.export.Dim("length", min=2)
    batch = torch.export.Dim("batch")
    spec = {0: batch, 1: length}
    ep = torch.export.export(
        model, (_bu(2, 50), _bu(2, 50, seed=1)), dynamic_shapes={"bu_re": spec, "bu_im": spec}
    )
    assert len(_op_nodes(ep.graph, DIAG)) == 1
    for b, n_steps in [(2, 50), (3, 17), (1, 301)]:
        args = (_bu(b, n_steps, seed=3), _bu(b, n_steps, seed=4))
        torch.testing.assert_close(ep.module()(*args), model.reference(*args))


def test_export_dense_with_dynamic_length_runs_at_other_lengths():
    model = _Dense()
    ep = torch.export.export(
        model, (_bu(2, 40),), dynamic_shapes={"bu": {1: torch.export.Dim("length", min=2)}}
    )
    assert len(_op_nodes(ep.graph, DENSE)) == 1
    bu = _bu(2, 123, seed=5)
    torch.testing.assert_close(ep.module()(bu), torch.tanh(dense_scan_reference(model.A, bu)))


def test_compile_aot_eager_fullgraph_matches_eager_with_gradients():
    model = _DiagReal()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    bu_re, bu_im = _bu(2, 45), _bu(2, 45, seed=1)
    out_c = compiled(bu_re, bu_im)
    out_c.square().sum().backward()
    grads_c = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out_e = model(bu_re, bu_im)
    out_e.square().sum().backward()
    torch.testing.assert_close(out_c, out_e)
    for got, p in zip(grads_c, model.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad)


def test_compile_aot_eager_fullgraph_dense_matches_eager():
    model = _Dense()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    bu = _bu(3, 29)
    compiled(bu).sum().backward()
    grad_c = model.A.grad.clone()
    model.A.grad = None
    model(bu).sum().backward()
    torch.testing.assert_close(compiled(bu), model(bu))
    torch.testing.assert_close(grad_c, model.A.grad)
