"""Atomic, self-contained writing; node counting; parity report logic; onnxruntime providers;
and input errors that must fail before any export work (no file left behind)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import ssmcompile.export.onnx_file as onnx_file
import ssmcompile.export.runtime as runtime
from ssmcompile.errors import SSMCompileError, VerificationError
from ssmcompile.export import (
    ExportError,
    ParityError,
    ParityReport,
    ParityRow,
    SessionOptions,
    create_session,
    eval_mode,
    export_onnx,
    graph_stats,
)
from ssmcompile.export.check import check_lengths
from ssmcompile.export.onnx_file import staged_onnx_file
from ssmcompile.layers import ModelSpec, build_model


def _add_model(weight: np.ndarray) -> onnx.ModelProto:
    """y = x + W with W an initializer; x, y (2, k)."""
    k = weight.shape[1]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, k])],
        [numpy_helper.from_array(weight, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]


def test_staged_file_is_atomic_self_contained_and_readable(tmp_path):
    w = np.arange(8, dtype=np.float32).reshape(2, 4)
    dest = tmp_path / "m.onnx"
    with staged_onnx_file(_add_model(w), dest) as (staged, data_path):
        assert staged.parent == tmp_path and staged != dest and not dest.exists()
        assert data_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp, no .data
    assert os.stat(dest).st_mode & 0o044  # not mkstemp's private 0600
    np.testing.assert_array_equal(_run(dest, np.ones((2, 4), np.float32)), w + 1)


def test_failure_inside_stage_leaves_previous_file_untouched(tmp_path):
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="boom"):
        with staged_onnx_file(_add_model(np.zeros((2, 3), np.float32)), dest):
            raise RuntimeError("boom")
    assert dest.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_invalid_model_is_refused_and_not_written(tmp_path):
    bad = _add_model(np.zeros((2, 3), np.float32))
    bad.graph.node[0].input[1] = "missing"
    with pytest.raises(ExportError, match="not valid ONNX"):
        with staged_onnx_file(bad, tmp_path / "m.onnx"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_large_models_get_a_side_data_file(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_file, "INLINE_LIMIT_BYTES", 0)
    w = np.full((2, 5), 3.0, np.float32)
    dest = tmp_path / "big.onnx"
    with staged_onnx_file(_add_model(w), dest) as (_, data_path):
        assert data_path == tmp_path / "big.onnx.data"
    assert data_path.exists() and data_path.stat().st_size >= w.nbytes
    np.testing.assert_array_equal(_run(dest, np.zeros((2, 5), np.float32)), w)


def test_graph_stats_recurse_into_subgraphs():
    inner = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["s2"]), helper.make_node("Identity", ["s"], ["o"])],
        "body",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor_value_info("s2", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("o", TensorProto.FLOAT, [1]),
        ],
    )
    scan = helper.make_node("Scan", ["s0", "xs"], ["sN", "ys"], body=inner, num_scan_inputs=0)
    outer = helper.make_graph([scan, helper.make_node("Relu", ["ys"], ["z"])], "g", [], [])
    stats = graph_stats(helper.make_model(outer))
    assert (stats.top_level_nodes, stats.total_nodes, stats.scan_nodes) == (2, 4, 1)
    assert stats.has_recurrence_node


def test_parity_report_fails_on_large_or_non_finite_errors():
    ok = ParityRow("sequence", "forward", 1, 7, 5e-5)
    report = ParityReport((ok,), ("CPUExecutionProvider",), 1e-4)
    assert report.ok and report.max_abs_err == 5e-5
    report.raise_if_failed()
    for bad in (2e-4, float("inf"), float("nan")):
        failing = ParityReport((ok, ParityRow("step", "state", 3, 9, bad)), ("CPU",), 1e-4)
        assert not failing.ok and failing.max_abs_err >= 2e-4
        with pytest.raises(ParityError, match="step graph vs torch state") as info:
            failing.raise_if_failed()
        assert info.value.report is failing
        assert isinstance(info.value, VerificationError) and isinstance(info.value, SSMCompileError)
        assert any("FAIL" in line for line in failing.lines())


@pytest.mark.parametrize("length", [2, 3, 16, 100])
def test_check_lengths_differ_from_export_length(length):
    short, long = check_lengths(length)
    assert 1 <= short < length < long


def test_both_onnxruntime_distributions_warn(monkeypatch):
    monkeypatch.setattr(runtime, "_warned", False)
    monkeypatch.setattr(
        runtime, "installed_onnxruntime_distributions", lambda: ("onnxruntime", "onnxruntime-gpu")
    )
    with pytest.warns(RuntimeWarning, match="overwrite the same 'onnxruntime' module"):
        assert runtime.warn_if_both_distributions()
    monkeypatch.setattr(runtime, "installed_onnxruntime_distributions", lambda: ("onnxruntime",))
    monkeypatch.setattr(runtime, "_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not runtime.warn_if_both_distributions()
    assert "onnxruntime" in runtime.installed_onnxruntime_distributions()  # this venv's


def test_cuda_is_requested_only_when_available(monkeypatch, tmp_path):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(RuntimeWarning, match="not available"):
        assert runtime.requested_providers("cuda") == ["CPUExecutionProvider"]
    assert runtime.requested_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert runtime.requested_providers("cuda")[0] == "CUDAExecutionProvider"
    assert runtime.requested_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ExportError, match="device must be one of"):
        runtime.requested_providers("tpu")
    path = tmp_path / "m.onnx"
    onnx.save(_add_model(np.zeros((2, 2), np.float32)), str(path))
    session = create_session(path, SessionOptions(threads=1))
    assert session.get_providers() == ["CPUExecutionProvider"]
    path.write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="onnxruntime cannot load"):
        create_session(path)


def _model():
    return build_model(ModelSpec(layer="lru", d_model=4, state_dims=(3,), d_output=2, d_input=2))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"opset": 9}, "opset must be an int"),
        ({"opset": 10_000}, "opset must be an int"),
        ({"opset": "18"}, "opset must be an int"),
        ({"device": "tpu"}, "device must be one of"),
        ({"tolerance": -1.0}, "tolerance must be"),
        ({"tolerance": float("nan")}, "tolerance must be"),
        ({"export_length": 1}, "export length must be"),
        ({"example_inputs": torch.zeros(2, 5, 2, dtype=torch.complex64)}, "complex"),
        ({"example_inputs": torch.zeros(5)}, "example_inputs must be a tensor"),
        ({"example_inputs": (torch.zeros(2, 5, 2), torch.zeros(2))}, "one input tensor"),
    ],
)
def test_bad_arguments_fail_fast_without_a_file(kwargs, match, tmp_path):
    with pytest.raises(ExportError, match=match):
        export_onnx(_model(), tmp_path / "m.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_destinations_and_models(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(_model(), tmp_path / "nope" / "m.onnx")
    with pytest.raises(ExportError, match="is a directory"):
        export_onnx(_model(), tmp_path)
    with pytest.raises(ExportError, match="example_inputs is required"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_eval_mode_restores_each_module_mode():
    model = _model()
    model.train()
    model.blocks[0].norm.eval()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
