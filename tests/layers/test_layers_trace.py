"""Layers are real-arithmetic graphs: torch.export (dynamic length) and torch.compile work."""

from __future__ import annotations

import pytest
import torch

from ssmcompile.layers import ModelSpec, build_model


# Only the paper's LRU here: each export costs seconds (s5/s4d/dense export the same way).
@pytest.mark.parametrize("kind", ["lru"])
def test_export_with_dynamic_length(kind):
    torch.manual_seed(30)
    spec = ModelSpec(layer=kind, d_model=6, state_dims=(4,), d_output=2, d_input=3)
    model = build_model(spec).eval()
    dims = {0: torch.export.Dim("batch", max=1024), 1: torch.export.Dim("length", max=4096)}
    ep = torch.export.export(model, (torch.randn(2, 9, 3),), dynamic_shapes=(dims,))
    graph_dtypes = {
        n.meta["val"].dtype for n in ep.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)
    }
    assert not any(d.is_complex for d in graph_dtypes)
    u = torch.randn(3, 21, 3)
    with torch.no_grad():
        assert torch.allclose(ep.module()(u), model(u), atol=1e-6)


def test_compile_train_step_matches_eager():
    torch.manual_seed(31)
    spec = ModelSpec(layer="lru", d_model=6, state_dims=(4,), d_output=2, d_input=3)
    model = build_model(spec).train()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    u = torch.randn(2, 20, 3)
    y = compiled(u)
    y.sum().backward()
    assert torch.allclose(y, model(u), atol=1e-6)
    assert all(p.grad is not None for p in model.blocks[0].ssm.parameters())
