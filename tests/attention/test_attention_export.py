"""ONNX step graph of a reduced linear-attention LM: token + per-layer (conv window, S) state in,
logits + next state out, at the REDUCED d_k; onnxruntime matches ``reduced.step``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import ssmcompile  # noqa: E402
from ssmcompile.attention import (  # noqa: E402
    AttentionLMConfig,
    LinearAttentionConfig,
    LinearAttentionLM,
)
from ssmcompile.export import export_onnx  # noqa: E402

VOCAB, HEADS, DV = 40, 2, 4


def _reduced(kind: str, conv: int) -> tuple[LinearAttentionLM, torch.Tensor]:
    torch.manual_seed(0)
    attn = LinearAttentionConfig(16, heads=HEADS, key_dim=16, value_dim=DV, kind=kind,
                                 conv_size=conv, chunk_size=8)
    lm = LinearAttentionLM(AttentionLMConfig(VOCAB, attn, n_layers=2)).eval()
    ids = torch.randint(0, VOCAB, (3, 24))
    reduced, _, _ = ssmcompile.run_pipeline(lm, ids, "hankel-analysis,balanced-truncation{rank=8}")
    assert reduced.key_dims == (8, 8) and lm.key_dims == (16, 16)
    return reduced.eval(), ids


def _graph_shape(value_info) -> tuple:
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


def test_reduced_step_graph_streams_in_onnxruntime(tmp_path):
    """GLA with a short conv (reduced by channel selection): 5 steps from zero state."""
    reduced, _ = _reduced("gla", 4)
    result = export_onnx(reduced, tmp_path / "step.onnx", step=True,
                         example_inputs=torch.zeros(2, 16, dtype=torch.int64))
    names = ("state_0_conv", "state_0_kv", "state_1_conv", "state_1_kv")
    assert result.input_names == ("u_k", *names) and result.lowered == ()
    assert result.output_names == ("y_k", *(f"new_{n}" for n in names))
    # The graph itself declares the reduced S: (batch, heads, d_k = 8, d_v); conv channels
    # are heads·(2·d_k + d_v) = 40 (80 at d_k = 16).
    graph = onnx.load(str(result.path)).graph
    declared = {i.name: _graph_shape(i)[1:] for i in graph.input}
    assert declared["state_0_kv"] == (HEADS, 8, DV) and declared["state_1_conv"] == (40, 3)

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    batch = 3
    ids = torch.randint(0, VOCAB, (batch, 5), generator=torch.Generator().manual_seed(1))
    state = reduced.initial_state(batch)
    flat = [t.numpy() for group in state for t in group]  # zeros, reduced sizes
    worst = 0.0
    with torch.no_grad():
        for k in range(5):
            logits, state = reduced.step(ids[:, k], state)
            got, *flat = session.run(None, {"u_k": ids[:, k].numpy(),
                                            **dict(zip(names, flat, strict=True))})
            want = [t.numpy() for group in state for t in group]
            assert got.shape == (batch, VOCAB)
            assert [a.shape for a in flat] == [w.shape for w in want]
            assert flat[1].shape == (batch, HEADS, 8, DV)
            np.testing.assert_allclose(got, logits.numpy(), rtol=0, atol=1e-5)
            for a, w in zip(flat, want, strict=True):
                np.testing.assert_allclose(a, w, rtol=0, atol=1e-5)
            worst = max(worst, float(np.abs(got - logits.numpy()).max()))
        # Streaming equals the whole-sequence forward of the reduced model too.
        np.testing.assert_allclose(got, reduced(ids)[:, -1].numpy(), rtol=0, atol=1e-5)
    assert worst > 0 or np.abs(got).max() > 0  # a real comparison, not all-zero outputs


def test_gated_delta_step_graph_passes_the_exporters_parity_check(tmp_path):
    """Gated DeltaNet without conv (orthogonal reduction, an empty conv window per layer):
    the exporter's own onnxruntime parity (step, state, and forward) holds at 1e-5."""
    reduced, ids = _reduced("gated_delta", 0)
    result = export_onnx(reduced, tmp_path / "step.onnx", step=True, check=True,
                         example_inputs=ids, tolerance=1e-5)
    assert dict(result.state_shapes)["state_1_kv"] == (None, HEADS, 8, DV)
    assert dict(result.state_shapes)["state_0_conv"] == (None, 0, 0)
    assert result.parity.ok and result.parity.max_abs_err <= 1e-5
    assert {r.reference for r in result.parity.rows} == {"step", "state", "forward"}
