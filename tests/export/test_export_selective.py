"""ONNX export of selective SSMs: ``ssmcompile::selective_scan`` becomes one per-step Scan node,
batch and length stay dynamic, and onnxruntime matches PyTorch (full and reduced models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import passes  # noqa: E402
from ssmcompile import run_pipeline  # noqa: E402
from ssmcompile.compiler import RankPolicy  # noqa: E402
from ssmcompile.export import export_onnx, graph_stats  # noqa: E402
from ssmcompile.export.program import export_program  # noqa: E402
from ssmcompile.selective import LMConfig, SelectiveLM, selective_scan  # noqa: E402


class BareScan(nn.Module):
    """The op alone: every operand a graph input, so the parity test sees the translation only."""

    def forward(self, u, delta, A, B, C):
        return selective_scan(u, delta, A, B, C)


def scan_inputs(batch: int, length: int, D: int, G: int, N: int, a_cols: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, D, generator=gen)
    delta = torch.nn.functional.softplus(torch.randn(batch, length, D, generator=gen)) * 0.5
    A = -torch.rand(D, a_cols, generator=gen) * 2 - 0.1
    B, C = (torch.randn(batch, length, G, N, generator=gen) for _ in range(2))
    return u, delta, A, B, C


@pytest.mark.parametrize(("G", "a_cols"), [(1, 5), (2, 1)], ids=["mamba1-A", "mamba2-A-groups"])
def test_translation_matches_the_op_for_any_batch_and_length(G, a_cols):
    D, N = 4, 5
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    seq = {0: batch, 1: length}
    proto = export_program(
        BareScan(), scan_inputs(2, 6, D, G, N, a_cols, 0),
        dynamic_shapes=[seq, seq, {}, seq, seq], input_names=["u", "delta", "A", "B", "C"],
        output_names=["y"], opset=None, expect_scan=True)
    stats = graph_stats(proto)
    assert stats.scan_nodes == 1 and stats.loop_nodes == 0
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for b, L, seed in [(1, 1, 1), (3, 29, 2)]:  # neither is the traced (2, 6)
        args = scan_inputs(b, L, D, G, N, a_cols, seed)
        (got,) = session.run(None, {k: t.numpy() for k, t in zip("u delta A B C".split(), args,
                                                                   strict=True)})
        want = selective_scan(*args).numpy()
        assert got.shape == want.shape == (b, L, D)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_reduced_mamba2_lm_exports_with_parity(tmp_path):
    torch.manual_seed(0)
    lm = SelectiveLM(LMConfig(30, 16, 2, "mamba2", 8, head_dim=8, n_groups=2)).eval()
    ids = torch.randint(0, 30, (2, 24), generator=torch.Generator().manual_seed(0))
    pipeline = passes.default_pipeline(RankPolicy(overrides={"layers.1.mixer": 5}))
    reduced, _, _ = run_pipeline(lm, ids, pipeline)
    assert reduced.state_dims == (8, 5)
    result = export_onnx(reduced, tmp_path / "lm.onnx", check=True)
    assert result.stats.scan_nodes == 2  # one per layer, whatever the length
    assert max(row.max_abs_err for row in result.parity.rows) < 1e-5
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.randint(0, 30, (3, 41), generator=torch.Generator().manual_seed(1))
    (got,) = session.run(None, {result.input_names[0]: x.numpy()})
    with torch.no_grad():
        want = reduced(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, lm(x).detach().numpy(), atol=1e-6)  # it is the reduced model


@pytest.mark.parametrize("structure", ["mamba1", "mamba2"])
def test_reduced_lm_step_graph_streams_with_reduced_state_and_parity(structure, tmp_path):
    torch.manual_seed(0)
    lm = SelectiveLM(LMConfig(30, 16, 2, structure, 8, head_dim=8, n_groups=2)).eval()
    ids = torch.randint(0, 30, (2, 24), generator=torch.Generator().manual_seed(0))
    reduced, _, _ = run_pipeline(lm, ids, "hankel-analysis,balanced-truncation{rank=4}")
    assert reduced.state_dims == (4, 4)
    result = export_onnx(reduced, tmp_path / "step.onnx", step=True, check=True)
    names = ("state_0_conv", "state_0_ssm", "state_1_conv", "state_1_ssm")
    assert result.input_names == ("u_k", *names)
    assert result.output_names == ("y_k", *("new_" + n for n in names))
    conv, ssm = (None, 32, 3), (None, 32, 4)  # (batch, d_inner, d_conv − 1 | reduced N)
    assert result.state_shapes == tuple(zip(names, (conv, ssm, conv, ssm), strict=True))
    assert result.stats.scan_nodes == 0 and result.stats.loop_nodes == 0  # one step, no scan
    assert max(row.max_abs_err for row in result.parity.rows) < 1e-4
    # Stream by hand at a batch size the checker did not use; compare with the sequence logits.
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    graph_inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim][1:]
                    for i in onnx.load(str(result.path)).graph.input}
    assert graph_inputs["state_0_ssm"] == graph_inputs["state_1_ssm"] == [32, 4]
    x = torch.randint(0, 30, (3, 11), generator=torch.Generator().manual_seed(1))
    state = [np.zeros((3, *shape[1:]), np.float32) for _, shape in result.state_shapes]
    logits = []
    for k in range(x.shape[1]):
        y_k, *state = session.run(None, {"u_k": x[:, k].numpy(), **dict(zip(names, state,
                                                                             strict=True))})
        logits.append(y_k)
    with torch.no_grad():
        want = reduced(x).numpy()
    np.testing.assert_allclose(np.stack(logits, axis=1), want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(want, lm(x).detach().numpy(), atol=1e-6)  # it is the reduced model
