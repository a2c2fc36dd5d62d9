"""The scan ops become ONE ONNX Scan each: not unrolled, dynamic batch and length, and pinned to
the torch 2.13 exporter internals the translation relies on. Both formulations: one time step per
Scan iteration (``scan_chunk=1``) and chunks of T steps (the default; see test_export_chunked)."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ssmcompile.export import ExportError, export_onnx, state_layout
from ssmcompile.export.onnx_scan import (
    DEFAULT_SCAN_CHUNK,
    DENSE_SCAN,
    DIAGONAL_SCAN,
    dense_scan_to_onnx,
    diagonal_scan_to_onnx,
    exporter_helper,
    scan_ops_in,
    scan_translation_table,
)
from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.ops.reference import diagonal_scan_reference

# The layers' unfused path (what export traces) calls the scan through this module; the
# package attribute of the same name is the function.
SSM_MODULE = sys.modules["ssmcompile.ops.diagonal_ssm"]


def _tiny(layer: str) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = ModelSpec(layer=layer, d_model=4, state_dims=(3,), d_output=2, d_input=2)
    return build_model(spec).eval()


def test_pinned_exporter_helper_and_torch_version():
    # The translation builds Scan through this private helper; a torch upgrade must re-verify it.
    assert torch.__version__.startswith("2.13"), torch.__version__
    helper = exporter_helper()
    assert helper.__module__ == "torch.onnx._internal.exporter._torchlib.ops.hop"


def test_translation_table_maps_our_ops_and_rejects_others():
    ops = (torch.ops.ssmcompile.diagonal_scan.default, torch.ops.ssmcompile.dense_scan.default)
    per_step = scan_translation_table(ops, chunk=1)
    assert per_step[ops[0]] is diagonal_scan_to_onnx and per_step[ops[1]] is dense_scan_to_onnx
    chunked = scan_translation_table(ops)  # the default chunk: other translations
    assert chunked[ops[0]].__name__ == "diagonal_scan_chunked_to_onnx"
    assert chunked[ops[1]].__name__ == "dense_scan_chunked_to_onnx"
    assert ops[0].name() == DIAGONAL_SCAN and ops[1].name() == DENSE_SCAN
    with pytest.raises(ExportError, match="no ONNX translation for custom op aten::add"):
        scan_translation_table((torch.ops.aten.add.Tensor,))
    for bad in (0, -1, 257, 2.0, True, "8"):
        with pytest.raises(ExportError, match="scan chunk must be an int"):
            scan_translation_table(ops, chunk=bad)


def test_scan_ops_found_in_exported_program():
    model = _tiny("lru")
    x = torch.randn(2, 8, 2)
    program = torch.export.export(model, (x,), strict=False)
    assert scan_ops_in(program.graph) == (torch.ops.ssmcompile.diagonal_scan.default,)


def _scan_body(proto: onnx.ModelProto, axis: int) -> onnx.GraphProto:
    (scan,) = [n for n in proto.graph.node if n.op_type == "Scan"]
    attrs = {a.name: a for a in scan.attribute}
    n_scanned = attrs["num_scan_inputs"].i
    assert list(attrs["scan_input_axes"].ints) == [axis] * n_scanned  # time, or chunks
    assert list(attrs["scan_output_axes"].ints) == [axis] * n_scanned
    return attrs["body"].g


@pytest.mark.parametrize(
    "layer,chunk,body_op,axis",
    [
        ("lru", 1, "Mul", 1),  # one time step per iteration, scanning the length axis
        ("dense", 1, "MatMul", 1),
        ("lru", DEFAULT_SCAN_CHUNK, "MatMul", 2),  # one chunk per iteration: (2n, batch, C)
        ("dense", DEFAULT_SCAN_CHUNK, "MatMul", 1),  # (batch, C, n)
    ],
)
def test_graph_is_not_unrolled_and_runs_at_any_length(layer, chunk, body_op, axis, tmp_path):
    model = _tiny(layer)
    results = {
        length: export_onnx(
            model, tmp_path / f"L{length}.onnx", export_length=length, scan_chunk=chunk
        )
        for length in (4, 48)
    }
    short, long = results[4].stats, results[48].stats
    assert short.scan_nodes == long.scan_nodes == 1
    assert short.total_nodes == long.total_nodes and short.top_level_nodes == long.top_level_nodes
    proto = onnx.load(str(tmp_path / "L4.onnx"))
    body = _scan_body(proto, axis)
    assert body_op in {n.op_type for n in body.node} and len(body.node) <= 12  # one step only
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "length", 2]
    # exported at length 4, run at 1 and 100 with batch 1 and 5
    session = ort.InferenceSession(str(tmp_path / "L4.onnx"), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 1), (5, 100), (2, 2 * DEFAULT_SCAN_CHUNK)):
        x = torch.randn(batch, length, 2)
        (y,) = session.run(None, {"u": x.numpy()})
        with torch.no_grad():
            assert np.abs(y - model(x).numpy()).max() <= 1e-4


def test_python_loop_scan_is_refused(tmp_path, monkeypatch):
    def loop_scan(lam_re, lam_im, bu_re, bu_im):
        x = diagonal_scan_reference(torch.complex(lam_re, lam_im), torch.complex(bu_re, bu_im))
        return x.real, x.imag

    monkeypatch.setattr(SSM_MODULE, "diagonal_scan_real", loop_scan)
    with pytest.raises(ExportError, match="Python loop"):
        export_onnx(_tiny("lru"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_recurrence_without_scan_op_is_refused(tmp_path, monkeypatch):
    # Traceable at any length but not our op (numerically wrong on purpose: only tracing
    # matters): the exporter must refuse rather than emit a graph with no Scan.
    def cumsum_scan(lam_re, lam_im, bu_re, bu_im):
        return bu_re.cumsum(1) * lam_re, bu_im.cumsum(1) * lam_im

    monkeypatch.setattr(SSM_MODULE, "diagonal_scan_real", cumsum_scan)
    with pytest.raises(ExportError, match="did not trace to a scan custom op"):
        export_onnx(_tiny("lru"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_state_layout_names_and_shapes():
    two = build_model(ModelSpec(layer="lru", d_model=8, state_dims=(6, 5), d_output=3, d_input=4))
    layout = state_layout(two)
    assert layout.names == (
        "state_0_re", "state_0_im", "state_1_re", "state_1_im", "pool_sum", "pool_count",
    )  # fmt: skip
    assert layout.shapes == ((6,), (6,), (5,), (5,), (8,), (1,))
    dense = build_model(
        ModelSpec(
            layer="dense",
            d_model=4,
            state_dims=(3, 2),
            d_output=5,
            task="lm",
            vocab_size=9,
            norm="layer",
        )
    )
    assert state_layout(dense).names == ("state_0", "state_1")
    s4d = build_model(ModelSpec(layer="s4d", d_model=4, state_dims=(3,), d_output=2, d_input=2))
    assert state_layout(s4d).shapes[:2] == ((4, 3), (4, 3))
    state = two.initial_state(2)
    regrouped = layout.unflatten(layout.flatten(state))
    assert [len(g) for g in regrouped] == [len(g) for g in state]
    assert all(
        a is b for ga, gb in zip(regrouped, state, strict=True) for a, b in zip(ga, gb, strict=True)
    )
    with pytest.raises(ExportError, match="no step"):
        state_layout(torch.nn.Linear(2, 2))
